//! The server: a client port that speaks only the client protocol (SPEC §4) and a bus
//! port for peer links and status queries (SPEC §5), each with its own bound; every
//! client command answered in order; and an orderly stop.

use crate::batch;
use crate::config::Config;
use crate::lines::{Line, LineReader};
use crate::log::{self, Entry, LogWriter, Logger};
use crate::peer::{self, Bus};
use crate::places::{self, Places};
use crate::protocol::{self, Command};
use crate::replica::{Batch, Replica};
use crate::shutdown::{timeout, Alive};
use crate::store::Report;
use async_net::{TcpListener, TcpStream};
use futures_lite::{future, AsyncWriteExt, Future};
use smol::{Async, Timer};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Client connections one server holds at once. This machine allows 20,000 open files
/// a process; 19,000 clients leave room for the bus, places requests, the log and the
/// state file. Past this bound (or past what the open-file limit allows, whichever is
/// lower) a new client is logged and closed.
pub const MAX_CLIENTS: usize = 19_000;

/// Connections to the bus port held at once: the configured links, status queries and
/// strangers that have not finished a handshake (each gets `HANDSHAKE_TIMEOUT`). Kept
/// apart from `MAX_CLIENTS`, so clients can never crowd out the herd's own links.
pub const MAX_BUS_CONNECTIONS: usize = 256;

/// Descriptors kept back from clients: the bus, places requests, log, state file,
/// listeners and the runtime's own.
const RESERVED_FDS: usize = MAX_BUS_CONNECTIONS + places::MAX_PLACES_IN_FLIGHT + 64;

/// How long a reply may wait for a client to read it. A client that reads nothing for
/// 30 s is gone or hostile; its connection is closed so it holds no memory.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping server waits for connections to finish what they have read and
/// for peer writers to send what is published: a WHATSAT may wait `PLACES_TIMEOUT`.
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

/// A server's two listening sockets.
pub struct Listeners {
    /// The client port.
    pub client: TcpListener,
    /// The bus port.
    pub bus: TcpListener,
}

impl Listeners {
    /// Binds server `name`'s client and bus addresses from `config`.
    pub fn bind(config: &Config, name: &str) -> Result<Listeners, String> {
        let me = config
            .index_of(name)
            .ok_or_else(|| format!("{}: no server named `{name}`", config.path.display()))?;
        let server = &config.servers[me];
        let open = |addr: &str, what: &str| {
            bind(addr).map_err(|e| format!("{name}: cannot listen on {addr} ({what}): {e}"))
        };
        Ok(Listeners {
            client: open(&server.addr, "client port")?,
            bus: open(&server.bus, "bus port")?,
        })
    }
}

/// What the client side of a running server shares.
struct Node {
    name: String,
    replica: Arc<Replica>,
    places: Places,
    log: Logger,
}

