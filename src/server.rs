//! The server loop: accept connections, tell peers from clients by the first line,
//! answer client commands in order, and keep the links to peers up.

use crate::config::Config;
use crate::lines::{Line, LineReader};
use crate::log::{Entry, LogWriter, Logger};
use crate::peer::{self, Peers};
use crate::places::{self, Places};
use crate::protocol::{self, Command};
use crate::state::State;
use crate::store::{Report, Store};
use crate::{handshake, log};
use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncWriteExt, Future};
use smol::Timer;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Connections (clients and peers) one server holds at once. At a few KiB each, 10,000
/// idle connections cost tens of MB; past this bound a new connection is logged and closed.
pub const MAX_CONNECTIONS: usize = 10_000;

/// How long a reply may wait for a client to read it. A client that reads nothing for
/// 30 s is gone or hostile; its connection is closed so it holds no memory.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server waits for connections to finish what they have read and
/// for peer queues to drain: a WHATSAT may wait `PLACES_TIMEOUT` for its places.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(places::PLACES_TIMEOUT.as_secs() + 1);

/// After `accept` fails (say, out of file descriptors), wait this long before trying
/// again, so the failure is not spun on; connections wait in the backlog meanwhile.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// After answering a line that is too long, read and discard at most this much more
/// (for at most `DRAIN_TIME`) before closing, so the client sees the answer rather than
/// a reset.
const DRAIN_LIMIT: usize = 4 << 20;
/// See `DRAIN_LIMIT`.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The secrets a server runs with, from the environment.
#[derive(Clone, Default)]
pub struct Secrets {
    /// `HERD_SECRET`: the key peers prove they know.
    pub herd_secret: Option<String>,
    /// `GOOGLE_PLACES_API_KEY`.
    pub places_key: Option<String>,
}

impl Secrets {
    /// Reads both from the environment.
    pub fn from_env() -> Secrets {
        Secrets {
            herd_secret: std::env::var("HERD_SECRET").ok().filter(|s| !s.is_empty()),
            places_key: std::env::var(places::KEY_VAR)
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }
}

/// One running server: everything its tasks share.
pub struct Node {
    /// This server's name.
    pub name: String,
    /// Every client's latest report.
    pub store: Store,
    /// The links to peers.
    pub peers: Peers,
    /// Where WHATSAT gets places.
    pub places: Places,
    /// The log.
    pub log: Logger,
    pub(crate) secret: Vec<u8>,
    state: Option<Arc<State>>,
    state_failing: AtomicBool,
    connections: Arc<AtomicUsize>,
}

impl Node {
    /// Stores an update if it is newer than what is held; returns its line, to be
    /// persisted and flooded, if it was.
    pub(crate) fn decide(&self, client: &str, report: Report) -> Option<Arc<str>> {
        let line = report.line.clone();
        self.store.update(client, report).then_some(line)
    }

    /// Makes accepted updates durable, in one write for the batch. Called before any
    /// reply to them, and any forwarding of them, goes out.
    pub(crate) fn persist(&self, accepted: &[Arc<str>]) {
        let Some(state) = &self.state else { return };
        if accepted.is_empty() {
            return;
        }
        match state.append(accepted, || self.store.snapshot()) {
            Ok(()) => self.state_failing.store(false, Ordering::Relaxed),
            Err(e) => {
                self.log.event(
                    "state-error",
                    "-",
                    &format!("cannot write the state file: {e}"),
                );
                // Say it on stderr once per run of failures, not once per batch.
                if !self.state_failing.swap(true, Ordering::Relaxed) {
                    eprintln!("herd {}: cannot write the state file: {e}", self.name);
                }
            }
        }
    }

