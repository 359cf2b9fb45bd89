//! The client store: per client, the AT line with the latest client time, and the
//! offset at which this server accepted it. Compact by design (a million clients is a
//! normal day): one 32-byte entry per client in a slab, the AT line shared with the
//! queues that send it, and an index of slab slots hashed by client ID, each beside 32
//! bits of its client's hash, so growing the index never reads a client ID back. The
//! client ID, the receiving server and the client time are read back from the line
//! itself rather than stored twice.

use crate::protocol;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use std::sync::Arc;

/// A report on its way in: an AT line as the receiving server formed it, with where
/// its fields are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The whole AT line, without terminator.
    pub line: Arc<str>,
    /// The client's send time in nanoseconds.
    pub time_ns: i128,
    /// Byte range of the receiving server's name in `line`.
    server: (usize, usize),
    /// Byte range of the client ID in `line`.
    client: (usize, usize),
}

impl Report {
    /// Builds a report from an AT line; `None` if the line is not a valid AT line or is
    /// longer than `protocol::MAX_AT_LINE`.
    pub fn from_line(line: &str) -> Option<Report> {
        if line.len() > protocol::MAX_AT_LINE {
            return None;
        }
        let at = protocol::check_at(line)?;
        let range = |field: &str| {
            let start = field.as_ptr() as usize - line.as_ptr() as usize;
            (start, start + field.len())
        };
        Some(Report {
            server: range(at.server),
            client: range(at.client),
            time_ns: at.time_ns,
            line: line.into(),
        })
    }

    /// The server that received the IAMAT.
    pub fn server(&self) -> &str {
        &self.line[self.server.0..self.server.1]
    }

    /// The client ID.
    pub fn client(&self) -> &str {
        &self.line[self.client.0..self.client.1]
    }

    /// Where the client ID starts in the line, and its length, as an [`Entry`] keeps it
    /// (lines are bounded by `MAX_AT_LINE`, below `u16::MAX`, so both fit).
    fn client_span(&self) -> (u16, u16) {
        (self.client.0 as u16, (self.client.1 - self.client.0) as u16)
    }

    /// True when `self` should replace `old`: a later client time, or the same time from
    /// a server whose name sorts later (so every server breaks ties the same way). A
    /// report equal in both never replaces the stored one.
    pub fn is_newer_than(&self, old: &Report) -> bool {
        (self.time_ns, self.server()) > (old.time_ns, old.server())
    }
}

/// An update read back from a state file, parsed and hashed by a loading thread so
/// that storing it is one probe of the index: 32 bytes, a quarter of what a `Report`
/// and its hash take on the way to the store.
#[derive(Debug)]
pub(crate) struct Stored {
    line: Arc<str>,
    seq: u64,
    /// Where the client ID starts in `line`, and its length.
    client: (u16, u16),
    hash: ClientHash,
}

impl Stored {
    /// Checks `line` with [`Report::from_line`] and hashes its client ID with
    /// `hasher`; `None` if it is not a valid AT line. `seq` is its offset.
    pub(crate) fn from_line(line: &str, seq: u64, hasher: &ClientHasher) -> Option<Stored> {
        let report = Report::from_line(line)?;
        Some(Stored {
            hash: hasher.hash(report.client()),
            client: report.client_span(),
            seq,
            line: report.line,
        })
    }

    /// Its offset.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }
}

/// Where an accepted update came from: this server's clients or state file (0), or
/// link `n - 1`; a link's writer skips the updates its own peer sent.
pub type Origin = u8;

/// One client's entry: 32 bytes.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The AT line (validated on the way in).
    pub(crate) line: Arc<str>,
    /// The offset at which this server accepted it.
    pub(crate) seq: u64,
    /// Where the client ID starts in `line`, and its length.
    client: (u16, u16),
    /// Where it came from.
    pub(crate) from: Origin,
}

impl Entry {
    fn client(&self) -> &str {
        let (start, len) = (self.client.0 as usize, self.client.1 as usize);
        &self.line[start..start + len]
    }
}