/// Runs server `name` of `config` on `listeners` until `stop` completes; then stops in
/// order (see the end of this function) and flushes the state file and the log. Only
/// a bad name, an unusable places source or an unopenable state file is an error: one
/// connection's failure never ends `run`.
pub async fn run(
    listeners: Listeners,
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
    let (logger, writer): (Logger, LogWriter) =
        log::Logger::open_with(&config.log_dir, name, hidden, config.log_rotation);
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let client_limit = client_limit();
    logger.event(
        "start",
        "-",
        &format!(
            "{name} serving clients on {} (up to {client_limit}), bus on {}; places: {}",
            local(&listeners.client),
            local(&listeners.bus),
            places.describe()
        ),
    );
    let links = config.neighbours(me).len();
    let replica = Arc::new(Replica::open(
        name,
        links,
        config.state_dir.as_deref(),
        config.fsync_interval,
        &logger,
    )?);
    if secrets.herd_secret.is_none() && spans_hosts(config) {
        let text = "the herd spans more than one host and HERD_SECRET is not set: links are \
                    neither authenticated nor encrypted";
        logger.event("warning", "-", text);
        eprintln!("herd {name}: warning: {text}");
    }
    let secret = secrets.herd_secret.unwrap_or_default().into_bytes();
    let bus = Arc::new(Bus::new(
        config,
        me,
        secret,
        replica.clone(),
        logger.clone(),
    )?);
    let node = Arc::new(Node {
        name: name.to_string(),
        replica: replica.clone(),
        places,
        log: logger.clone(),
    });
    let (shutdown_tx, shutdown) = async_channel::bounded::<()>(1);
    let (clients, clients_done) = Alive::new(&shutdown);
    let (links_alive, links_done) = Alive::new(&shutdown);
    let dialers: Vec<smol::Task<()>> = (0..bus.links().len())
        .filter(|&i| bus.links()[i].dials)
        .map(|i| spawn_dialer(&bus, i, &links_alive))
        .collect();
    let client_listener: Arc<Async<std::net::TcpListener>> = listeners.client.into();
    let bus_listener: Arc<Async<std::net::TcpListener>> = listeners.bus.into();
    let serve_clients = accept_loop(
        &client_listener,
        &logger,
        client_limit,
        "client",
        |socket, addr, open| {
            let (node, alive) = (node.clone(), clients.clone());
            serve_client(node, socket, addr, alive, open)
        },
    );
    let serve_bus = accept_loop(
        &bus_listener,
        &logger,
        MAX_BUS_CONNECTIONS,
        "bus",
        |socket, addr, open| {
            let (bus, alive) = (bus.clone(), links_alive.clone());
            async move {
                let stream = TcpStream::from(socket);
                peer::accept(&bus, stream, format!("bus {addr}"), &alive).await;
                drop(open);
            }
        },
    );
    future::or(future::or(serve_clients, serve_bus), stop).await;
    // Shut down in order: stop accepting; let client connections finish the commands
    // they have read (their updates still flood); then close the links' wake-up
    // channels, let each writer send what is published, and wait for the links; each
    // phase within a grace period. Last, the state file and the log.
    drop((client_listener, bus_listener));
    logger.event("stop", "-", "shutting down");
    drop(shutdown_tx);
    drop(clients);
    let clients_finished = timeout(SHUTDOWN_GRACE, clients_done.recv()).await.is_some();
    replica.close_links();
    drop(links_alive);
    let links_finished = timeout(SHUTDOWN_GRACE, links_done.recv()).await.is_some();
    if !(clients_finished && links_finished) {
        logger.event("stop", "-", "grace period over: cancelling what is left");
    }
    drop(dialers);
    replica.close();
    logger.event("stop", "-", "stopped");
    writer.finish(&logger);
    Ok(())
}

/// True when the bus addresses name more than one host (loopback names count as one).
fn spans_hosts(config: &Config) -> bool {
    let host = |addr: &str| {
        let h = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let h = h.trim_start_matches('[').trim_end_matches(']');
        let loopback = h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            "loopback".to_string()
        } else {
            h.to_ascii_lowercase()
        }
    };
    let mut hosts = config.servers.iter().map(|s| host(&s.bus));
    let first = hosts.next();
    hosts.any(|h| Some(h) != first)
}

/// How many clients this process can hold: `MAX_CLIENTS`, or fewer when the open-file
/// limit leaves less room.
fn client_limit() -> usize {
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let files = usize::try_from(files).unwrap_or(usize::MAX);
    MAX_CLIENTS
        .min(files.saturating_sub(RESERVED_FDS.min(files / 4)))
        .max(1)
}

