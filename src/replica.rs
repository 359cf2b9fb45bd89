//! Replication: the client store, the durable log, the update policy (decide, persist,
//! flood) and each link's catch-up (SPEC §5). The design follows Redis replication:
//! every update this server accepts gets the next *offset* of its *history*; a
//! *backlog* keeps the most recent offsets; a link's writer streams from its cursor in
//! the backlog; a peer that reconnects says how far it got ("partial resync") and gets
//! only what it missed; when the backlog no longer reaches back that far, the writer
//! scans the store instead (Serf's push/pull), still sending only updates past the
//! peer's offset, so the bytes follow the updates missed, not the clients held.
//!
//! Offsets are published in order: an update is *decided* (stored, offset assigned)
//! under the lock, made durable, then *published*; the published offset is the highest
//! below which nothing is still on its way to disk, and writers never send past it, so
//! a peer's cursor never skips an update. Each start of a server opens a new epoch of
//! offsets (the high 32 bits), so an offset a peer holds from before a crash can never
//! cover an update this server makes after it, even if the crash lost the state file's
//! tail.

use crate::log::Logger;
use crate::state::{self, Record, State};
use crate::store::{ClientHash, ClientHasher, Origin, Report, Store, Stored};
use crate::wire::{Cursor, History};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Offsets kept in the backlog, 16 bytes each (16 MiB at most). A peer that was away
/// for fewer updates than this catches up from the backlog; past it, from a scan of
/// the store. At 150,000 updates/s this is seven seconds of updates.
pub const BACKLOG: usize = 1 << 20;

/// Wake-ups that may wait for one link's writer (its bounded channel). The updates
/// themselves wait in the backlog, so one pending wake-up says all there is to say.
pub const PEER_QUEUE: usize = 1;

/// Store entries examined per catch-up step of a scan, so the lock is held for about
/// a millisecond at a time however many clients are held.
const SCAN_STEP: usize = 32 * 1024;

/// A peer's cursor that arrives with no accepted update is still written to the state
/// file once it has moved this many offsets, bounding what a restart asks again.
const CURSOR_PERSIST_EVERY: u64 = 10_000;

/// Offsets a start advances by: one epoch, the high 32 bits.
const EPOCH: u64 = 1 << 32;

/// Longest a link of a server that started empty holds its `HERD-RESYNC` while its
/// bootstrap runs (a million clients take a few seconds); the peer waits for it that
/// long plus its handshake timeout. The link carries nothing meanwhile: the source's
/// updates reach the peer on their own way, this server's after the hold.
pub const BOOTSTRAP_HOLD: Duration = Duration::from_secs(20);

/// Most `HERD-HOLDS` lines a peer may send at link-up (more, and the link is refused),
/// and most `HERD-COVERS` lines kept of one full resync (more are dropped, but for the
/// sender's own history, which comes last). A server sends at most `MAX_COVERS - 1`
/// of its cursors either way (`Inner::sorted_cursors`), so what one server sends its
/// peers accept, however many servers the herd has; a cursor left out only costs a peer
/// some updates it already holds.
pub const MAX_COVERS: usize = 256;

struct Inner {
    store: Store,
    /// `(offset, slot, origin)` of recent updates, in offset order.
    backlog: VecDeque<(u64, u32, Origin)>,
    /// Every offset above this one is in the backlog.
    backlog_from: u64,
    /// Offsets the backlog keeps: `BACKLOG` (smaller in tests, to cross it).
    backlog_cap: usize,
    next_offset: u64,
    /// Offsets decided but not yet published.
    pending: BTreeSet<u64>,
    /// What this server holds of each peer's updates, and what of it is on disk.
    cursors: HashMap<String, (Cursor, u64)>,
}

impl Inner {
    /// The peers' cursors by peer name, the first `MAX_COVERS - 1` of them (room for
    /// the own history that ends a set of `HERD-COVERS`).
    fn sorted_cursors(&self) -> Vec<(String, Cursor)> {
        let mut all: Vec<_> = self
            .cursors
            .iter()
            .map(|(peer, (cursor, _))| (peer.clone(), *cursor))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.truncate(MAX_COVERS - 1);
        all
    }

    fn published(&self) -> u64 {
        match self.pending.first() {
            Some(first) => first - 1,
            None => self.next_offset - 1,
        }
    }
}

/// The end of a bootstrap: its source, the last offset the source brought, and what
/// it covers (the source's cursors, its own history last).
struct BootEnd {
    source: Origin,
    until: u64,
    covers: Vec<(String, Cursor)>,
}

/// What one batch of lines decided: accepted updates, and a peer's cursor.
#[derive(Default)]
pub struct Batch {
    accepted: Vec<(u64, Arc<str>)>,
    cursor: Option<(String, Cursor)>,
    /// The end of the bootstrap, once its source's `HERD-COVERS` set is complete.
    boot: Option<BootEnd>,
    /// Set once an update is decided, so a batch dropped before its commit finished
    /// (its task cancelled) still publishes its offsets rather than stall every link.
    replica: Option<Arc<Mutex<Inner>>>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(inner) = &self.replica {
            let mut inner = lock(inner);
            for (offset, _) in &self.accepted {
                inner.pending.remove(offset);
            }
        }
    }
}

impl Batch {
    /// True when there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.cursor.is_none() && self.boot.is_none()
    }
}

