//! Links between servers (SPEC §5): one persistent connection per configured link, the
//! server whose name sorts first dialing it; a handshake; on every link-up both sides
//! send everything they hold; then each accepted update is flooded to every linked peer
//! but the one it came from.
//!
//! Exactly one future writes to a peer socket, fed by a bounded channel. Flooding never
//! waits: a peer whose queue is full is cut off, and the full exchange on reconnect
//! makes up what it missed, so a slow peer costs nobody else anything.

use crate::handshake::{self, Role, Transcript};
use crate::lines::{Line, LineReader};
use crate::log::Logger;
use crate::protocol::{fields, strip_terminator};
use crate::server::{timeout, Alive, Node};
use crate::store::Report;
use async_net::TcpStream;
use futures_lite::{future, AsyncWriteExt};
use smol::Timer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Updates that may wait for one peer's writer. At ~100 bytes each this is under 1 MB
/// per peer; a peer that falls this far behind is disconnected and resynchronised.
pub const PEER_QUEUE: usize = 8192;

/// How long dialing a peer may take: on a LAN or loopback a connect completes in
/// milliseconds, so 2 s means the peer (or the path to it) is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long each handshake step may take; a peer that cannot answer one line in 5 s is
/// not worth linking to, and a stranger cannot hold the connection open longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one batched write to a peer may block before the link is declared dead.
pub const PEER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// First wait before redialing a peer; doubled per failure up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest wait between redials: a returning server is relinked within 1 s, and a
/// dead one costs one refused connect per second.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A peer link silent this long gets TCP keepalive probes. A peer whose host vanished
/// (crash, partition) sends no FIN or RST; without probes a quiet link would look up
/// forever, and the restarted peer would wait for a dial that never comes.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(2);

/// Interval between keepalive probes, and how many unanswered ones end the link:
/// a dead peer is noticed within about `KEEPALIVE_IDLE + 3 × 1 s`.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// See `KEEPALIVE_INTERVAL`.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Bytes gathered into one write to a peer.
const WRITE_BATCH: usize = 64 * 1024;

/// One configured link, from this server's side.
pub struct Link {
    /// The peer's name.
    pub name: String,
    /// The peer's address.
    pub addr: String,
    /// True when this server dials the link (its name sorts first).
    pub dials: bool,
    /// The live connection's id and queue, when the link is up.
    current: Mutex<Option<(u64, async_channel::Sender<Arc<str>>)>>,
}

/// This server's links.
pub struct Peers {
    links: Vec<Link>,
    next_id: AtomicU64,
}

impl Peers {
    /// The links of server `me` in `config`.
    pub fn new(config: &crate::config::Config, me: usize) -> Peers {
        let my_name = &config.servers[me].name;
        let links = config
            .neighbours(me)
            .into_iter()
            .map(|i| {
                let s = &config.servers[i];
                Link {
                    name: s.name.clone(),
                    addr: s.addr.clone(),
                    dials: my_name < &s.name,
                    current: Mutex::new(None),
                }
            })
            .collect();
        Peers {
            links,
            next_id: AtomicU64::new(1),
        }
    }

