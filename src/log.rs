//! The server's log (SPEC §7): `LOG_DIR/NAME.log`, every line in and out and every
//! link event, timestamped. Connections format entries and hand them to one writer
//! thread through a bounded channel, so logging never blocks a reply; a log that cannot
//! be written is reported on stderr and service goes on.
//!
//! The writer thread also bounds the log: past [`Rotation::max_bytes`] it renames
//! `NAME.log` to `NAME.log.1` (and `.1` to `.2`, ...), keeps [`Rotation::keep`] old files
//! and notes in the new file what it removed. On SIGHUP (or [`Logger::reopen`]) it
//! reopens `NAME.log`, so an outside logrotate can move the file away.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Batches of log text that may wait for the writer. Each batch is one connection's
/// read (often many lines), so this holds a few MB at most; past it, lines are dropped
/// and counted rather than delaying a reply. The queue is an unbounded channel checked
/// against this length: a bounded one allocates and writes all its slots up front
/// (128 KB a server, idle or not), where this one holds blocks only for what waits.
pub const LOG_QUEUE: usize = 4096;

/// Longest stretch of one logged line; the rest is elided so one abusive line cannot
/// fill the disk 1 MiB at a time.
pub const MAX_LOGGED_LINE: usize = 1024;

/// How long the writer lets entries gather after each write: a busy server's lines
/// reach the file at most this much later, in one write and one wake-up per interval
/// rather than one per entry (the thread wake-up cost more than the write).
pub const LOG_COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

/// Secrets shorter than this are not scrubbed from the log: herd never writes a secret
/// there anyway, and scrubbing a short common word would mangle client IDs.
pub const MIN_SCRUBBED_SECRET: usize = 8;

/// Default [`Rotation::max_bytes`]: 64 MiB holds about 150,000 updates of a classic
/// herd server (~450 bytes each), and 64 MiB × (1 + 4 kept) bounds a server's logs at
/// 320 MiB, which a small disk can spare for five servers.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 64 << 20;

/// Default [`Rotation::keep`]: enough history to look back over a busy stretch.
pub const DEFAULT_LOG_KEEP: usize = 4;

/// Most rotated files kept: the writer renames each one at every rotation.
pub const MAX_LOG_KEEP: usize = 1000;

/// How big a log may grow and how many rotated files are kept (herd.conf `log-max-bytes`
/// and `log-keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes a log file may hold before it is rotated; 0 never rotates (for an outside
    /// logrotate). A file exceeds it only by a single batch larger than the bound.
    pub max_bytes: u64,
    /// Rotated files kept beside `NAME.log` (`NAME.log.1` the newest); 0 keeps none, so
    /// the log starts over empty each time it fills.
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: DEFAULT_LOG_MAX_BYTES,
            keep: DEFAULT_LOG_KEEP,
        }
    }
}

/// A handle for writing to a server's log; cheap to clone.
#[derive(Clone)]
pub struct Logger {
    tx: async_channel::Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
}

/// Owns the writer thread (and the thread that turns SIGHUP into a reopen); `finish`
/// flushes what is queued.
pub struct LogWriter {
    thread: Option<JoinHandle<()>>,
    hup: Option<(signal_hook::iterator::Handle, JoinHandle<()>)>,
}

impl LogWriter {
    /// Closes the log to every handle and waits until what is queued is written.
    pub fn finish(mut self, logger: &Logger) {
        logger.tx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some((handle, thread)) = self.hup.take() {
            handle.close();
            let _ = thread.join();
        }
    }
}

impl Logger {
    /// [`Logger::open_with`] with the default [`Rotation`].
    pub fn open(dir: &Path, name: &str, secrets: Vec<String>) -> (Logger, LogWriter) {
        Logger::open_with(dir, name, secrets, Rotation::default())
    }