/// A link writer's position: it has sent every update up to `offset` (or, during a
/// scan, is sending those up to the scan's target).
#[derive(Debug, Default)]
pub struct Feed {
    offset: u64,
    /// `(next slot, target offset)` while scanning the store.
    scan: Option<(usize, u64)>,
    /// For a full resync: what it brings (this server's cursors when the scan began,
    /// then its own history up to the scan's target), to send once it is done.
    covers: Option<Vec<(String, Cursor)>>,
    /// Updates from this origin up to this offset are not sent: the peer holds them
    /// (see `Replica::bootstrap_skip`).
    skip_source: Option<(Origin, u64)>,
}

impl Feed {
    /// A feed from `offset` on (see `Replica::start_offset`).
    pub fn from(offset: u64) -> Feed {
        Feed {
            offset,
            ..Feed::default()
        }
    }

    /// Everything up to here has been handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Leaves out the updates from `origin` up to offset `until`.
    pub fn skip_source(&mut self, skip: Option<(Origin, u64)>) {
        self.skip_source = skip;
    }

    /// Once a full resync's scan is done: the `HERD-COVERS` it owes the peer, once.
    pub fn take_covers(&mut self) -> Option<Vec<(String, Cursor)>> {
        if self.scan.is_some() {
            return None;
        }
        self.covers.take()
    }

    fn skips(&self, from: Origin, seq: u64) -> bool {
        self.skip_source
            .is_some_and(|(origin, until)| from == origin && seq <= until)
    }
}

/// How a link takes part in this server's bootstrap (`Replica::bootstrap_role`).
pub enum BootRole {
    /// Not bootstrapping (or the bootstrap is over): resync as usual.
    Normal,
    /// This link brings the bootstrap: send `HERD-RESYNC` at once.
    Source,
    /// Hold `HERD-RESYNC` until this closes (the bootstrap ended), at most
    /// `BOOTSTRAP_HOLD`.
    Hold(async_channel::Receiver<()>),
}

/// A server that starts empty takes its first full resync from one link (the
/// *source*), then asks its other peers only for what that did not bring: both
/// neighbours of an empty server used to send it the whole store.
enum Bootstrap {
    /// Empty, no link up yet.
    Open,
    /// Under way from this origin.
    From(Origin),
    /// Done: the source, the last offset it brought, and how far it covered its own
    /// history (the last of its covers).
    Done(Origin, u64, Option<(String, Cursor)>),
    /// Not bootstrapping (a store to start from, or the source was lost).
    Off,
}

