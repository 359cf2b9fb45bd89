//! Reading lines from a socket into a small buffer that grows only while a line needs
//! it, up to the line limit (`MAX_LINE` for clients), or while a busy peer keeps it full
//! (`with_buffer`); the same reader serves client and peer connections.

use futures_lite::{AsyncRead, AsyncReadExt};
use std::io;

/// Longest line accepted, terminator included. A classic IAMAT is under 100 bytes and
/// an AT line under 200; 8 KiB leaves room for long client IDs while bounding the
/// buffer each connection may hold.
pub const MAX_LINE: usize = 8 * 1024;

/// The buffer a reader allocates when bytes arrive; an idle client connection holds
/// none at all (`release`).
pub const INITIAL_BUFFER: usize = 512;

/// What `next_line` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line, without `\n` (a last line cut short by EOF counts too).
    Full(&'a [u8]),
    /// The line limit's worth of bytes arrived without a newline; these are the first of
    /// them (the rest of the line is skipped).
    TooLong(&'a [u8]),
}

/// A line reader for lines of at most `limit` bytes, over a buffer that holds at most
/// `capacity` bytes (`limit` unless `with_buffer` says more).
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Longest line, terminator included: `MAX_LINE` for clients.
    limit: usize,
    /// Largest the buffer grows for a busy sender: `limit`, or more (`with_buffer`).
    capacity: usize,
    /// After a line too long: discarding bytes up to the next newline.
    skipping: bool,
    start: usize,
    end: usize,
    /// Bytes from `start` already searched for a newline.
    scanned: usize,
    /// Bytes the last read returned: a read that filled the buffer means a busy,
    /// pipelining peer (grow), a short one a quiet client (shrink back when empty).
    last_read: usize,
    /// Free space the last read was offered.
    last_space: usize,
    eof: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new()
    }
}

impl LineReader {
    /// An empty reader with a small buffer, for lines of at most `MAX_LINE` bytes.
    pub fn new() -> LineReader {
        LineReader::with_limit(MAX_LINE)
    }

    /// An empty reader for lines of at most `limit` bytes, terminator included.
    pub fn with_limit(limit: usize) -> LineReader {
        let limit = limit.max(INITIAL_BUFFER);
        LineReader {
            limit,
            capacity: limit,
            skipping: false,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            last_read: 0,
            last_space: 0,
            eof: false,
        }
    }

    /// The same reader, its buffer allowed to grow to `capacity` bytes (at least the
    /// line limit) while the sender keeps it full, so that a busy peer's lines come in
    /// batches of many lines a read; lines are bounded by the limit as before.
    pub fn with_buffer(mut self, capacity: usize) -> LineReader {
        self.capacity = capacity.max(self.limit);
        self
    }

    /// The size of the buffer now, in bytes.
    #[cfg(test)]
    pub(crate) fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// True when no bytes of a line are waiting.
    pub fn is_idle(&self) -> bool {
        self.start == self.end
    }