    /// Floods persisted updates to every peer but `from`, emptying `accepted`.
    pub(crate) fn flood(&self, accepted: &mut Vec<Arc<str>>, from: Option<usize>) {
        for line in accepted.drain(..) {
            self.peers.flood(&line, from, &self.log);
        }
    }
}

/// Runs server `name` of `config` on `listener` until `stop` completes; then stops in
/// order (see the end of this function) and flushes the state file and the log. Only
/// a bad name, an unusable places source or an unopenable state file is an error: one
/// connection's failure never ends `run`.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    name: &str,
    secrets: Secrets,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let me = config
        .index_of(name)
        .ok_or_else(|| format!("{}: no server named `{name}`", config.path.display()))?;
    let places = Places::new(&config.places, secrets.places_key.clone())?;
    let hidden: Vec<String> = [secrets.herd_secret.clone(), secrets.places_key.clone()]
        .into_iter()
        .flatten()
        .collect();
    let (logger, writer): (Logger, LogWriter) = log::Logger::open(&config.log_dir, name, hidden);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    logger.event(
        "start",
        "-",
        &format!("{name} listening on {addr}; places: {}", places.describe()),
    );
    let store = Store::new();
    let state = match &config.state_dir {
        Some(dir) => Some(Arc::new(load_state(dir, name, &store, &logger)?)),
        None => None,
    };
    let syncer = match (&state, config.fsync_interval) {
        (Some(state), Some(every)) => Some(Syncer::start(state.clone(), every)),
        _ => None,
    };
    let node = Arc::new(Node {
        name: name.to_string(),
        store,
        peers: Peers::new(config, me),
        places,
        log: logger,
        secret: secrets.herd_secret.unwrap_or_default().into_bytes(),
        state,
        state_failing: AtomicBool::new(false),
        connections: Arc::new(AtomicUsize::new(0)),
    });
    let (shutdown_tx, shutdown) = async_channel::bounded::<()>(1);
    let (clients, clients_done) = Alive::new(&shutdown);
    let (links_alive, links_done) = Alive::new(&shutdown);
    let links: Vec<smol::Task<()>> = (0..node.peers.links().len())
        .filter(|&i| node.peers.links()[i].dials)
        .map(|i| smol::spawn(peer::dial_loop(node.clone(), i, links_alive.clone())))
        .collect();
    let tokens = (clients, links_alive);
    future::or(accept_loop(&node, &listener, &tokens), async {
        stop.await;
    })
    .await;
    // Shut down in order: stop accepting; let client connections finish the commands
    // they have read (their updates still flood); then close the peer queues, let the
    // writers drain them, and wait for the links; each phase within a grace period.
    drop(listener);
    node.log.event("stop", "-", "shutting down");
    drop(shutdown_tx);
    let (clients, links_alive) = tokens;
    drop(clients);
    let clients_finished = timeout(SHUTDOWN_GRACE, clients_done.recv()).await.is_some();
    node.peers.close_all();
    drop(links_alive);
    let links_finished = timeout(SHUTDOWN_GRACE, links_done.recv()).await.is_some();
    if !(clients_finished && links_finished) {
        node.log
            .event("stop", "-", "grace period over: cancelling what is left");
    }
    drop(links);
    drop(syncer);
    if let Some(state) = &node.state {
        if let Err(e) = state.sync() {
            node.log.event(
                "state-error",
                "-",
                &format!("cannot sync the state file: {e}"),
            );
        }
    }
    node.log.event("stop", "-", "stopped");
    writer.finish(&node.log);
    Ok(())
}

/// Opens the state file and loads it into `store`; a damaged tail is cut and logged.
fn load_state(
    dir: &std::path::Path,
    name: &str,
    store: &Store,
    log: &Logger,
) -> Result<State, String> {
    let (state, loaded) = State::open(dir, name)
        .map_err(|e| format!("cannot open the state file in {}: {e}", dir.display()))?;
    if let Some((bytes, why)) = &loaded.truncated {
        let text = format!("{why}: cut {bytes} bytes from the state file; peers fill in the rest");
        log.event("state-repair", "-", &text);
        eprintln!("herd {name}: {text}");
    }
    for line in &loaded.lines {
        if let Some((report, client)) = Report::from_line(line) {
            store.update(&client, report);
        }
    }
    log.event(
        "state-loaded",
        "-",
        &format!("{} records, {} clients", loaded.lines.len(), store.len()),
    );
    Ok(state)
}

/// Syncs the state file to disk every `fsync-interval`, on its own thread; stops when
/// dropped.
struct Syncer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(state: Arc<State>, every: Duration) -> Syncer {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if let Err(e) = state.sync() {
                    eprintln!("herd: cannot sync the state file: {e}");
                }
            }
        });
        Syncer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Handed to every task the server starts: `shutdown` closes when the server stops,
