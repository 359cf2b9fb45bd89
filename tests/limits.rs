//! Every named limit, crossed: line length, connections, per-peer queue.

mod common;

use common::*;
use herd::lines::MAX_LINE;
use herd::server::MAX_CLIENTS;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_line_one_byte_under_the_bound_is_a_command() {
    let herd = Herd::start(&["A"], &[], "");
    let mut c = herd.client("A");
    let id = "x".repeat(MAX_LINE - "IAMAT  +1-2 3\n".len());
    c.send(&format!("IAMAT {id} +1-2 3\n"));
    let reply = c.line();
    assert!(reply.starts_with("AT A ") && reply.ends_with(&format!(" {id} +1-2 3")));
}

#[test]
fn a_line_at_the_bound_is_answered_and_the_connection_closed() {
    let herd = Herd::start(&["A"], &[], "");
    let mut c = herd.client("A");
    let long = "y".repeat(MAX_LINE);
    c.send(&long);
    assert_eq!(c.line(), format!("? {long}"));
    assert!(c.closed_within(Duration::from_secs(5)));
    // The server still serves others.
    let mut d = herd.client("A");
    d.send("IAMAT k +1-2 3\n");
    assert!(d.line().starts_with("AT A "));
}

#[test]
fn a_megabyte_without_newline_is_answered_and_closed() {
    let herd = Herd::start(&["A"], &[], "");
    let mut c = herd.client("A");
    let junk = vec![b'\0'; 1 << 20];
    // Write from another thread: the server stops reading after MAX_LINE bytes.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&junk);
    });
    let reply = c.line_bytes();
    assert_eq!(reply.len(), 2 + MAX_LINE);
    assert!(reply.starts_with(b"? \0\0"));
    assert!(c.closed_within(Duration::from_secs(5)));
    sender.join().unwrap();
    herd.wait_log("A", &format!("line longer than {MAX_LINE} bytes"));
}

/// Raises this process's descriptor limit to its hard limit.
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[test]
fn connections_past_the_bound_are_closed_and_service_resumes() {
    if raise_fd_limit() < (MAX_CLIENTS + 100) as u64 {
        panic!(
            "this test needs {} file descriptors; raise `ulimit -Hn`",
            MAX_CLIENTS + 100
        );
    }
    let dir = TempDir::new("conns");
    let (conf, addr) = lone_server_conf(&dir.0);
    let (_server, first) = serve_binary(&conf, "A", &addr, "");
    let mut held = vec![first];
    while held.len() < MAX_CLIENTS {
        held.push(TcpStream::connect(&addr).expect("connect under the bound"));
    }
    // Every held connection is accepted before the next one (accept is FIFO), so the
    // one past the bound is refused: closed without a reply.
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"IAMAT k +1-2 3\n");
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "connection past the bound got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A held connection still works.
    let mut c = BufReader::new(held[0].try_clone().unwrap());
    held[0].write_all(b"IAMAT k +1-2 3\n").unwrap();
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    assert!(line.starts_with("AT A "), "{line}");
    // Free some and new connections are served again.
    held.truncate(MAX_CLIENTS - 10);
    wait_served(&addr);
    wait_file_contains(
        &dir.0.join("logs/A.log"),
        &format!("{MAX_CLIENTS} client connections already open"),
    );
}

