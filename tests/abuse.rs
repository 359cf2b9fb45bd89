//! Hostile input: slow connections, a fake peer, replayed handshakes, a second
//! connection claiming a linked name. Every other client keeps its service.

mod common;

use common::*;
use herd::handshake::{self, Role, Transcript};
use herd::server::Secrets;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Config lines for a server that is in the herd but played by the test: it never
/// runs, and its name sorts before `A` so `A` waits for it to dial.
fn fake(name: &str) -> String {
    format!("server {name} 127.0.0.1:9\nlink A {name}\n")
}

fn secret(s: &str) -> impl Fn(&str) -> Secrets + '_ {
    move |_| Secrets {
        herd_secret: Some(s.into()),
        places_key: None,
    }
}

/// Starts a handshake as `name` and returns the client and the acceptor's nonce and proof.
fn hello(herd: &Herd, to: &str, name: &str, nonce_d: &str) -> (Client, String, String) {
    let mut c = Client::connect(&herd.bus(to));
    c.send(&format!("HERD-HELLO {name} {nonce_d}\n"));
    let welcome = c.line();
    let words: Vec<&str> = welcome.split(' ').collect();
    assert_eq!(words.len(), 4, "{welcome}");
    assert_eq!(words[..2], ["HERD-WELCOME", to]);
    (c, words[2].to_string(), words[3].to_string())
}

/// The dialer's side of the link's Noise session on `c`'s socket (the acceptor starts
/// it); returns what seals this side's bytes.
fn noise_as_dialer(c: &Client, secret: &[u8], prologue: &str) -> herd::secure::Sealer {
    let std_stream = c.stream.try_clone().unwrap();
    let psk = herd::secure::derive_psk(secret, prologue.as_bytes());
    let sealer = smol::block_on(async {
        let mut s = async_net::TcpStream::try_from(std_stream.try_clone().unwrap()).unwrap();
        let role = herd::secure::Role::Responder;
        herd::secure::handshake(&mut s, role, &psk, prologue.as_bytes())
            .await
            .expect("Noise handshake with A")
            .1
    });
    std_stream.set_nonblocking(false).unwrap();
    sealer
}

#[test]
fn a_replayed_handshake_fails_because_nonces_are_fresh() {
    // "0spy" sorts first, so A waits for it to dial; the test plays 0spy.
    let herd = Herd::start_with(&["A"], &[], &fake("0spy"), secret("s3cret"));
    // A recorded, genuine session (the test knows the secret to make it), sealed in
    // the Noise session a link with HERD_SECRET runs after the proofs.
    let nonce_d = handshake::nonce();
    let (mut c, nonce_a, _) = hello(&herd, "A", "0spy", &nonce_d);
    let transcript = Transcript {
        dialer: "0spy",
        acceptor: "A",
        nonce_d: &nonce_d,
        nonce_a: &nonce_a,
    };
    let proof = transcript.proof(b"s3cret", Role::Dial);
    c.send(&format!("HERD-AUTH {proof}\n"));
    let mut sealer = noise_as_dialer(&c, b"s3cret", &transcript.prologue());
    let mut sealed = Vec::new();
    sealer
        .seal(
            b"HERD-RESYNC - 0\nAT 0spy +0.000000001 genuine +1-1 1\n",
            &mut sealed,
        )
        .unwrap();
    c.send_bytes(&sealed);
    herd.wait_for("A", "genuine", "AT 0spy +0.000000001 genuine +1-1 1");
    drop(c);
    // The replay: same HELLO, same AUTH; A picks a new nonce, so the proof is stale.
    let (mut r, nonce_a2, _) = hello(&herd, "A", "0spy", &nonce_d);
    assert_ne!(nonce_a2, nonce_a);
    r.send(&format!(
        "HERD-AUTH {proof}\nHERD-RESYNC - 0\nAT 0spy +0.000000001 planted +6-6 2\n"
    ));
    assert!(r.closed_within(Duration::from_secs(5)));
    herd.wait_log("A", "bus-refused peer 0spy authentication failed");
    assert_eq!(herd.stored("A", "planted"), None);
}

#[test]
fn a_stranger_claiming_a_linked_name_is_refused_and_the_real_link_stays_up() {
    let herd = Herd::start_with(&["A", "B"], &[("A", "B")], "", secret("s3cret"));
    // Wait until the genuine link carries updates.
    let mut a = herd.client("A");
    a.send("IAMAT before +1-1 1\n");
    let at = a.line();
    herd.wait_for("B", "before", &at);
    // A stranger, without the secret, claims to be A at B.
    let (mut s, _, _) = hello(&herd, "B", "A", &handshake::nonce());
    s.send(&format!(
        "HERD-AUTH {}\nHERD-RESYNC - 0\nAT A +0.1 planted +1-1 9\n",
        "0".repeat(64)
    ));
    assert!(s.closed_within(Duration::from_secs(5)));
    herd.wait_log("B", "bus-refused peer A authentication failed");
    assert_eq!(herd.stored("B", "planted"), None);
    a.send("IAMAT after +2-2 2\n");
    let at = a.line();
    herd.wait_for("B", "after", &at);
}