/// Accepts connections on `listener`, at most `limit` at once, each served by a task
/// of its own from `serve`, which holds the connection's `Counted` until it ends; the
/// rest are logged and closed. (`serve`'s future is spawned as it is: an async block
/// around it would hold it twice, as its capture and as its awaitee.)
async fn accept_loop<F, Fut>(
    listener: &Async<std::net::TcpListener>,
    log: &Logger,
    limit: usize,
    kind: &str,
    serve: F,
) where
    F: Fn(Async<std::net::TcpStream>, SocketAddr, Counted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let open = Arc::new(AtomicUsize::new(0));
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok((socket, addr)) => {
                failing = false;
                if open.load(Ordering::Relaxed) >= limit {
                    log.event(
                        "refused",
                        &format!("{kind} {addr}"),
                        &format!("{limit} {kind} connections already open"),
                    );
                    continue;
                }
                spawn_served(&serve, socket, addr, Counted::new(&open));
            }
            Err(e) => {
                if !failing {
                    log.event(
                        "accept-error",
                        kind,
                        &format!("{e}; retrying every {} ms", ACCEPT_BACKOFF.as_millis()),
                    );
                    eprintln!("herd: accepting {kind} connections failed: {e}");
                }
                failing = true;
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Starts the dialer of link `i`. Out of line, like [`spawn_served`]: a peer future is
/// some 13 KB, and built in `run` it would widen `run`'s stack frame, which is touched
/// for the whole life of the server even when the herd has no links.
#[inline(never)]
fn spawn_dialer(bus: &Arc<Bus>, i: usize, alive: &Alive) -> smol::Task<()> {
    smol::spawn(peer::dial_loop(bus.clone(), i, alive.clone()))
}

/// Serves one accepted connection on a task of its own, counted by `guard` while it
/// lives. Out of line so the connection's future (a peer link's is some 13 KB) and its
/// moves into the task are built in this short frame, not in `accept_loop`'s, which is
/// inlined into `run` and lives as long as the server (every page of a frame is touched
/// on entry).
#[inline(never)]
fn spawn_served<F, Fut>(
    serve: &F,
    socket: Async<std::net::TcpStream>,
    addr: SocketAddr,
    guard: Counted,
) where
    F: Fn(Async<std::net::TcpStream>, SocketAddr, Counted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    smol::spawn(serve(socket, addr, guard)).detach();
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

/// Nanoseconds since the epoch, now.
fn now_ns() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Serves one client connection with the shared batch loop: each batch of lines read
/// is decided, made durable and flooded, then answered in order.
///
/// Between commands the connection is only this small future waiting for readability:
/// the batch loop's state (the name it logs under, line reader and read buffer, batch,
/// reply buffer, the futures of an answer) is boxed for each burst of lines and freed
/// once the burst is answered, so thousands of idle clients cost little more than their
/// sockets. The wait polls the socket's own waker slot (`poll_readable`; `readable()`
/// would allocate a waker list in the socket's source) and the shutdown channel. (A
/// plain `fn` returning an `async move` block, so its arguments are held once, not also
/// as an async fn's locals.)
#[allow(clippy::manual_async_fn)]
fn serve_client(
    node: Arc<Node>,
    socket: Async<std::net::TcpStream>,
    addr: SocketAddr,
    alive: Alive,
    open: Counted,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let _ = socket.get_ref().set_nodelay(true);
        node.log.event("open", &client_who(addr), "connected");
        let why = loop {
            // An error shows again on the read, which reports it.
            let readable = alive.poll_unless_stopped(|cx| socket.poll_readable(cx));
            if readable.await.is_none() {
                break "server stopping".to_string();
            }
            if let Some(why) = Box::pin(burst(&node, &socket, addr, &alive)).await {
                break why;
            }
        };
        node.log.event("close", &client_who(addr), &why);
        drop(open);
    }
}

/// How a client connection is named in the log: `client 127.0.0.1:PORT`. Formatted
/// when needed, so an idle connection holds its address, not a string.
fn client_who(addr: SocketAddr) -> String {
    format!("client {addr}")
}

/// One burst of a client's lines: reads, answers and returns as `batch::run` does
/// (`None` once everything read is answered). A reader that is idle between bursts
/// holds nothing (no buffer, no partial line, no pending skip), so each burst starts
/// one afresh.
async fn burst(
    node: &Node,
    socket: &Async<std::net::TcpStream>,
    addr: SocketAddr,
    alive: &Alive,
) -> Option<String> {
    let who = client_who(addr);
    let mut reader = socket;
    let mut client = ClientLines {
        node,
        who: &who,
        out: Vec::new(),
        socket,
    };
    let mut lines = LineReader::new();
    let (replica, log) = (&node.replica, &node.log);
    batch::run(
        &mut reader,
        &mut lines,
        replica,
        log,
        Some(alive),
        &mut client,
    )
    .await
}

/// A client connection's side of the batch loop: answers each command into `out`,
/// writes the replies once the batch is durable and flooded.
struct ClientLines<'a> {
    node: &'a Node,
    who: &'a str,
    out: Vec<u8>,
    socket: &'a Async<std::net::TcpStream>,
}

impl batch::Handler for ClientLines<'_> {
    const CLOSED: &'static str = "closed by client";
    const LEAVE_WHEN_IDLE: bool = true;

    fn who(&self) -> &str {
        self.who
    }

    async fn line(&mut self, line: Line<'_>, batch: &mut Batch, entry: &mut Entry) -> bool {
        match line {
            Line::Full(line) => {
                answer(self.node, line, &mut self.out, batch, (entry, self.who)).await;
                true
            }
            Line::TooLong(prefix) => {
                let start = self.out.len();
                protocol::format_invalid(prefix, &mut self.out);
                entry.lines("out", self.who, &self.out[start..]);
                false
            }
        }
    }

    async fn finish(&mut self) -> Result<(), String> {
        let written = write_replies(self.socket, &self.out).await;
        // A connection between commands keeps no reply buffer either.
        self.out = Vec::new();
        written
    }

    async fn stopped(&mut self) -> String {
        Box::pin(drain(self.socket)).await;
        format!("line longer than {} bytes", crate::lines::MAX_LINE)
    }
}