#[test]
fn a_peer_that_stops_reading_is_cut_off_and_clients_are_not_delayed() {
    // "0fake" sorts before "A", so A waits for it to dial; it never reads after linking.
    let fake_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let herd = Herd::start(
        &["A"],
        &[],
        &format!(
            "server 0fake 127.0.0.1:9 bus {}\nlink A 0fake\n",
            fake_listener.local_addr().unwrap()
        ),
    );
    let _peer = herd.link_as("A", "0fake", b"");

    // Flood A with updates for distinct clients; the fake peer reads none of them.
    let mut c = herd.client("A");
    let mut reader = BufReader::new(c.stream.try_clone().unwrap());
    let total = 150_000;
    let counter = std::thread::spawn(move || {
        let mut line = String::new();
        for _ in 0..total {
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("AT A "), "{line}");
        }
    });
    let mut batch = String::new();
    for i in 0..total {
        batch += &format!("IAMAT client{i} +1-2 {i}\n");
        if batch.len() > 64 * 1024 {
            c.send(&batch);
            batch.clear();
        }
    }
    c.send(&batch);
    counter.join().unwrap();
    // A fresh client is answered at once while the writer waits on the stuck peer.
    let t = Instant::now();
    let mut d = herd.client("A");
    d.send("IAMAT early +1-2 3\n");
    assert!(d.line().starts_with("AT A "));
    assert!(t.elapsed() < Duration::from_secs(2));
    // The peer that stopped reading is cut (TCP user timeout or PEER_WRITE_TIMEOUT,
    // whichever fires first); the updates wait
    // in the replica, not in memory per peer.
    herd.wait_log("A", "link-down peer 0fake");
    // A fresh client is answered at once.
    let t = Instant::now();
    let mut d = herd.client("A");
    d.send("IAMAT fresh +1-2 3\n");
    assert!(d.line().starts_with("AT A "));
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// CPU ticks (user + system) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

#[test]
fn running_out_of_descriptors_refuses_cleanly_without_spinning_and_recovers() {
    let dir = TempDir::new("fds");
    let (conf, addr) = lone_server_conf(&dir.0);
    // A hard limit of 64 descriptors: herd cannot raise it, and runs out well before
    // MAX_CLIENTS.
    let (server, first) = serve_binary(&conf, "A", &addr, "ulimit -n 64 &&");
    // 100 more than it can hold: the rest wait in the listen backlog.
    let mut held = vec![first];
    for _ in 0..100 {
        held.push(TcpStream::connect(&addr).expect("connect"));
    }
    let mut c = BufReader::new(held[0].try_clone().unwrap());
    held[0].write_all(b"IAMAT k +1-2 3\n").unwrap();
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    assert!(line.starts_with("AT A "), "{line}");
    // Past what the open-file limit allows, new clients are refused (or, if the
    // descriptors run out first, accept fails and backs off).
    let log = wait_file_contains(&dir.0.join("logs/A.log"), "client 127.0.0.1");
    let start = Instant::now();
    while !(log.contains("accept-error") || log.contains("client connections already open")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing refused: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
        let log = std::fs::read_to_string(dir.0.join("logs/A.log")).unwrap_or_default();
        if log.contains("accept-error") || log.contains("client connections already open") {
            break;
        }
    }
    // No busy loop while out of descriptors: under a quarter of a core over a second
    // (a spinning accept loop took 64 ticks here; the backoff takes about 0).
    let pid = server.0.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(used < 25, "{used} ticks in 1 s while out of descriptors");
    // Free them: new clients are served again.
    drop(c);
    held.clear();
    wait_served(&addr);
}

/// Past MAX_BUS_CONNECTIONS (strangers that have not finished a handshake count), a new
/// bus connection is logged and closed; clients, bounded apart, are served as before.
#[test]
fn bus_connections_past_their_bound_are_closed_and_clients_are_not_affected() {
    use herd::server::MAX_BUS_CONNECTIONS;
    let herd = Herd::start(&["A"], &[], "");
    let bus = herd.bus("A");
    // Each waits in the handshake (for up to HANDSHAKE_TIMEOUT) and holds a place.
    let held: Vec<TcpStream> = (0..MAX_BUS_CONNECTIONS)
        .map(|_| TcpStream::connect(&bus).expect("connect under the bound"))
        .collect();
    // Accept is FIFO: by the time this one is accepted, every held one is counted.
    let mut extra = TcpStream::connect(&bus).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 16];
    let start = Instant::now();
    assert_eq!(
        extra.read(&mut buf).unwrap_or(usize::MAX),
        0,
        "the one past the bound is closed"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "closed at once, not by the handshake timeout"
    );
    herd.wait_log(
        "A",
        &format!("{MAX_BUS_CONNECTIONS} bus connections already open"),
    );
    let mut c = herd.client("A");
    c.send("IAMAT while-bus-full +1-2 3\n");
    assert!(c.line().starts_with("AT A "));
    drop(held);
}
