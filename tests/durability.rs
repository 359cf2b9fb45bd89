//! Durable state through the real binary: `kill -9` loses nothing acknowledged; a
//! damaged state file is repaired and the server catches up from its peers.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

fn start(conf: &Path, name: &str, port: u16) -> Proc {
    serve_binary(conf, name, &format!("127.0.0.1:{port}"), "").0
}

/// Sends `n` IAMATs on one connection and returns every AT line acknowledged.
fn send_updates(port: u16, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut text = String::new();
    for i in 0..n {
        text += &format!("IAMAT {prefix}{i} +1.5-2.5 {}\n", 1000 + i);
    }
    s.write_all(text.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    (0..n)
        .map(|i| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("AT "), "{line}");
            (format!("{prefix}{i}"), line.trim_end().to_string())
        })
        .collect()
}

fn stored(port: u16, client: &str) -> Option<String> {
    stored_at(&format!("127.0.0.1:{port}"), client)
}

fn config(dir: &Path, a: u16, b: u16) -> std::path::PathBuf {
    let conf = dir.join("herd.conf");
    std::fs::write(
        &conf,
        format!(
            "server A 127.0.0.1:{a} bus 127.0.0.1:{}\nserver B 127.0.0.1:{b} bus 127.0.0.1:{}\nlink A B\nlog-dir logs\nstate-dir state\nplaces offline\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    conf
}

#[test]
fn kill_9_loses_nothing_acknowledged() {
    let dir = TempDir::new("durable");
    let (a, b) = (free_port(), free_port());
    let conf = config(&dir.0, a, b);
    let server = start(&conf, "A", a);
    let acked = send_updates(a, "c", 2000);
    drop(server); // SIGKILL, no chance to flush anything
    let _server = start(&conf, "A", a);
    for (client, line) in &acked {
        assert_eq!(
            stored(a, client).as_deref(),
            Some(line.as_str()),
            "{client}"
        );
    }
}

#[test]
fn a_damaged_state_file_is_repaired_and_peers_fill_in() {
    let dir = TempDir::new("damaged");
    let (a, b) = (free_port(), free_port());
    let conf = config(&dir.0, a, b);
    let server = start(&conf, "A", a);
    let acked = send_updates(a, "d", 100);
    drop(server);
    // Corrupt a record in the middle and tear the tail, as a crash mid-write might.
    let path = dir.0.join("state/A.state");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    bytes.extend_from_slice(b"0badc0de AT A +0.1 torn");
    std::fs::write(&path, &bytes).unwrap();
    // B knows everything A acknowledged (as if it had been flooded to it).
    let b_state = dir.0.join("state/B.state");
    let records: String = acked
        .iter()
        .enumerate()
        .map(|(i, (_, line))| {
            let offset = i as u64 + 1;
            herd::state::record(&herd::state::Record::Update { offset, line })
        })
        .collect();
    std::fs::write(&b_state, records).unwrap();

    let _a = start(&conf, "A", a);
    let first = &acked[0];
    assert_eq!(stored(a, &first.0).as_deref(), Some(first.1.as_str()));
    wait_file_contains(&dir.0.join("logs/A.log"), "state-repair");
    let _b = start(&conf, "B", b);
    for (client, line) in &acked {
        let start = Instant::now();
        while stored(a, client).as_deref() != Some(line.as_str()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "A never caught up on {client}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