    /// The links.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The index of the link to `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == name)
    }

    /// Queues `line` for every linked peer except `from`, never waiting. A full queue
    /// closes that link; it resynchronises when it comes back.
    pub fn flood(&self, line: &Arc<str>, from: Option<usize>, log: &Logger) {
        for (i, link) in self.links.iter().enumerate() {
            if Some(i) == from {
                continue;
            }
            let current = lock(&link.current);
            if let Some((_, tx)) = current.as_ref() {
                if let Err(async_channel::TrySendError::Full(_)) = tx.try_send(line.clone()) {
                    tx.close();
                    log.event(
                        "link-slow",
                        &format!("peer {}", link.name),
                        &format!("{PEER_QUEUE} updates queued: cutting the link to resynchronise"),
                    );
                }
            }
        }
    }

    /// Closes every link's queue: each writer sends what is queued, then the link ends.
    pub fn close_all(&self) {
        for link in &self.links {
            if let Some((_, tx)) = lock(&link.current).as_ref() {
                tx.close();
            }
        }
    }

    /// Makes `tx` the link's queue, closing any previous connection's; returns its id.
    fn install(&self, i: usize, tx: async_channel::Sender<Arc<str>>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some((_, old)) = lock(&self.links[i].current).replace((id, tx)) {
            old.close();
        }
        id
    }

    /// Forgets connection `id` of link `i`, unless a newer one replaced it.
    fn remove(&self, i: usize, id: u64) {
        let mut current = lock(&self.links[i].current);
        if matches!(current.as_ref(), Some((cur, _)) if *cur == id) {
            *current = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single replace or read: a poisoned lock holds valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps dialing link `i` for as long as the server runs, with capped exponential backoff.
pub(crate) async fn dial_loop(node: Arc<Node>, i: usize, alive: Alive) {
    let link = &node.peers.links[i];
    let who = format!("peer {}", link.name);
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    while !alive.stopping() {
        let Some(dialed) = alive.unless_stopped(dial(&node, link)).await else {
            break;
        };
        match dialed {
            Ok((stream, reader)) => {
                if failures > 0 {
                    node.log.event(
                        "link-info",
                        &who,
                        &format!("reached after {failures} failed attempts"),
                    );
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                run_link(&node, i, stream, reader, &alive).await;
            }
            Err(e) => {
                failures += 1;
                // The first failure is news; repeats are logged ever more rarely.
                if failures.is_power_of_two() {
                    node.log
                        .event("link-refused", &who, &format!("{e} (attempt {failures})"));
                }
            }
        }
        alive.unless_stopped(Timer::after(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connects to a peer and runs the dialer's side of the handshake.
async fn dial(node: &Node, link: &Link) -> Result<(TcpStream, LineReader), String> {
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(link.addr.as_str()))
        .await
        .ok_or("connect timed out")?
        .map_err(|e| format!("cannot connect to {}: {e}", link.addr))?;
    let _ = stream.set_nodelay(true);
    let nonce_d = handshake::nonce();
    let hello = format!("{} {} {nonce_d}\n", handshake::HELLO, node.name);
    stream
        .write_all(hello.as_bytes())
        .await
        .map_err(|e| format!("handshake write failed: {e}"))?;
    node.log
        .event("link-out", &format!("peer {}", link.name), hello.trim_end());
    let mut reader = LineReader::new();
    let answer = read_line(&mut stream, &mut reader).await?;
    let words: Vec<&[u8]> = fields(&answer).collect();
    let [word, name, nonce_a, proof] = words[..] else {
        return Err(format!(
            "peer did not accept the link: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(100)])
        ));
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (name, nonce_a, proof) = (text(name), text(nonce_a), text(proof));
    if word != handshake::WELCOME.as_bytes() || name != link.name || !handshake::is_nonce(&nonce_a)
    {
        return Err("peer answered the handshake wrongly".into());
    }
    let transcript = Transcript {
        dialer: &node.name,
        acceptor: &link.name,
        nonce_d: &nonce_d,
        nonce_a: &nonce_a,
    };
    if !transcript.verify(&node.secret, Role::Accept, &proof) {
        return Err("peer failed authentication: HERD_SECRET differs".into());
    }
    let auth = transcript.proof(&node.secret, Role::Dial);
    stream
        .write_all(format!("{} {auth}\n", handshake::AUTH).as_bytes())
        .await
        .map_err(|e| format!("handshake write failed: {e}"))?;
    Ok((stream, reader))
}

/// The acceptor's side of the handshake, after the dialer's `HERD-HELLO name nonce`
/// arrived on a new connection; on success the connection becomes the link.
pub(crate) async fn accept(
    node: &Arc<Node>,
    i: usize,
    mut stream: TcpStream,
    mut reader: LineReader,
    nonce_d: &str,
    alive: &Alive,
) {
    let link = &node.peers.links[i];
    let who = format!("peer {}", link.name);
    let nonce_a = handshake::nonce();
    let transcript = Transcript {
        dialer: &link.name,
        acceptor: &node.name,
        nonce_d,
        nonce_a: &nonce_a,
    };
    let proof = transcript.proof(&node.secret, Role::Accept);
    let welcome = format!("{} {} {nonce_a} {proof}\n", handshake::WELCOME, node.name);
    if stream.write_all(welcome.as_bytes()).await.is_err() {
        return;
    }
    node.log.event("link-out", &who, welcome.trim_end());
    let answer = match read_line(&mut stream, &mut reader).await {
        Ok(answer) => answer,
        Err(e) => {
            node.log.event("link-refused", &who, &e);
            return;
        }
    };
    let words: Vec<&[u8]> = fields(&answer).collect();
    let ok = match words[..] {
        [word, proof] if word == handshake::AUTH.as_bytes() => {
            transcript.verify(&node.secret, Role::Dial, &String::from_utf8_lossy(proof))
        }
        _ => false,
    };
    if !ok {
        node.log.event(
            "link-refused",
            &who,
            "authentication failed: HERD_SECRET differs or the handshake is forged",
        );
        return;
    }
    run_link(node, i, stream, reader, alive).await;
}

/// Reads one handshake line within `HANDSHAKE_TIMEOUT`.
async fn read_line(stream: &mut TcpStream, reader: &mut LineReader) -> Result<Vec<u8>, String> {
    timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            if let Some(line) = reader.next_line() {
                return match line {
                    Line::Full(l) => Ok(strip_terminator(l).to_vec()),
                    Line::TooLong(_) => Err("handshake line too long".to_string()),
                };
            }
            match reader.fill(stream).await {
                Ok(0) => return Err("connection closed during handshake".to_string()),
                Ok(_) => {}
                Err(e) => return Err(format!("handshake read failed: {e}")),
            }
        }
    })
    .await
    .unwrap_or_else(|| Err("handshake timed out".into()))
}

/// Runs an established link until either direction fails: the writer sends everything
/// this server holds, then whatever is flooded to it; the reader applies the peer's updates.
async fn run_link(
    node: &Arc<Node>,
    i: usize,
    stream: TcpStream,
    reader: LineReader,
    alive: &Alive,
) {
    let link = &node.peers.links[i];
    let who = format!("peer {}", link.name);
    let (tx, rx) = async_channel::bounded(PEER_QUEUE);
    // Install before the snapshot: every update lands in one or the other (or both,
    // which the newer-wins rule makes harmless).
    let id = node.peers.install(i, tx.clone());
    if alive.stopping() {
        // The server began stopping during the handshake: send the snapshot and end.
        tx.close();
    }
    drop(tx);
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    node.log.event("link-up", &who, &addr);
    if let Err(e) = keepalive(&stream) {
        node.log
            .event("link-info", &who, &format!("cannot set keepalive: {e}"));
    }
    let snapshot = node.store.snapshot();
    let why = future::or(
        write_loop(stream.clone(), snapshot, rx, &node.log, &who),
        read_loop(node, i, stream, reader, &who),
    )
    .await;
    node.peers.remove(i, id);
    node.log.event("link-down", &who, &why);
}

/// Turns on TCP keepalive (kernel timers: no wakeups here) and a matching
/// `TCP_USER_TIMEOUT`, so writes unacknowledged that long end the link too.
fn keepalive(stream: &TcpStream) -> std::io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(stream, true)?;
    sockopt::set_tcp_keepidle(stream, KEEPALIVE_IDLE)?;
    sockopt::set_tcp_keepintvl(stream, KEEPALIVE_INTERVAL)?;
    sockopt::set_tcp_keepcnt(stream, KEEPALIVE_PROBES)?;
    let dead = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES;
    sockopt::set_tcp_user_timeout(stream, dead.as_millis() as u32)?;
    Ok(())
}

async fn write_loop(
    mut stream: TcpStream,
    snapshot: Vec<Arc<str>>,
    rx: async_channel::Receiver<Arc<str>>,
    log: &Logger,
    who: &str,
) -> String {
    let mut buf = Vec::with_capacity(4096);
    let mut snapshot = snapshot.into_iter().peekable();
    loop {
        let mut entry = log.entry();
        if snapshot.peek().is_some() {
            for line in snapshot.by_ref() {
                push_line(&mut buf, &line, &mut entry, who);
                if buf.len() >= WRITE_BATCH {
                    break;
                }
            }
        } else {
            let Ok(first) = rx.recv().await else {
                return "link replaced or its queue overflowed".into();
            };
            entry = log.entry();
            push_line(&mut buf, &first, &mut entry, who);
            while buf.len() < WRITE_BATCH {
                let Ok(line) = rx.try_recv() else { break };
                push_line(&mut buf, &line, &mut entry, who);
            }
        }
        log.send(entry);
        match timeout(PEER_WRITE_TIMEOUT, stream.write_all(&buf)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return format!("write failed: {e}"),
            None => {
                return format!(
                    "peer did not take a write in {} s",
                    PEER_WRITE_TIMEOUT.as_secs()
                )
            }
        }
        buf.clear();
    }
}

fn push_line(buf: &mut Vec<u8>, line: &str, entry: &mut crate::log::Entry, who: &str) {
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    entry.line("out", who, line.as_bytes());
}

async fn read_loop(
    node: &Arc<Node>,
    i: usize,
    mut stream: TcpStream,
    mut reader: LineReader,
    who: &str,
) -> String {
    let mut accepted = Vec::new();
    loop {
        let mut entry = node.log.entry();
        while let Some(line) = reader.next_line() {
            let line = match line {
                Line::Full(l) => strip_terminator(l),
                Line::TooLong(_) => {
                    node.persist(&accepted);
                    node.flood(&mut accepted, Some(i));
                    return "peer sent a line that is too long".into();
                }
            };
            entry.line("in", who, line);
            match std::str::from_utf8(line).ok().and_then(Report::from_line) {
                Some((report, client)) => accepted.extend(node.decide(&client, report)),
                None => entry.line("ignored", who, b"not an AT line"),
            }
        }
        node.persist(&accepted);
        node.flood(&mut accepted, Some(i));
        node.log.send(entry);
        match reader.fill(&mut stream).await {
            Ok(0) => return "closed by peer".into(),
            Ok(_) => {}
            Err(e) => return format!("read failed: {e}"),
        }
    }
}
