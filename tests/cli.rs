//! The command line (SPEC §2) through the built binary.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn herd(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(herd_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("GOOGLE_PLACES_API_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_herd() {
    let dir = TempDir::new("cli");
    std::fs::write(
        dir.0.join("herd.conf"),
        "server A 127.0.0.1:1\nserver B 127.0.0.1:2\nlink A B\nlog-dir mylogs\n",
    )
    .unwrap();
    let (code, out, _) = herd(&["check"], &dir.0);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("A "))
        .unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        words,
        ["A", "client", "127.0.0.1:1", "bus", "127.0.0.1:10001"],
        "{out}"
    );
    assert!(out.contains("A — B"), "{out}");
    assert!(out.contains("places: "), "{out}");
    assert!(
        out.contains("log-dir: ./mylogs") || out.contains("log-dir: mylogs"),
        "{out}"
    );
}

#[test]
fn bad_configs_exit_1_naming_file_and_line() {
    let dir = TempDir::new("cli");
    std::fs::write(dir.0.join("bad.conf"), "server A 127.0.0.1:1\n\nlink A Z\n").unwrap();
    for cmd in ["check", "up"] {
        let (code, _, err) = herd(&[cmd, "--config", "bad.conf"], &dir.0);
        assert_eq!(code, 1, "{cmd}");
        assert_eq!(err, "herd: bad.conf:3: link to unknown server `Z`\n");
    }
    let (code, _, err) = herd(&["serve", "A", "--config", "bad.conf"], &dir.0);
    assert_eq!(
        (code, err.as_str()),
        (1, "herd: bad.conf:3: link to unknown server `Z`\n")
    );
    let (code, _, err) = herd(&["check", "--config", "missing.conf"], &dir.0);
    assert_eq!(code, 1);
    assert!(err.starts_with("herd: missing.conf: cannot read"), "{err}");
}

#[test]
fn an_unknown_name_exits_non_zero() {
    let dir = TempDir::new("cli");
    std::fs::write(dir.0.join("herd.conf"), "server A 127.0.0.1:1\n").unwrap();
    let (code, _, err) = herd(&["serve", "Nobody"], &dir.0);
    assert_ne!(code, 0);
    assert!(err.contains("herd.conf") && err.contains("Nobody"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn help_works_everywhere() {
    let dir = TempDir::new("cli");
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["up", "--help"],
        &["check", "--help"],
    ] {
        let (code, out, _) = herd(args, &dir.0);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.starts_with("Usage: herd"), "{args:?}: {out}");
    }
}

/// `herd up`, stopped with SIGTERM (which it passes on to its servers) when a test
/// fails before stopping it: SIGKILL would leave its servers running.
struct Up(std::process::Child);

impl Up {
    /// Sends SIGTERM.
    fn terminate(&self) -> rustix::io::Result<()> {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).expect("a child's pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.terminate();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn up_runs_every_server_and_sigterm_stops_them_all() {
    let dir = TempDir::new("up");
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    std::fs::write(
        dir.0.join("herd.conf"),
        format!(
            "server A 127.0.0.1:{} bus 127.0.0.1:{}\nserver B 127.0.0.1:{} bus 127.0.0.1:{}\nserver C 127.0.0.1:{} bus 127.0.0.1:{}\nlink A B\nlink B C\n",
            ports[0], free_port(), ports[1], free_port(), ports[2], free_port()
        ),
    )
    .unwrap();
    let mut up = Up(Command::new(herd_bin())
        .arg("up")
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let child = &mut up.0;
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let addr_a = format!("127.0.0.1:{}", ports[0]);
    let start = Instant::now();
    let mut c = loop {
        match std::net::TcpStream::connect(&addr_a) {
            Ok(_) => break Client::connect(&addr_a),
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("A never listened: {e}"),
        }
    };
    c.send("IAMAT k +1-2 3\n");
    let at = c.line();
    // It reaches C through B.
    let addr_c = format!("127.0.0.1:{}", ports[2]);
    let start = Instant::now();
    loop {
        // `herd up` starts the servers one by one: C may not listen yet.
        if std::net::TcpStream::connect(&addr_c).is_ok() {
            let mut q = Client::connect(&addr_c);
            q.send("WHATSAT k 1 1\n");
            if q.line() == at {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "C never learned k"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    up.terminate().unwrap();
    let status = up.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let lines = lines.join().unwrap();
    for name in ["A", "B", "C"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("herd up: {name} stopped"))),
            "{lines:?}"
        );
    }
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
}

/// `herd serve` warns once on stderr when the herd spans hosts and has no secret. The
/// far server sorts first, so it would dial: nothing is ever sent to its address.
#[test]
fn serve_warns_when_a_multi_host_herd_has_no_secret() {
    let dir = TempDir::new("cli");
    let port = free_port();
    std::fs::write(
        dir.0.join("herd.conf"),
        format!(
            "server A 127.0.0.1:{port} bus 127.0.0.1:{}\nserver 0far 203.0.113.5:12101\nlink A 0far\n",
            free_port()
        ),
    )
    .unwrap();
    for (secret, warned) in [(None, true), (Some("s3cret-for-warn"), false)] {
        let err_path = dir.0.join("stderr");
        let err_file = std::fs::File::create(&err_path).unwrap();
        let mut cmd = Command::new(herd_bin());
        cmd.args(["serve", "A"])
            .current_dir(&dir.0)
            .stderr(Stdio::from(err_file))
            .env_remove("HERD_SECRET");
        if let Some(s) = secret {
            cmd.env("HERD_SECRET", s);
        }
        let child = Proc(cmd.spawn().unwrap());
        let addr = format!("127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "A never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_served(&addr);
        drop(child);
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        assert_eq!(
            stderr.contains("warning: the herd spans more than one host"),
            warned,
            "{stderr}"
        );
    }
}