#[test]
fn a_linked_peer_sending_garbage_is_ignored_or_cut_off() {
    let herd = Herd::start(&["A"], &[], &fake("0bad"));
    let mut p = herd.link_as("A", "0bad", b"");
    p.send_bytes(b"\xff\xfe garbage\n\0\0\0\nIAMAT x +1-1 1\nAT 0bad +0.1 short\nAT 0bad +0.000000001 ok +1-1 1\n");
    herd.wait_for("A", "ok", "AT 0bad +0.000000001 ok +1-1 1");
    assert_eq!(herd.stored("A", "x"), None);
    herd.wait_log("A", "dropped peer 0bad not a valid AT line");
    herd.wait_log("A", "dropped peer 0bad not a bus message");
    // A line past MAX_PEER_LINE is logged and dropped alone: the link stays up and the
    // next update arrives (SPEC §5: one bad record is never a reason to cut a link).
    p.send(&"z".repeat(herd::peer::MAX_PEER_LINE * 3));
    p.send("\nAT 0bad +0.000000001 after +1-1 2\n");
    herd.wait_for("A", "after", "AT 0bad +0.000000001 after +1-1 2");
    herd.wait_log("A", "dropped peer 0bad line longer than");
    assert!(!herd.log("A").contains("link-down peer 0bad"));
    let mut c = herd.client("A");
    c.send("IAMAT y +1-1 1\n");
    assert!(c.line().starts_with("AT A "));
}

/// `HERD-COVERS` and `HERD-HOLDS` are bounded by `MAX_COVERS`: a linked peer that
/// sends more covers than that ends no link and grows nothing past the bound (the
/// sender's own history, which ends the set, is kept; the server then tells fewer
/// than `MAX_COVERS` holds, so its peers accept them), and one that says it holds more
/// peers' histories than that at link-up is refused.
#[test]
fn covers_and_holds_past_max_covers_are_bounded() {
    use herd::peer::MAX_COVERS;
    let herd = Herd::start(&["A"], &[], &fake("0bad"));
    // The fake peer is A's first link, so its full resync is A's bootstrap.
    let mut p = herd.link_as("A", "0bad", b"");
    let mut covers = String::new();
    for i in 0..MAX_COVERS + 50 {
        covers.push_str(&format!(
            "HERD-COVERS s{i} 00000000000000{:02x} 5\n",
            i % 256
        ));
    }
    covers.push_str("HERD-COVERS 0bad 0000000000000001 7\n");
    covers.push_str("AT 0bad +0.000000001 after-covers +1-1 1\n");
    p.send(&covers);
    herd.wait_for(
        "A",
        "after-covers",
        "AT 0bad +0.000000001 after-covers +1-1 1",
    );
    assert!(!herd.log("A").contains("link-down peer 0bad"));
    drop(p);
    herd.wait_log("A", "link-down peer 0bad");
    let (p, told) = herd.link_as_holding("A", "0bad", b"");
    assert!(told.len() < MAX_COVERS, "{} holds", told.len());
    assert!(
        told.contains(&"HERD-HOLDS 0bad 0000000000000001 7".to_string()),
        "{told:?}"
    );
    drop(p);
    herd.wait_log_until("A", "a second link-down", |log| {
        log.matches("link-down peer 0bad").count() >= 2
    });
    // Past the bound at link-up: refused, logged; the server serves on.
    let mut holds = String::new();
    for i in 0..=MAX_COVERS {
        holds.push_str(&format!("HERD-HOLDS s{i} 0000000000000002 9\n"));
    }
    let mut q = Client::connect(&herd.bus("A"));
    let nonce_d = handshake::nonce();
    q.send(&format!("HERD-HELLO 0bad {nonce_d}\n"));
    let welcome = q.line();
    let words: Vec<&str> = welcome.split(' ').collect();
    let transcript = Transcript {
        dialer: "0bad",
        acceptor: "A",
        nonce_d: &nonce_d,
        nonce_a: words[2],
    };
    q.send(&format!(
        "HERD-AUTH {}\n{holds}HERD-RESYNC - 0\n",
        transcript.proof(b"", Role::Dial)
    ));
    herd.wait_log(
        "A",
        "link-refused peer 0bad expected HERD-RESYNC, got HERD-HOLDS",
    );
    let mut c = herd.client("A");
    c.send("IAMAT y +1-1 1\n");
    assert!(c.line().starts_with("AT A "));
}

