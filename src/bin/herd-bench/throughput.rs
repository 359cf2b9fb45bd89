//! `throughput`: pipelined IAMATs on many connections for a fixed time, then (with
//! `--converge B`) proof that server B holds every connection's last update, so a rate
//! the herd cannot sustain is never reported as throughput.
//!
//! Each connection has its own client ID and keeps `window` requests in flight: a
//! writer half sends as many lines as the window has room for in one write, a reader
//! half matches replies to send times in order (replies come back in the order of the
//! commands, SPEC §4).

use crate::procfs;
use crate::stats::{Samples, Summary};
use crate::wire::{self, Conn, Reply, READ_CHUNK, REPLY_TIMEOUT};
use async_net::TcpStream;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::{LocalExecutor, Timer};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Latency samples kept per run, over all connections: 8 bytes each, so 32 MB. Past
/// it replies are still counted, only not timed.
pub const MAX_SAMPLES: usize = 4_000_000;

/// How long outstanding replies may take to arrive after sending stops. A server that
/// has not answered a full window in 10 s is not keeping up at all.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest run accepted, so a typo cannot start an hour of load.
pub const MAX_SECS: u64 = 600;

/// What to run.
pub struct Options {
    /// Server to load.
    pub addr: String,
    /// Connections, each its own client.
    pub conns: usize,
    /// Requests in flight per connection.
    pub window: usize,
    /// Seconds of sending.
    pub secs: u64,
    /// Server that must hold every client's last update afterwards.
    pub converge: Option<String>,
    /// How long convergence may take before the run fails.
    pub converge_timeout: Duration,
    /// Server processes whose CPU time, from the first send until `converge` holds
    /// every last update, is divided by the acknowledged updates.
    pub pids: Vec<u32>,
}

/// Runs the mode; the summary, and whether every check passed.
pub fn run(o: &Options) -> Result<(Summary, bool), String> {
    if o.conns == 0 || o.window == 0 || o.secs == 0 || o.secs > MAX_SECS {
        return Err(format!(
            "--conns and --window must be at least 1 and --secs from 1 to {MAX_SECS}"
        ));
    }
    procfs::raise_nofile().map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
    let server_pid = procfs::port_of(&o.addr).and_then(procfs::listening_pid);
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(run_async(&ex, o, server_pid)))
}

