//! Durable state (`state-dir`): an append-only file of accepted AT lines, each with a
//! CRC-32, written before the AT reply or the forwarding goes out, so `kill -9` loses
//! nothing a client was told. On start the file is replayed (newer wins, so order does
//! not matter), a torn or corrupt tail is truncated and logged, and the file is
//! compacted — a snapshot written aside, then renamed over it — once it grows past
//! `COMPACT_RATIO` times the live data.
//!
//! Record format, one per line: `CRC32HEX AT-LINE\n`, the checksum over the AT line.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Compact when the file is this many times the size of the last snapshot: each
/// record is then rewritten a bounded number of times (amortised O(1) per update).
pub const COMPACT_RATIO: u64 = 4;

/// Never compact a file smaller than this: rewriting a few KB buys nothing.
pub const MIN_COMPACT_BYTES: u64 = 1 << 20;

/// What loading a state file found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every valid record's AT line, in file order.
    pub lines: Vec<String>,
    /// Bytes cut from a torn or corrupt tail, and why.
    pub truncated: Option<(u64, String)>,
}

struct Inner {
    file: File,
    /// Bytes in the file now.
    size: u64,
    /// Size of the file right after the last compaction (or load).
    base: u64,
}

/// A server's state file.
pub struct State {
    path: PathBuf,
    inner: Mutex<Inner>,
    dirty: Arc<AtomicBool>,
}

/// One record's bytes.
pub fn record(line: &str) -> String {
    format!("{:08x} {line}\n", crc32fast::hash(line.as_bytes()))
}

/// Parses state-file bytes into valid AT lines, stopping at the first record that is
/// torn (no newline), fails its checksum or is not an AT line; returns the lines and
/// the length of the valid prefix.
pub fn parse(bytes: &[u8]) -> (Vec<String>, usize, Option<String>) {
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(len) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            return (lines, pos, Some("torn record at the end".into()));
        };
        let rec = &bytes[pos..pos + len];
        let valid = (|| {
            let text = std::str::from_utf8(rec).ok()?;
            let (crc, line) = text.split_once(' ')?;
            let crc = u32::from_str_radix(crc, 16).ok()?;
            (crc == crc32fast::hash(line.as_bytes()) && crate::protocol::parse_at(line).is_some())
                .then(|| line.to_string())
        })();
        match valid {
            Some(line) => lines.push(line),
            None => return (lines, pos, Some(format!("corrupt record at byte {pos}"))),
        }
        pos += len + 1;
    }
    (lines, pos, None)
}

