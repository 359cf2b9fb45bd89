//! The durable log (`state-dir`): an append-only file of records, each with a CRC-32,
//! written before an update's AT reply or its forwarding goes out, so `kill -9` loses
//! nothing a client was told. On start the file is replayed (newer wins, so order does
//! not matter); a torn tail is cut off, and a record that fails its checksum or does
//! not parse is dropped and counted, never a reason to refuse to start. Once the file
//! grows past `COMPACT_RATIO` times the live data it is compacted: a snapshot written
//! aside, then renamed over it.
//!
//! Records, one per line, `CRC32HEX TEXT\n` with the checksum over TEXT:
//!
//! ```text
//! U <offset> <AT line>                  an update, accepted at that offset
//! H <history>                           this server's history (wire::History)
//! C <peer> <history> <offset>           what this server holds of a peer's updates
//! <AT line>                             an update written by herd before offsets (offset 0)
//! ```
//!
//! Only the replica's disk thread touches the file, so no lock is needed and
//! no fsync ever waits under a lock that connections take.

use crate::wire::{Cursor, History};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Compact when the file holds this many times as many records as there are live
/// clients: each record is then rewritten a bounded number of times (amortised O(1)
/// per update), a restart reads at most twice the live data, and a file that only grows
/// with new clients (a server filling up after coming back empty) is never rewritten.
pub const COMPACT_RATIO: u64 = 2;

/// Never compact a file smaller than this: rewriting a few MB buys nothing.
pub const MIN_COMPACT_BYTES: u64 = 4 << 20;

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// An update (an AT line) accepted at `offset` (0: written before offsets).
    Update {
        /// The offset in this server's history.
        offset: u64,
        /// The AT line.
        line: &'a str,
    },
    /// This server's history.
    History(History),
    /// What this server holds of `peer`'s updates.
    Cursor {
        /// The peer's name.
        peer: &'a str,
        /// Its history and offset.
        cursor: Cursor,
    },
}

/// Appends one record's bytes to `out`.
pub fn write_record(out: &mut Vec<u8>, record: &Record<'_>) {
    let start = out.len() + 9;
    out.extend_from_slice(b"00000000 ");
    match record {
        // Every update a server accepts is written here: its record is put together
        // without `fmt` (formatting was 3 % of a full resync's CPU, BENCHMARKS.md).
        Record::Update { offset, line } => {
            out.extend_from_slice(b"U ");
            crate::protocol::push_decimal(out, *offset, 1);
            out.push(b' ');
            out.extend_from_slice(line.as_bytes());
        }
        // Writing to a Vec cannot fail.
        Record::History(h) => {
            let _ = write!(out, "H {h}");
        }
        Record::Cursor { peer, cursor } => {
            let _ = write!(out, "C {peer} {} {}", cursor.history, cursor.offset);
        }
    }
    let crc = crc32fast::hash(&out[start..]);
    for (i, digit) in out[start - 9..start - 1].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(crc >> (28 - 4 * i) & 0xf) as usize];
    }
    out.push(b'\n');
}

/// One record's bytes, as a string (for tests and tools).
pub fn record(record: &Record<'_>) -> String {
    let mut out = Vec::new();
    write_record(&mut out, record);
    String::from_utf8(out).unwrap_or_default()
}

/// What parsing a state file found besides its records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// Length of the file up to its torn tail (the whole file if none).
    pub valid: usize,
    /// Bytes of a last record with no newline (cut off).
    pub torn: usize,
    /// Records dropped for a bad checksum or text, and the byte offset of the first.
    pub dropped: usize,
    /// Where the first dropped record starts.
    pub first_dropped_at: Option<usize>,
}

/// Parses state-file bytes, calling `visit` for every valid record in file order.
/// Bad records are skipped and counted; a last record with no newline is torn.
pub fn parse<'a>(bytes: &'a [u8], mut visit: impl FnMut(Record<'a>)) -> Damage {
    let mut damage = Damage::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(len) = memchr::memchr(b'\n', &bytes[pos..]) else {
            damage.torn = bytes.len() - pos;
            break;
        };
        match parse_record(&bytes[pos..pos + len]) {
            Some(record) => visit(record),
            None => {
                damage.dropped += 1;
                damage.first_dropped_at.get_or_insert(pos);
            }
        }
        pos += len + 1;
    }
    damage.valid = bytes.len() - damage.torn;
    damage
}