/// A server back empty holds its other peers' resync while its bootstrap runs, but
/// at most `BOOTSTRAP_HOLD`: a source that never ends its full resync (no
/// `HERD-COVERS`) cannot keep another peer waiting longer; and a source that goes
/// away ends the hold at once.
#[test]
fn a_bootstrap_holds_another_peer_at_most_bootstrap_hold() {
    use herd::peer::BOOTSTRAP_HOLD;
    // Two fake peers (on distinct addresses that never run).
    let extra = format!("{}server 0other 127.0.0.1:7\nlink A 0other\n", fake("0src"));
    // The held peer gets A's own updates meanwhile (here only A's COVERS and offset).
    let resync = |c: &mut Client| loop {
        let line = c.line();
        if line.starts_with("HERD-RESYNC") {
            return line;
        }
    };
    let herd = Herd::start(&["A"], &[], &extra);
    let _source = herd.link_as("A", "0src", b"");
    let mut held = herd.link_as("A", "0other", b"");
    herd.wait_log("A", "link-out peer 0other HERD-RESYNC-LATER");
    let since = Instant::now();
    held.stream
        .set_read_timeout(Some(BOOTSTRAP_HOLD * 2))
        .unwrap();
    assert_eq!(resync(&mut held), "HERD-RESYNC - 0");
    let waited = since.elapsed();
    assert!(
        waited + Duration::from_secs(1) >= BOOTSTRAP_HOLD && waited < BOOTSTRAP_HOLD * 2,
        "held {waited:?}"
    );

    let herd = Herd::start(&["A"], &[], &extra);
    let source = herd.link_as("A", "0src", b"");
    let mut held = herd.link_as("A", "0other", b"");
    herd.wait_log("A", "link-out peer 0other HERD-RESYNC-LATER");
    let since = Instant::now();
    drop(source);
    assert_eq!(resync(&mut held), "HERD-RESYNC - 0");
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );

    // A source that answers HERD-RESYNC-LATER is bootstrapping too and has nothing to
    // bring: the bootstrap is off, and the other peer is asked at once. (Servers
    // started empty together would otherwise wait on each other in a ring, each for
    // BOOTSTRAP_HOLD.)
    let herd = Herd::start(&["A"], &[], &extra);
    let (_source, _, _) = herd.link_as_answering("A", "0src", b"", "HERD-RESYNC-LATER");
    herd.wait_log("A", "link-in peer 0src HERD-RESYNC-LATER");
    let since = Instant::now();
    let (mut held, _, first) = herd.link_as_answering("A", "0other", b"", "HERD-RESYNC - 0");
    held.stream
        .set_read_timeout(Some(BOOTSTRAP_HOLD * 2))
        .unwrap();
    if first != "HERD-RESYNC - 0" {
        assert_eq!(resync(&mut held), "HERD-RESYNC - 0");
    }
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );
}

#[test]
fn the_client_port_speaks_only_the_client_protocol_and_the_bus_only_the_bus() {
    let herd = Herd::start(&["A", "B"], &[("A", "B")], "");
    // A handshake (or any peer message) on the client port is an invalid command.
    let mut c = herd.client("A");
    let hello = format!("HERD-HELLO B {}", handshake::nonce());
    c.send(&format!(
        "{hello}\nAT B +0.000000001 planted +1-1 1\nHERD-RESYNC - 0\n"
    ));
    assert_eq!(c.line(), format!("? {hello}"));
    assert_eq!(c.line(), "? AT B +0.000000001 planted +1-1 1");
    assert_eq!(c.line(), "? HERD-RESYNC - 0");
    // A client command on the bus port, or a server that is not linked, is logged
    // and closed, and teaches the server nothing.
    for first in [
        "IAMAT kiwi +1-1 1".to_string(),
        format!("HERD-HELLO Z {}", handshake::nonce()),
        "AT B +0.000000001 planted +1-1 1".to_string(),
    ] {
        let mut s = Client::connect(&herd.bus("A"));
        s.send(&format!("{first}\n"));
        assert!(s.closed_within(Duration::from_secs(5)), "{first}");
    }
    herd.wait_log("A", "bus-refused bus 127.0.0.1");
    assert_eq!(herd.stored("A", "kiwi"), None);
    assert_eq!(herd.stored("A", "planted"), None);
    // The link is up all along.
    let mut a = herd.client("A");
    a.send("IAMAT linked +1-1 1\n");
    let at = a.line();
    herd.wait_for("B", "linked", &at);
}

#[test]
fn slow_connections_dribbling_bytes_do_not_delay_a_normal_client() {
    let herd = Herd::start(&["A"], &[], "");
    let addr = herd.addr("A");
    let mut slow: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Accept is FIFO: once this is answered, every slow connection has been accepted.
    let mut first = herd.client("A");
    first.send("IAMAT first +1-1 1\n");
    assert!(first.line().starts_with("AT A "));
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(2) {
        for s in &mut slow {
            let _ = s.write_all(b"I");
        }
        let t = Instant::now();
        let mut c = herd.client("A");
        c.send(&format!("IAMAT normal +1-1 {rounds}\n"));
        assert!(c.line().starts_with("AT A "));
        worst = worst.max(t.elapsed());
        rounds += 1;
    }
    assert!(rounds >= 5, "only {rounds} rounds in 2 s");
    assert!(
        worst < Duration::from_millis(500),
        "a normal client waited {worst:?}"
    );
}