async fn run_async(
    ex: &LocalExecutor<'_>,
    o: &Options,
    server_pid: Option<u32>,
) -> Result<(Summary, bool), String> {
    let mut streams = Vec::with_capacity(o.conns);
    for _ in 0..o.conns {
        streams.push(wire::connect(&o.addr).await.map_err(|e| e.to_string())?);
    }
    let mut checker = match &o.converge {
        Some(b) => Some(Conn::open(b).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let base = wire::epoch_secs();
    let pid = std::process::id();
    let cap = MAX_SAMPLES / o.conns;
    let (own0, server0) = (
        procfs::own_cpu_ticks().ok(),
        server_pid.and_then(|p| procfs::cpu_ticks(p).ok()),
    );
    let herd_cpu = procfs::CpuMeter::start(&o.pids)?;
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(o.secs);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let client = format!("bench-{pid}-{i}");
            let push = move |buf: &mut Vec<u8>, n| wire::push_iamat(buf, &client, base, n);
            ex.spawn(drive(
                stream,
                o.window,
                Until::Time(stop_at),
                stop_at + DRAIN_TIMEOUT,
                cap,
                push,
            ))
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    let mut failures = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(r) => results.push((i, r)),
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
    }
    let finished = results
        .iter()
        .map(|(_, r)| r.finished)
        .max()
        .unwrap_or_else(Instant::now);
    let elapsed = finished.saturating_duration_since(start).as_secs_f64();
    let (own1, server1) = (
        procfs::own_cpu_ticks().ok(),
        server_pid.and_then(|p| procfs::cpu_ticks(p).ok()),
    );
    let cpu_pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if elapsed > 0.0 => {
            format!(
                "{:.0}",
                (b - a) as f64 / procfs::USER_HZ as f64 / elapsed * 100.0
            )
        }
        _ => "-".to_string(),
    };

    let (mut replies, mut invalid) = (0u64, 0u64);
    let mut samples = Samples::with_capacity(results.iter().map(|(_, r)| r.samples.len()).sum());
    for (_, r) in results.iter_mut() {
        replies += r.replies;
        invalid += r.invalid;
        samples.append(&mut r.samples);
    }
    let rps = if elapsed > 0.0 {
        replies as f64 / elapsed
    } else {
        0.0
    };
    println!(
        "throughput: {replies} replies in {elapsed:.2} s over {} connections × window {}: {rps:.0} replies/s",
        o.conns, o.window
    );
    for f in &failures {
        eprintln!("herd-bench: {f}");
    }
    let mut summary = Summary::new("throughput");
    summary.add("addr", &o.addr);
    summary.add("conns", o.conns);
    summary.add("window", o.window);
    summary.add("secs", o.secs);
    summary.add("replies", replies);
    summary.add("invalid", invalid);
    summary.add("failed_conns", failures.len());
    summary.add("rps", format!("{rps:.0}"));
    samples.percentiles().add_to(&mut summary, "");
    summary.add("bench_cpu_pct", cpu_pct(own0, own1));
    summary.add("server_cpu_pct", cpu_pct(server0, server1));
    let mut ok = failures.is_empty() && invalid == 0;

    if let (Some(conn), Some(b)) = (checker.as_mut(), &o.converge) {
        let clients: Vec<(String, String)> = results
            .iter()
            .map(|(i, r)| (format!("bench-{pid}-{i}"), wire::client_time(base, r.sent)))
            .collect();
        match converge(conn, &clients, finished, o.converge_timeout, POLL_GAP).await {
            Ok(Ok(took)) => {
                println!(
                    "converged: {b} holds all {} clients' last updates {:.1} ms after the last reply",
                    clients.len(),
                    took.as_secs_f64() * 1000.0
                );
                summary.add("converge_ms", format!("{:.1}", took.as_secs_f64() * 1000.0));
                summary.add("converged", "yes");
            }
            Ok(Err(missing)) => {
                eprintln!(
                    "herd-bench: NOT CONVERGED: after {} ms {b} still lacks the last update of {missing} of {} clients; the rate above is not sustainable",
                    o.converge_timeout.as_millis(),
                    clients.len()
                );
                summary.add("converge_ms", "-");
                summary.add("converged", "no");
                ok = false;
            }
            Err(e) => {
                eprintln!("herd-bench: convergence check against {b} failed: {e}");
                summary.add("converge_ms", "-");
                summary.add("converged", "error");
                ok = false;
            }
        }
    }
    herd_cpu.add_per_update(&mut summary, replies)?;
    Ok((summary, ok))
}

/// When a driven connection stops sending.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// Sending stops at this instant.
    Time(Instant),
    /// Sending stops after this many lines.
    Count(u64),
}

/// What one driven connection did.
pub struct Driven {
    /// Lines sent: the last counter passed to the line writer.
    pub sent: u64,
    /// AT replies.
    pub replies: u64,
    /// Replies that were not AT lines.
    pub invalid: u64,
    /// Round-trip times of the first replies, up to the cap.
    pub samples: Samples,
    /// When the last reply arrived.
    pub finished: Instant,
}