/// One server's replica of the herd's locations.
pub struct Replica {
    name: String,
    history: History,
    inner: Arc<Mutex<Inner>>,
    /// One wake-up channel per link, installed while its writer runs; and whether the
    /// links are closed (the server is stopping).
    wakers: Mutex<(Vec<Option<async_channel::Sender<()>>>, bool)>,
    /// The bootstrap, and the channel whose closing ends held links' wait.
    boot: Mutex<(
        Bootstrap,
        async_channel::Sender<()>,
        async_channel::Receiver<()>,
    )>,
    disk: Option<Disk>,
    log: Logger,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent (decisions are single inserts
    // or replacements), so a poisoned lock still holds valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    /// A replica for server `name` with `links` links; with a state dir, loaded from
    /// its state file and kept durable there (synced every `fsync`, if given). Only an
    /// unreadable or unwritable state file is an error.
    pub fn open(
        name: &str,
        links: usize,
        state_dir: Option<&Path>,
        fsync: Option<Duration>,
        log: &Logger,
    ) -> Result<Replica, String> {
        let mut inner = Inner {
            store: Store::new(),
            backlog: VecDeque::new(),
            backlog_from: 0,
            backlog_cap: BACKLOG,
            next_offset: EPOCH,
            pending: BTreeSet::new(),
            cursors: HashMap::new(),
        };
        let mut history = None;
        let mut state = None;
        if let Some(dir) = state_dir {
            let (mut file, damage) = State::open(dir, name)
                .map_err(|e| format!("cannot open the state file in {}: {e}", dir.display()))?;
            let mut max_offset = 0;
            let hasher = inner.store.hasher().clone();
            let mut loader = inner.store.loader(damage.valid / 100);
            let loaded = load(&file, damage.valid, &hasher, |updates| {
                for update in updates {
                    max_offset = max_offset.max(update.seq());
                    loader.push(update);
                }
            })
            .map_err(|e| format!("cannot read the state file in {}: {e}", dir.display()))?;
            loader.finish();
            let records = loaded.records;
            file.set_records(loaded.lines as u64);
            history = loaded.history;
            for (peer, cursor) in loaded.cursors {
                inner.cursors.insert(peer, (cursor, cursor.offset));
            }
            let damage = state::Damage {
                dropped: loaded.dropped,
                first_dropped_at: loaded.first_dropped_at,
                ..damage
            };
            let bad_lines = loaded.bad_lines;
            report_damage(name, log, &damage, bad_lines);
            inner.next_offset = (max_offset / EPOCH + 1) * EPOCH;
            log.event(
                "state-loaded",
                "-",
                &format!("{records} records, {} clients", inner.store.len()),
            );
            state = Some(file);
        }
        inner.backlog_from = inner.next_offset - 1;
        let history = history.unwrap_or_else(|| History(random_u64()));
        let inner = Arc::new(Mutex::new(inner));
        let disk = match state {
            Some(mut file) => {
                let mut header = Vec::new();
                state::write_record(&mut header, &Record::History(history));
                file.append(&header)
                    .map_err(|e| format!("cannot write the state file: {e}"))?;
                Some(Disk::start(name, file, history, inner.clone(), fsync, log))
            }
            None => None,
        };
        let empty = {
            let inner = lock(&inner);
            inner.store.is_empty() && inner.cursors.is_empty()
        };
        let (tx, rx) = async_channel::bounded(1);
        let boot = if empty {
            Bootstrap::Open
        } else {
            tx.close();
            Bootstrap::Off
        };
        Ok(Replica {
            name: name.to_string(),
            history,
            inner,
            wakers: Mutex::new((vec![None; links], false)),
            boot: Mutex::new((boot, tx, rx)),
            disk,
            log: log.clone(),
        })
    }

    /// This server's history.
    pub fn history(&self) -> History {
        self.history
    }

    /// The stored AT line for `client`.
    pub fn get(&self, client: &str) -> Option<Arc<str>> {
        lock(&self.inner).store.get(client)
    }

    /// How many clients are held.
    pub fn len(&self) -> usize {
        lock(&self.inner).store.len()
    }

    /// True when no client is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What this server holds of its peers' updates, for the `HERD-HOLDS` lines it
    /// sends at link-up: at most `MAX_COVERS - 1` cursors, by peer name.
    pub fn cursors(&self) -> Vec<(String, Cursor)> {
        lock(&self.inner).sorted_cursors()
    }

    /// The role of the link with origin `link` in the bootstrap, as it comes up: the
    /// first link of a server that started empty is the source; the others hold their
    /// `HERD-RESYNC` until it is done.
    pub fn bootstrap_role(&self, link: Origin) -> BootRole {
        let mut boot = lock(&self.boot);
        match boot.0 {
            Bootstrap::Open => {
                boot.0 = Bootstrap::From(link);
                BootRole::Source
            }
            Bootstrap::From(source) if source == link => BootRole::Source,
            Bootstrap::From(_) => BootRole::Hold(boot.2.clone()),
            Bootstrap::Done(..) | Bootstrap::Off => BootRole::Normal,
        }
    }

    /// The origin of the link bringing the bootstrap, while it runs.
    pub fn bootstrap_source(&self) -> Option<Origin> {
        match lock(&self.boot).0 {
            Bootstrap::From(source) => Some(source),
            _ => None,
        }
    }

    /// A link went down: if it was bringing the bootstrap, the bootstrap is off (held
    /// links resync as usual, asking for everything).
    pub fn link_ended(&self, link: Origin) {
        let mut boot = lock(&self.boot);
        if matches!(boot.0, Bootstrap::From(source) if source == link) {
            boot.0 = Bootstrap::Off;
            boot.1.close();
        }
    }

    /// The source's `HERD-COVERS` set is complete (`covers`, its own history last): the
    /// batch ends the bootstrap when committed. Everything the link brought so far has
    /// an offset up to the last one decided now.
    pub fn note_covers(&self, link: Origin, covers: Vec<(String, Cursor)>, batch: &mut Batch) {
        if matches!(lock(&self.boot).0, Bootstrap::From(source) if source == link) {
            let until = lock(&self.inner).next_offset - 1;
            batch.boot = Some(BootEnd {
                source: link,
                until,
                covers,
            });
        }
    }

    /// For a link whose peer sent `holds` (its cursors), once the bootstrap is done:
    /// the source's updates up to the bootstrap's end need not be sent when the peer
    /// already holds the source's history up to what the bootstrap covered.
    pub fn bootstrap_skip(&self, holds: &[(String, Cursor)]) -> Option<(Origin, u64)> {
        let boot = lock(&self.boot);
        let Bootstrap::Done(source, until, Some((name, covered))) = &boot.0 else {
            return None;
        };
        let (_, held) = holds.iter().find(|(peer, _)| peer == name)?;
        (held.history == covered.history && held.offset >= covered.offset)
            .then_some((*source, *until))
    }

    /// Stores `report` if it is newer than what is held, giving it the next offset;
    /// true if it was. The update is published when the batch is committed.
    pub fn decide(&self, report: Report, from: Origin, batch: &mut Batch) -> bool {
        let mut inner = lock(&self.inner);
        let hash = inner.store.hasher().hash(report.client());
        self.decide_locked(&mut inner, report, hash, from, batch)
    }

    /// [`Replica::decide`] for each of `reports` in order (it is left empty), under one
    /// lock. The index is read `LOOKAHEAD` reports ahead of the one decided, so that
    /// the cache misses of a big batch (a resync: a new client's slot is a miss each)
    /// overlap rather than follow one another.
    pub fn decide_all(&self, reports: &mut Vec<Report>, from: Origin, batch: &mut Batch) {
        let mut inner = lock(&self.inner);
        let hasher = inner.store.hasher().clone();
        let hashes: Vec<ClientHash> = reports.iter().map(|r| hasher.hash(r.client())).collect();
        for (i, (report, &hash)) in reports.drain(..).zip(&hashes).enumerate() {
            if let Some(&ahead) = hashes.get(i + LOOKAHEAD) {
                std::hint::black_box(inner.store.touch(ahead));
            }
            self.decide_locked(&mut inner, report, hash, from, batch);
        }
    }

    fn decide_locked(
        &self,
        inner: &mut Inner,
        report: Report,
        hash: ClientHash,
        from: Origin,
        batch: &mut Batch,
    ) -> bool {
        let offset = inner.next_offset;
        let line = report.line.clone();
        let Some(slot) = inner.store.update_hashed(report, hash, offset, from) else {
            return false;
        };
        inner.next_offset += 1;
        inner.pending.insert(offset);
        inner.backlog.push_back((offset, slot, from));
        if inner.backlog.len() > inner.backlog_cap {
            if let Some((dropped, _, _)) = inner.backlog.pop_front() {
                inner.backlog_from = dropped;
            }
        }
        batch.accepted.push((offset, line));
        if batch.replica.is_none() {
            batch.replica = Some(self.inner.clone());
        }
        true
    }

    /// Notes that the batch brings everything of `peer`'s history up to `cursor`.
    pub fn note_cursor(&self, peer: &str, cursor: Cursor, batch: &mut Batch) {
        batch.cursor = Some((peer.to_string(), cursor));
    }

    /// What this server holds of `peer`'s updates, for the `HERD-RESYNC` it sends.
    pub fn cursor_of(&self, peer: &str) -> Option<Cursor> {
        lock(&self.inner).cursors.get(peer).map(|(c, _)| *c)
    }

    /// Where a link's writer starts, given what the peer says it holds of this
    /// server's updates: past that offset if it is of this history and not beyond what
    /// was published, else from the beginning (the peer gets everything).
    pub fn start_offset(&self, theirs: Option<Cursor>) -> u64 {
        match theirs {
            Some(c) if c.history == self.history && c.offset <= lock(&self.inner).published() => {
                c.offset
            }
            _ => 0,
        }
    }

    /// Makes the batch's updates durable (with a state dir), then publishes them and
    /// wakes every link's writer; empties the batch. Clients are answered after this.
    pub async fn commit(&self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        let mut cursor_record = None;
        if let Some((peer, cursor)) = &batch.cursor {
            let inner = lock(&self.inner);
            let on_disk = inner.cursors.get(peer).map(|(c, d)| (c.history, *d));
            let moved = match on_disk {
                Some((h, d)) if h == cursor.history => cursor.offset.saturating_sub(d),
                _ => u64::MAX,
            };
            if !batch.accepted.is_empty() || moved >= CURSOR_PERSIST_EVERY {
                cursor_record = Some((peer.clone(), *cursor));
            }
        }
        let adopted = match &batch.boot {
            Some(end) => self.adoptable(&end.covers),
            None => Vec::new(),
        };
        if let Some(disk) = &self.disk {
            if !batch.accepted.is_empty() || cursor_record.is_some() || !adopted.is_empty() {
                let mut bytes = Vec::with_capacity(batch.accepted.len() * 128 + 64);
                for (offset, line) in &batch.accepted {
                    let record = Record::Update {
                        offset: *offset,
                        line,
                    };
                    state::write_record(&mut bytes, &record);
                }
                for (peer, cursor) in cursor_record.iter().chain(&adopted) {
                    let (peer, cursor) = (peer.as_str(), *cursor);
                    state::write_record(&mut bytes, &Record::Cursor { peer, cursor });
                }
                disk.append(bytes, &self.log, &self.name).await;
            }
        }
        self.publish(batch, cursor_record.is_some() || self.disk.is_none());
        if let Some(BootEnd {
            source,
            until,
            mut covers,
        }) = batch.boot.take()
        {
            let mut inner = lock(&self.inner);
            for (peer, cursor) in adopted {
                inner.cursors.insert(peer, (cursor, cursor.offset));
            }
            drop(inner);
            let mut boot = lock(&self.boot);
            if matches!(boot.0, Bootstrap::From(s) if s == source) {
                boot.0 = Bootstrap::Done(source, until, covers.pop());
                boot.1.close();
            }
        }
    }

    /// The covered cursors this server takes as its own: those of other servers it
    /// holds nothing newer of (none, or less of the same history).
    fn adoptable(&self, covers: &[(String, Cursor)]) -> Vec<(String, Cursor)> {
        let inner = lock(&self.inner);
        covers
            .iter()
            .filter(|(peer, cursor)| {
                *peer != self.name
                    && match inner.cursors.get(peer) {
                        None => true,
                        Some((held, _)) => {
                            held.history == cursor.history && held.offset < cursor.offset
                        }
                    }
            })
            .cloned()
            .collect()
    }

    fn publish(&self, batch: &mut Batch, cursor_durable: bool) {
        {
            let mut inner = lock(&self.inner);
            for (offset, _) in batch.accepted.drain(..) {
                inner.pending.remove(&offset);
            }
            if let Some((peer, cursor)) = batch.cursor.take() {
                let on_disk = match inner.cursors.get(&peer) {
                    _ if cursor_durable => cursor.offset,
                    Some((old, d)) if old.history == cursor.history => *d,
                    _ => 0,
                };
                inner.cursors.insert(peer, (cursor, on_disk));
            }
        }
        for tx in lock(&self.wakers).0.iter().flatten() {
            let _ = tx.try_send(());
        }
    }

    /// The wake-up channel for link `link`'s writer: it gets a message when updates
    /// are published, and closes when the server stops (`close_links`) or the link is
    /// replaced. Capacity one: a wake-up pending is as good as many.
    pub fn subscribe(&self, link: usize) -> async_channel::Receiver<()> {
        let (tx, rx) = async_channel::bounded(PEER_QUEUE);
        let _ = tx.try_send(());
        let mut wakers = lock(&self.wakers);
        if wakers.1 {
            // Stopping: the writer sends what is published and ends.
            tx.close();
        }
        if let Some(old) = wakers.0.get_mut(link).and_then(|w| w.replace(tx)) {
            old.close();
        }
        rx
    }

    /// Closes every writer's wake-up channel, now and for links that come up later:
    /// each writer sends what is published, then ends.
    pub fn close_links(&self) {
        let mut wakers = lock(&self.wakers);
        wakers.1 = true;
        for tx in wakers.0.iter().flatten() {
            tx.close();
        }
    }

    /// The next updates for a link's writer: lines past `feed`, published, not from
    /// `skip`, up to about `budget` bytes; advances `feed`. Returns the lines and
    /// whether more is waiting. A feed from offset 0 (the peer holds nothing of this
    /// history: it is new, or came back empty) gets everything held when its scan
    /// started, `skip`'s updates too: a peer that lost its state must get back what
    /// its own clients once told it.
    pub fn catch_up(&self, feed: &mut Feed, skip: Origin, budget: usize) -> (Vec<Arc<str>>, bool) {
        let inner = lock(&self.inner);
        let published = inner.published();
        let mut lines = Vec::new();
        let mut bytes = 0;
        if feed.scan.is_none() && feed.offset < published && feed.offset < inner.backlog_from {
            // The backlog no longer reaches back to the peer's offset: scan the store.
            feed.scan = Some((0, published));
        }
        if feed.offset == 0 && feed.covers.is_none() {
            // A full resync brings everything held now: the cursors (each covers only
            // published updates, as it is applied when its batch is published) and
            // this server's own history up to the target.
            let mut covers = inner.sorted_cursors();
            let target = feed.scan.map_or(published, |(_, target)| target);
            let own = Cursor {
                history: self.history,
                offset: target,
            };
            covers.push((self.name.clone(), own));
            feed.covers = Some(covers);
        }
        if let Some((next, target)) = feed.scan {
            let entries = inner.store.entries_from(next);
            let full = feed.offset == 0;
            let mut examined = 0;
            for e in entries.iter().take(SCAN_STEP) {
                examined += 1;
                if e.seq > feed.offset
                    && e.seq <= target
                    && (full || e.from != skip)
                    && !feed.skips(e.from, e.seq)
                {
                    bytes += e.line.len() + 1;
                    lines.push(e.line.clone());
                    if bytes >= budget {
                        break;
                    }
                }
            }
            if next + examined >= inner.store.len() {
                feed.offset = target;
                feed.scan = None;
            } else {
                feed.scan = Some((next + examined, target));
            }
        } else if feed.offset < published {
            let start = inner.backlog.partition_point(|e| e.0 <= feed.offset);
            let mut reached = published;
            for &(offset, slot, from) in inner.backlog.range(start..) {
                if offset > published {
                    break;
                }
                let entry = inner.store.entry(slot);
                // A superseded update is skipped: its successor has its own offset.
                if from != skip && entry.seq == offset && !feed.skips(from, offset) {
                    bytes += entry.line.len() + 1;
                    lines.push(entry.line.clone());
                    if bytes >= budget {
                        reached = offset;
                        break;
                    }
                }
            }
            feed.offset = reached;
        }
        let more = feed.scan.is_some() || feed.offset < inner.published();
        (lines, more)
    }

    /// Writes what is queued for the state file and syncs it; the replica is read-only
    /// afterwards.
    pub fn close(&self) {
        if let Some(disk) = &self.disk {
            disk.close();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a state file holds, parsed.
#[derive(Default)]
struct Loaded {
    /// Updates, with their offsets (at least 1) and client hashes.
    updates: Vec<Stored>,
    history: Option<History>,
    cursors: Vec<(String, Cursor)>,
    /// Records dropped for a bad checksum or text, and where the first one starts.
    dropped: usize,
    first_dropped_at: Option<usize>,
    /// Update records whose AT line does not parse.
    bad_lines: usize,
    /// Update records read.
    records: usize,
    /// Lines of the file, every record valid or not.
    lines: usize,
}

/// How many reports ahead `decide_all` reads the index.
const LOOKAHEAD: usize = 8;

/// Threads reading and parsing a state file while the caller stores what they parsed:
/// a restart reads its state on both cores of a small host.
const LOAD_THREADS: usize = 2;

/// Bytes of state file per piece of loading work (each thread reads one into a buffer
/// of its own, used again for the next).
const LOAD_CHUNK: usize = 4 << 20;

/// Reads and parses the first `len` bytes of `file` (whole records) on `LOAD_THREADS`
/// threads, in chunks split at record boundaries, handing each chunk's updates to
/// `store` as they are ready, so storing overlaps reading and parsing. Updates go in
/// any order (the newer wins, whatever the order); the history and cursors are taken in
/// file order (the last written wins). The threads also hash each client ID with
/// `hasher`, so storing one is a single probe of the index.
fn load(
    file: &State,
    len: usize,
    hasher: &ClientHasher,
    mut store: impl FnMut(Vec<Stored>),
) -> std::io::Result<Loaded> {
    let chunks = chunk_bounds(file, len)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut parts: Vec<Option<Loaded>> = chunks.iter().map(|_| None).collect();
    let mut failed = None;
    std::thread::scope(|s| {
        let (done, parsed) = mpsc::channel::<(usize, std::io::Result<Loaded>)>();
        for _ in 0..LOAD_THREADS {
            let (done, chunks, next) = (done.clone(), &chunks, &next);
            s.spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(start, end)) = chunks.get(i) else {
                        return;
                    };
                    buf.resize(end - start, 0);
                    let part = file
                        .read_at(&mut buf, start as u64)
                        .map(|()| load_part(start, &buf, hasher));
                    if done.send((i, part)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done);
        for (i, part) in parsed {
            match part {
                Ok(mut part) => {
                    store(std::mem::take(&mut part.updates));
                    parts[i] = Some(part);
                }
                Err(e) => {
                    next.store(chunks.len(), Ordering::Relaxed);
                    failed.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let mut all = Loaded::default();
    for part in parts.into_iter().flatten() {
        all.records += part.records;
        all.lines += part.lines;
        all.history = part.history.or(all.history);
        all.cursors.extend(part.cursors);
        all.dropped += part.dropped;
        all.first_dropped_at = all.first_dropped_at.or(part.first_dropped_at);
        all.bad_lines += part.bad_lines;
    }
    Ok(all)
}

/// `(start, end)` of each chunk of the first `len` bytes of `file`: about
/// `LOAD_CHUNK` bytes each, every one ending just after a newline (`len` does).
fn chunk_bounds(file: &State, len: usize) -> std::io::Result<Vec<(usize, usize)>> {
    let mut chunks = Vec::new();
    let mut window = vec![0; 4096];
    let mut start = 0;
    while start < len {
        let mut end = (start + LOAD_CHUNK).min(len);
        // The chunk ends after the first newline from byte `end - 1` on.
        let mut at = end - 1;
        while end < len {
            let n = window.len().min(len - at);
            if n == 0 {
                // `len` ends a record, so only a file changed under us gets here.
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            file.read_at(&mut window[..n], at as u64)?;
            if let Some(i) = memchr::memchr(b'\n', &window[..n]) {
                end = at + i + 1;
                break;
            }
            at += n;
        }
        chunks.push((start, end));
        start = end;
    }
    Ok(chunks)
}

fn load_part(at: usize, bytes: &[u8], hasher: &ClientHasher) -> Loaded {
    let mut part = Loaded::default();
    let mut lines = 0;
    let damage = state::parse(bytes, |record| {
        lines += 1;
        match record {
            Record::Update { offset, line } => match Stored::from_line(line, offset.max(1), hasher)
            {
                Some(update) => part.updates.push(update),
                None => part.bad_lines += 1,
            },
            Record::History(h) => part.history = Some(h),
            Record::Cursor { peer, cursor } => part.cursors.push((peer.to_string(), cursor)),
        }
    });
    part.records = part.updates.len() + part.bad_lines;
    part.dropped = damage.dropped;
    part.lines = lines + damage.dropped;
    part.first_dropped_at = damage.first_dropped_at.map(|p| p + at);
    part
}

fn report_damage(name: &str, log: &Logger, damage: &state::Damage, bad_lines: usize) {
    let mut problems = Vec::new();
    if damage.torn > 0 {
        problems.push(format!(
            "cut a torn last record of {} bytes from the state file",
            damage.torn
        ));
    }
    if damage.dropped + bad_lines > 0 {
        let at = damage
            .first_dropped_at
            .map(|p| format!(" (the first at byte {p})"))
            .unwrap_or_default();
        problems.push(format!(
            "dropped {} damaged records{at}",
            damage.dropped + bad_lines
        ));
    }
    if !problems.is_empty() {
        let text = format!("{}; peers fill in the rest", problems.join("; "));
        log.event("state-repair", "-", &text);
        eprintln!("herd {name}: {text}");
    }
}

/// A random 64-bit number from the OS (time and address as a fallback).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        return t ^ (&bytes as *const _ as u64).rotate_left(32);
    }
    u64::from_le_bytes(bytes)
}

/// A job for the disk thread: records to append, and who to tell when they are written.
struct Job {
    bytes: Vec<u8>,
    done: async_channel::Sender<std::io::Result<()>>,
}

/// The disk thread: owns the state file, appends, compacts and syncs it, so no disk
/// work runs on the async executor and no fsync waits under a lock.
struct Disk {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    failing: AtomicBool,
}

impl Disk {
    fn start(
        name: &str,
        mut file: State,
        history: History,
        inner: Arc<Mutex<Inner>>,
        fsync: Option<Duration>,
        log: &Logger,
    ) -> Disk {
        let (jobs, rx) = mpsc::channel::<Job>();
        let log = log.clone();
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name("herd-disk".into())
            .spawn(move || {
                // With fsync-interval: sync at most that long after the first write
                // since the last sync, on a fixed schedule even under steady writes.
                let mut due: Option<std::time::Instant> = None;
                let sync = |file: &mut State, log: &Logger| {
                    if let Err(e) = file.sync() {
                        log.event(
                            "state-error",
                            "-",
                            &format!("cannot sync the state file: {e}"),
                        );
                        eprintln!("herd {name}: cannot sync the state file: {e}");
                    }
                };
                loop {
                    let job = match due {
                        Some(at) => {
                            rx.recv_timeout(at.saturating_duration_since(std::time::Instant::now()))
                        }
                        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    };
                    match job {
                        Ok(job) => {
                            let mut result = file.append(&job.bytes);
                            let live = lock(&inner).store.len() as u64;
                            if result.is_ok() && file.wants_compaction(live) {
                                result = file.compact(&snapshot(history, &inner));
                                if result.is_ok() {
                                    log.event(
                                        "state-compacted",
                                        "-",
                                        &format!("{} bytes", file.size()),
                                    );
                                }
                            }
                            let _ = job.done.try_send(result);
                            if let Some(every) = fsync {
                                due.get_or_insert_with(|| std::time::Instant::now() + every);
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            sync(&mut file, &log);
                            return;
                        }
                    }
                    if due.is_some_and(|at| at <= std::time::Instant::now()) {
                        sync(&mut file, &log);
                        due = None;
                    }
                }
            })
            .ok();
        Disk {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(thread),
            failing: AtomicBool::new(false),
        }
    }

    /// Appends `bytes` and waits until they are written; a failure is logged each time
    /// and said on stderr once per run of failures, and the server goes on.
    async fn append(&self, bytes: Vec<u8>, log: &Logger, name: &str) {
        let (done, written) = async_channel::bounded(1);
        let sent = lock(&self.jobs)
            .as_ref()
            .map(|jobs| jobs.send(Job { bytes, done }).is_ok());
        let result = match sent {
            Some(true) => written
                .recv()
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the disk thread stopped"))),
            _ => Err(std::io::Error::other("the state file is closed")),
        };
        match result {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                log.event(
                    "state-error",
                    "-",
                    &format!("cannot write the state file: {e}"),
                );
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!("herd {name}: cannot write the state file: {e}");
                }
            }
        }
    }

    fn close(&self) {
        drop(lock(&self.jobs).take());
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// The whole state as records: the history, every client's update, every cursor. The
/// lines are copied out under the lock and formatted after it is released.
fn snapshot(history: History, inner: &Mutex<Inner>) -> Vec<u8> {
    let (updates, cursors): (Vec<(u64, Arc<str>)>, Vec<_>) = {
        let inner = lock(inner);
        (
            inner
                .store
                .entries_from(0)
                .iter()
                .map(|e| (e.seq, e.line.clone()))
                .collect(),
            inner
                .cursors
                .iter()
                .map(|(p, (c, _))| (p.clone(), *c))
                .collect(),
        )
    };
    let mut out = Vec::with_capacity(updates.len() * 128);
    state::write_record(&mut out, &Record::History(history));
    for (offset, line) in &updates {
        state::write_record(
            &mut out,
            &Record::Update {
                offset: *offset,
                line,
            },
        );
    }
    for (peer, cursor) in &cursors {
        state::write_record(
            &mut out,
            &Record::Cursor {
                peer,
                cursor: *cursor,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica with no state dir, its backlog cut to `cap` offsets, logging to a
    /// temporary dir.
    fn replica(tag: &str, cap: usize) -> (Replica, crate::log::LogWriter) {
        let dir = std::env::temp_dir().join(format!("herd-replica-{tag}-{}", std::process::id()));
        let (log, writer) = Logger::open(&dir, "T", Vec::new());
        let r = Replica::open("T", 2, None, None, &log).expect("no state dir to fail");
        lock(&r.inner).backlog_cap = cap;
        (r, writer)
    }

    /// Decides and commits the update of `client` at time `t`, from `from`; returns the
    /// published offset after it.
    fn update(r: &Replica, client: &str, t: u32, from: Origin) -> u64 {
        let line = format!("AT A +0.000000001 {client} +1+1 {t}");
        let mut batch = Batch::default();
        assert!(r.decide(Report::from_line(&line).unwrap(), from, &mut batch));
        smol::block_on(r.commit(&mut batch));
        // Dropped before the lock is taken below: a batch's drop takes the lock too.
        drop(batch);
        lock(&r.inner).published()
    }

    /// Everything a writer starting at `offset` sends, skipping `skip`'s updates.
    fn catch_up_all(r: &Replica, offset: u64, skip: Origin) -> Vec<String> {
        let mut feed = Feed::from(offset);
        let mut lines = Vec::new();
        loop {
            let (got, more) = r.catch_up(&mut feed, skip, 100);
            lines.extend(
                got.iter()
                    .map(|l| l.split(' ').nth(3).unwrap_or("").to_string()),
            );
            if !more {
                return lines;
            }
        }
    }

    #[test]
    fn a_state_file_of_many_chunks_loads_whole_and_the_last_history_and_cursor_win() {
        let dir = std::env::temp_dir().join(format!("herd-replica-chunks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = Vec::new();
        let cursor = |offset| Record::Cursor {
            peer: "P",
            cursor: Cursor {
                history: History(5),
                offset,
            },
        };
        state::write_record(&mut bytes, &Record::History(History(1)));
        state::write_record(&mut bytes, &cursor(1));
        // Over three chunks, records of uneven length so that chunk ends fall inside
        // records; client 7 is written again near the end, newer.
        let mut i = 0;
        while bytes.len() < 2 * LOAD_CHUNK + LOAD_CHUNK / 2 {
            let pad = "x".repeat(i % 37);
            let line = format!("AT A +0.000000001 c{i}{pad} +1+1 {}", 100 + i);
            state::write_record(
                &mut bytes,
                &Record::Update {
                    offset: i as u64 + 1,
                    line: &line,
                },
            );
            i += 1;
        }
        let clients = i;
        state::write_record(&mut bytes, &Record::History(History(2)));
        state::write_record(&mut bytes, &cursor(9));
        let newer = format!("AT B +0.000000001 c7{} +2+2 5000", "x".repeat(7));
        state::write_record(
            &mut bytes,
            &Record::Update {
                offset: 1 << 40,
                line: &newer,
            },
        );
        std::fs::write(dir.join("T.state"), &bytes).unwrap();
        let (log, _writer) = Logger::open(&dir, "T", Vec::new());
        let r = Replica::open("T", 2, Some(&dir), None, &log).unwrap();
        assert_eq!(r.len(), clients);
        assert_eq!(r.get("c7xxxxxxx").as_deref(), Some(newer.as_str()));
        let last = clients - 1;
        let pad = "x".repeat(last % 37);
        assert_eq!(
            r.get(&format!("c{last}{pad}")).as_deref(),
            Some(format!("AT A +0.000000001 c{last}{pad} +1+1 {}", 100 + last).as_str())
        );
        assert_eq!(r.history(), History(2));
        assert_eq!(r.cursor_of("P").map(|c| c.offset), Some(9));
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn deciding_a_batch_at_once_is_deciding_each_in_order() {
        // Clients seen again in the batch, newer and older, past LOOKAHEAD apart.
        let lines: Vec<String> = (0..200u32)
            .map(|i| {
                format!(
                    "AT A +0.000000001 c{} +1+1 {}",
                    i % 37,
                    100 + (i * 7919) % 50
                )
            })
            .collect();
        let reports = || lines.iter().map(|l| Report::from_line(l).unwrap());
        let (one, _w1) = replica("one-by-one", BACKLOG);
        let (all, _w2) = replica("all-at-once", BACKLOG);
        let mut batch = Batch::default();
        let decided: Vec<bool> = reports().map(|r| one.decide(r, 1, &mut batch)).collect();
        smol::block_on(one.commit(&mut batch));
        drop(batch);
        let mut batch = Batch::default();
        let mut pending: Vec<Report> = reports().collect();
        all.decide_all(&mut pending, 1, &mut batch);
        assert!(pending.is_empty());
        assert_eq!(batch.accepted.len(), decided.iter().filter(|&&d| d).count());
        smol::block_on(all.commit(&mut batch));
        drop(batch);
        for c in 0..37 {
            assert_eq!(one.get(&format!("c{c}")), all.get(&format!("c{c}")));
        }
        assert_eq!(lock(&one.inner).published(), lock(&all.inner).published());
        assert_eq!(catch_up_all(&one, 0, 9), catch_up_all(&all, 0, 9));
    }

    #[test]
    fn a_writer_gets_what_was_published_past_its_offset_once_per_client() {
        let (r, _w) = replica("feed", BACKLOG);
        let mut after = vec![lock(&r.inner).published()];
        for i in 0..10 {
            after.push(update(&r, &format!("c{i}"), 1, 0));
        }
        // From nothing: everything (a scan of the store, the backlog not reaching back).
        assert_eq!(catch_up_all(&r, 0, 9).len(), 10);
        // From the fifth update on: the last five, from the backlog.
        assert_eq!(
            catch_up_all(&r, after[5], 9),
            ["c5", "c6", "c7", "c8", "c9"]
        );
        // A client updated again is sent once, at its new offset.
        update(&r, "c6", 2, 0);
        assert_eq!(
            catch_up_all(&r, after[5], 9),
            ["c5", "c7", "c8", "c9", "c6"]
        );
        // An update from link 1 is not sent back to link 1...
        let end = update(&r, "from-peer", 1, 1);
        assert_eq!(catch_up_all(&r, end - 1, 1), Vec::<String>::new());
        assert_eq!(catch_up_all(&r, end - 1, 2), ["from-peer"]);
        // ...unless link 1's peer holds nothing of this history (it came back empty):
        // a full resync gives it back what it once sent.
        assert!(catch_up_all(&r, 0, 1).contains(&"from-peer".to_string()));
        assert_eq!(catch_up_all(&r, 0, 1).len(), 11);
        // A writer that is level gets nothing.
        assert!(catch_up_all(&r, end, 9).is_empty());
    }

    #[test]
    fn past_the_backlog_a_writer_scans_and_still_gets_only_what_it_missed() {
        let (r, _w) = replica("scan", 4);
        let mut after = vec![lock(&r.inner).published()];
        for i in 0..10 {
            after.push(update(&r, &format!("c{i}"), 1, 0));
        }
        assert_eq!(lock(&r.inner).backlog.len(), 4);
        // Offset after c1 is older than what the backlog keeps: the store is scanned,
        // and only the eight updates after it are sent.
        assert!(after[2] < lock(&r.inner).backlog_from);
        let mut got = catch_up_all(&r, after[2], 9);
        got.sort();
        assert_eq!(got, ["c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]);
        // Within the backlog: from it.
        assert_eq!(catch_up_all(&r, after[8], 9), ["c8", "c9"]);
    }

    #[test]
    fn a_peer_offset_counts_only_in_this_history() {
        let (r, _w) = replica("start", BACKLOG);
        let end = update(&r, "c", 1, 0);
        let mine = Cursor {
            history: r.history(),
            offset: end,
        };
        assert_eq!(r.start_offset(Some(mine)), end);
        let other = Cursor {
            history: History(r.history().0 ^ 1),
            ..mine
        };
        assert_eq!(r.start_offset(Some(other)), 0);
        let ahead = Cursor {
            offset: end + 1,
            ..mine
        };
        assert_eq!(r.start_offset(Some(ahead)), 0);
        assert_eq!(r.start_offset(None), 0);
    }
}
