//! The server's log (SPEC §7): `LOG_DIR/NAME.log`, every line in and out and every
//! link event, timestamped. Connections format entries and hand them to one writer
//! thread through a bounded channel, so logging never blocks a reply; a log that cannot
//! be written is reported on stderr and service goes on.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Batches of log text that may wait for the writer. Each batch is one connection's
/// read (often many lines), so this holds a few MB at most; past it, lines are dropped
/// and counted rather than delaying a reply.
pub const LOG_QUEUE: usize = 4096;

/// Longest stretch of one logged line; the rest is elided so one abusive line cannot
/// fill the disk 1 MiB at a time.
pub const MAX_LOGGED_LINE: usize = 1024;

/// Secrets shorter than this are not scrubbed from the log: herd never writes a secret
/// there anyway, and scrubbing a short common word would mangle client IDs.
pub const MIN_SCRUBBED_SECRET: usize = 8;

/// A handle for writing to a server's log; cheap to clone.
#[derive(Clone)]
pub struct Logger {
    tx: async_channel::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

/// Owns the writer thread; `finish` flushes what is queued.
pub struct LogWriter {
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Closes the log to every handle and waits until what is queued is written.
    pub fn finish(mut self, logger: &Logger) {
        logger.tx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Logger {
    /// Opens (appending) `dir/NAME.log`, creating `dir` if missing, and starts the writer.
    /// `secrets` are scrubbed from every line as a last line of defence. Failing to open
    /// is reported on stderr; the server then runs with logging discarded.
    pub fn open(dir: &Path, name: &str, secrets: Vec<String>) -> (Logger, LogWriter) {
        let path = dir.join(format!("{name}.log"));
        let file = std::fs::create_dir_all(dir)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "herd {name}: cannot open log {}: {e}; logging is off",
                    path.display()
                );
                None
            }
        };
        Logger::start(file, path, secrets)
    }

    fn start(file: Option<File>, path: PathBuf, secrets: Vec<String>) -> (Logger, LogWriter) {
        let (tx, rx) = async_channel::bounded::<Vec<u8>>(LOG_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SCRUBBED_SECRET)
            .map(String::into_bytes)
            .collect();
        let thread = std::thread::Builder::new()
            .name("herd-log".into())
            .spawn(move || write_loop(file, &path, &rx, &counter, &secrets))
            .ok();
        (Logger { tx, dropped }, LogWriter { thread })
    }

    /// Starts an entry; add lines to it and `send` it.
    pub fn entry(&self) -> Entry {
        Entry {
            text: Vec::new(),
            stamp: timestamp(SystemTime::now()),
        }
    }

    /// Queues an entry without waiting; if the queue is full the lines are counted as
    /// dropped and the count is written later.
    pub fn send(&self, entry: Entry) {
        if entry.text.is_empty() {
            return;
        }
        if self.tx.try_send(entry.text).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs one event line: `KIND WHO TEXT`.
    pub fn event(&self, kind: &str, who: &str, text: &str) {
        let mut entry = self.entry();
        entry.line(kind, who, text.as_bytes());
        self.send(entry);
    }
}

/// Log lines sharing one timestamp, sent as one batch.
pub struct Entry {
    text: Vec<u8>,
    stamp: String,
}

impl Entry {
    /// Adds `STAMP KIND WHO TEXT`, with bytes that are not printable ASCII escaped as
    /// `\xNN`, so a log line is always one line of text.
    pub fn line(&mut self, kind: &str, who: &str, text: &[u8]) {
        self.text.extend_from_slice(self.stamp.as_bytes());
        self.text.push(b' ');
        self.text.extend_from_slice(kind.as_bytes());
        self.text.push(b' ');
        self.text.extend_from_slice(who.as_bytes());
        self.text.push(b' ');
        let mut shown = &text[..text.len().min(MAX_LOGGED_LINE)];
        let plain = |b: &u8| (0x20..0x7f).contains(b) && *b != b'\\';
        while !shown.is_empty() {
            // Copy printable runs whole; escape the bytes between them.
            let run = shown.iter().position(|b| !plain(b)).unwrap_or(shown.len());
            self.text.extend_from_slice(&shown[..run]);
            if let Some(&b) = shown.get(run) {
                let _ = write!(Hex(&mut self.text), "\\x{b:02x}");
                shown = &shown[run + 1..];
            } else {
                shown = &[];
            }
        }
        if text.len() > MAX_LOGGED_LINE {
            let _ = write!(
                Hex(&mut self.text),
                "... ({} more bytes)",
                text.len() - MAX_LOGGED_LINE
            );
        }
        self.text.push(b'\n');
    }