    /// Opens (appending) `dir/NAME.log`, creating `dir` if missing, and starts the writer,
    /// which rotates the file as `rotation` says and reopens it on SIGHUP. `secrets` are
    /// scrubbed from every line as a last line of defence. Failing to open is reported
    /// on stderr; the server then runs with logging discarded until a reopen succeeds.
    pub fn open_with(
        dir: &Path,
        name: &str,
        secrets: Vec<String>,
        rotation: Rotation,
    ) -> (Logger, LogWriter) {
        let path = dir.join(format!("{name}.log"));
        // A folder that cannot be made shows as the file failing to open, said once.
        let _ = std::fs::create_dir_all(dir);
        let sink = Sink::open(path, rotation);
        let (tx, rx) = async_channel::unbounded::<Vec<u8>>();
        let logger = Logger {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        let secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SCRUBBED_SECRET)
            .map(String::into_bytes)
            .collect();
        let (dropped, reopen) = (logger.dropped.clone(), logger.reopen.clone());
        let thread = std::thread::Builder::new()
            .name("herd-log".into())
            .spawn(move || write_loop(sink, &rx, &dropped, &reopen, &secrets))
            .ok();
        let hup = logger.reopen_on_sighup();
        (logger, LogWriter { thread, hup })
    }

    /// Starts the thread that turns each SIGHUP into [`Logger::reopen`]. It blocks in
    /// signal-hook's self-pipe read, so it costs no wake-up until a signal comes; every
    /// log of the process gets its own registration.
    fn reopen_on_sighup(&self) -> Option<(signal_hook::iterator::Handle, JoinHandle<()>)> {
        let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("herd: cannot handle SIGHUP ({e}); the log is not reopened on it");
                return None;
            }
        };
        let handle = signals.handle();
        let logger = self.clone();
        let thread = std::thread::Builder::new()
            .name("herd-log-hup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    logger.reopen();
                }
            })
            .ok()?;
        Some((handle, thread))
    }

    /// Asks the writer to close and reopen `NAME.log` before it writes again (what
    /// SIGHUP does), so a log moved away by logrotate is followed by a fresh one.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // An empty batch wakes the writer; sent past `LOG_QUEUE`, as a full queue wakes
        // it anyway.
        let _ = self.tx.try_send(Vec::new());
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
        if self.tx.len() >= LOG_QUEUE || self.tx.try_send(entry.text).is_err() {
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
        // Nearly every line is plain: one pass with no early exit (checked many bytes
        // at a time) lets it be copied whole.
        if shown.iter().fold(true, |all, b| all & plain(b)) {
            self.text.extend_from_slice(shown);
            shown = &[];
        }
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
    mut sink: Sink,
    rx: &async_channel::Receiver<Vec<u8>>,
    dropped: &AtomicU64,
    reopen: &AtomicBool,
    secrets: &[Vec<u8>],
) {
    let finders: Vec<memchr::memmem::Finder<'_>> =
        secrets.iter().map(memchr::memmem::Finder::new).collect();
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv_blocking() {
        batch.clear();
        batch.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            batch.extend_from_slice(&more);
            if batch.len() > MAX_BATCH {
                break;
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note = format!(
                "{} log - {lost} log entries dropped: the log writer fell behind\n",
                timestamp(SystemTime::now())
            );
            batch.extend_from_slice(note.as_bytes());
        }
        for secret in &finders {
            redact(&mut batch, secret);
        }
        if reopen.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
        if !batch.is_empty() {
            sink.write(&batch);
        }
        // Let a burst gather before the next write: one wake-up and one write per
        // LOG_COALESCE of traffic instead of one per entry. Only after a write, so an
        // idle server's log thread sleeps in `recv_blocking` and never wakes.
        std::thread::sleep(LOG_COALESCE);
    }
}

/// Most bytes the writer gathers into one write: large enough that a busy server's
/// log costs few syscalls, small enough to hold in memory twice over.
const MAX_BATCH: usize = 1 << 20;

/// The open log file, its size, and what rotation has removed so far.
struct Sink {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    rotation: Rotation,
    /// Bytes and files rotation has deleted since the server started.
    removed: (u64, u64),
    /// Whether the last write or rotation failed (said once on stderr per run of failures).
    failing: bool,
}