    /// Frees the buffer if no line is in flight, so a connection that waits for its
    /// next line holds no buffer; `fill` allocates one again when bytes arrive.
    pub fn release(&mut self) {
        if self.is_idle() {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
    }

    /// Reads more bytes; returns how many (0 at EOF).
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; INITIAL_BUFFER];
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let full = self.end == self.buf.len();
        let busy = self.last_read > 0 && self.last_read == self.last_space;
        if (full && self.buf.len() < self.limit) || (busy && self.buf.len() < self.capacity) {
            // A line needs more room, or the peer keeps the buffer full: double it.
            let grown = (self.buf.len() * 2).min(self.capacity);
            self.buf.resize(grown, 0);
        } else if self.end == 0
            && self.buf.len() > INITIAL_BUFFER
            && self.last_read < INITIAL_BUFFER
        {
            // Traffic is light again: give the memory back.
            self.buf = vec![0; INITIAL_BUFFER];
        }
        self.last_space = self.buf.len() - self.end;
        let n = r.read(&mut self.buf[self.end..]).await?;
        self.last_read = n;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(n)
    }

    /// The next buffered line, if a whole one (or, after EOF, a last partial one) is there.
    /// After a `TooLong`, the rest of that line is skipped, so a reader that goes on
    /// reading (a peer link) resumes at the next line.
    pub fn next_line(&mut self) -> Option<Line<'_>> {
        if self.skipping {
            match memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                Some(i) => {
                    self.start += i + 1;
                    self.skipping = false;
                }
                None => {
                    self.start = self.end;
                    return None;
                }
            }
        }
        // A newline counts only within the limit: a buffer bigger than the limit
        // (`with_buffer`) may already hold the end of a line too long.
        let window_end = self.end.min(self.start + self.limit);
        let from = (self.start + self.scanned).min(window_end);
        match memchr::memchr(b'\n', &self.buf[from..window_end]) {
            Some(i) => {
                let line_end = from + i;
                let line = &self.buf[self.start..line_end];
                self.start = line_end + 1;
                self.scanned = 0;
                Some(Line::Full(line))
            }
            None if self.end - self.start >= self.limit => {
                let line = &self.buf[self.start..self.start + self.limit];
                // The rest of the line, up to its newline, is skipped (it may be here).
                self.start += self.limit;
                self.scanned = 0;
                self.skipping = true;
                Some(Line::TooLong(line))
            }
            None if self.eof && self.end > self.start => {
                let line = &self.buf[self.start..self.end];
                self.start = self.end;
                self.scanned = 0;
                Some(Line::Full(line))
            }
            None => {
                self.scanned = window_end - self.start;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8]) -> Vec<String> {
        read_all_with(&mut LineReader::new(), input)
    }

    /// Every line `reader` gives for `input`, a line too long as `TOO LONG <bytes>`.
    fn read_all_with(reader: &mut LineReader, input: &[u8]) -> Vec<String> {
        smol::block_on(async {
            let mut src = input;
            let mut lines = Vec::new();
            loop {
                let n = reader.fill(&mut src).await.unwrap();
                while let Some(line) = reader.next_line() {
                    lines.push(match line {
                        Line::Full(l) => String::from_utf8_lossy(l).into_owned(),
                        Line::TooLong(l) => format!("TOO LONG {}", l.len()),
                    });
                }
                if n == 0 {
                    return lines;
                }
            }
        })
    }

    #[test]
    fn lines_and_a_last_line_cut_by_eof() {
        assert_eq!(read_all(b"a\nbb\r\n\nlast"), ["a", "bb\r", "", "last"]);
        assert_eq!(read_all(b""), Vec::<String>::new());
        assert_eq!(read_all(b"x\n"), ["x"]);
    }

    #[test]
    fn the_buffer_grows_for_busy_peers_and_shrinks_for_quiet_ones() {
        smol::block_on(async {
            let mut reader = LineReader::new();
            let burst = "IAMAT a +1-2 3\n".repeat(1000);
            let mut src = burst.as_bytes();
            while reader.fill(&mut src).await.unwrap() > 0 {
                while reader.next_line().is_some() {}
            }
            assert_eq!(reader.buf.len(), MAX_LINE);
            let mut quiet = &b"x\n"[..];
            reader.fill(&mut quiet).await.unwrap();
            while reader.next_line().is_some() {}
            reader.fill(&mut quiet).await.unwrap();
            assert_eq!(reader.buf.len(), INITIAL_BUFFER);
        });
    }

    #[test]
    fn a_reader_with_a_bigger_buffer_grows_to_it_and_still_bounds_lines() {
        smol::block_on(async {
            let mut reader = LineReader::new().with_buffer(4 * MAX_LINE);
            let burst = "IAMAT a +1-2 3\n".repeat(10_000);
            let mut src = burst.as_bytes();
            let mut lines = 0;
            while reader.fill(&mut src).await.unwrap() > 0 {
                assert!(reader.buf.len() <= 4 * MAX_LINE);
                while reader.next_line().is_some() {
                    lines += 1;
                }
            }
            assert_eq!((lines, reader.buf.len()), (10_000, 4 * MAX_LINE));
        });
        // A line longer than the limit is too long in a buffer that holds it whole:
        // the buffer is grown by a burst first, and the limit is not a power of two
        // (the buffer doubles past it).
        let limit = MAX_LINE + 129;
        let mut reader = LineReader::with_limit(limit).with_buffer(4 * MAX_LINE);
        let mut input = "IAMAT a +1-2 3\n".repeat(5_000).into_bytes();
        input.extend(vec![b'y'; limit]);
        input.extend_from_slice(b"\nnext\n");
        input.extend(vec![b'z'; limit - 1]);
        input.extend_from_slice(b"\n");
        let got: Vec<String> = read_all_with(&mut reader, &input)
            .into_iter()
            .filter(|l| !l.starts_with("IAMAT"))
            .collect();
        let longest_ok = "z".repeat(limit - 1);
        assert_eq!(
            got,
            [format!("TOO LONG {limit}"), "next".into(), longest_ok]
        );
    }

    #[test]
    fn long_lines_grow_the_buffer_up_to_the_bound() {
        let ok = vec![b'x'; MAX_LINE - 1];
        let mut input = ok.clone();
        input.push(b'\n');
        assert_eq!(read_all(&input), [String::from_utf8(ok).unwrap()]);
        let too_long = vec![b'y'; MAX_LINE];
        assert_eq!(read_all(&too_long)[0], format!("TOO LONG {MAX_LINE}"));
        // A reader that goes on after a line too long resumes at the next line.
        let mut input = vec![b'z'; 3 * MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        assert_eq!(
            read_all(&input),
            [format!("TOO LONG {MAX_LINE}"), "next".into()]
        );
    }
}