/// Drives one connection: `window` requests in flight until `until`, then drains the
/// replies; all of it by `deadline`. `push(buf, counter)` appends the `counter`-th
/// request line (counting from 1); every line must get exactly one one-line reply.
pub async fn drive(
    stream: TcpStream,
    window: usize,
    until: Until,
    deadline: Instant,
    cap: usize,
    mut push: impl FnMut(&mut Vec<u8>, u64),
) -> io::Result<Driven> {
    // The window: the writer takes a slot per request, the reader frees one per reply.
    let (slots, freed) = async_channel::bounded::<()>(window);
    // Closed by the writer when it stops, so a reader with nothing outstanding wakes up.
    let (writer_done, done) = async_channel::bounded::<()>(1);
    let sent_at: RefCell<VecDeque<Instant>> = RefCell::new(VecDeque::with_capacity(window));
    let last_counter = Rc::new(std::cell::Cell::new(0u64));

    let writer = {
        let mut stream = stream.clone();
        let (sent_at, last) = (&sent_at, last_counter.clone());
        async move {
            let mut buf = Vec::with_capacity(window * 80);
            let mut counter = 0u64;
            let result = loop {
                let room = match until {
                    Until::Time(stop_at) if Instant::now() >= stop_at => 0,
                    Until::Time(_) => u64::MAX,
                    Until::Count(n) => n - counter,
                };
                if room == 0 {
                    break Ok(());
                }
                if slots.send(()).await.is_err() {
                    break Ok(()); // the reader failed; its error is reported
                }
                let now = Instant::now();
                let mut batch = 1;
                while batch < window && (batch as u64) < room && slots.try_send(()).is_ok() {
                    batch += 1;
                }
                for _ in 0..batch {
                    counter += 1;
                    push(&mut buf, counter);
                    sent_at.borrow_mut().push_back(now);
                }
                last.set(counter);
                if let Err(e) = stream.write_all(&buf).await {
                    break Err(e);
                }
                buf.clear();
            };
            drop(writer_done);
            result
        }
    };

    let reader = {
        let mut stream = stream;
        let sent_at = &sent_at;
        async move {
            let mut buf = vec![0u8; READ_CHUNK];
            let (mut start, mut end) = (0usize, 0usize);
            let (mut replies, mut invalid) = (0u64, 0u64);
            let mut samples = Samples::with_capacity(cap.min(1 << 20));
            let mut writer_finished = false;
            let mut finished = Instant::now();
            loop {
                if writer_finished && sent_at.borrow().is_empty() {
                    break;
                }
                if start == end {
                    (start, end) = (0, 0);
                } else if end == buf.len() {
                    if start == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("reply line longer than {READ_CHUNK} bytes"),
                        ));
                    }
                    buf.copy_within(start..end, 0);
                    (start, end) = (0, end - start);
                }
                let read = stream.read(&mut buf[end..]);
                let n = if writer_finished {
                    read.await?
                } else {
                    match future::or(async { Some(read.await) }, async {
                        let _ = done.recv().await;
                        None
                    })
                    .await
                    {
                        Some(n) => n?,
                        None => {
                            writer_finished = true;
                            continue;
                        }
                    }
                };
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "server closed the connection with {} replies outstanding",
                            sent_at.borrow().len()
                        ),
                    ));
                }
                end += n;
                let now = Instant::now();
                while let Some(i) = buf[start..end].iter().position(|&b| b == b'\n') {
                    let Some(sent) = sent_at.borrow_mut().pop_front() else {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a reply arrived for no request",
                        ));
                    };
                    let _ = freed.try_recv();
                    if buf[start..].starts_with(b"AT ") {
                        replies += 1;
                    } else {
                        invalid += 1;
                    }
                    if samples.len() < cap {
                        samples.push(wire::nanos(sent, now));
                    }
                    start += i + 1;
                }
                finished = now;
            }
            Ok((replies, invalid, samples, finished))
        }
    };

    let limit = deadline.saturating_duration_since(Instant::now());
    let ((), (replies, invalid, samples, finished)) = wire::timeout(
        limit,
        "sending and draining replies",
        future::try_zip(writer, reader),
    )
    .await?;
    Ok(Driven {
        sent: last_counter.get(),
        replies,
        invalid,
        samples,
        finished,
    })
}

/// Pause between convergence polling rounds after a load: short against the 1 s
/// target, long enough that the poller does not steal the CPU the herd needs to converge.
pub const POLL_GAP: Duration = Duration::from_millis(1);

/// Polls `conn` with `WHATSAT client 1 1` (all pending clients in one write per round,
/// rounds `gap` apart) until every client's stored AT line ends with its last sent
/// time. `Ok(Ok(time since since))`, or `Ok(Err(clients still behind))` after `limit`.
pub async fn converge(
    conn: &mut Conn,
    clients: &[(String, String)],
    since: Instant,
    limit: Duration,
    gap: Duration,
) -> io::Result<Result<Duration, usize>> {
    let give_up = Instant::now() + limit;
    let mut pending: Vec<&(String, String)> = clients.iter().collect();
    // A server still catching up may be slow to answer: each round may take what is left
    // of `limit` (and at least REPLY_TIMEOUT, so a short limit still gets whole replies).
    let round_limit = || {
        give_up
            .saturating_duration_since(Instant::now())
            .max(REPLY_TIMEOUT)
    };
    while !pending.is_empty() {
        if Instant::now() >= give_up {
            return Ok(Err(pending.len()));
        }
        let mut out = Vec::with_capacity(pending.len() * 40);
        for (client, _) in &pending {
            out.extend_from_slice(format!("WHATSAT {client} 1 1\n").as_bytes());
        }
        let round = wire::timeout(round_limit(), "WHATSAT round", async {
            conn.send(&out).await?;
            let mut behind = Vec::new();
            for entry in pending {
                let current = matches!(&conn.reply().await?, Reply::At { line, .. }
                    if line.strip_suffix(entry.1.as_str()).is_some_and(|l| l.ends_with(' ')));
                if !current {
                    behind.push(entry);
                }
            }
            Ok(behind)
        });
        pending = round.await?;
        if !pending.is_empty() {
            Timer::after(gap).await;
        }
    }
    Ok(Ok(Instant::now().saturating_duration_since(since)))
}
