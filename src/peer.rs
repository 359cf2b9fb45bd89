//! The bus (SPEC §5): one persistent connection per configured link between bus ports,
//! dialed by the server whose name sorts first; the handshake; the resync on every
//! link-up; then each side streams its published updates to the other.
//!
//! Exactly one task writes to each peer socket: the link's writer, fed by a bounded
//! wake-up channel from the replica; it reads the updates themselves from the
//! replica's backlog (or, far behind, its store) from its own cursor. So flooding never
//! waits and never drops: a slow peer only falls behind and catches up, costing nobody
//! else anything, and heavy but healthy traffic never cuts a link. A peer that stops
//! reading is still cut, by `PEER_WRITE_TIMEOUT` and TCP's user timeout.

use crate::batch;
use crate::handshake::{self, Role, Transcript};
use crate::lines::{Line, LineReader};
use crate::log::{Entry, Logger};
use crate::protocol::{strip_terminator, MAX_AT_LINE};
use crate::replica::{Batch, BootRole, Feed, Replica};
pub use crate::replica::{BOOTSTRAP_HOLD, MAX_COVERS};
use crate::secure::{self, Sealer, SecureReader};
use crate::shutdown::{timeout, Alive};
use crate::status;
use crate::store::{Origin, Report};
use crate::wire::{Cursor, Message};
use async_net::TcpStream;
use futures_lite::{future, AsyncRead, AsyncWriteExt, Future};
use smol::Async;
use smol::Timer;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Longest line on a link, terminator included: any AT line a server can form
/// (`MAX_AT_LINE`), so everything one server acknowledges its peers accept.
pub const MAX_PEER_LINE: usize = MAX_AT_LINE + 1;

/// Largest a link's read buffer grows while its peer keeps it full (a resync, a burst
/// of updates), so that one batch (log, decide, persist, flood) takes about 600 lines,
/// not the 80 that `MAX_PEER_LINE` holds: a full resync of 1M clients ran as 12,500
/// batches, each waking the disk and log threads (BENCHMARKS.md). It shrinks back when
/// the link is quiet:
/// 64 KiB a busy link (a server of the classic herd has two or three).
pub const PEER_READ_BUFFER: usize = 64 * 1024;

/// The line reader of a link: lines up to `MAX_PEER_LINE`, a buffer up to
/// `PEER_READ_BUFFER`.
fn link_reader() -> LineReader {
    LineReader::with_limit(MAX_PEER_LINE).with_buffer(PEER_READ_BUFFER)
}

/// How long dialing a peer may take: on a LAN or loopback a connect completes in
/// milliseconds, so 2 s means the peer (or the path to it) is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long each handshake step may take; a peer that cannot answer one line in 5 s is
/// not worth linking to, and a stranger cannot hold a bus connection open longer.
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

/// Bytes of updates gathered into one write to a peer.
const WRITE_BATCH: usize = 64 * 1024;

/// How far (in offsets) the feed may move past the last `HERD-OFFSET` sent before a
/// writer sends one on its own. An offset rides along with every write of updates; the
/// feed also moves over updates that came from this very peer (never sent back), and
/// acknowledging each of those alone would cost a transmission per flooded update. A
/// cursor that lags by such updates costs nothing on resync: the catch-up skips them.
pub const OFFSET_LAG: u64 = 1024;

/// One configured link, from this server's side.
pub struct Link {
    /// The peer's name.
    pub name: String,
    /// The peer's bus address, as this server's config gives it.
    pub addr: String,
    /// True when this server dials the link (its name sorts first).
    pub dials: bool,
    /// The live connection's id, when the link is up.
    current: Mutex<Option<u64>>,
}

