//! The classic graders' robustness round, on the real binary: for each of the ten pairs
//! of servers of the classic herd, stop both by port (`lsof -ti:PORT | xargs kill`, as
//! the graders and their README do), send an IAMAT to a survivor, check that exactly
//! the survivors connected to it through live links learn it and none crashed or hung,
//! restart the pair, go on.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// The survivors that `from` reaches through links between survivors.
fn reachable(from: &str, down: &[&str]) -> HashSet<&'static str> {
    let mut seen =
        HashSet::from([CLASSIC_NAMES[CLASSIC_NAMES.iter().position(|n| *n == from).unwrap()]]);
    let mut grew = true;
    while grew {
        grew = false;
        for (a, b) in CLASSIC {
            if down.contains(&a) || down.contains(&b) {
                continue;
            }
            if seen.contains(a) != seen.contains(b) {
                seen.insert(a);
                seen.insert(b);
                grew = true;
            }
        }
    }
    seen
}

/// `lsof -ti:PORT`: every process with a socket on the port, at either end.
fn pids_on(port: u16) -> Vec<u32> {
    let out = Command::new("lsof")
        .arg(format!("-ti:{port}"))
        .output()
        .expect("lsof runs (test.sh installs it)");
    let mut pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn alive(p: &mut Proc) -> bool {
    p.0.try_wait().ok().flatten().is_none()
}

#[test]
fn killing_two_servers_by_port_stops_them_alone_and_the_rest_keep_flooding() {
    let dir = TempDir::new("grader");
    let ports: HashMap<&str, u16> = CLASSIC_NAMES.iter().map(|n| (*n, free_port())).collect();
    let mut text = String::new();
    for name in CLASSIC_NAMES {
        text += &format!(
            "server {name} 127.0.0.1:{} bus 127.0.0.1:{}\n",
            ports[name],
            free_port()
        );
    }
    for (a, b) in CLASSIC {
        text += &format!("link {a} {b}\n");
    }
    text += "log-dir logs\nplaces offline\n";
    let conf = dir.0.join("herd.conf");
    std::fs::write(&conf, text).unwrap();
    let addr = |name: &str| format!("127.0.0.1:{}", ports[name]);
    let mut procs: HashMap<&str, Proc> = CLASSIC_NAMES
        .iter()
        .map(|n| (*n, serve_binary(&conf, n, &addr(n), "").0))
        .collect();
    // Linked: an update at Riley reaches Campbell, two links away.
    let mut c = Client::connect(&addr("Riley"));
    c.send("IAMAT warmup +1-1 1\n");
    let at = c.line();
    wait_stored(&addr("Campbell"), "warmup", &at);
    // Like a grader, hold no connection while killing by port: lsof lists both ends.
    drop(c);

    let mut round = 0;
    for (i, x) in CLASSIC_NAMES.iter().enumerate() {
        for y in &CLASSIC_NAMES[i + 1..] {
            round += 1;
            let down = [*x, *y];
            for name in down {
                let pid = procs[name].0.id();
                assert_eq!(
                    pids_on(ports[name]),
                    [pid],
                    "lsof -ti:{} lists more than {name}",
                    ports[name]
                );
                let status = Command::new("bash")
                    .arg("-c")
                    .arg(format!("lsof -ti:{} | xargs kill", ports[name]))
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            for name in down {
                let p = procs.get_mut(name).unwrap();
                let start = Instant::now();
                while alive(p) {
                    assert!(
                        start.elapsed() < Duration::from_secs(15),
                        "{name} did not stop"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let survivors: Vec<&str> = CLASSIC_NAMES
                .iter()
                .copied()
                .filter(|n| !down.contains(n))
                .collect();
            for name in &survivors {
                assert!(
                    alive(procs.get_mut(name).unwrap()),
                    "round {round}: stopping {down:?} stopped {name}"
                );
            }
            let from = survivors[round % survivors.len()];
            let client = format!("pair{round}");
            let mut c = Client::connect(&addr(from));
            c.send(&format!("IAMAT {client} +1-1 {round}\n"));
            let at = c.line();
            drop(c);
            assert!(at.starts_with(&format!("AT {from} ")), "{at}");
            let reach = reachable(from, &down);
            for name in &survivors {
                if reach.contains(name) {
                    wait_stored(&addr(name), &client, &at);
                }
            }
            // Cut off from `from`, the others must not learn it (a bounded wait).
            std::thread::sleep(Duration::from_millis(300));
            for name in &survivors {
                if !reach.contains(name) {
                    assert_eq!(
                        stored_at(&addr(name), &client),
                        None,
                        "{name} learned {client} through a stopped server"
                    );
                }
            }
            for name in down {
                procs.insert(name, serve_binary(&conf, name, &addr(name), "").0);
            }
            // Back, they catch up on what they missed.
            for name in down {
                wait_stored(&addr(name), &client, &at);
            }
        }
    }
    assert_eq!(round, 10);
}