/// Writes a batch of replies, giving a client that reads nothing `CLIENT_WRITE_TIMEOUT`.
/// Most writes complete at once, so the timer is set only when one has to wait.
async fn write_replies(mut socket: &Async<std::net::TcpStream>, out: &[u8]) -> Result<(), String> {
    if out.is_empty() {
        return Ok(());
    }
    let mut write = socket.write_all(out);
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
async fn drain(mut socket: &Async<std::net::TcpStream>) {
    let _ = socket.get_ref().shutdown(std::net::Shutdown::Write);
    let _ = timeout(DRAIN_TIME, async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < DRAIN_LIMIT {
            match futures_lite::AsyncReadExt::read(&mut socket, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Answers one client line, appending the reply to `out`. Only a WHATSAT waits (for
/// places); its state is boxed, so an idle connection's future does not carry it.
async fn answer(
    node: &Node,
    line: &[u8],
    out: &mut Vec<u8>,
    batch: &mut Batch,
    log: (&mut Entry, &str),
) {
    let (entry, who) = log;
    let start = out.len();
    match protocol::parse_command(line) {
        Ok(Command::IAmAt(cmd)) => {
            let at = protocol::format_at(&node.name, now_ns(), &cmd);
            // Only an AT line every peer accepts is acknowledged (SPEC §5): one that
            // would not be is refused, never stored.
            let Some(report) = Report::from_line(&at) else {
                protocol::format_invalid(line, out);
                return entry.lines("out", who, &out[start..]);
            };
            out.extend_from_slice(at.as_bytes());
            out.push(b'\n');
            node.replica.decide(report, 0, batch);
        }
        Ok(Command::WhatsAt(cmd)) => {
            let Some(at) = node.replica.get(cmd.client) else {
                protocol::format_invalid(line, out);
                return entry.lines("out", who, &out[start..]);
            };
            return Box::pin(whatsat(node, &at, &cmd, out, (entry, who))).await;
        }
        Err(_) => protocol::format_invalid(line, out),
    }
    entry.lines("out", who, &out[start..]);
}

/// The rest of a WHATSAT for a known client: its AT line, the places JSON, an empty line.
async fn whatsat(
    node: &Node,
    at: &str,
    cmd: &protocol::WhatsAt<'_>,
    out: &mut Vec<u8>,
    log: (&mut Entry, &str),
) {
    let (entry, who) = log;
    let location = protocol::check_at(at)
        .map(|a| a.location)
        .unwrap_or_default();
    let places = node.places.nearby(location, cmd.radius, cmd.bound).await;
    out.extend_from_slice(at.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(places.as_bytes());
    out.extend_from_slice(b"\n\n");
    // The JSON is logged as one line (its newlines escaped, cut at MAX_LOGGED_LINE): a
    // line per JSON line would cost more than the reply.
    entry.line("out", who, at.as_bytes());
    entry.line("out", who, places.as_bytes());
}

/// Raises this process's open-file limit to its hard limit, so `MAX_CLIENTS` is
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