/// This server's side of the bus: its links and what they need.
pub struct Bus {
    name: String,
    links: Vec<Link>,
    secret: Vec<u8>,
    replica: Arc<Replica>,
    log: Logger,
    started: Instant,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single replace or read: a poisoned lock holds valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn origin(link: usize) -> Origin {
    // Configs with more than 254 links per server are refused at start (`Bus::new`).
    (link + 1) as Origin
}

impl Bus {
    /// The bus of server `me` in `config`. Errors when the server has more links than
    /// an origin can name.
    pub fn new(
        config: &crate::config::Config,
        me: usize,
        secret: Vec<u8>,
        replica: Arc<Replica>,
        log: Logger,
    ) -> Result<Bus, String> {
        let my_name = &config.servers[me].name;
        let links: Vec<Link> = config
            .neighbours(me)
            .into_iter()
            .map(|i| {
                let s = &config.servers[i];
                Link {
                    name: s.name.clone(),
                    addr: s.bus.clone(),
                    dials: my_name < &s.name,
                    current: Mutex::new(None),
                }
            })
            .collect();
        if links.len() >= Origin::MAX as usize {
            return Err(format!(
                "{my_name} has {} links; at most 254 are supported",
                links.len()
            ));
        }
        Ok(Bus {
            name: my_name.clone(),
            links,
            secret,
            replica,
            log,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
        })
    }

    /// The links.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Each link's peer and whether it is up, in config order.
    pub fn link_states(&self) -> Vec<(String, bool)> {
        self.links
            .iter()
            .map(|l| (l.name.clone(), lock(&l.current).is_some()))
            .collect()
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.links.iter().position(|l| l.name == name)
    }

    /// Link `i` is down (or never came up): the replica's bootstrap may not wait for it.
    fn link_ended(&self, i: usize) {
        self.replica.link_ended(origin(i));
    }

