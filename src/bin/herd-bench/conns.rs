//! `conns` and `exhaust`: many connections held at once.
//!
//! `conns` opens N connections, each confirmed by one round trip (an empty line, which
//! the server answers `? `), and reports what they cost the server in resident memory,
//! how long opening them took, and ping-pong latency on one of them while all are held.
//!
//! `exhaust` opens more connections than a server has descriptors for, checks that the
//! server spends no CPU while it cannot accept (no busy loop), then closes them and
//! checks that a new client is served again.

use crate::procfs;
use crate::stats::{Samples, Summary};
use crate::wire::{self, Conn};
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::{LocalExecutor, Timer};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a new connection may wait for the answer to its empty line. A served
/// connection answers in microseconds; one that waits in the server's backlog (the
/// server is out of descriptors) never does.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(1);

/// Most connections one run opens: beyond the descriptors any single server here has.
pub const MAX_CONNS: usize = 100_000;

/// Pause after opening before reading the server's memory, so the connections' first
/// reads and log lines have been dealt with.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Longest a ping-pong phase may take in all.
pub const PING_PHASE_LIMIT: Duration = Duration::from_secs(60);

/// Most CPU the server may use while out of descriptors, in percent of one core: a
/// server that backs off uses well under 1%; a busy loop uses 100%.
pub const EXHAUSTED_CPU_LIMIT_PCT: f64 = 5.0;

/// How long service may take to come back after the connections close.
pub const RECOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of one connection attempt.
enum Opened {
    /// Connected and answered.
    Served(TcpStream),
    /// Connected (the kernel completed the handshake) but never answered.
    Waiting(TcpStream),
    /// Refused, reset or closed by the server.
    Refused(String),
}

/// Connections opened from one loopback source address when `--sources` is left to
/// choose: well under the ~28,000 ephemeral ports each address has, leaving room for
/// the TIME_WAITs of an earlier run.
pub const CONNS_PER_SOURCE: usize = 8_000;

/// Connects (from `source`, else from any address) and sends an empty line; `Served`
/// when `? ` comes back in time.
async fn open_one(addr: &str, source: Option<Ipv4Addr>) -> Opened {
    let connected = match source {
        Some(source) => wire::connect_from(source, addr).await,
        None => wire::connect(addr).await,
    };
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => return Opened::Refused(e.to_string()),
    };
    let answer = wire::timeout(CONFIRM_TIMEOUT, "first answer", async {
        stream.write_all(b"\n").await?;
        let mut got = [0u8; 8];
        let mut n = 0;
        while n < got.len() {
            let r = stream.read(&mut got[n..]).await?;
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed by the server",
                ));
            }
            n += r;
            if got[..n].contains(&b'\n') {
                break;
            }
        }
        if &got[..n] == b"? \n" {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer {:?}", String::from_utf8_lossy(&got[..n])),
            ))
        }
    })
    .await;
    match answer {
        Ok(()) => Opened::Served(stream),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Opened::Waiting(stream),
        Err(e) => Opened::Refused(e.to_string()),
    }
}

