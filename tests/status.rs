//! `herd status` and `herd --version` on the real binary, against herds running here.

mod common;

use common::*;
use herd::server::Secrets;
use std::process::Command;
use std::time::{Duration, Instant};

fn status(herd: &Herd, secret: Option<&str>, json: bool) -> (i32, String) {
    let mut cmd = Command::new(herd_bin());
    cmd.arg("status")
        .arg("--config")
        .arg(herd.dir.0.join("herd.conf"))
        .env_remove("HERD_SECRET");
    if json {
        cmd.arg("--json");
    }
    if let Some(s) = secret {
        cmd.env("HERD_SECRET", s);
    }
    let out = cmd.output().expect("herd status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Polls `herd status` (bounded) until `done` says its output is what we wait for.
fn status_until(
    herd: &Herd,
    secret: Option<&str>,
    done: impl Fn(i32, &str) -> bool,
) -> (i32, String) {
    let start = Instant::now();
    loop {
        let (code, out) = status(herd, secret, false);
        if done(code, &out) {
            return (code, out);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "status never settled:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn row<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or("");
    line.split_whitespace().collect()
}

#[test]
fn status_shows_every_server_and_link_and_exits_by_health() {
    let mut herd = Herd::classic("");
    let mut c = herd.client("Riley");
    c.send("IAMAT counted +1-1 1\n");
    let at = c.line();
    herd.wait_for("Campbell", "counted", &at);
    let (code, out) = status_until(&herd, None, |code, _| code == 0);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.lines()
            .next()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["SERVER", "STATE", "UPTIME", "CLIENTS", "LINKS"])
    );
    let bernard = row(&out, "Bernard");
    assert_eq!(&bernard[1..2], ["up"], "{out}");
    assert_eq!(bernard[3], "1", "{out}");
    assert_eq!(
        bernard[4..].join(" "),
        "Jaquez up, Juzang up, Campbell up",
        "{out}"
    );
    let (code, json) = status(&herd, None, true);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(5));
    assert_eq!(v["servers"][4]["name"], "Campbell");
    assert_eq!(v["servers"][4]["links"]["Juzang"], "up");

    // Campbell down: its row says so, its neighbours see their links to it down.
    herd.kill("Campbell");
    let (code, out) = status_until(&herd, None, |_, out| {
        row(out, "Bernard").join(" ").contains("Campbell DOWN")
    });
    assert_eq!(code, 1, "{out}");
    assert_eq!(&row(&out, "Campbell")[1..2], ["down"], "{out}");
    assert!(
        row(&out, "Juzang").join(" ").contains("Campbell DOWN"),
        "{out}"
    );
    let (_, json) = status(&herd, None, true);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["healthy"], false);
    assert_eq!(v["servers"][4]["state"], "down");
}

#[test]
fn status_proves_the_herd_secret_like_a_peer() {
    let herd = Herd::start_with(&["A", "B"], &[("A", "B")], "", |_| Secrets {
        herd_secret: Some("status-secret".into()),
        places_key: None,
    });
    let (code, out) = status_until(&herd, Some("status-secret"), |code, _| code == 0);
    assert_eq!(code, 0, "{out}");
    let (code, out) = status(&herd, Some("wrong-secret"), false);
    assert_eq!(code, 1);
    assert_eq!(row(&out, "A")[1..3], ["down", "(failed"], "{out}");
    assert!(out.contains("HERD_SECRET differs"), "{out}");
    assert!(!out.contains("status-secret"));
    // Without the secret the bus teaches nothing.
    let (code, out) = status(&herd, None, false);
    assert_eq!(code, 1);
    assert!(!out.contains(" up "), "{out}");
    herd.wait_log("A", "bus-refused bus 127.0.0.1");
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(herd_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("herd {}\n", env!("CARGO_PKG_VERSION"))
    );
}