/// `s` split at its first space (found by `memchr`: `str::split_once` searching for a
/// `char` was 5 % of a 1M-record load's profile).
fn split_space(s: &str) -> Option<(&str, &str)> {
    let i = memchr::memchr(b' ', s.as_bytes())?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

fn parse_record(rec: &[u8]) -> Option<Record<'_>> {
    let text = std::str::from_utf8(rec).ok()?;
    let (crc, body) = split_space(text)?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
        return None;
    }
    let (kind, rest) = split_space(body)?;
    match kind {
        "U" => {
            let (offset, line) = split_space(rest)?;
            line.starts_with("AT ").then_some(())?;
            Some(Record::Update {
                offset: offset.parse().ok()?,
                line,
            })
        }
        "H" => Some(Record::History(History::parse(rest)?)),
        "C" => {
            let mut words = rest.split(' ');
            let (peer, history, offset) = (words.next()?, words.next()?, words.next()?);
            words.next().is_none().then_some(())?;
            Some(Record::Cursor {
                peer,
                cursor: Cursor {
                    history: History::parse(history)?,
                    offset: offset.parse().ok()?,
                },
            })
        }
        "AT" => Some(Record::Update {
            offset: 0,
            line: body,
        }),
        _ => None,
    }
}

/// The length of the whole records of a file of `len` bytes: up to its last newline,
/// found by reading back from the end a block at a time.
fn whole_records(file: &File, len: u64) -> io::Result<u64> {
    const BLOCK: u64 = 64 << 10;
    let mut end = len;
    let mut buf = vec![0; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &mut buf[..(end - start) as usize];
        file.read_exact_at(block, start)?;
        if let Some(i) = memchr::memrchr(b'\n', block) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// A server's state file, owned by one thread.
pub struct State {
    path: PathBuf,
    file: File,
    /// Bytes in the file now.
    size: u64,
    /// Records in the file (each ends with the one newline it holds).
    records: u64,
    /// Appended since the last sync.
    dirty: bool,
}

impl State {
    /// Opens (creating) `dir/NAME.state` and returns it with the length of its whole
    /// records (`Damage::valid`) and its torn tail (`Damage::torn`, cut off here); the
    /// caller reads the records (`read_at`) and parses them, once. Only an unreadable
    /// or unwritable file is an error.
    pub fn open(dir: &Path, name: &str) -> io::Result<(State, Damage)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.state"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        let valid = whole_records(&file, len)?;
        let damage = Damage {
            valid: valid as usize,
            torn: (len - valid) as usize,
            ..Damage::default()
        };
        if damage.torn > 0 {
            file.set_len(valid)?;
            file.sync_data()?;
        }
        let state = State {
            path,
            file,
            size: valid,
            // Set by the caller, who parses the records (`set_records`).
            records: 0,
            dirty: false,
        };
        Ok((state, damage))
    }

    /// Fills `buf` with the file's bytes from byte `at` on (any thread may read).
    pub fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, at)
    }

    /// Tells the file how many records (lines, valid or not) it held when opened, as
    /// the caller's parse counted them; compaction is decided on it.
    pub fn set_records(&mut self, records: u64) {
        self.records = records;
    }

    /// Appends records' bytes in one write.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        self.records += memchr::memchr_iter(b'\n', bytes).count() as u64;
        self.dirty = true;
        Ok(())
    }

    /// True once the file holds more than `COMPACT_RATIO` records per live client
    /// (`live`: the clients the server holds now) and is past `MIN_COMPACT_BYTES`.
    pub fn wants_compaction(&self, live: u64) -> bool {
        self.size > MIN_COMPACT_BYTES && self.records > COMPACT_RATIO * live.max(1)
    }

    /// Writes `snapshot` (records' bytes) to a temporary file, syncs it, and renames it
    /// over the state file.
    pub fn compact(&mut self, snapshot: &[u8]) -> io::Result<()> {
        let tmp = self.path.with_extension("state.tmp");
        let mut out = File::create(&tmp)?;
        out.write_all(snapshot)?;
        out.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable; not every filesystem allows it.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.size = snapshot.len() as u64;
        self.records = memchr::memchr_iter(b'\n', snapshot).count() as u64;
        self.dirty = false;
        Ok(())
    }

    /// Forces what was appended to disk (fsync), if anything was since the last sync.
    pub fn sync(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.dirty) {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The file's current size in bytes.
    pub fn size(&self) -> u64 {
        self.size
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

    fn update(offset: u64, line: &str) -> Record<'_> {
        Record::Update { offset, line }
    }

    /// The whole records of an opened file, as `read_at` gives them.
    fn contents(state: &State, damage: &Damage) -> Vec<u8> {
        let mut bytes = vec![0; damage.valid];
        state.read_at(&mut bytes, 0).unwrap();
        bytes
    }

    fn all(bytes: &[u8]) -> (Vec<Record<'_>>, Damage) {
        let mut records = Vec::new();
        let damage = parse(bytes, |r| records.push(r));
        (records, damage)
    }

    #[test]
    fn every_kind_of_record_round_trips() {
        let cursor = Cursor {
            history: History(7),
            offset: 1 << 33,
        };
        let records = [
            Record::History(History(0xabc)),
            update(5, A),
            update(u64::MAX, B),
            update(1_000_000_007, A),
            Record::Cursor {
                peer: "Jaquez",
                cursor,
            },
        ];
        let mut bytes = Vec::new();
        for r in &records {
            write_record(&mut bytes, r);
        }
        // A record of herd before offsets still loads, at offset 0.
        bytes.extend_from_slice(format!("{:08x} {B}\n", crc32fast::hash(B.as_bytes())).as_bytes());
        let (got, damage) = all(&bytes);
        assert_eq!(got[..5], records);
        assert_eq!(got[5], update(0, B));
        assert!(record(&update(1_000_000_007, A)).contains(" U 1000000007 AT "));
        assert_eq!(damage.valid, bytes.len());
        assert_eq!((damage.torn, damage.dropped), (0, 0));
    }

    #[test]
    fn appended_records_come_back() {
        let d = dir("back");
        let (mut state, damage) = State::open(&d, "A").unwrap();
        assert_eq!(damage.valid, 0);
        let mut out = Vec::new();
        write_record(&mut out, &update(1, A));
        write_record(&mut out, &update(2, B));
        state.append(&out).unwrap();
        state.sync().unwrap();
        drop(state);
        let (state, damage) = State::open(&d, "A").unwrap();
        assert_eq!(
            all(&contents(&state, &damage)).0,
            [update(1, A), update(2, B)]
        );
        assert_eq!(damage.torn + damage.dropped, 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_bad_record_is_dropped_alone() {
        let whole = format!("{}{}", record(&update(1, A)), record(&update(2, B)));
        // Torn: the last record has no newline; it is cut from the file.
        let d = dir("torn");
        std::fs::create_dir_all(&d).unwrap();
        let torn = &whole[..whole.len() - 3];
        std::fs::write(d.join("A.state"), torn).unwrap();
        let (mut state, damage) = State::open(&d, "A").unwrap();
        assert_eq!(all(&contents(&state, &damage)).0, [update(1, A)]);
        assert_eq!(damage.torn, torn.len() - record(&update(1, A)).len());
        assert_eq!(state.size() + damage.torn as u64, torn.len() as u64);
        state.append(record(&update(3, B)).as_bytes()).unwrap();
        drop(state);
        let (state, again) = State::open(&d, "A").unwrap();
        assert_eq!(
            all(&contents(&state, &again)).0,
            [update(1, A), update(3, B)]
        );
        assert_eq!(again.torn + again.dropped, 0);
        // A torn tail longer than the blocks the end is searched back in.
        let long = format!("{}{}", record(&update(1, A)), "y".repeat(150_000));
        std::fs::write(d.join("A.state"), &long).unwrap();
        let (state, damage) = State::open(&d, "A").unwrap();
        assert_eq!(all(&contents(&state, &damage)).0, [update(1, A)]);
        assert_eq!((damage.valid, damage.torn), (long.len() - 150_000, 150_000));
        let _ = std::fs::remove_dir_all(&d);
        // Corrupt in the middle: that record alone is dropped, the rest still load.
        for damaged in [
            format!("{}{}", whole.replace("kiwi", "kiwo"), record(&update(3, B))),
            format!("zzzzzzzz junk\n{whole}"),
            format!("\u{0}\u{0}\n{whole}"),
        ] {
            let (got, damage) = all(damaged.as_bytes());
            assert_eq!(damage.dropped, 1, "{damaged:?}");
            assert!(got.contains(&update(2, B)), "{damaged:?}");
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
            b"00000000 U x AT\n",
            &[0u8; 100],
        ] {
            let (records, _) = all(junk);
            assert!(records.is_empty(), "{junk:?}");
        }
    }

    #[test]
    fn compaction_replaces_the_file() {
        let d = dir("compact");
        let (mut state, _) = State::open(&d, "A").unwrap();
        let one = record(&update(1, A));
        let many = one.repeat((MIN_COMPACT_BYTES as usize / one.len()) + 10);
        state.append(many.as_bytes()).unwrap();
        // Every record a live client's (a file that only grew): nothing to gain.
        let records = many.len() / one.len();
        assert!(!state.wants_compaction(records as u64));
        assert!(state.wants_compaction(records as u64 / 2 - 1));
        state.compact(one.as_bytes()).unwrap();
        assert!(!state.wants_compaction(1));
        state.append(record(&update(2, B)).as_bytes()).unwrap();
        drop(state);
        let (state, damage) = State::open(&d, "A").unwrap();
        assert_eq!(
            all(&contents(&state, &damage)).0,
            [update(1, A), update(2, B)]
        );
        assert!(!d.join("A.state.tmp").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