impl State {
    /// Opens (creating) `dir/NAME.state`, returning what it held. A bad tail is cut
    /// off; only an unreadable or unwritable file is an error.
    pub fn open(dir: &Path, name: &str) -> io::Result<(State, Loaded)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.state"));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (lines, valid, problem) = parse(&bytes);
        let mut loaded = Loaded {
            lines,
            truncated: None,
        };
        if let Some(why) = problem {
            file.set_len(valid as u64)?;
            file.sync_data()?;
            loaded.truncated = Some(((bytes.len() - valid) as u64, why));
        }
        let size = valid as u64;
        let state = State {
            path,
            inner: Mutex::new(Inner {
                file,
                size,
                base: size,
            }),
            dirty: Arc::new(AtomicBool::new(false)),
        };
        Ok((state, loaded))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each critical section leaves `Inner` consistent (sizes only change after a
        // successful write), so a poisoned lock holds valid data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends accepted AT lines in one write. When the file has grown past
    /// `COMPACT_RATIO` times its last snapshot, `snapshot` is called (under the file
    /// lock, so no append is lost) and its lines replace the file.
    pub fn append(
        &self,
        lines: &[Arc<str>],
        snapshot: impl FnOnce() -> Vec<Arc<str>>,
    ) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 10).sum());
        for line in lines {
            buf += &record(line);
        }
        let mut inner = self.lock();
        inner.file.write_all(buf.as_bytes())?;
        inner.size += buf.len() as u64;
        self.dirty.store(true, Ordering::Relaxed);
        if inner.size > MIN_COMPACT_BYTES && inner.size > COMPACT_RATIO * inner.base {
            self.compact(&mut inner, snapshot())?;
        }
        Ok(())
    }

    /// Writes `lines` to a temporary file, syncs it, and renames it over the state file.
    fn compact(&self, inner: &mut Inner, lines: Vec<Arc<str>>) -> io::Result<()> {
        let tmp = self.path.with_extension("state.tmp");
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut size = 0;
        for line in &lines {
            let rec = record(line);
            out.write_all(rec.as_bytes())?;
            size += rec.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable; not every filesystem allows it.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        inner.file = OpenOptions::new().append(true).open(&self.path)?;
        inner.size = size;
        inner.base = size;
        Ok(())
    }

    /// Forces what was appended to disk (fsync), if anything was since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            self.lock().file.sync_data()?;
        }
        Ok(())
    }

    /// The file's current size in bytes.
    pub fn size(&self) -> u64 {
        self.lock().size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("herd-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const A: &str = "AT A +0.000000001 kiwi +1+1 100";
    const B: &str = "AT B +0.000000001 pear +2+2 101";

    #[test]
    fn appended_lines_come_back() {
        let d = dir("back");
        let (state, loaded) = State::open(&d, "A").unwrap();
        assert!(loaded.lines.is_empty());
        state.append(&[A.into(), B.into()], Vec::new).unwrap();
        state.sync().unwrap();
        drop(state);
        let (_, loaded) = State::open(&d, "A").unwrap();
        assert_eq!(loaded.lines, [A, B]);
        assert!(loaded.truncated.is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off() {
        let whole = format!("{}{}", record(A), record(B));
        for (damaged, why) in [
            (whole[..whole.len() - 3].to_string(), "torn"),
            (whole.replace("pear", "peas"), "corrupt"),
            (format!("{whole}\u{0}\u{0}\u{0}garbage"), "torn"),
            (format!("{}zzzzzzzz {B}\n", record(A)), "corrupt"),
        ] {
            let d = dir("torn");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("A.state"), &damaged).unwrap();
            let (state, loaded) = State::open(&d, "A").unwrap();
            let (cut, message) = loaded.truncated.expect("damage found");
            assert!(message.contains(why), "{message}");
            assert_eq!(loaded.lines[0], A);
            assert_eq!(state.size() + cut, damaged.len() as u64);
            // The file is usable after the cut.
            state.append(&[B.into()], Vec::new).unwrap();
            drop(state);
            let (_, again) = State::open(&d, "A").unwrap();
            assert!(again.truncated.is_none());
            assert_eq!(again.lines.last().map(String::as_str), Some(B));
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn parse_never_panics_on_garbage() {
        for junk in [
            &b""[..],
            b"\n",
            b"\xff\xfe\n",
            b"1234 \n",
            b"00000000 AT\n",
            &[0u8; 100],
        ] {
            let (lines, valid, _) = parse(junk);
            assert!(lines.is_empty() && valid == 0, "{junk:?}");
        }
    }

    #[test]
    fn the_file_is_compacted_past_the_ratio() {
        let d = dir("compact");
        let (state, _) = State::open(&d, "A").unwrap();
        let line: Arc<str> = Arc::from(A);
        let batch = vec![line.clone(); 1000];
        let mut compactions = 0;
        for _ in 0..100 {
            state
                .append(&batch, || {
                    compactions += 1;
                    vec![line.clone()]
                })
                .unwrap();
        }
        assert!(compactions >= 1);
        assert!(
            state.size() < MIN_COMPACT_BYTES + 100_000,
            "{}",
            state.size()
        );
        drop(state);
        let (_, loaded) = State::open(&d, "A").unwrap();
        assert!(loaded.lines.iter().all(|l| l == A) && !loaded.lines.is_empty());
        assert!(!d.join("A.state.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
