//! `latency` and `propagate`: one request at a time, timed one by one.
//!
//! `latency` is strict ping-pong IAMATs on one connection. `propagate` sends an IAMAT
//! for a fresh client to server A and polls server B with WHATSAT until B answers with
//! that report: while B has not heard of the client its answer is a cheap `?` line, so
//! the poll adds little; the final, successful WHATSAT costs one places lookup at B,
//! which the run measures separately and reports beside the figure. It also reports
//! `seen_*`: the time until the successful poll was *sent*. The report reached B after
//! B answered the poll before it and before B read this one, so `seen` is the arrival
//! time at B to within one `?` round trip, without the places lookup.

use crate::stats::{Samples, Summary};
use crate::wire::{self, Conn, Reply};
use smol::Timer;
use std::io;
use std::time::{Duration, Instant};

/// Requests sent before timing starts, so connection setup, first allocations and
/// cold caches on both sides do not land in the figures.
pub const WARMUP: usize = 200;

/// Propagation samples sent before timing starts (each creates a client on the herd).
pub const PROPAGATE_WARMUP: usize = 20;

/// Most WHATSAT round trips timed against a known client at B (to say how much of a
/// propagation sample is the final places lookup rather than the herd's links).
pub const MAX_LOOKUPS: usize = 100_000;

/// Longest a propagation sample may take: the herd floods within milliseconds, so a
/// report that has not reached B in 5 s is lost (a link is down).
pub const PROPAGATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most samples one run takes, bounding its time and memory.
pub const MAX_N: usize = 10_000_000;

/// What a ping-pong run measured.
pub struct PingPong {
    /// The timed round trips.
    pub samples: Samples,
    /// Replies that were not AT lines.
    pub invalid: u64,
    /// AT replies, the warm-up included: updates the server acknowledged.
    pub acked: u64,
    /// Client time of the last IAMAT sent.
    pub last_time: String,
    /// What stopped the run early, if anything did.
    pub failure: Option<io::Error>,
}

/// `WARMUP + n` strict ping-pong IAMATs for `client` on `conn`, the last `n` timed;
/// stops at the first failure or at `deadline`.
pub async fn ping_pong(
    conn: &mut Conn,
    client: &str,
    n: usize,
    deadline: &mut Timer,
    what: &str,
) -> PingPong {
    let base = wire::epoch_secs();
    let mut run = PingPong {
        samples: Samples::with_capacity(n),
        invalid: 0,
        acked: 0,
        last_time: String::new(),
        failure: None,
    };
    let mut line = Vec::with_capacity(128);
    for i in 0..WARMUP + n {
        line.clear();
        wire::push_iamat(&mut line, client, base, i as u64 + 1);
        run.last_time = wire::client_time(base, i as u64 + 1);
        let sent = Instant::now();
        let answer = wire::within(deadline, what, async {
            conn.send(&line).await?;
            Ok(conn.line().await?.starts_with(b"AT "))
        })
        .await;
        match answer {
            Ok(is_at) => {
                run.invalid += u64::from(!is_at);
                run.acked += u64::from(is_at);
                if i >= WARMUP {
                    run.samples.push(wire::nanos(sent, Instant::now()));
                }
            }
            Err(e) => {
                run.failure = Some(e);
                break;
            }
        }
    }
    run
}

/// How long a herd may take to bring a ping-pong run's last update to the `--converge`
/// server: it floods within milliseconds, so 10 s means a link is down.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `latency`: `n` ping-pong IAMATs on one connection, within `max_secs`. With
/// `converge`, then waits until that server holds the last update; with `pids`, divides
/// those processes' CPU time over the run (until convergence) by the updates acknowledged.
pub fn latency(
    addr: &str,
    n: usize,
    max_secs: u64,
    converge: Option<&str>,
    pids: &[u32],
) -> Result<(Summary, bool), String> {
    if n == 0 || n > MAX_N {
        return Err(format!("--n must be from 1 to {MAX_N}"));
    }
    smol::block_on(async {
        let mut conn = Conn::open(addr).await.map_err(|e| e.to_string())?;
        let mut checker = match converge {
            Some(b) => Some(Conn::open(b).await.map_err(|e| e.to_string())?),
            None => None,
        };
        let mut deadline = Timer::after(Duration::from_secs(max_secs));
        let client = format!("bench-{}-lat", std::process::id());
        let herd_cpu = crate::procfs::CpuMeter::start(pids)?;
        let started = Instant::now();
        let PingPong {
            mut samples,
            invalid,
            acked,
            last_time,
            failure,
        } = ping_pong(&mut conn, &client, n, &mut deadline, "ping-pong run").await;
        let took = started.elapsed().as_secs_f64();
        let count = samples.len();
        let p = samples.percentiles();
        println!(
            "latency: {count} ping-pong IAMATs to {addr} in {took:.2} s: p50 {} µs, p99 {} µs",
            crate::stats::micros(p.p50),
            crate::stats::micros(p.p99)
        );
        let mut summary = Summary::new("latency");
        summary.add("addr", addr);
        summary.add("n", count);
        summary.add("invalid", invalid);
        p.add_to(&mut summary, "");
        let mut ok = failure.is_none() && invalid == 0;
        if let Some(e) = &failure {
            eprintln!("herd-bench: stopped after {count} samples: {e}");
            summary.add("error", e);
        }
        if let (Some(checker), Some(b)) = (checker.as_mut(), converge) {
            let last = [(client.clone(), last_time)];
            let done = Instant::now();
            match crate::throughput::converge(
                checker,
                &last,
                done,
                CONVERGE_TIMEOUT,
                crate::throughput::POLL_GAP,
            )
            .await
            {
                Ok(Ok(t)) => {
                    println!(
                        "{b} held the last update {:.1} ms after its reply",
                        t.as_secs_f64() * 1000.0
                    );
                    summary.add("converge_ms", format!("{:.1}", t.as_secs_f64() * 1000.0));
                }
                Ok(Err(_)) | Err(_) => {
                    eprintln!("herd-bench: NOT CONVERGED: {b} lacks the last update");
                    summary.add("converge_ms", "-");
                    ok = false;
                }
            }
        }
        herd_cpu.add_per_update(&mut summary, acked)?;
        Ok((summary, ok))
    })
}

