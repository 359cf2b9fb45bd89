//! What the benchmark reads about a local server from `/proc`: which process listens on
//! a port, its resident memory, its CPU time and its wakeups; and the benchmark's own
//! descriptor limit.

use crate::stats::Summary;
use std::io;

/// Clock ticks per second in `/proc/PID/stat`: the kernel reports CPU times there in
/// USER_HZ, which is 100 on every Linux ABI.
pub const USER_HZ: u64 = 100;

/// Raises this process's soft limit on open files to the hard limit, so it can hold
/// thousands of connections; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        // Unlimited hard limit: a generous soft limit is enough for any run.
        let soft = 1 << 20;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: None,
            },
        )?;
        return Ok(soft);
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(hard)
}

/// The pid of the local process listening on TCP `port`, found through the socket's
/// inode in `/proc/net/tcp{,6}` and the descriptors in `/proc/*/fd`. `None` when the
/// server is not local or not ours to inspect.
pub fn listening_pid(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| listening_inode(table, port))?;
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = proc_entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inode of the listening socket on `port` in a `/proc/net/tcp`-style table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    /// State code of a listening socket in the table.
    const LISTEN: &str = "0A";
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let local = cols.get(1)?;
        let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        if local_port != port || *cols.get(3)? != LISTEN {
            return None;
        }
        cols.get(9)?.parse().ok()
    })
}

/// The process's resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in status"))
}

/// CPU time (user + system) the process has used, in USER_HZ ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// CPU time this process has used, in USER_HZ ticks.
pub fn own_cpu_ticks() -> io::Result<u64> {
    stat_ticks("/proc/self/stat")
}

fn stat_ticks(path: &str) -> io::Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); field 3 is the first after ')'.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    match (field(14), field(15)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot read CPU times from {path}"),
        )),
    }
}

/// Context switches of every thread of the process, voluntary and not: each time a
/// thread sleeps and wakes counts, so an idle process with no timers adds none.
pub fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// CPU time of a set of processes (a whole herd) from a starting reading on: what the
/// servers spent on a load, to divide by the updates they acknowledged.
pub struct CpuMeter {
    pids: Vec<u32>,
    start: u64,
}

impl CpuMeter {
    /// Reads the processes' CPU time now; with no pids, measures nothing.
    pub fn start(pids: &[u32]) -> Result<CpuMeter, String> {
        Ok(CpuMeter {
            pids: pids.to_vec(),
            start: ticks_of(pids)?,
        })
    }

    /// Adds `herd_cpu_ticks` and `herd_cpu_us_per_update` (CPU time since `start`
    /// divided by `updates`) to `summary` and prints them; nothing without pids.
    pub fn add_per_update(&self, summary: &mut Summary, updates: u64) -> Result<(), String> {
        if self.pids.is_empty() {
            return Ok(());
        }
        let ticks = ticks_of(&self.pids)? - self.start;
        let per = (ticks * 1_000_000 / USER_HZ) as f64 / updates.max(1) as f64;
        println!(
            "CPU of {} server processes: {} ms for {updates} acknowledged updates: {per:.1} µs per update",
            self.pids.len(),
            ticks * 1000 / USER_HZ
        );
        summary.add("herd_cpu_ticks", ticks);
        summary.add("acked", updates);
        summary.add("herd_cpu_us_per_update", format!("{per:.1}"));
        Ok(())
    }
}

/// The CPU time of every process in `pids` so far, in USER_HZ ticks.
fn ticks_of(pids: &[u32]) -> Result<u64, String> {
    pids.iter()
        .map(|&p| cpu_ticks(p).map_err(|e| format!("cannot read the CPU time of pid {p}: {e}")))
        .sum()
}

/// Parses a comma-separated list of pids (`--pids 12,34,56`).
pub fn parse_pids(list: &str) -> Result<Vec<u32>, String> {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse().map_err(|_| format!("not a pid: {p:?}")))
        .collect()
}

/// Memory only this process maps, in KiB: `Private_Clean` + `Private_Dirty` from
/// `/proc/PID/smaps_rollup` (what would be freed if it exited; shared library pages
/// that other processes also map are not counted). Also `Rss`, for comparison.
pub fn private_kib(pid: u32) -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (
        field("Private_Clean:"),
        field("Private_Dirty:"),
        field("Rss:"),
    ) {
        (Some(clean), Some(dirty), Some(rss)) => Ok((clean + dirty, rss)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no Private_Clean, Private_Dirty or Rss in smaps_rollup",
        )),
    }
}

/// The port of `HOST:PORT`.
pub fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(own_cpu_ticks().is_ok());
        assert!(context_switches(std::process::id()).is_ok());
        assert_eq!(port_of("127.0.0.1:12101"), Some(12101));
        let (private, rss) = private_kib(std::process::id()).unwrap();
        assert!(private > 0 && private <= rss, "{private} {rss}");
        assert_eq!(parse_pids("12,34").unwrap(), vec![12, 34]);
        assert!(parse_pids("12,x").is_err());
    }

    #[test]
    fn finds_the_listener_of_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pid(port), Some(std::process::id()));
    }
}
