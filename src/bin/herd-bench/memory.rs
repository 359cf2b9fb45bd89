//! `memory`: what a server keeps to itself after answering one client. One IAMAT, one
//! WHATSAT (which loads the places data, for offline places), then the process's
//! private memory from `/proc/PID/smaps_rollup`: pages no other process shares, so the
//! figure does not depend on what else runs on the machine.

use crate::procfs;
use crate::stats::Summary;
use crate::wire::{self, Conn, Reply};
use std::time::Duration;

/// Pause after the WHATSAT before reading memory, so work the reply started (the log
/// line, a places worker going idle) is done.
pub const SETTLE: Duration = Duration::from_millis(300);

/// Runs the mode against `addr` (server pid `pid`, else the local listener).
pub fn run(
    addr: &str,
    pid: Option<u32>,
    radius: &str,
    bound: usize,
) -> Result<(Summary, bool), String> {
    let Some(pid) = pid.or_else(|| procfs::port_of(addr).and_then(procfs::listening_pid)) else {
        return Err(format!("{addr} is not a local listener (give --pid)"));
    };
    let (status, results) = smol::block_on(async {
        let mut conn = Conn::open(addr).await?;
        let client = format!("bench-{}-mem", std::process::id());
        let mut line = Vec::new();
        wire::push_iamat(&mut line, &client, wire::epoch_secs(), 1);
        line.extend_from_slice(format!("WHATSAT {client} {radius} {bound}\n").as_bytes());
        conn.send(&line).await?;
        wire::timeout(wire::REPLY_TIMEOUT, "IAMAT reply", conn.line()).await?;
        let reply = wire::timeout(wire::REPLY_TIMEOUT, "WHATSAT reply", conn.reply()).await?;
        smol::Timer::after(SETTLE).await;
        Ok::<_, std::io::Error>(match reply {
            Reply::At {
                status, results, ..
            } => (status, results),
            Reply::Other(line) => (line, 0),
        })
    })
    .map_err(|e| e.to_string())?;
    let (private, rss) =
        procfs::private_kib(pid).map_err(|e| format!("/proc/{pid}/smaps_rollup: {e}"))?;
    println!(
        "memory: server pid {pid} after one WHATSAT ({status}, {results} results): private {private} KiB (Private_Clean + Private_Dirty), RSS {rss} KiB"
    );
    let mut summary = Summary::new("memory");
    summary.add("addr", addr);
    summary.add("status", &status);
    summary.add("results", results);
    summary.add("private_kib", private);
    summary.add("private_bytes", private * 1024);
    summary.add("rss_kib", rss);
    Ok((summary, status == "OK" || status == "ZERO_RESULTS"))
}
