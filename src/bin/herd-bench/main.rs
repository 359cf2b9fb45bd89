//! `herd-bench`: load and latency figures for any running herd, in the spirit of
//! `redis-benchmark`. It speaks only the client protocol (SPEC §4), so it can be pointed
//! at any server; what it learns about a server's memory and CPU it reads from `/proc`
//! when the server is local. Every mode is bounded in count and time and ends with one
//! `key=value` summary line; the exit status says whether every check passed.
//!
//! The load generator is single-threaded on smol (a `LocalExecutor` on the main thread):
//! on a small machine the herd needs the other cores, and one thread pipelining many
//! connections sends more than one server can answer.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]

mod conns;
mod herdproc;
mod memory;
mod pingpong;
mod procfs;
mod reference;
mod scale;
mod standin;
mod stats;
mod throughput;
mod whatsat;
mod wire;

use argh::FromArgs;
use std::process::ExitCode;
use std::time::Duration;

#[derive(FromArgs)]
/// herd-bench: throughput, latency, propagation, connection and WHATSAT figures for a
/// running herd; each mode ends with one key=value summary line.
struct Args {
    #[argh(subcommand)]
    mode: Mode,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Mode {
    Throughput(Throughput),
    Latency(Latency),
    Propagate(Propagate),
    Conns(Conns),
    Exhaust(Exhaust),
    Whatsat(Whatsat),
    Standin(Standin),
    Reference(Reference),
    Memory(Memory),
    Scale(Scale),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "throughput")]
/// pipelined IAMATs: replies/s and latency percentiles; with --converge, proof that
/// another server caught up
struct Throughput {
    #[argh(option)]
    /// server to load, HOST:PORT
    addr: String,
    #[argh(option, default = "64")]
    /// connections, each reporting its own client (default 64)
    conns: usize,
    #[argh(option, default = "16")]
    /// requests in flight per connection (default 16)
    window: usize,
    #[argh(option, default = "5")]
    /// seconds of sending (default 5)
    secs: u64,
    #[argh(option)]
    /// server that must then hold every client's last update, HOST:PORT
    converge: Option<String>,
    #[argh(option, default = "10_000")]
    /// how long convergence may take, in ms, before the run fails (default 10000)
    converge_timeout_ms: u64,
    #[argh(option, default = "String::new()")]
    /// server pids, comma-separated: their CPU time until --converge holds every last
    /// update, per acknowledged update
    pids: String,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "latency")]
/// strict ping-pong IAMATs on one connection: latency percentiles
struct Latency {
    #[argh(option)]
    /// server, HOST:PORT
    addr: String,
    #[argh(option, default = "10_000")]
    /// timed requests (default 10000)
    n: usize,
    #[argh(option, default = "60")]
    /// give up after this many seconds (default 60)
    max_secs: u64,
    #[argh(option)]
    /// server that must then hold the last update, HOST:PORT
    converge: Option<String>,
    #[argh(option, default = "String::new()")]
    /// server pids, comma-separated: their CPU time until --converge holds the last
    /// update, per acknowledged update
    pids: String,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "propagate")]
/// time from an IAMAT at one server until another answers WHATSAT with it
struct Propagate {
    #[argh(option)]
    /// server that gets the IAMATs, HOST:PORT
    from: String,
    #[argh(option)]
    /// server that is asked, HOST:PORT
    to: String,
    #[argh(option, default = "1000")]
    /// timed reports, each a fresh client (default 1000)
    n: usize,
    #[argh(option, default = "200")]
    /// WHATSATs timed afterwards to tell the final places lookup's share (default 200)
    lookups: usize,
    #[argh(option, default = "120")]
    /// give up after this many seconds (default 120)
    max_secs: u64,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "conns")]
/// hold N connections: server memory per connection, time to open, latency meanwhile
struct Conns {
    #[argh(option)]
    /// server, HOST:PORT
    addr: String,
    #[argh(option, default = "1000")]
    /// connections to hold, one of which carries the ping-pong (default 1000)
    n: usize,
    #[argh(option)]
    /// the server's pid, for its memory (default: the local listener on the port)
    pid: Option<u32>,
    #[argh(option, default = "64")]
    /// connections opened at once (default 64)
    parallel: usize,
    #[argh(option, default = "2000")]
    /// timed ping-pong IAMATs while the connections are held (default 2000)
    pings: usize,
    #[argh(option, default = "0")]
    /// loopback source addresses to connect from, 127.0.0.1 up (default 0: one per
    /// 8000 connections to a 127.x server, else one)
    sources: usize,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "exhaust")]
/// open more connections than the server has descriptors: no busy loop, and recovery
struct Exhaust {
    #[argh(option)]
    /// server, HOST:PORT (run it with a low ulimit -n)
    addr: String,
    #[argh(option, default = "400")]
    /// connections to open (default 400)
    n: usize,
    #[argh(option)]
    /// the server's pid (default: the local listener on the port)
    pid: Option<u32>,
    #[argh(option, default = "3")]
    /// seconds to watch the server's CPU while it is out of descriptors (default 3)
    hold_secs: u64,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "whatsat")]