/// A stored (so already validated) AT line's order key: its client time and the server
/// that received it, read back from the line (`Report::is_newer_than`'s rule).
fn order_key(line: &str) -> Option<(i128, &str)> {
    let mut fields = protocol::str_fields(line);
    let server = fields.nth(1)?;
    let time = fields.last()?;
    Some((protocol::parse_time(time)?, server))
}

/// A client ID's hash as the index keeps it: 32 bits, stored beside the slot.
pub type ClientHash = u32;

/// Every client's latest report.
#[derive(Default)]
pub struct Store {
    entries: Vec<Entry>,
    /// `(slot, the slot's client hash)`: 8 bytes a client.
    index: HashTable<(u32, ClientHash)>,
    hasher: ClientHasher,
}

/// Hashes client IDs for the index; cheap to clone, so threads loading a state file hash
/// what they parse with the store's own seed.
#[derive(Clone, Default)]
pub struct ClientHasher(DefaultHashBuilder);

impl ClientHasher {
    /// `client`'s hash.
    pub fn hash(&self, client: &str) -> ClientHash {
        self.0.hash_one(client) as ClientHash
    }
}

/// The table's 64-bit hash, spread from the stored 32 bits (hashbrown takes the
/// bucket from the low bits and a tag from the top seven).
fn wide(hash: ClientHash) -> u64 {
    u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    fn find(&self, client: &str) -> Option<u32> {
        let hash = self.hasher.hash(client);
        self.index
            .find(wide(hash), |&(slot, h)| {
                h == hash && self.entries[slot as usize].client() == client
            })
            .map(|&(slot, _)| slot)
    }

    /// Reads the part of the index where a client of hash `hash` would be, and nothing
    /// else, so that a probe for it soon after finds that part in cache; true if a
    /// client of that hash is held.
    pub(crate) fn touch(&self, hash: ClientHash) -> bool {
        self.index.find(wide(hash), |&(_, h)| h == hash).is_some()
    }

    /// The hasher of this store's index.
    pub fn hasher(&self) -> &ClientHasher {
        &self.hasher
    }

    /// Stores `report` if it is newer than what is held for its client, marking it with
    /// offset `seq` and origin `from`; returns its slot if it was stored.
    pub fn update(&mut self, report: Report, seq: u64, from: Origin) -> Option<u32> {
        let hash = self.hasher.hash(report.client());
        self.update_hashed(report, hash, seq, from)
    }

    /// [`Store::update`] for a report whose client ID `hash` is known (from
    /// [`Store::hasher`]): a new client costs one probe of the index, and its line is
    /// moved in, not read.
    pub fn update_hashed(
        &mut self,
        report: Report,
        hash: ClientHash,
        seq: u64,
        from: Origin,
    ) -> Option<u32> {
        let range = report.client_span();
        let entries = &mut self.entries;
        let next = u32::try_from(entries.len()).ok()?;
        let found = self.index.entry(
            wide(hash),
            |&(slot, h)| h == hash && entries[slot as usize].client() == report.client(),
            |&(_, h)| wide(h),
        );
        let slot = match found {
            hashbrown::hash_table::Entry::Occupied(found) => {
                let slot = found.get().0;
                let old = &entries[slot as usize];
                if order_key(&old.line).is_some_and(|old| (report.time_ns, report.server()) <= old)
                {
                    return None;
                }
                slot
            }
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert((next, hash));
                next
            }
        };
        let entry = Entry {
            line: report.line,
            seq,
            client: range,
            from,
        };
        match entries.get_mut(slot as usize) {
            Some(old) => *old = entry,
            None => entries.push(entry),
        }
        Some(slot)
    }

    /// Loads clients in bulk into this (empty) store: for a state file read at start.
    /// `expected`: about how many clients are coming.
    pub(crate) fn loader(&mut self, expected: usize) -> Loader<'_> {
        self.entries.reserve(expected);
        self.index.reserve(expected, |&(_, h)| wide(h));
        // The index's buckets, a power of two (hashbrown keeps capacity at 7/8 of
        // them), and the shift that takes a bucket to its part.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two().max(1);
        let bits = buckets.trailing_zeros();
        let part_bits = bits.min(LOAD_PART_BITS);
        Loader {
            parts: vec![Vec::new(); 1 << part_bits],
            mask: buckets as u64 - 1,
            shift: bits - part_bits,
            store: self,
        }
    }

    /// The stored AT line for `client`.
    pub fn get(&self, client: &str) -> Option<Arc<str>> {
        self.find(client)
            .map(|slot| self.entries[slot as usize].line.clone())
    }

    /// Every stored AT line, in slot order.
    pub fn lines(&self) -> Vec<Arc<str>> {
        self.entries.iter().map(|e| e.line.clone()).collect()
    }

    /// The entry in `slot`.
    pub(crate) fn entry(&self, slot: u32) -> &Entry {
        &self.entries[slot as usize]
    }

    /// The entries from slot `from` on.
    pub(crate) fn entries_from(&self, from: usize) -> &[Entry] {
        self.entries.get(from..).unwrap_or_default()
    }

    /// How many clients are stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no client is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parts the index is built in by a [`Loader`] (as a power of two): each covers a