    fn who(&self, i: usize) -> String {
        format!("peer {}", self.links[i].name)
    }
}

/// Keeps dialing link `i` for as long as the server runs, with capped exponential backoff.
pub(crate) async fn dial_loop(bus: Arc<Bus>, i: usize, alive: Alive) {
    let who = bus.who(i);
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    while !alive.stopping() {
        let Some(dialed) = alive.unless_stopped(dial(&bus, i)).await else {
            break;
        };
        match dialed {
            Ok(conn) => {
                if failures > 0 {
                    bus.log.event(
                        "link-info",
                        &who,
                        &format!("reached after {failures} failed attempts"),
                    );
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                run_link(&bus, i, conn, &alive).await;
            }
            Err(e) => {
                failures += 1;
                // The first failure is news; repeats are logged ever more rarely.
                if failures.is_power_of_two() {
                    bus.log
                        .event("link-refused", &who, &format!("{e} (attempt {failures})"));
                }
            }
        }
        alive.unless_stopped(Timer::after(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A connection past the handshake: what reads it (decrypting, with `HERD_SECRET`),
/// and what seals what is written to it.
struct Conn {
    stream: TcpStream,
    input: Input,
    lines: LineReader,
    sealer: Option<Sealer>,
}

/// A link's incoming bytes: plain, or opened from Noise frames.
enum Input {
    Plain(LinkSocket),
    Secure(Box<SecureReader<LinkSocket>>),
}

/// A link's socket, read side. After a read that did not fill the buffer it was given
/// (the socket was drained), the next read waits for readability before it reads,
/// rather than trying a read that fails with `EAGAIN` and then waiting: one system call
/// less for each batch a link receives, about one per link an update crosses.
struct LinkSocket {
    socket: Arc<Async<std::net::TcpStream>>,
    drained: bool,
}

impl LinkSocket {
    fn new(stream: &TcpStream) -> LinkSocket {
        LinkSocket {
            socket: stream.clone().into(),
            drained: false,
        }
    }
}

impl AsyncRead for LinkSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.drained {
            // An error shows again on the read, which reports it.
            let _ = std::task::ready!(this.socket.poll_readable(cx));
            this.drained = false;
        }
        let n = std::task::ready!(Pin::new(&mut &*this.socket).poll_read(cx, buf))?;
        this.drained = n > 0 && n < buf.len();
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for Input {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Input::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Input::Secure(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Conn {
    /// After the proofs: with a secret, the Noise handshake (SPEC §5), whose prologue
    /// binds both names and both nonces; without, the plain connection. The acceptor,
    /// which read the last plaintext line, initiates, so no Noise byte can sit in a
    /// line buffer.
    async fn secure(
        mut stream: TcpStream,
        lines: LineReader,
        secret: &[u8],
        transcript: &Transcript<'_>,
        role: secure::Role,
    ) -> Result<Conn, String> {
        if secret.is_empty() {
            return Ok(Conn {
                input: Input::Plain(LinkSocket::new(&stream)),
                stream,
                lines,
                sealer: None,
            });
        }
        let prologue = transcript.prologue();
        let psk = secure::derive_psk(secret, prologue.as_bytes());
        let shaken = timeout(
            HANDSHAKE_TIMEOUT,
            secure::handshake(&mut stream, role, &psk, prologue.as_bytes()),
        )
        .await
        .ok_or("Noise handshake timed out")?
        .map_err(|e| format!("Noise handshake failed: {e}"))?;
        let (opener, sealer) = shaken;
        Ok(Conn {
            input: Input::Secure(Box::new(opener.reader(LinkSocket::new(&stream)))),
            stream,
            lines,
            sealer: Some(sealer),
        })
    }

    /// Writes `plain` (sealed, with a secret) within `PEER_WRITE_TIMEOUT`.
    async fn write(&mut self, plain: &[u8], sealed: &mut Vec<u8>) -> Result<(), String> {
        let bytes = match &mut self.sealer {
            Some(sealer) => {
                sealed.clear();
                sealer
                    .seal(plain, sealed)
                    .map_err(|e| format!("cannot seal: {e}"))?;
                &sealed[..]
            }
            None => plain,
        };
        match timeout(PEER_WRITE_TIMEOUT, self.stream.write_all(bytes)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(format!("write failed: {e}")),
            None => Err(format!(
                "peer did not take a write in {} s",
                PEER_WRITE_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Writes one message and logs it.
async fn send(
    stream: &mut TcpStream,
    message: &Message<'_>,
    log: &Logger,
    who: &str,
) -> Result<(), String> {
    let line = message.to_line();
    stream
        .write_all(&line)
        .await
        .map_err(|e| format!("handshake write failed: {e}"))?;
    log.event(
        "link-out",
        who,
        String::from_utf8_lossy(strip_terminator(&line)).as_ref(),
    );
    Ok(())
}

/// Connects to a peer's bus and runs the dialer's side of the handshake.
async fn dial(bus: &Bus, i: usize) -> Result<Conn, String> {
    let link = &bus.links[i];
    let who = bus.who(i);
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(link.addr.as_str()))
        .await
        .ok_or("connect timed out")?
        .map_err(|e| format!("cannot connect to {}: {e}", link.addr))?;
    let _ = stream.set_nodelay(true);
    let nonce_d = handshake::nonce();
    let hello = Message::Hello {
        dialer: &bus.name,
        nonce: &nonce_d,
    };
    send(&mut stream, &hello, &bus.log, &who).await?;
    let mut reader = link_reader();
    let answer = read_line(&mut stream, &mut reader).await?;
    let Some(Message::Welcome {
        acceptor,
        nonce: nonce_a,
        proof,
    }) = Message::parse(&answer)
    else {
        return Err(format!(
            "peer did not accept the link: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(100)])
        ));
    };
    if acceptor != link.name {
        return Err(format!(
            "the server at {} is `{acceptor}`, not `{}`",
            link.addr, link.name
        ));
    }
    let transcript = Transcript {
        dialer: &bus.name,
        acceptor: &link.name,
        nonce_d: &nonce_d,
        nonce_a,
    };
    if !transcript.verify(&bus.secret, Role::Accept, proof) {
        return Err("peer failed authentication: HERD_SECRET differs".into());
    }
    let proof = transcript.proof(&bus.secret, Role::Dial);
    send(
        &mut stream,
        &Message::Auth { proof: &proof },
        &bus.log,
        &who,
    )
    .await?;
    Conn::secure(
        stream,
        reader,
        &bus.secret,
        &transcript,
        secure::Role::Responder,
    )
    .await
}

/// Serves one connection to the bus port: a linked server's handshake (then the link),
/// or a `herd status` query; anything else is logged and closed.
pub(crate) async fn accept(bus: &Arc<Bus>, stream: TcpStream, who: String, alive: &Alive) {
    // A handshake under way when the server stops is dropped; a link already up is
    // stopped in order (its writer sends what is published).
    let Some(Some((i, conn))) = alive.unless_stopped(handshake_in(bus, stream, who)).await else {
        // A status query, answered, or a refused connection: its handshake timeouts are
        // done with, so no wake-up at their deadlines (an idle herd wakes 0 times).
        smol::spawn(crate::shutdown::forget_dropped_timers()).detach();
        return;
    };
    run_link(bus, i, conn, alive).await;
}

/// The acceptor's side of the handshake; a linked server's connection, or `None` when
/// the connection was a status query or was refused (both logged).
async fn handshake_in(bus: &Arc<Bus>, mut stream: TcpStream, who: String) -> Option<(usize, Conn)> {
    let _ = stream.set_nodelay(true);
    let mut reader = link_reader();
    let first = match read_line(&mut stream, &mut reader).await {
        Ok(line) => line,
        Err(e) => {
            bus.log.event("bus-refused", &who, &e);
            return None;
        }
    };
    let (dialer, nonce_d) = match Message::parse(&first) {
        Some(Message::Hello { dialer, nonce }) => match bus.find(dialer) {
            Some(i) => (Some(i), nonce.to_string()),
            None => {
                let text = format!("`{dialer}` is not a server linked to {}", bus.name);
                bus.log.event("bus-refused", &who, &text);
                return None;
            }
        },
        Some(Message::Status { nonce }) => (None, nonce.to_string()),
        _ => {
            let shown = String::from_utf8_lossy(&first[..first.len().min(100)]).into_owned();
            bus.log
                .event("bus-refused", &who, &format!("not a handshake: {shown}"));
            return None;
        }
    };
    let who = dialer.map(|i| bus.who(i)).unwrap_or(who);
    let dialer_name = dialer.map(|i| bus.links[i].name.as_str()).unwrap_or("");
    let nonce_a = handshake::nonce();
    let transcript = Transcript {
        dialer: dialer_name,
        acceptor: &bus.name,
        nonce_d: &nonce_d,
        nonce_a: &nonce_a,
    };
    let proof = transcript.proof(&bus.secret, Role::Accept);
    let welcome = Message::Welcome {
        acceptor: &bus.name,
        nonce: &nonce_a,
        proof: &proof,
    };
    if let Err(e) = send(&mut stream, &welcome, &bus.log, &who).await {
        bus.log.event("bus-refused", &who, &e);
        return None;
    }
    let answer = match read_line(&mut stream, &mut reader).await {
        Ok(answer) => answer,
        Err(e) => {
            bus.log.event("bus-refused", &who, &e);
            return None;
        }
    };
    let ok = match Message::parse(&answer) {
        Some(Message::Auth { proof }) => transcript.verify(&bus.secret, Role::Dial, proof),
        _ => false,
    };
    if !ok {
        let text = "authentication failed: HERD_SECRET differs or the handshake is forged";
        bus.log.event("bus-refused", &who, text);
        return None;
    }
    match dialer {
        Some(i) => {
            let role = secure::Role::Initiator;
            match Conn::secure(stream, reader, &bus.secret, &transcript, role).await {
                Ok(conn) => Some((i, conn)),
                Err(e) => {
                    bus.log.event("bus-refused", &who, &e);
                    None
                }
            }
        }
        None => {
            let report = status::Report {
                name: bus.name.clone(),
                uptime_ms: bus.started.elapsed().as_millis() as u64,
                clients: bus.replica.len() as u64,
                links: bus.link_states(),
            };
            let json = report.to_json();
            let _ = send(&mut stream, &Message::StatusReport(&json), &bus.log, &who).await;
            bus.log.event("close", &who, "status answered");
            None
        }
    }
}

/// Reads one handshake line within `HANDSHAKE_TIMEOUT`.
async fn read_line<R: AsyncRead + Unpin>(
    stream: &mut R,
    reader: &mut LineReader,
) -> Result<Vec<u8>, String> {
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

/// Runs an established link until either direction fails: first each side says what it
/// holds of its peers' updates (`HERD-HOLDS`) and of the other's (`HERD-RESYNC`), then
/// the writer streams what the peer is missing and the reader applies the peer's
/// updates. While this server bootstraps from another link, its `HERD-RESYNC` is held
/// (the writer sends it once the bootstrap is done, at most `BOOTSTRAP_HOLD` later).
async fn run_link(bus: &Arc<Bus>, i: usize, mut conn: Conn, alive: &Alive) {
    let link = &bus.links[i];
    let who = bus.who(i);
    let role = bus.replica.bootstrap_role(origin(i));
    let mut hello = Vec::new();
    for (peer, cursor) in bus.replica.cursors() {
        Message::Holds {
            peer: &peer,
            cursor,
        }
        .write(&mut hello);
    }
    let held = match role {
        BootRole::Hold(done) => {
            Message::ResyncLater.write(&mut hello);
            Some(done)
        }
        BootRole::Normal | BootRole::Source => {
            Message::Resync(bus.replica.cursor_of(&link.name)).write(&mut hello);
            None
        }
    };
    if let Err(e) = conn.write(&hello, &mut Vec::new()).await {
        bus.link_ended(i);
        return bus.log.event("link-refused", &who, &e);
    }
    for line in hello.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(strip_terminator(line));
        bus.log.event("link-out", &who, &text);
    }
    // The peer's HERD-HOLDS lines (none from a server that does not send them), then
    // its HERD-RESYNC, or HERD-RESYNC-LATER (the writer waits for the HERD-RESYNC).
    let mut holds = Vec::new();
    let theirs = loop {
        let line = match read_line(&mut conn.input, &mut conn.lines).await {
            Ok(line) => line,
            Err(e) => {
                bus.link_ended(i);
                return bus.log.event("link-refused", &who, &e);
            }
        };
        match Message::parse(&line) {
            Some(Message::Holds { peer, cursor }) if holds.len() < MAX_COVERS => {
                bus.log
                    .event("link-in", &who, &String::from_utf8_lossy(&line));
                holds.push((peer.to_string(), cursor));
            }
            Some(Message::Resync(cursor)) => break Some(cursor),
            Some(Message::ResyncLater) => {
                // Bootstrapping too, so if this link was to bring our bootstrap, it
                // brings nothing, and it may be waiting on us (servers started empty
                // together wait on each other in a ring, until BOOTSTRAP_HOLD): the
                // bootstrap is off, as when the link goes down.
                bus.replica.link_ended(origin(i));
                break None;
            }
            _ => {
                let e = format!(
                    "expected HERD-RESYNC, got {}",
                    String::from_utf8_lossy(&line[..line.len().min(100)])
                );
                bus.link_ended(i);
                return bus.log.event("link-refused", &who, &e);
            }
        }
    };
    let line = match theirs {
        Some(cursor) => Message::Resync(cursor).to_line(),
        None => Message::ResyncLater.to_line(),
    };
    bus.log.event(
        "link-in",
        &who,
        &String::from_utf8_lossy(strip_terminator(&line)),
    );
    let id = bus.next_id.fetch_add(1, Ordering::Relaxed);
    *lock(&link.current) = Some(id);
    let addr = conn
        .stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let how = match theirs {
        Some(cursor) => resync_kind(bus.replica.start_offset(cursor)),
        None => "the peer's resync comes after its bootstrap".to_string(),
    };
    let sealed = if conn.sealer.is_some() {
        format!(", {}", secure::PATTERN)
    } else {
        String::new()
    };
    bus.log
        .event("link-up", &who, &format!("{addr}; {how}{sealed}"));
    // The connect and handshake timeouts are done with: no wake-up at their deadlines.
    smol::spawn(crate::shutdown::forget_dropped_timers()).detach();
    if let Err(e) = keepalive(&conn.stream) {
        bus.log
            .event("link-info", &who, &format!("cannot set keepalive: {e}"));
    }
    let _ = alive;
    let Conn {
        stream,
        input,
        lines,
        sealer,
    } = conn;
    let writer = Conn {
        input: Input::Plain(LinkSocket::new(&stream)),
        stream,
        lines: LineReader::new(),
        sealer,
    };
    // A HERD-RESYNC that comes later reaches the writer through the reader.
    let (later_tx, later) = async_channel::bounded(1);
    let theirs = match theirs {
        Some(cursor) => Ok(cursor),
        None => Err(later),
    };
    let why = future::or(
        write_loop(bus, i, writer, theirs, held, &holds),
        read_loop(bus, i, input, lines, later_tx),
    )
    .await;
    let mut current = lock(&link.current);
    if *current == Some(id) {
        *current = None;
    }
    drop(current);
    bus.link_ended(i);
    bus.log.event("link-down", &who, &why);
}

/// How a writer starting at `start` catches its peer up, for the log.
fn resync_kind(start: u64) -> String {
    if start == 0 {
        "full resync".to_string()
    } else {
        format!("partial resync from offset {start}")
    }
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

/// The link's one writer. It streams published updates past where the peer's
/// `HERD-RESYNC` says it is (`theirs`, or the channel that brings it when the peer sent
/// `HERD-RESYNC-LATER`), leaving out what the peer's `holds` show it has from this
/// server's bootstrap, until the wake-up channel closes (server stopping, or the link
/// replaced), then sends what is left. With `held`, this server's own `HERD-RESYNC` is
/// still owed: it goes out once the bootstrap is done, at most `BOOTSTRAP_HOLD` on.
async fn write_loop(
    bus: &Bus,
    i: usize,
    mut conn: Conn,
    theirs: Result<Option<Cursor>, async_channel::Receiver<Option<Cursor>>>,
    mut held: Option<async_channel::Receiver<()>>,
    holds: &[(String, Cursor)],
) -> String {
    let who = bus.who(i);
    let mut sealed = Vec::new();
    let hold_until = Instant::now() + BOOTSTRAP_HOLD;
    // Owes its own HERD-RESYNC once `held` closes (or at `hold_until`).
    let resync_due = |held: &Option<async_channel::Receiver<()>>| {
        let held = held.clone();
        async move {
            match held {
                Some(done) => {
                    let left = hold_until.saturating_duration_since(Instant::now());
                    let _ = timeout(left, done.recv()).await;
                }
                None => future::pending::<()>().await,
            }
        }
    };
    let theirs = match theirs {
        Ok(cursor) => cursor,
        Err(later) => loop {
            // Waits for the peer's HERD-RESYNC, sending its own when it falls due.
            match recv_unless(&later, resync_due(&held)).await {
                Some(Ok(cursor)) => {
                    let start = bus.replica.start_offset(cursor);
                    bus.log.event("link-resync", &who, &resync_kind(start));
                    break cursor;
                }
                Some(Err(_)) => return "the peer closed before its HERD-RESYNC".into(),
                None => {
                    if let Err(why) = send_resync(bus, i, &mut conn, &mut sealed).await {
                        return why;
                    }
                    held = None;
                }
            }
        },
    };
    let start = bus.replica.start_offset(theirs);
    let wake = bus.replica.subscribe(i);
    let mut feed = Feed::from(start);
    feed.skip_source(bus.replica.bootstrap_skip(holds));
    // While the bootstrap runs, what it brings is not sent (the peer may hold it, which
    // its HOLDS tell once the bootstrap's COVERS are known), nor any offset past it;
    // once it is done the feed starts over from `start`, leaving out only what the
    // peer is known to hold.
    let mut provisional = held.is_some();
    if provisional {
        feed.skip_source(bus.replica.bootstrap_source().map(|s| (s, u64::MAX)));
    }
    let mut sent_offset = start;
    let mut buf = Vec::with_capacity(4096);
    let mut closing = false;
    loop {
        let (lines, more) = bus.replica.catch_up(&mut feed, origin(i), WRITE_BATCH);
        // A provisional feed leaves out the bootstrap's updates, so it covers nothing:
        // its HERD-COVERS would let a peer bootstrapping from here claim what it was
        // not sent. The feed that starts over after the bootstrap sends them.
        let covers = feed
            .take_covers()
            .filter(|_| !provisional)
            .unwrap_or_default();
        let moved = feed.offset().saturating_sub(sent_offset);
        let send_offset = moved > 0
            && !provisional
            && (!lines.is_empty() || moved >= OFFSET_LAG || (closing && !more));
        if !lines.is_empty() || send_offset || !covers.is_empty() {
            let mut entry = bus.log.entry();
            for line in &lines {
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                entry.line("out", &who, line.as_bytes());
            }
            for (server, cursor) in &covers {
                let start = buf.len();
                Message::Covers {
                    server,
                    cursor: *cursor,
                }
                .write(&mut buf);
                entry.line("out", &who, strip_terminator(&buf[start..]));
            }
            if send_offset {
                let start = buf.len();
                let cursor = Cursor {
                    history: bus.replica.history(),
                    offset: feed.offset(),
                };
                Message::Offset(cursor).write(&mut buf);
                entry.line("out", &who, strip_terminator(&buf[start..]));
                sent_offset = feed.offset();
            }
            bus.log.send(entry);
            if let Err(why) = conn.write(&buf, &mut sealed).await {
                return why;
            }
            buf.clear();
        }
        if more {
            continue;
        }
        if closing {
            return "link closed; everything published was sent".into();
        }
        match recv_unless(&wake, resync_due(&held)).await {
            Some(Ok(())) => {}
            Some(Err(_)) => closing = true,
            None => {
                if let Err(why) = send_resync(bus, i, &mut conn, &mut sealed).await {
                    return why;
                }
                held = None;
                if provisional {
                    provisional = false;
                    feed = Feed::from(start);
                    feed.skip_source(bus.replica.bootstrap_skip(holds));
                    sent_offset = start;
                }
            }
        }
    }
}

/// The next message on `rx` (`Err` once it is closed and empty), or `None` if `due`
/// comes first: a writer waiting for its peer also owes its own `HERD-RESYNC`.
async fn recv_unless<T>(
    rx: &async_channel::Receiver<T>,
    due: impl Future<Output = ()>,
) -> Option<Result<T, async_channel::RecvError>> {
    future::or(async { Some(rx.recv().await) }, async {
        due.await;
        None
    })
    .await
}

/// Sends this server's `HERD-RESYNC` for link `i`, owed since its `HERD-RESYNC-LATER`:
/// what it holds of the peer's updates now that its bootstrap is done.
async fn send_resync(
    bus: &Bus,
    i: usize,
    conn: &mut Conn,
    sealed: &mut Vec<u8>,
) -> Result<(), String> {
    let mine = Message::Resync(bus.replica.cursor_of(&bus.links[i].name)).to_line();
    conn.write(&mine, sealed).await?;
    let text = String::from_utf8_lossy(strip_terminator(&mine));
    bus.log.event("link-out", &bus.who(i), &text);
    Ok(())
}

/// The link's reader, on the shared batch loop: applies the peer's updates and notes
/// its offsets. A line that is not a valid update is logged and dropped; only a failed
/// read ends the link.
async fn read_loop(
    bus: &Bus,
    i: usize,
    mut input: Input,
    mut lines: LineReader,
    later: async_channel::Sender<Option<Cursor>>,
) -> String {
    let who = bus.who(i);
    let mut link = LinkLines {
        bus,
        i,
        who: &who,
        covers: Vec::new(),
        later,
        pending: Vec::new(),
    };
    batch::run(
        &mut input,
        &mut lines,
        &bus.replica,
        &bus.log,
        None,
        &mut link,
    )
    .await
    .unwrap_or_default()
}

/// A link's side of the batch loop.
struct LinkLines<'a> {
    bus: &'a Bus,
    i: usize,
    who: &'a str,
    /// `HERD-COVERS` lines so far of a full resync from this peer.
    covers: Vec<(String, Cursor)>,
    /// Where a `HERD-RESYNC` that comes after `HERD-RESYNC-LATER` goes: the writer.
    later: async_channel::Sender<Option<Cursor>>,
    /// Updates read but not yet decided: decided together (`Replica::decide_all`)
    /// before any other message and before the batch is committed.
    pending: Vec<Report>,
}

impl LinkLines<'_> {
    /// Decides the updates read so far, in the order they came.
    fn decide_pending(&mut self, batch: &mut Batch) {
        if !self.pending.is_empty() {
            self.bus
                .replica
                .decide_all(&mut self.pending, origin(self.i), batch);
        }
    }
}

impl batch::Handler for LinkLines<'_> {
    const CLOSED: &'static str = "closed by peer";

    fn who(&self) -> &str {
        self.who
    }

    async fn line(&mut self, line: Line<'_>, batch: &mut Batch, entry: &mut Entry) -> bool {
        let (bus, who) = (self.bus, self.who);
        let line = match line {
            Line::Full(line) => line,
            Line::TooLong(_) => {
                let why = format!("line longer than {MAX_PEER_LINE} bytes");
                entry.line("dropped", who, why.as_bytes());
                return true;
            }
        };
        let message = Message::parse(line);
        if !matches!(message, Some(Message::Update(_))) {
            // Every other message comes after the updates before it.
            self.decide_pending(batch);
        }
        match message {
            Some(Message::Update(text)) => match Report::from_line(text) {
                Some(report) => self.pending.push(report),
                None => entry.line("dropped", who, b"not a valid AT line"),
            },
            Some(Message::Offset(cursor)) => {
                bus.replica
                    .note_cursor(&bus.links[self.i].name, cursor, batch)
            }
            Some(Message::Resync(cursor)) => {
                // Only the one owed after HERD-RESYNC-LATER counts; the writer takes it.
                if self.later.try_send(cursor).is_err() {
                    entry.line("dropped", who, b"a second HERD-RESYNC");
                }
                self.later.close();
            }
            Some(Message::Covers { server, cursor }) => {
                // The sender's own history comes last, ends the set and is always kept
                // (the bootstrap's end reads it); others past the bound are dropped.
                let own = server == bus.links[self.i].name;
                if own || self.covers.len() < MAX_COVERS - 1 {
                    self.covers.push((server.to_string(), cursor));
                }
                if own {
                    let covers = std::mem::take(&mut self.covers);
                    bus.replica.note_covers(origin(self.i), covers, batch);
                }
            }
            _ => entry.line("dropped", who, b"not a bus message"),
        }
        true
    }

    fn before_commit(&mut self, batch: &mut Batch) {
        self.decide_pending(batch);
    }

    async fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }

    async fn stopped(&mut self) -> String {
        "stopped".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_reader_grows_to_peer_read_buffer_for_a_burst_and_no_further() {
        smol::block_on(async {
            let mut reader = link_reader();
            let line = "AT Riley +0.000000001 kiwi +34.068930-118.445127 1621464827.959498503\n";
            let burst = line.repeat(3 * PEER_READ_BUFFER / line.len());
            // Then, in a buffer grown past MAX_PEER_LINE, a line one byte too long
            // (terminator included) and the longest that fits.
            let mut input = burst.into_bytes();
            input.extend(vec![b'y'; MAX_PEER_LINE]);
            input.push(b'\n');
            input.extend(vec![b'z'; MAX_PEER_LINE - 1]);
            input.push(b'\n');
            let mut src = &input[..];
            let (mut lines, mut largest, mut last) = (0, 0, Vec::new());
            while reader.fill(&mut src).await.unwrap() > 0 {
                largest = largest.max(reader.buffer_len());
                while let Some(got) = reader.next_line() {
                    lines += 1;
                    last.push(match got {
                        Line::Full(l) => (true, l.len()),
                        Line::TooLong(l) => (false, l.len()),
                    });
                }
            }
            assert_eq!(lines, 3 * PEER_READ_BUFFER / line.len() + 2);
            assert_eq!(largest, PEER_READ_BUFFER);
            assert_eq!(
                last[last.len() - 2..],
                [(false, MAX_PEER_LINE), (true, MAX_PEER_LINE - 1)]
            );
        });
    }

    #[test]
    fn a_link_socket_drained_by_a_short_read_still_reads_what_comes_later() {
        smol::block_on(async {
            let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut sender = TcpStream::connect(addr).await.unwrap();
            let (receiver, _) = listener.accept().await.unwrap();
            let mut socket = LinkSocket::new(&receiver);
            let mut buf = [0u8; 64];
            for (i, part) in [&b"first\n"[..], b"second\n", b""].iter().enumerate() {
                if part.is_empty() {
                    sender.close().await.unwrap();
                } else {
                    sender.write_all(part).await.unwrap();
                }
                // A short read drains the socket; the next waits for readability first.
                let n = futures_lite::AsyncReadExt::read(&mut socket, &mut buf)
                    .await
                    .unwrap();
                assert_eq!(&buf[..n], *part, "read {i}");
                assert_eq!(socket.drained, n > 0);
            }
        });
    }
}
