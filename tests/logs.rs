//! The log of a real `herd serve` (SPEC §7): SIGHUP reopens it, so logrotate can move
//! it away, and the server keeps serving through the signal.

mod common;

use common::{lone_server_conf, serve_binary, wait_file_contains, Client, TempDir};
use std::time::{Duration, Instant};

#[test]
fn sighup_reopens_a_log_moved_away() {
    let dir = TempDir::new("logs-hup");
    let (conf, addr) = lone_server_conf(&dir.0);
    let (server, _first) = serve_binary(&conf, "A", &addr, "");
    let log = dir.0.join("logs/A.log");
    let moved = dir.0.join("logs/A.log.1");

    let mut c = Client::connect(&addr);
    c.send("IAMAT before-the-move +1-2 3\n");
    assert!(c.line().starts_with("AT A "));
    wait_file_contains(&log, "IAMAT before-the-move");

    std::fs::rename(&log, &moved).unwrap();
    let pid = rustix::process::Pid::from_child(&server.0);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    // The writer reopens on the signal itself, before any new line arrives.
    let start = Instant::now();
    while !log.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no new A.log after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Same connection, same server: it lived through SIGHUP.
    c.send("IAMAT after-the-move +1-2 4\n");
    assert!(c.line().starts_with("AT A "));
    let fresh = wait_file_contains(&log, "out client");
    assert!(fresh.contains(" in client "), "{fresh}");
    assert!(fresh.contains("IAMAT after-the-move"), "{fresh}");
    assert!(!fresh.contains("before-the-move"), "{fresh}");
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(old.contains("IAMAT before-the-move"), "{old}");
    assert!(!old.contains("after-the-move"), "{old}");
}