impl Sink {
    fn open(path: PathBuf, rotation: Rotation) -> Sink {
        let mut sink = Sink {
            path,
            file: None,
            size: 0,
            rotation,
            removed: (0, 0),
            failing: false,
        };
        sink.reopen();
        sink
    }

    /// (Re)opens `NAME.log` for appending; its size counts towards the bound.
    fn reopen(&mut self) {
        self.file = None;
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(file) => {
                self.size = file.metadata().map_or(0, |m| m.len());
                self.file = Some(file);
            }
            Err(e) => self.trouble(&format!("cannot open log {}: {e}", self.path.display())),
        }
    }

    /// Appends `batch`, rotating first if it would take the file past the bound.
    fn write(&mut self, batch: &[u8]) {
        let bound = self.rotation.max_bytes;
        if bound > 0 && self.size > 0 && self.size + batch.len() as u64 > bound {
            self.rotate();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(batch) {
            Ok(()) => {
                self.size += batch.len() as u64;
                if std::mem::take(&mut self.failing) {
                    eprintln!("herd: log {} is writable again", self.path.display());
                }
            }
            Err(e) => self.trouble(&format!(
                "cannot write log {}: {e}; service goes on",
                self.path.display()
            )),
        }
    }

    /// `NAME.log.(keep-1)` → `NAME.log.keep`, ..., `NAME.log` → `NAME.log.1`, dropping
    /// what falls off the end, then a fresh `NAME.log` that starts with a note of it.
    fn rotate(&mut self) {
        self.file = None;
        let keep = self.rotation.keep;
        let numbered = |n: usize| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let oldest = if keep == 0 {
            self.path.clone()
        } else {
            numbered(keep)
        };
        let (mut bytes, mut files) = (0, 0);
        if let Ok(meta) = std::fs::metadata(&oldest) {
            if std::fs::remove_file(&oldest).is_ok() {
                (bytes, files) = (meta.len(), 1);
            }
        }
        let mut moved = Ok(());
        for n in (1..keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => moved = Err(e),
                _ => {}
            }
        }
        if keep > 0 {
            moved = moved.and(std::fs::rename(&self.path, numbered(1)));
        }
        self.removed.0 += bytes;
        self.removed.1 += files;
        self.reopen();
        if let Err(e) = moved {
            self.trouble(&format!(
                "cannot rotate log {}: {e}; it grows past log-max-bytes",
                self.path.display()
            ));
        }
        let note = format!(
            "{} log - rotated at {} bytes, keeping {keep} old files: removed {bytes} bytes in {files} files now, {} bytes in {} files since start\n",
            timestamp(SystemTime::now()),
            self.rotation.max_bytes,
            self.removed.0,
            self.removed.1,
        );
        if let Some(file) = self.file.as_mut() {
            if file.write_all(note.as_bytes()).is_ok() {
                self.size += note.len() as u64;
            }
        }
    }

    /// Says on stderr what went wrong, once per run of failures.
    fn trouble(&mut self, message: &str) {
        if !std::mem::replace(&mut self.failing, true) {
            eprintln!("herd: {message}");
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
    // Once per batch of lines: put together without `fmt`.
    let mut s = Vec::with_capacity(27);
    let year = u64::try_from(y).unwrap_or(0);
    let fields = [
        (year, 4, b'-'),
        (u64::from(m), 2, b'-'),
        (u64::from(day), 2, b'T'),
        (rem / 3600, 2, b':'),
        (rem % 3600 / 60, 2, b':'),
        (rem % 60, 2, b'.'),
        (u64::from(d.subsec_micros()), 6, b'Z'),
    ];
    for (value, width, then) in fields {
        crate::protocol::push_decimal(&mut s, value, width);
        s.push(then);
    }
    String::from_utf8(s).unwrap_or_default()
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

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("herd-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Numbered lines `line N` in a log's text, notes left out.
    fn numbers(text: &str) -> Vec<usize> {
        text.lines()
            .filter_map(|l| l.split_once(" line ").map(|(_, n)| n.parse().unwrap()))
            .collect()
    }

    #[test]
    fn rotation_keeps_the_bound_and_the_newest_lines() {
        let dir = temp_dir("rotate");
        let path = dir.join("R.log");
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        let mut sink = Sink::open(path.clone(), rotation);
        let mut written = 0;
        for n in 0..200 {
            let line = format!("{} in client line {n}\n", timestamp(SystemTime::now()));
            written += line.len() as u64;
            sink.write(line.as_bytes());
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let old = |n: usize| dir.join(format!("R.log.{n}"));
        assert!(old(1).exists() && old(2).exists() && !old(3).exists());
        let files = [old(2), old(1), path.clone()];
        let texts: Vec<String> = files.iter().map(|p| read(p)).collect();
        for (p, text) in files.iter().zip(&texts) {
            assert!(
                text.len() <= 1000,
                "{} holds {} bytes",
                p.display(),
                text.len()
            );
        }
        // Kept lines run without a gap up to the last one written.
        let kept: Vec<usize> = texts.iter().flat_map(|t| numbers(t)).collect();
        assert_eq!(kept.last(), Some(&199));
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        assert!(kept.len() > 20);
        // The newest file starts with the note of what the last rotation removed.
        let note = texts[2].lines().next().unwrap();
        assert!(
            note.contains(" log - rotated at 1000 bytes, keeping 2 old files: removed "),
            "{note}"
        );
        // What the notes say was removed is what was written and is no longer on disk.
        let (_, since) = note.split_once(" now, ").unwrap();
        let since: Vec<u64> = since.split(' ').filter_map(|w| w.parse().ok()).collect();
        let (bytes, files) = (since[0], since[1]);
        let rotations = files + 2;
        let on_disk: u64 = texts.iter().map(|t| t.len() as u64).sum();
        let notes = rotations * note.len() as u64;
        let lost = (written + notes).abs_diff(on_disk + bytes);
        // Notes differ from the newest one only in their counts' digits.
        assert!(
            lost < 8 * rotations,
            "{bytes} bytes in {files} files, {lost}"
        );
        assert!(files >= 5, "{files}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keeping_no_files_starts_the_log_over() {
        let dir = temp_dir("keep0");
        let path = dir.join("R.log");
        let mut sink = Sink::open(
            path.clone(),
            Rotation {
                max_bytes: 500,
                keep: 0,
            },
        );
        for n in 0..100 {
            sink.write(format!("T in client line {n}\n").as_bytes());
        }
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["R.log"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("T in client line 99\n"), "{text}");
        assert!(text.contains("keeping 0 old files: removed "), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_bound_means_no_rotation() {
        let dir = temp_dir("unbounded");
        let mut sink = Sink::open(
            dir.join("R.log"),
            Rotation {
                max_bytes: 0,
                keep: 4,
            },
        );
        for n in 0..100 {
            sink.write(format!("T in client line {n}\n").as_bytes());
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_follows_a_log_moved_away() {
        let dir = temp_dir("reopen");
        let path = dir.join("R.log");
        let (log, writer) = Logger::open(&dir, "R", vec![]);
        log.event("in", "client", "before the move");
        wait_for(&path, "before the move");
        std::fs::rename(&path, dir.join("R.log.moved")).unwrap();
        log.reopen();
        log.event("in", "client", "after the move");
        writer.finish(&log);
        let moved = std::fs::read_to_string(dir.join("R.log.moved")).unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(moved.contains("before the move") && !moved.contains("after the move"));
        assert!(fresh.contains("after the move") && !fresh.contains("before the move"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Waits (at most 10 s) until the file at `path` contains `needle`.
    fn wait_for(path: &Path, needle: &str) -> String {
        for _ in 0..500 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} never said {needle}", path.display());
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
