//! A herd whose servers the benchmark runs itself, one `herd serve NAME` child each, so
//! it can kill one with SIGKILL and start it again; what little of `herd.conf` it needs
//! (each server's client address, the state directory); and the bytes a server has
//! received on its links, from `ss`.

use rustix::process::{kill_process, Pid, Signal};
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to stop after SIGTERM before it is killed: herd's own
/// graceful stop takes at most 6 s.
pub const STOP_GRACE: Duration = Duration::from_secs(8);

/// What the benchmark reads from a herd.conf.
pub struct Conf {
    /// Each server's name and client address, in file order.
    pub servers: Vec<(String, String)>,
    /// `state-dir`, resolved against the config's folder.
    pub state_dir: Option<PathBuf>,
}

/// Reads the `server` and `state-dir` lines of the config at `path` (SPEC §3); the
/// server itself checks the rest.
pub fn read_conf(path: &Path) -> Result<Conf, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut conf = Conf {
        servers: Vec::new(),
        state_dir: None,
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["server", name, addr, ..] => conf.servers.push((name.to_string(), addr.to_string())),
            ["state-dir", dir] => conf.state_dir = Some(folder.join(dir)),
            _ => {}
        }
    }
    if conf.servers.is_empty() {
        return Err(format!("{}: no server lines", path.display()));
    }
    Ok(conf)
}

/// Herd servers run as children of the benchmark; every one still running is stopped
/// when this is dropped.
pub struct Herd {
    bin: PathBuf,
    config: PathBuf,
    /// Where each server's stdout and stderr are appended (`NAME.out`).
    out_dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Herd {
    /// A herd of `bin serve NAME --config config` processes, none started yet.
    pub fn new(bin: &Path, config: &Path, out_dir: &Path) -> Herd {
        Herd {
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            out_dir: out_dir.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Starts server `name`; returns the instant just before it was spawned.
    pub fn start(&mut self, name: &str) -> io::Result<Instant> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out_dir.join(format!("{name}.out")))?;
        let started = Instant::now();
        let child = Command::new(&self.bin)
            .args(["serve", name, "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot run {}: {e}", self.bin.display()))
            })?;
        self.children.push((name.to_string(), child));
        Ok(started)
    }

    /// The pid of running server `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Kills server `name` with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self, name: &str) -> io::Result<()> {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            return Err(io::Error::other(format!("{name} is not running")));
        };
        let (_, mut child) = self.children.swap_remove(i);
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops every server: SIGTERM, then SIGKILL after `STOP_GRACE`.
    pub fn stop_all(&mut self) {
        for (_, child) in &self.children {
            if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, Signal::TERM);
            }
        }
        let give_up = Instant::now() + STOP_GRACE;
        for (_, child) in &mut self.children {
            while Instant::now() < give_up && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Removes server `name`'s durable state from `dir`: every entry named `name` or
/// starting with `name.` (`Campbell.state`, `Campbell.state.tmp`, a `Campbell/` folder).
pub fn remove_state(dir: &Path, name: &str) -> io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file == name || file.starts_with(&format!("{name}.")) {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes process `pid` has received on its open TCP connections, except those to this
/// benchmark process (its clients): its peer links (and places requests, if any), as
/// `ss -tinp` reports them; `None` when `ss` is missing or shows no such connection.
pub fn link_bytes_received(pid: u32) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_ss(
        &String::from_utf8_lossy(&out.stdout),
        pid,
        std::process::id(),
    )
}

/// Sums `bytes_received` over the sockets of `pid` whose peer is not a socket of
/// `client_pid`, in `ss -tinpH` output: a socket line (`Recv-Q Send-Q Local Peer
/// users:((...,pid=P,...))`), then its indented info line.
fn parse_ss(text: &str, pid: u32, client_pid: u32) -> Option<u64> {
    let owned_by = |line: &str, p: u32| line.contains(&format!("pid={p},"));
    let column = |line: &'_ str, i: usize| line.split_whitespace().nth(i).unwrap_or("").to_string();
    let clients: std::collections::HashSet<String> = text
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && owned_by(l, client_pid))
        .map(|l| column(l, 2))
        .collect();
    let (mut total, mut counting, mut any) = (0u64, false, false);
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            counting = owned_by(line, pid) && !clients.contains(&column(line, 3));
            any |= counting;
        } else if counting {
            total += line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("bytes_received:"))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    any.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_servers_and_state_dir() {
        let dir = std::env::temp_dir().join(format!("herd-bench-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herd.conf");
        std::fs::write(
            &path,
            "# c\nserver Riley 127.0.0.1:12101 # x\nserver Campbell\t127.0.0.1:12105 bus 127.0.0.1:9\nstate-dir st\n",
        )
        .unwrap();
        let conf = read_conf(&path).unwrap();
        assert_eq!(
            conf.servers,
            vec![
                ("Riley".to_string(), "127.0.0.1:12101".to_string()),
                ("Campbell".to_string(), "127.0.0.1:12105".to_string())
            ]
        );
        assert_eq!(conf.state_dir, Some(dir.join("st")));
        std::fs::create_dir_all(dir.join("st/Campbell")).unwrap();
        std::fs::write(dir.join("st/Campbell.state"), "x").unwrap();
        std::fs::write(dir.join("st/Campbellx.state"), "x").unwrap();
        assert_eq!(remove_state(&dir.join("st"), "Campbell").unwrap(), 2);
        assert!(dir.join("st/Campbellx.state").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sums_link_bytes_of_one_process() {
        // pid 7 is the server, 9 the benchmark (its client on 127.0.0.1:5000), 77 a peer.
        let text = "0 0 127.0.0.1:12105 127.0.0.1:5000 users:((\"herd\",pid=7,fd=5))\n\
                    \t bbr bytes_sent:9 bytes_received:1000 segs_out:1\n\
                    0 0 127.0.0.1:5000 127.0.0.1:12105 users:((\"herd-bench\",pid=9,fd=3))\n\
                    \t bbr bytes_received:9\n\
                    0 0 127.0.0.1:40000 127.0.0.1:22103 users:((\"herd\",pid=7,fd=6))\n\
                    \t bbr bytes_received:250 segs_out:1\n\
                    0 0 127.0.0.1:12105 127.0.0.1:40001 users:((\"herd\",pid=7,fd=7))\n\
                    \t bbr bytes_received:50\n\
                    0 0 127.0.0.1:40001 127.0.0.1:12105 users:((\"herd\",pid=77,fd=7))\n\
                    \t bbr bytes_received:5000\n";
        assert_eq!(parse_ss(text, 7, 9), Some(300));
        assert_eq!(parse_ss(text, 8, 9), None);
    }
}