/// and the server waits until every `_done` sender is dropped.
#[derive(Clone)]
pub(crate) struct Alive {
    pub(crate) shutdown: async_channel::Receiver<()>,
    _done: async_channel::Sender<()>,
}

impl Alive {
    /// A token tied to `shutdown`, and the receiver that closes once every clone of the
    /// token is dropped.
    fn new(shutdown: &async_channel::Receiver<()>) -> (Alive, async_channel::Receiver<()>) {
        let (done_tx, done) = async_channel::bounded::<()>(1);
        let alive = Alive {
            shutdown: shutdown.clone(),
            _done: done_tx,
        };
        (alive, done)
    }

    /// True once the server is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_closed()
    }

    /// Runs `fut` unless the server stops first; `None` if it did.
    pub(crate) async fn unless_stopped<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        future::or(async { Some(fut.await) }, async {
            let _ = self.shutdown.recv().await;
            None
        })
        .await
    }
}

/// Accepts connections; each task holds a client token, and a link token for the case
/// its connection turns out to be a peer.
async fn accept_loop(node: &Arc<Node>, listener: &TcpListener, tokens: &(Alive, Alive)) {
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                failing = false;
                let who = format!("client {addr}");
                if node.connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    node.log.event(
                        "refused",
                        &who,
                        &format!("{MAX_CONNECTIONS} connections already open"),
                    );
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let guard = Counted::new(&node.connections);
                let (node, client, link) = (node.clone(), tokens.0.clone(), tokens.1.clone());
                smol::spawn(async move {
                    let _guard = guard;
                    serve_connection(&node, stream, who, client, link).await;
                })
                .detach();
            }
            Err(e) => {
                if !failing {
                    node.log.event(
                        "accept-error",
                        "-",
                        &format!("{e}; retrying every {} ms", ACCEPT_BACKOFF.as_millis()),
                    );
                    eprintln!("herd {}: accept failed: {e}", node.name);
                }
                failing = true;
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Counts a live connection for as long as it is held.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(counter: &Arc<AtomicUsize>) -> Counted {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `fut`, giving up after `limit`.
pub(crate) async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// Nanoseconds since the epoch, now.
fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Serves one connection: a client, or a peer if its first line is a valid `HERD-HELLO`.
async fn serve_connection(
    node: &Arc<Node>,
    mut stream: TcpStream,
    who: String,
    alive: Alive,
    link: Alive,
) {
    node.log.event("open", &who, "");
    let mut reader = LineReader::new();
    let mut out = Vec::with_capacity(256);
    let mut accepted = Vec::new();
    let mut first = true;
    let why = loop {
        let Some(read) = alive.unless_stopped(reader.fill(&mut stream)).await else {
            break "server stopping".to_string();
        };
        let mut entry = node.log.entry();
        let mut too_long = false;
        let mut hello = None;
        while let Some(line) = reader.next_line() {
            let line = match line {
                Line::Full(l) => protocol::strip_terminator(l),
                Line::TooLong(prefix) => {
                    entry.line("in", &who, prefix);
                    let start = out.len();
                    protocol::format_invalid(prefix, &mut out);
                    entry.lines("out", &who, &out[start..]);
                    too_long = true;
                    break;
                }
            };
            entry.line("in", &who, line);
            if std::mem::take(&mut first) {
                if let Some(found) = peer_hello(node, line) {
                    hello = Some(found);
                    break;
                }
            }
            answer(node, line, &mut out, &mut accepted, (&mut entry, &who)).await;
        }
        // Durable first, then the reply; forwarding and logging follow off the reply's path.
        node.persist(&accepted);
        let written = write_replies(&mut stream, &out).await;
        node.flood(&mut accepted, None);
        node.log.send(entry);
        out.clear();
        if let Err(why) = written {
            break why;
        }
        if let Some((i, nonce)) = hello {
            node.log
                .event("close", &who, "handed over to the peer link");
            // Boxed: a link's state would otherwise sit in every client task's future.
            // From here on this is a link: the server stops it with the links.
            drop(alive);
            return Box::pin(peer::accept(node, i, stream, reader, &nonce, &link)).await;
        }
        if too_long {
            Box::pin(drain(&mut stream)).await;
            break format!("line longer than {} bytes", crate::lines::MAX_LINE);
        }
        match read {
            Ok(0) => break "closed by client".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    node.log.event("close", &who, &why);
}

/// Writes a batch of replies, giving a client that reads nothing `CLIENT_WRITE_TIMEOUT`.
/// Most writes complete at once, so the timer is set only when one has to wait.
async fn write_replies(stream: &mut TcpStream, out: &[u8]) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    let mut write = stream.write_all(out);
    let done = match future::poll_once(&mut write).await {
        Some(done) => Some(done),
        None => timeout(CLIENT_WRITE_TIMEOUT, write).await,
    };
    match done {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("write failed: {e}")),
        None => Err("client did not read its replies in time".into()),
    }
}

/// After a line that is too long: stop sending, then read and discard what is in
/// flight for a bounded time, so the client reads the answer instead of a reset.
async fn drain(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = timeout(DRAIN_TIME, async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < DRAIN_LIMIT {
            match futures_lite::AsyncReadExt::read(stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// `HERD-HELLO NAME NONCE` from a linked server: the link's index and the nonce.
fn peer_hello(node: &Node, line: &[u8]) -> Option<(usize, String)> {
    let words: Vec<&[u8]> = protocol::fields(line).collect();
    let [word, name, nonce] = words[..] else {
        return None;
    };
    let (name, nonce) = (
        std::str::from_utf8(name).ok()?,
        std::str::from_utf8(nonce).ok()?,
    );
    if word != handshake::HELLO.as_bytes() || !handshake::is_nonce(nonce) {
        return None;
    }
    Some((node.peers.find(name)?, nonce.to_string()))
}

/// Answers one client line, appending the reply to `out`.
async fn answer(
    node: &Node,
    line: &[u8],
    out: &mut Vec<u8>,
    accepted: &mut Vec<Arc<str>>,
    log: (&mut Entry, &str),
) {
    let (entry, who) = log;
    let start = out.len();
    match protocol::parse_command(line) {
        Ok(Command::IAmAt(cmd)) => {
            let at = protocol::format_at(&node.name, now_ns(), &cmd);
            out.extend_from_slice(at.as_bytes());
            out.push(b'\n');
            let report = Report::local(at, node.name.len(), cmd.time_ns);
            accepted.extend(node.decide(cmd.client, report));
        }
        Ok(Command::WhatsAt(cmd)) => {
            let Some(at) = node.store.get(cmd.client) else {
                protocol::format_invalid(line, out);
                return entry.lines("out", who, &out[start..]);
            };
            let location = protocol::parse_at(&at)
                .map(|a| a.location)
                .unwrap_or_default();
            // Boxed: only WHATSAT needs this state, not every connection's future.
            let places = Box::pin(node.places.nearby(location, cmd.radius, cmd.bound)).await;
            out.extend_from_slice(at.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(places.as_bytes());
            out.extend_from_slice(b"\n\n");
            // The JSON is logged as one line (its newlines escaped, cut at
            // MAX_LOGGED_LINE): a line per JSON line would cost more than the reply.
            entry.line("out", who, at.as_bytes());
            return entry.line("out", who, places.as_bytes());
        }
        Err(_) => protocol::format_invalid(line, out),
    }
    entry.lines("out", who, &out[start..]);
}

/// Raises this process's open-file limit to its hard limit, so `MAX_CONNECTIONS` is
/// reachable where the soft limit is the common 1024; returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}

/// The listen backlog: connections the kernel holds for us while we are busy (or out
/// of descriptors). Bursts of thousands of connects must not see SYNs dropped; the
/// kernel caps it at `net.core.somaxconn` anyway.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds `HOST:PORT` (SO_REUSEADDR, so a restarted server can rebind at once) with a
/// `LISTEN_BACKLOG` backlog.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    use rustix::net::{self as rn, AddressFamily, SocketType};
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing");
    for sa in std::net::ToSocketAddrs::to_socket_addrs(addr)? {
        let family = if sa.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let attempt = (|| -> io::Result<TcpListener> {
            let fd = rn::socket(family, SocketType::STREAM, None)?;
            rn::sockopt::set_socket_reuseaddr(&fd, true)?;
            rn::bind(&fd, &sa)?;
            rn::listen(&fd, LISTEN_BACKLOG)?;
            let std_listener = std::net::TcpListener::from(fd);
            std_listener.set_nonblocking(true)?;
            TcpListener::try_from(std_listener)
        })();
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}