/// WHATSAT replies/s against the herd's places source
struct Whatsat {
    #[argh(option)]
    /// server, HOST:PORT
    addr: String,
    #[argh(option, default = "32")]
    /// connections asking at once (default 32)
    conns: usize,
    #[argh(option, default = "5")]
    /// seconds of asking (default 5)
    secs: u64,
    #[argh(option, default = "String::from(\"10\")")]
    /// radius in km (default 10)
    radius: String,
    #[argh(option, default = "20")]
    /// bound on places per answer (default 20)
    bound: usize,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "standin")]
/// a local stand-in places service: legacy Nearby Search, 20 results per answer
struct Standin {
    #[argh(option, default = "String::from(\"127.0.0.1:0\")")]
    /// where to listen (default 127.0.0.1:0, a free port, printed)
    addr: String,
    #[argh(option, default = "3600")]
    /// stop after this many seconds (default 3600)
    max_secs: u64,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "reference")]
/// a do-nothing line server (raw epoll, one write per read) to measure the herd against
struct Reference {
    #[argh(option, default = "String::from(\"127.0.0.1:0\")")]
    /// where to listen (default 127.0.0.1:0, a free port, printed)
    addr: String,
    #[argh(option, default = "3600")]
    /// stop after this many seconds (default 3600)
    max_secs: u64,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "memory")]
/// one IAMAT and one WHATSAT, then the server's private memory (smaps_rollup)
struct Memory {
    #[argh(option)]
    /// server, HOST:PORT
    addr: String,
    #[argh(option)]
    /// the server's pid (default: the local listener on the port)
    pid: Option<u32>,
    #[argh(option, default = "String::from(\"10\")")]
    /// radius in km (default 10)
    radius: String,
    #[argh(option, default = "5")]
    /// bound on places (default 5)
    bound: usize,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "scale")]
/// run a herd, load N clients, report memory per client, time three crash restarts
struct Scale {
    #[argh(option)]
    /// the herd binary to run (herd serve NAME --config CONFIG per server)
    herd: String,
    #[argh(option)]
    /// the herd's config; it must set state-dir
    config: String,
    #[argh(option, default = "String::from(\"Riley\")")]
    /// server that gets the load, restarted in (c) (default Riley)
    from: String,
    #[argh(option, default = "String::from(\"Campbell\")")]
    /// server restarted in (a) and (b) (default Campbell)
    to: String,
    #[argh(option, default = "1_000_000")]
    /// distinct clients loaded (default 1000000)
    n: u64,
    #[argh(option, default = "1000")]
    /// clients polled at a restarted server, and new clients in (b) (default 1000)
    sample: usize,
    #[argh(option, default = "256")]
    /// IAMATs in flight on the load connection (default 256)
    window: usize,
    #[argh(option, default = "60")]
    /// seconds a restarted server may take (default 60)
    restart_timeout_secs: u64,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let result = match args.mode {
        Mode::Throughput(t) => throughput::run(&throughput::Options {
            addr: t.addr,
            conns: t.conns,
            window: t.window,
            secs: t.secs,
            converge: t.converge,
            converge_timeout: Duration::from_millis(t.converge_timeout_ms),
            pids: match procfs::parse_pids(&t.pids) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            },
        }),
        Mode::Latency(l) => match procfs::parse_pids(&l.pids) {
            Ok(pids) => pingpong::latency(&l.addr, l.n, l.max_secs, l.converge.as_deref(), &pids),
            Err(e) => return usage(&e),
        },
        Mode::Propagate(p) => pingpong::propagate(&p.from, &p.to, p.n, p.lookups, p.max_secs),
        Mode::Conns(c) => conns::conns(&c.addr, c.n, c.pid, c.parallel, c.pings, c.sources),
        Mode::Exhaust(e) => conns::exhaust(&e.addr, e.n, e.pid, e.hold_secs),
        Mode::Whatsat(w) => whatsat::run(&whatsat::Options {
            addr: w.addr,
            conns: w.conns,
            secs: w.secs,
            radius: w.radius,
            bound: w.bound,
        }),
        Mode::Standin(s) => standin::run(&s.addr, s.max_secs).map(|served| {
            let mut summary = stats::Summary::new("standin");
            summary.add("requests", served);
            (summary, true)
        }),
        Mode::Reference(r) => reference::mode(&r.addr, r.max_secs),
        Mode::Memory(m) => memory::run(&m.addr, m.pid, &m.radius, m.bound),
        Mode::Scale(s) => scale::run(&scale::Options {
            herd: s.herd.into(),
            config: s.config.into(),
            from: s.from,
            to: s.to,
            n: s.n,
            sample: s.sample,
            window: s.window,
            restart_timeout: Duration::from_secs(s.restart_timeout_secs),
        }),
    };
    match result {
        Ok((summary, ok)) => {
            println!("{}", summary.line());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(message) => usage(&message),
    }
}

/// Reports an error that stopped a mode before it measured anything.
fn usage(message: &str) -> ExitCode {
    eprintln!("herd-bench: {message}");
    println!("mode=error error={}", message.replace(' ', "_"));
    ExitCode::from(2)
}
