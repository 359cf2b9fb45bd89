//! `whatsat`: WHATSAT replies per second against whatever places source the herd uses.
//! One client is reported first; then each connection asks about it in ping-pong (a
//! server answers one connection's lines in order, so pipelining on one connection
//! adds no concurrency: connections do).

use crate::stats::{Samples, Summary};
use crate::wire::{self, Conn, Reply};
use smol::{LocalExecutor, Timer};
use std::io;
use std::time::{Duration, Instant};

/// Longest run accepted.
pub const MAX_SECS: u64 = 600;

/// Latency samples kept per connection: far more than a 600 s run at the target rate
/// produces per connection, and 8 MB at most.
pub const MAX_SAMPLES_PER_CONN: usize = 1 << 20;

/// What to run.
pub struct Options {
    /// Server to ask.
    pub addr: String,
    /// Connections asking at once.
    pub conns: usize,
    /// Seconds of asking.
    pub secs: u64,
    /// Radius in km.
    pub radius: String,
    /// Bound on the number of places.
    pub bound: usize,
}

/// One connection's outcome.
#[derive(Default)]
struct ConnResult {
    replies: u64,
    /// Replies whose JSON status was not `OK`/`ZERO_RESULTS`, or that were not AT replies.
    errors: u64,
    results: u64,
    json_bytes: u64,
    first_error: Option<String>,
    samples: Samples,
}

/// Runs the mode.
pub fn run(o: &Options) -> Result<(Summary, bool), String> {
    if o.conns == 0 || o.secs == 0 || o.secs > MAX_SECS {
        return Err(format!(
            "--conns must be at least 1 and --secs from 1 to {MAX_SECS}"
        ));
    }
    crate::procfs::raise_nofile().map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(async {
        let client = format!("bench-{}-w", std::process::id());
        let mut first = Conn::open(&o.addr).await.map_err(|e| e.to_string())?;
        let mut iamat = Vec::new();
        wire::push_iamat(&mut iamat, &client, wire::epoch_secs(), 1);
        let at = wire::timeout(wire::REPLY_TIMEOUT, "IAMAT", async {
            first.send(&iamat).await?;
            Ok(first.line().await?.starts_with(b"AT "))
        })
        .await
        .map_err(|e| e.to_string())?;
        if !at {
            return Err("the server did not answer IAMAT with an AT line".to_string());
        }
        let query = format!("WHATSAT {client} {} {}\n", o.radius, o.bound);
        let mut conns = vec![first];
        while conns.len() < o.conns {
            conns.push(Conn::open(&o.addr).await.map_err(|e| e.to_string())?);
        }
        let start = Instant::now();
        let stop_at = start + Duration::from_secs(o.secs);
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|conn| ex.spawn(ask(conn, query.clone(), stop_at)))
            .collect();
        let mut total = ConnResult::default();
        let mut failures = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await {
                Ok(mut r) => {
                    total.replies += r.replies;
                    total.errors += r.errors;
                    total.results += r.results;
                    total.json_bytes += r.json_bytes;
                    if total.first_error.is_none() {
                        total.first_error = r.first_error.take();
                    }
                    total.samples.append(&mut r.samples);
                }
                Err(e) => failures.push(format!("connection {i}: {e}")),
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let rps = total.replies as f64 / elapsed;
        let per = |x: u64| x as f64 / total.replies.max(1) as f64;
        println!(
            "whatsat: {} replies in {elapsed:.2} s over {} connections: {rps:.0} replies/s, {:.1} results and {:.0} JSON bytes each",
            total.replies,
            o.conns,
            per(total.results),
            per(total.json_bytes)
        );
        if let Some(e) = &total.first_error {
            eprintln!("herd-bench: {} error replies; first: {e}", total.errors);
        }
        for f in &failures {
            eprintln!("herd-bench: {f}");
        }
        let mut summary = Summary::new("whatsat");
        summary.add("addr", &o.addr);
        summary.add("conns", o.conns);
        summary.add("secs", o.secs);
        summary.add("replies", total.replies);
        summary.add("errors", total.errors);
        summary.add("failed_conns", failures.len());
        summary.add("rps", format!("{rps:.0}"));
        total.samples.percentiles().add_to(&mut summary, "");
        summary.add("results_avg", format!("{:.1}", per(total.results)));
        summary.add("json_bytes_avg", format!("{:.0}", per(total.json_bytes)));
        Ok((summary, failures.is_empty() && total.errors == 0))
    }))
}

/// Asks `query` on `conn`, one at a time, until `stop_at`.
async fn ask(mut conn: Conn, query: String, stop_at: Instant) -> io::Result<ConnResult> {
    let mut r = ConnResult {
        samples: Samples::with_capacity(64 * 1024),
        ..ConnResult::default()
    };
    let mut deadline = Timer::at(stop_at + wire::REPLY_TIMEOUT);
    while Instant::now() < stop_at {
        let sent = Instant::now();
        let reply = wire::within(&mut deadline, "WHATSAT", async {
            conn.send(query.as_bytes()).await?;
            conn.reply().await
        })
        .await?;
        let now = Instant::now();
        r.replies += 1;
        match reply {
            Reply::At {
                json_bytes,
                results,
                status,
                ..
            } => {
                r.results += results as u64;
                r.json_bytes += json_bytes as u64;
                if status != "OK" && status != "ZERO_RESULTS" {
                    r.errors += 1;
                    r.first_error.get_or_insert(format!("status {status}"));
                }
            }
            Reply::Other(line) => {
                r.errors += 1;
                r.first_error.get_or_insert(line);
            }
        }
        if r.samples.len() < MAX_SAMPLES_PER_CONN {
            r.samples.push(wire::nanos(sent, now));
        }
    }
    Ok(r)
}