/// 256th of the index's buckets, small enough to stay in a core's cache.
const LOAD_PART_BITS: u32 = 8;

/// Clients loaded in bulk ([`Store::loader`]). Their entries are pushed as they
/// come; the index is built at the end (`finish`), part by part in bucket order, so
/// that it is written in place, not probed at random: probing 1M clients into it one by
/// one took 240-320 ms of CPU in a 1M-record load (BENCHMARKS.md). A client found twice (a
/// file written since its last compaction) keeps its newer entry.
pub(crate) struct Loader<'a> {
    store: &'a mut Store,
    /// `(slot, hash)` of each entry pushed, by the part of the index its bucket is in.
    parts: Vec<Vec<(u32, ClientHash)>>,
    /// The index's bucket mask, and the shift from a bucket to its part.
    mask: u64,
    shift: u32,
}

impl Loader<'_> {
    /// Adds `stored` to the store; its client may be in it already.
    pub(crate) fn push(&mut self, stored: Stored) {
        let entries = &mut self.store.entries;
        let Ok(slot) = u32::try_from(entries.len()) else {
            return;
        };
        // Within the parts by construction; `min` keeps it so without a panic path.
        let part =
            (((wide(stored.hash) & self.mask) >> self.shift) as usize).min(self.parts.len() - 1);
        self.parts[part].push((slot, stored.hash));
        entries.push(Entry {
            line: stored.line,
            seq: stored.seq,
            client: stored.client,
            from: 0,
        });
    }

    /// Builds the index and drops the older entry of each client pushed twice.
    pub(crate) fn finish(self) {
        let Store {
            entries,
            index,
            hasher,
        } = self.store;
        let mut dropped = Vec::new();
        for (slot, hash) in self.parts.into_iter().flatten() {
            let found = index.entry(
                wide(hash),
                |&(held, h)| {
                    h == hash && entries[held as usize].client() == entries[slot as usize].client()
                },
                |&(_, h)| wide(h),
            );
            match found {
                hashbrown::hash_table::Entry::Occupied(mut held) => {
                    let old = held.get().0;
                    // The newer wins; the same update twice (equal keys) keeps its
                    // higher offset, whichever chunk was stored first.
                    let key = |slot: u32| {
                        let entry = &entries[slot as usize];
                        (order_key(&entry.line), entry.seq)
                    };
                    if key(slot) > key(old) {
                        held.get_mut().0 = slot;
                        dropped.push(old);
                    } else {
                        dropped.push(slot);
                    }
                }
                hashbrown::hash_table::Entry::Vacant(vacant) => {
                    vacant.insert((slot, hash));
                }
            }
        }
        // Highest first, so the last entry, moved into a dropped slot, is always live.
        dropped.sort_unstable();
        for &slot in dropped.iter().rev() {
            let last = entries.len() as u32 - 1;
            if slot != last {
                let hash = hasher.hash(entries[last as usize].client());
                if let Some(held) = index.find_mut(wide(hash), |&(held, _)| held == last) {
                    held.0 = slot;
                }
            }
            entries.swap_remove(slot as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> Report {
        Report::from_line(line).expect("valid AT line")
    }

    #[test]
    fn newer_wins_older_never_replaces() {
        let mut store = Store::new();
        let a = report("AT A +0.000000001 kiwi +1+1 100");
        let b = report("AT B +0.000000001 kiwi +2+2 101");
        let c = report("AT C +0.000000001 kiwi +3+3 100.5");
        assert_eq!(a.client(), "kiwi");
        assert!(store.update(a, 1, 0).is_some());
        assert!(store.update(b.clone(), 2, 0).is_some());
        assert!(store.update(c, 3, 0).is_none());
        assert_eq!(store.get("kiwi"), Some(b.line));
        assert_eq!(store.entry(0).seq, 2);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn equal_times_break_ties_by_server_name_and_keep_the_first() {
        let a = report("AT Alpha +0.000000001 kiwi +1+1 100");
        let z = report("AT Zulu +0.000000001 kiwi +2+2 100.000");
        let a2 = report("AT Alpha +0.000000009 kiwi +9+9 100");
        for order in [[&a, &z], [&z, &a]] {
            let mut store = Store::new();
            for r in order {
                store.update(r.clone(), 1, 0);
            }
            assert_eq!(store.get("kiwi"), Some(z.line.clone()));
        }
        let mut store = Store::new();
        assert!(store.update(a.clone(), 1, 0).is_some());
        assert!(store.update(a2, 2, 0).is_none());
        assert_eq!(store.get("kiwi"), Some(a.line));
        assert_eq!(
            report("AT Alpha +0.000000001 kiwi +1+1 100").server(),
            "Alpha"
        );
    }

    #[test]
    fn a_bulk_load_keeps_the_newer_entry_of_a_client_found_twice() {
        let mut store = Store::new();
        let hasher = store.hasher().clone();
        let line = |i: u32, t: u32| format!("AT A +0.000000001 c{i} +1+1 {t}");
        let stored = |i, t| Stored::from_line(&line(i, t), u64::from(t), &hasher).unwrap();
        let mut loader = store.loader(1000);
        for i in 0..3000 {
            // Every third client twice: the newer first for some, last for others.
            match i % 6 {
                0 => {
                    loader.push(stored(i, 5));
                    loader.push(stored(i, 2));
                }
                3 => {
                    loader.push(stored(i, 2));
                    loader.push(stored(i, 5));
                }
                _ => loader.push(stored(i, 1)),
            }
        }
        loader.finish();
        assert_eq!(store.len(), 3000);
        for i in 0..3000 {
            let t = if i % 3 == 0 { 5 } else { 1 };
            assert_eq!(
                store.get(&format!("c{i}")).as_deref(),
                Some(line(i, t).as_str())
            );
        }
        // The index and the slab agree: an update after the load replaces in place.
        let slot = store.update(report(&line(7, 9)), 10, 0).unwrap();
        assert_eq!(store.entry(slot).line.as_ref(), line(7, 9));
        assert_eq!(store.len(), 3000);
        let every: std::collections::HashSet<_> = store.lines().into_iter().collect();
        assert_eq!(every.len(), 3000);
    }

    #[test]
    fn many_clients_each_keep_their_own_line() {
        let mut store = Store::new();
        for i in 0..10_000 {
            let line = format!("AT A +0.000000001 client-{i} +1+1 {i}");
            assert_eq!(store.update(report(&line), i, 0), Some(i as u32));
        }
        assert_eq!(store.len(), 10_000);
        assert_eq!(
            store.get("client-1234").as_deref(),
            Some("AT A +0.000000001 client-1234 +1+1 1234")
        );
        assert_eq!(store.get("client-10000"), None);
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }
}