/// Runs `propagate`: `n` fresh clients reported at `from`, each timed until `to` answers
/// WHATSAT with the report, then `lookups` WHATSATs timed alone; within `max_secs`.
pub fn propagate(
    from: &str,
    to: &str,
    n: usize,
    lookups: usize,
    max_secs: u64,
) -> Result<(Summary, bool), String> {
    if n == 0 || n > MAX_N || lookups > MAX_LOOKUPS {
        return Err(format!(
            "--n must be from 1 to {MAX_N} and --lookups at most {MAX_LOOKUPS}"
        ));
    }
    smol::block_on(async {
        let mut a = Conn::open(from).await.map_err(|e| e.to_string())?;
        let mut b = Conn::open(to).await.map_err(|e| e.to_string())?;
        let run_until = Instant::now() + Duration::from_secs(max_secs);
        let pid = std::process::id();
        let base = wire::epoch_secs();
        let mut samples = Samples::with_capacity(n);
        let mut seen = Samples::with_capacity(n);
        let (mut lost, mut polls) = (0u64, 0u64);
        let mut failure = None;
        let mut line = Vec::with_capacity(128);
        for i in 0..PROPAGATE_WARMUP + n {
            if Instant::now() >= run_until {
                failure = Some(wire::timed_out("propagation run"));
                break;
            }
            let client = format!("bench-{pid}-p{i}");
            line.clear();
            wire::push_iamat(&mut line, &client, base, 1);
            let time = wire::client_time(base, 1);
            let sample = wire::timeout(PROPAGATE_TIMEOUT, "propagation", async {
                let sent = Instant::now();
                a.send(&line).await?;
                let query = format!("WHATSAT {client} 1 1\n");
                let mut tries = 0u64;
                loop {
                    tries += 1;
                    let polled = Instant::now();
                    b.send(query.as_bytes()).await?;
                    if let Reply::At { line, .. } = b.reply().await? {
                        if line.ends_with(&time) {
                            let seen = wire::nanos(sent, polled);
                            return Ok((wire::nanos(sent, Instant::now()), seen, tries));
                        }
                    }
                }
            })
            .await;
            match sample {
                Ok((ns, seen_ns, tries)) => {
                    if i >= PROPAGATE_WARMUP {
                        samples.push(ns);
                        seen.push(seen_ns);
                        polls += tries;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    lost += 1;
                    // The connection to B may hold a reply in flight; start afresh.
                    b = Conn::open(to).await.map_err(|e| e.to_string())?;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            // A's AT reply: it was sent before the flood, so it is there by now.
            if let Err(e) = wire::timeout(wire::REPLY_TIMEOUT, "IAMAT reply", a.line()).await {
                failure = Some(e);
                break;
            }
        }
        let count = samples.len();
        let p = samples.percentiles();
        let sp = seen.percentiles();
        // What the last poll's places lookup costs at B, for a client B knows; the
        // text of its median, "-" when not measured.
        let lookup = if lookups == 0 || count == 0 {
            "-".to_string()
        } else {
            match lookup_cost(&mut b, &format!("bench-{pid}-p0"), lookups).await {
                Ok(mut s) => crate::stats::micros(s.percentiles().p50),
                Err(e) => format!("error:{e}"),
            }
        };
        println!(
            "propagate: {count} reports {from} → {to}: p50 {} µs, p99 {} µs until {to} answered \
             (one WHATSAT at {to} costs p50 {} µs of that); reached {to} after p50 {} µs, p99 {} µs",
            crate::stats::micros(p.p50),
            crate::stats::micros(p.p99),
            lookup,
            crate::stats::micros(sp.p50),
            crate::stats::micros(sp.p99)
        );
        let mut summary = Summary::new("propagate");
        summary.add("from", from);
        summary.add("to", to);
        summary.add("n", count);
        summary.add("lost", lost);
        p.add_to(&mut summary, "");
        sp.add_to(&mut summary, "seen_");
        summary.add(
            "polls_avg",
            format!("{:.1}", polls as f64 / count.max(1) as f64),
        );
        summary.add("whatsat_p50_us", lookup);
        if let Some(e) = &failure {
            eprintln!("herd-bench: stopped after {count} samples: {e}");
            summary.add("error", e);
        }
        Ok((summary, failure.is_none() && lost == 0))
    })
}

/// Times `n` WHATSATs for `client` (known at the server) on `conn`.
async fn lookup_cost(conn: &mut Conn, client: &str, n: usize) -> io::Result<Samples> {
    let query = format!("WHATSAT {client} 1 1\n");
    let mut samples = Samples::with_capacity(n);
    for _ in 0..n {
        let sent = Instant::now();
        let reply = wire::timeout(wire::REPLY_TIMEOUT, "WHATSAT", async {
            conn.send(query.as_bytes()).await?;
            conn.reply().await
        })
        .await?;
        if let Reply::Other(line) = reply {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("WHATSAT answered {line}"),
            ));
        }
        samples.push(wire::nanos(sent, Instant::now()));
    }
    Ok(samples)
}