    /// Adds every line of `text` (split at `\n`) as its own log line.
    pub fn lines(&mut self, kind: &str, who: &str, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        for line in text.split(|&b| b == b'\n') {
            self.line(kind, who, line);
        }
    }
}

/// `fmt::Write` into a byte buffer.
struct Hex<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Hex<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn write_loop(
    mut file: Option<File>,
    path: &Path,
    rx: &async_channel::Receiver<Vec<u8>>,
    dropped: &AtomicU64,
    secrets: &[Vec<u8>],
) {
    let finders: Vec<memchr::memmem::Finder<'_>> =
        secrets.iter().map(memchr::memmem::Finder::new).collect();
    let mut failing = false;
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv_blocking() {
        batch.clear();
        batch.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            batch.extend_from_slice(&more);
            if batch.len() > 1 << 20 {
                break;
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note = format!(
                "{} log - - {lost} log entries dropped: the log writer fell behind\n",
                timestamp(SystemTime::now())
            );
            batch.extend_from_slice(note.as_bytes());
        }
        for secret in &finders {
            redact(&mut batch, secret);
        }
        let Some(f) = file.as_mut() else { continue };
        match f.write_all(&batch) {
            Ok(()) if failing => {
                failing = false;
                eprintln!("herd: log {} is writable again", path.display());
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                eprintln!(
                    "herd: cannot write log {}: {e}; service goes on",
                    path.display()
                );
            }
            Err(_) => {}
        }
    }
}

/// Replaces every occurrence of `secret` in `text` with `[redacted]`. The search is
/// memchr's substring finder: this runs over every byte the log writes.
fn redact(text: &mut Vec<u8>, secret: &memchr::memmem::Finder<'_>) {
    let len = secret.needle().len();
    let Some(first) = secret.find(text) else {
        return;
    };
    let mut out = Vec::with_capacity(text.len());
    out.extend_from_slice(&text[..first]);
    out.extend_from_slice(b"[redacted]");
    let mut rest = first + len;
    while let Some(i) = secret.find(&text[rest..]) {
        out.extend_from_slice(&text[rest..rest + i]);
        out.extend_from_slice(b"[redacted]");
        rest += i + len;
    }
    out.extend_from_slice(&text[rest..]);
    *text = out;
}

/// RFC 3339 UTC with microseconds: `2026-11-23T01:58:46.123456Z`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    );
    s
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_micros(1_621_464_827_959_498);
        assert_eq!(timestamp(t), "2021-05-19T22:53:47.959498Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn lines_are_escaped_and_cut() {
        let mut e = Entry {
            text: Vec::new(),
            stamp: "T".into(),
        };
        e.line("in", "client", b"a\x00b\xff\\c\r");
        assert_eq!(e.text, b"T in client a\\x00b\\xff\\x5cc\\x0d\n");
        e.text.clear();
        e.line("in", "c", &vec![b'x'; MAX_LOGGED_LINE + 5]);
        assert!(e.text.ends_with(b"... (5 more bytes)\n"));
        e.text.clear();
        e.lines("out", "c", b"one\ntwo\n\n");
        assert_eq!(e.text, b"T out c one\nT out c two\nT out c \n");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut text = b"key=sekrit&x=sekrit".to_vec();
        redact(&mut text, &memchr::memmem::Finder::new(b"sekrit"));
        assert_eq!(text, b"key=[redacted]&x=[redacted]");
        let mut text = b"sekritsekrit".to_vec();
        redact(&mut text, &memchr::memmem::Finder::new(b"sekrit"));
        assert_eq!(text, b"[redacted][redacted]");
        let mut text = b"nothing here".to_vec();
        redact(&mut text, &memchr::memmem::Finder::new(b"sekrit"));
        assert_eq!(text, b"nothing here");
    }

    #[test]
    fn writes_reach_the_file_and_a_bad_dir_does_not_stop_anything() {
        let dir = std::env::temp_dir().join(format!("herd-log-test-{}", std::process::id()));
        let (log, writer) =
            Logger::open(&dir, "Riley", vec!["hunter2-secret".into(), "short".into()]);
        log.event("info", "-", "starting with hunter2-secret and short");
        writer.finish(&log);
        let text = std::fs::read_to_string(dir.join("Riley.log")).unwrap();
        assert!(
            text.ends_with(" info - starting with [redacted] and short\n"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);

        let (log, writer) = Logger::open(Path::new("/proc/no/such/dir"), "X", vec![]);
        log.event("info", "-", "goes nowhere");
        writer.finish(&log);
    }
}