/// Opens `n` connections, `parallel` at a time, the `i`-th from loopback source
/// address `i % sources` (counted from [`wire::first_source_host`]) when `sources` > 1; all
/// outcomes, in no particular order.
async fn open_many(
    ex: &LocalExecutor<'_>,
    addr: &str,
    n: usize,
    parallel: usize,
    sources: usize,
) -> Vec<Opened> {
    let next = Rc::new(Cell::new(0usize));
    let out = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let first = wire::first_source_host();
    let addr: Rc<str> = addr.into();
    let workers: Vec<_> = (0..parallel.clamp(1, n.max(1)))
        .map(|_| {
            let (next, out, addr) = (next.clone(), out.clone(), addr.clone());
            ex.spawn(async move {
                // Each pass takes one index, so the loop ends after at most `n` passes.
                loop {
                    let i = next.get();
                    if i >= n {
                        break;
                    }
                    next.set(i + 1);
                    let source = (sources > 1).then(|| wire::loopback_source(first, i, sources));
                    let opened = open_one(&addr, source).await;
                    out.borrow_mut().push(opened);
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    out.take()
}

/// Counts of each outcome.
#[derive(Default)]
struct Tally {
    served: Vec<TcpStream>,
    waiting: Vec<TcpStream>,
    refused: usize,
    first_refusal: Option<String>,
}

fn tally(opened: Vec<Opened>) -> Tally {
    let mut t = Tally::default();
    for o in opened {
        match o {
            Opened::Served(s) => t.served.push(s),
            Opened::Waiting(s) => t.waiting.push(s),
            Opened::Refused(why) => {
                t.refused += 1;
                t.first_refusal.get_or_insert(why);
            }
        }
    }
    t
}

/// Ping-pong IAMATs on `conn`: `n` timed after `pingpong::WARMUP`; any non-AT reply fails.
async fn ping_pong(conn: &mut Conn, n: usize) -> io::Result<Samples> {
    let mut deadline = Timer::after(PING_PHASE_LIMIT);
    let client = format!("bench-{}-held", std::process::id());
    let run = crate::pingpong::ping_pong(conn, &client, n, &mut deadline, "ping-pong").await;
    match (run.failure, run.invalid) {
        (Some(e), _) => Err(e),
        (None, 0) => Ok(run.samples),
        (None, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "IAMAT got no AT line",
        )),
    }
}

/// The server's pid: `--pid`, else the local process listening on the port.
fn server_pid(addr: &str, pid: Option<u32>) -> Option<u32> {
    pid.or_else(|| procfs::port_of(addr).and_then(procfs::listening_pid))
}

/// Runs `conns`: hold `n` connections to `addr` (one of which carries the ping-pong).
/// `sources` loopback addresses to connect from; 0 chooses one per
/// `CONNS_PER_SOURCE` connections to a loopback server, else one.
pub fn conns(
    addr: &str,
    n: usize,
    pid: Option<u32>,
    parallel: usize,
    pings: usize,
    sources: usize,
) -> Result<(Summary, bool), String> {
    if n == 0 || n > MAX_CONNS {
        return Err(format!("--n must be from 1 to {MAX_CONNS}"));
    }
    let sources = match sources {
        0 if addr.starts_with("127.") => n.div_ceil(CONNS_PER_SOURCE),
        0 => 1,
        s => s,
    };
    let limit =
        procfs::raise_nofile().map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
    if (limit as usize) < n + 16 {
        return Err(format!(
            "this process may open only {limit} files; {n} connections need more (raise the hard limit: ulimit -Hn)"
        ));
    }
    let pid = server_pid(addr, pid);
    let rss_before = pid.and_then(|p| procfs::rss_kib(p).ok());
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        let started = Instant::now();
        let opened = tally(open_many(&ex, addr, n, parallel, sources).await);
        let open_time = started.elapsed();
        println!(
            "conns: opened {} of {n} connections to {addr} from {sources} source address(es) in {:.0} ms ({} not answered, {} refused)",
            opened.served.len(),
            open_time.as_secs_f64() * 1000.0,
            opened.waiting.len(),
            opened.refused
        );
        if let Some(why) = &opened.first_refusal {
            eprintln!("herd-bench: first refusal: {why}");
        }
        Timer::after(SETTLE).await;
        let rss_after = pid.and_then(|p| procfs::rss_kib(p).ok());
        let held = opened.served.len();
        let mut summary = Summary::new("conns");
        summary.add("addr", addr);
        summary.add("n", n);
        summary.add("held", held);
        summary.add("sources", sources);
        summary.add("waiting", opened.waiting.len());
        summary.add("refused", opened.refused);
        summary.add("open_ms", format!("{:.0}", open_time.as_secs_f64() * 1000.0));
        match (rss_before, rss_after) {
            (Some(b), Some(a)) if held > 0 => {
                let per = (a.saturating_sub(b) * 1024) as f64 / held as f64;
                println!(
                    "server pid {}: RSS {b} KiB before, {a} KiB with {held} connections: {per:.0} bytes each",
                    pid.unwrap_or(0)
                );
                summary.add("rss_before_kib", b);
                summary.add("rss_after_kib", a);
                summary.add("rss_per_conn_bytes", format!("{per:.0}"));
            }
            _ => {
                println!("server memory: unknown (not a local process; give --pid)");
                summary.add("rss_per_conn_bytes", "-");
            }
        }
        let mut served = opened.served;
        let mut ok = opened.refused == 0 && opened.waiting.is_empty();
        if let Some(first) = served.pop() {
            let mut conn = Conn::new(first);
            match ping_pong(&mut conn, pings).await {
                Ok(mut s) => {
                    let p = s.percentiles();
                    println!(
                        "ping-pong while {held} connections are held: p50 {} µs, p99 {} µs",
                        crate::stats::micros(p.p50),
                        crate::stats::micros(p.p99)
                    );
                    summary.add("pings", s.len());
                    p.add_to(&mut summary, "held_");
                }
                Err(e) => {
                    eprintln!("herd-bench: ping-pong while held failed: {e}");
                    summary.add("error", e);
                    ok = false;
                }
            }
        }
        drop(served);
        Ok((summary, ok))
    }))
}

/// Runs `exhaust`: open `n` connections to a server with fewer descriptors, watch its
/// CPU for `hold_secs`, close them, and time until a new client is served.
pub fn exhaust(
    addr: &str,
    n: usize,
    pid: Option<u32>,
    hold_secs: u64,
) -> Result<(Summary, bool), String> {
    if n == 0 || n > MAX_CONNS {
        return Err(format!("--n must be from 1 to {MAX_CONNS}"));
    }
    procfs::raise_nofile().map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
    let Some(pid) = server_pid(addr, pid) else {
        return Err(format!(
            "exhaust needs the server's pid to watch its CPU: {addr} is not a local listener (give --pid)"
        ));
    };
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        // Every attempt at once: the ones past the server's limit each wait out
        // CONFIRM_TIMEOUT, and in parallel that is one wait, not many.
        let opened = tally(open_many(&ex, addr, n, n, 1).await);
        println!(
            "exhaust: {} of {n} connections served, {} connected but not answered, {} refused",
            opened.served.len(),
            opened.waiting.len(),
            opened.refused
        );
        if let Some(why) = &opened.first_refusal {
            println!("first refusal: {why}");
        }
        let hold = Duration::from_secs(hold_secs.max(1));
        let (cpu0, ctx0) = (procfs::cpu_ticks(pid), procfs::context_switches(pid));
        Timer::after(hold).await;
        let (cpu1, ctx1) = (procfs::cpu_ticks(pid), procfs::context_switches(pid));
        let (Ok(cpu0), Ok(cpu1), Ok(ctx0), Ok(ctx1)) = (cpu0, cpu1, ctx0, ctx1) else {
            return Err(format!("cannot read /proc/{pid}: did the server die?"));
        };
        let cpu_pct =
            (cpu1 - cpu0) as f64 / procfs::USER_HZ as f64 / hold.as_secs_f64() * 100.0;
        let wakeups = (ctx1 - ctx0) as f64 / hold.as_secs_f64();
        println!(
            "while exhausted: server CPU {cpu_pct:.1}% of a core, {wakeups:.0} wakeups/s over {} s",
            hold.as_secs()
        );
        let exhausted = !opened.waiting.is_empty() || opened.refused > 0;
        drop(opened);
        let freed = Instant::now();
        let mut recovered = None;
        while freed.elapsed() < RECOVER_TIMEOUT {
            if let Opened::Served(_) = open_one(addr, None).await {
                recovered = Some(freed.elapsed());
                break;
            }
            Timer::after(Duration::from_millis(10)).await;
        }
        match recovered {
            Some(t) => println!(
                "service resumed {:.0} ms after the connections closed",
                t.as_secs_f64() * 1000.0
            ),
            None => eprintln!(
                "herd-bench: no new client was served within {} s of freeing the connections",
                RECOVER_TIMEOUT.as_secs()
            ),
        }
        let mut summary = Summary::new("exhaust");
        summary.add("addr", addr);
        summary.add("n", n);
        summary.add("exhausted", if exhausted { "yes" } else { "no" });
        summary.add("cpu_pct", format!("{cpu_pct:.1}"));
        summary.add("wakeups_per_s", format!("{wakeups:.0}"));
        summary.add(
            "recover_ms",
            recovered.map_or("-".into(), |t| format!("{:.0}", t.as_secs_f64() * 1000.0)),
        );
        let ok = exhausted && cpu_pct <= EXHAUSTED_CPU_LIMIT_PCT && recovered.is_some();
        if !exhausted {
            eprintln!("herd-bench: the server served all {n} connections: it was never out of descriptors (open more, or lower its ulimit -n)");
        }
        Ok((summary, ok))
    }))
}
