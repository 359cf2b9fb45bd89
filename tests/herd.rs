//! Whole herds on real sockets: replies byte for byte, propagation, catch-up after
//! restarts and partitions, secrets, half-close and places through a stand-in server.

mod common;

use common::*;
use herd::server::Secrets;
use std::time::Duration;

const KIWI: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

/// Checks an AT reply to `iamat` from `server`, returning the line.
fn assert_at(line: &str, server: &str, iamat: &str) {
    let fields: Vec<&str> = line.split(' ').collect();
    let sent: Vec<&str> = iamat.split(' ').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!((fields[0], fields[1]), ("AT", server), "{line}");
    let diff = fields[2];
    assert!(diff.starts_with('+') || diff.starts_with('-'), "{line}");
    let (_, frac) = diff.split_once('.').expect("fraction");
    assert_eq!(frac.len(), 9, "{line}");
    assert_eq!(&fields[3..], &sent[1..], "{line}");
}

#[test]
fn iamat_floods_to_every_server_of_the_classic_herd() {
    let herd = Herd::classic("");
    let mut c = herd.client("Riley");
    c.send(&format!("{KIWI}\n"));
    let at = c.line();
    assert_at(&at, "Riley", KIWI);
    for name in CLASSIC_NAMES {
        herd.wait_for(name, "kiwi.cs.ucla.edu", &at);
    }
}

/// A flooded update is not acknowledged alone to the peer it came from (the
/// offset rides along with the next updates sent there, or goes alone only after
/// `OFFSET_LAG` skipped ones): Riley's clients' updates reach Jaquez from Riley, and
/// nothing goes back from Jaquez to Riley.
#[test]
fn flooded_updates_cost_no_lone_acknowledgement_back() {
    let herd = Herd::classic("");
    herd.wait_linked("Riley", "Jaquez");
    let mut c = herd.client("Riley");
    let mut last = String::new();
    for i in 0..20 {
        c.send(&format!(
            "IAMAT quiet-{i} +34.068930-118.445127 1621464827.959498503\n"
        ));
        last = c.line();
    }
    for name in CLASSIC_NAMES {
        herd.wait_for(name, "quiet-19", &last);
    }
    // All 20 come over the link (the log is written behind the store, so wait).
    let straight = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" in peer Riley AT Riley ") && l.contains(" quiet-"))
            .count()
    };
    let log = herd.wait_log_until("Jaquez", "20 updates from Riley", |log| straight(log) >= 20);
    // Jaquez may forward to Riley an update it heard first from Bernard, with an offset;
    // an offset with no update before it is an acknowledgement sent alone. (The link's
    // start, with its resync, comes before the first update.)
    let first = log
        .find(" in peer Riley AT Riley ")
        .expect("an update from Riley");
    let flood = &log[first..];
    let back = |what: &str| flood.matches(&format!(" out peer Riley {what}")).count();
    assert!(
        back("HERD-OFFSET") <= back("AT "),
        "Jaquez acknowledged Riley's updates alone:\n{log}"
    );
}

/// Past `OFFSET_LAG` flooded updates from a peer, the offset does go back to it alone,
/// so its cursor for this server never lags by more than that.
#[test]
fn past_offset_lag_the_offset_goes_back_alone() {
    use herd::peer::OFFSET_LAG;
    let n = 2 * OFFSET_LAG as usize + 10;
    let herd = Herd::classic("");
    herd.wait_linked("Riley", "Jaquez");
    let mut c = herd.client("Riley");
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("IAMAT lag-{i} +1+1 1000\n"));
    }
    c.send(&batch);
    let mut last = String::new();
    for _ in 0..n {
        last = c.line();
    }
    herd.wait_for("Jaquez", &format!("lag-{}", n - 1), &last);
    // The log is written behind the store: wait (bounded; the assertion is the wait's
    // end) for an offset to Riley after the batch's first update that goes alone. A
    // writer logs each batch as one entry, its offset after its updates; so an offset
    // whose line does not follow an update to Riley was sent without one.
    herd.wait_log_until("Jaquez", "an offset alone to Riley after lag-0", |log| {
        let Some(first) = log.find(" lag-0 ") else {
            return false;
        };
        let lines: Vec<&str> = log[first..].lines().collect();
        lines.windows(2).any(|pair| {
            pair[1].contains(" out peer Riley HERD-OFFSET ")
                && !pair[0].contains(" out peer Riley AT ")
        })
    });
}

#[test]
fn whatsat_at_the_farthest_server_asks_the_places_service() {
    let places = StandIn::start(Answer::Reply(200, legacy_body(8)));
    let herd = Herd::start_with(
        &CLASSIC_NAMES,
        &CLASSIC,
        &format!("places google-legacy {}\n", places.legacy_url()),
        |_| Secrets {
            herd_secret: None,
            places_key: Some("test-key+/=".into()),
        },
    );
    let mut c = herd.client("Riley");
    c.send(&format!("{KIWI}\n"));
    let at = c.line();
    herd.wait_for("Campbell", "kiwi.cs.ucla.edu", &at);

    let mut c = herd.client("Campbell");
    c.send("WHATSAT kiwi.cs.ucla.edu 10 5\n");
    assert_eq!(c.line(), at);
    let json = c.read_json_reply();
    assert!(!json.contains("\n\n"));
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(value["results"].as_array().unwrap().len(), 5);
    assert_eq!(value["status"], "OK");
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["html_attributions", "next_page_token", "results", "status"]
    );
    assert!(
        json.starts_with("{\n   \"html_attributions\" : [],\n"),
        "{json}"
    );

    let reqs = places.requests();
    let last = reqs.last().expect("a places request");
    assert_eq!(last.method, "GET");
    assert!(
        last.target
            .starts_with("/maps/api/place/nearbysearch/json?"),
        "{}",
        last.target
    );
    assert_eq!(
        last.query("location").as_deref(),
        Some("+34.068930,-118.445127")
    );
    assert_eq!(last.query("radius").as_deref(), Some("10000"));
    assert_eq!(last.query("key").as_deref(), Some("test-key+/="));

    // The key never reaches a log.
    for name in CLASSIC_NAMES {
        assert!(
            !herd.log(name).contains("test-key"),
            "{name}'s log holds the key"
        );
    }
    let log = herd.wait_log("Campbell", "in client");
    assert!(log.contains("in client 127.0.0.1:"), "{log}");
    herd.wait_log("Campbell", "out client 127.0.0.1:");
    // The JSON goes to the log as one line, its newlines escaped.
    herd.wait_log("Campbell", "{\\x0a   \"html_attributions\" : [],\\x0a");
}

#[test]
fn replies_keep_order_and_half_close_flushes_everything() {
    let places = StandIn::start(Answer::Slow(Duration::from_millis(300), legacy_body(3)));
    let herd = Herd::start_with(
        &["A"],
        &[],
        &format!("places google-legacy {}\n", places.legacy_url()),
        |_| Secrets {
            herd_secret: None,
            places_key: Some("k".into()),
        },
    );
    let mut c = herd.client("A");
    // The slow WHATSAT comes before the invalid line; its reply must too. The last
    // command has no newline: EOF ends it.
    c.send("IAMAT k +1-2 1\nWHATSAT k 1 2\r\nbogus\nIAMAT j +3-4 2");
    let rest = String::from_utf8(c.finish()).unwrap();
    let lines: Vec<&str> = rest.split('\n').collect();
    assert!(lines[0].starts_with("AT A "), "{rest}");
    assert_eq!(lines[1], lines[0]);
    assert!(rest.contains("\n}\n\n? bogus\nAT A "), "{rest}");
    assert!(rest.ends_with(" j +3-4 2\n"), "{rest}");
}

#[test]
fn invalid_lines_are_echoed_byte_for_byte() {
    let herd = Herd::start(&["A"], &[], "");
    let mut c = herd.client("A");
    let cases: [&[u8]; 10] = [
        b"",
        b"   ",
        b"HELLO world",
        b"IAMAT a +1-2",
        b"IAMAT a 1-2 3",
        b"WHATSAT nobody 10 5",
        b"AT Riley +0.263873386 kiwi +1-2 3",
        b"bad \xff\xfe\x00 bytes\t",
        b"IAMAT a +91-2 3",
        b"HERD-HELLO A 0123456789abcdef0123456789abcdef",
    ];
    for case in cases {
        c.send_bytes(case);
        c.send_bytes(b"\r\n");
        let mut want = b"? ".to_vec();
        want.extend_from_slice(case);
        assert_eq!(c.line_bytes(), want);
    }
    c.send("IAMAT k +1-2 1\n");
    c.send("WHATSAT k 0 5\nWHATSAT k 10 21\nWHATSAT k 50.1 1\n");
    assert!(c.line().starts_with("AT A "));
    assert_eq!(c.line(), "? WHATSAT k 0 5");
    assert_eq!(c.line(), "? WHATSAT k 10 21");
    assert_eq!(c.line(), "? WHATSAT k 50.1 1");
}

#[test]
fn older_reports_never_replace_newer_ones_but_still_get_replies() {
    let herd = Herd::start(&["A", "B"], &[("A", "B")], "");
    let mut a = herd.client("A");
    a.send("IAMAT k +1+1 200\n");
    let newer = a.line();
    let mut b = herd.client("B");
    b.send("IAMAT k +2+2 100\n");
    assert_at(&b.line(), "B", "IAMAT k +2+2 100");
    herd.wait_for("B", "k", &newer);
    herd.wait_for("A", "k", &newer);
}

#[test]
fn a_restarted_server_catches_up() {
    let mut herd = Herd::classic("");
    herd.kill("Juzang");
    let mut c = herd.client("Riley");
    c.send("IAMAT while-away +10-20 1000\n");
    let at = c.line();
    herd.wait_for("Campbell", "while-away", &at);
    herd.restart("Juzang");
    herd.wait_for("Juzang", "while-away", &at);
}

/// A server that comes back empty (no state dir) gets back what its own clients told
/// it before the crash: its peers hold those updates as received from it, and a full
/// resync must not leave them out.
#[test]
fn a_server_back_empty_gets_back_its_own_clients_locations() {
    let mut herd = Herd::start(&["A", "B"], &[("A", "B")], "");
    let mut c = herd.client("A");
    c.send("IAMAT told-a +1+1 100\n");
    let at = c.line();
    herd.wait_for("B", "told-a", &at);
    drop(c);
    herd.kill("A");
    herd.restart("A");
    herd.wait_for("A", "told-a", &at);
}

/// A server back empty takes the whole store from one neighbour (its bootstrap) and
/// asks the other only for what that did not bring: one copy crosses its links, not
/// one per neighbour, and nothing is lost, including an update sent to the other
/// neighbour meanwhile.
#[test]
fn a_server_back_empty_takes_one_full_copy_not_one_per_neighbour() {
    const N: usize = 300;
    let mut herd = Herd::classic("");
    let mut c = herd.client("Riley");
    let mut last = String::new();
    for i in 0..N {
        c.send(&format!("IAMAT boot-{i} +1+1 {}\n", 1000 + i));
        last = c.line();
    }
    herd.wait_for("Campbell", &format!("boot-{}", N - 1), &last);
    herd.kill("Campbell");
    herd.restart("Campbell");
    let mut b = herd.client("Bernard");
    b.send("IAMAT during-boot +2+2 5000\n");
    let during = b.line();
    herd.wait_for("Campbell", &format!("boot-{}", N - 1), &last);
    herd.wait_for(
        "Campbell",
        "boot-0",
        &herd.stored("Riley", "boot-0").unwrap(),
    );
    herd.wait_for("Campbell", "during-boot", &during);
    // Both links up again, and both past their resync: then count.
    let since = |log: &str| {
        let start = log.rfind("start - Campbell").expect("restart logged");
        log[start..].to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let both_up = |s: &str| {
        ["Bernard", "Juzang"].iter().all(|peer| {
            s.contains(&format!("link-up peer {peer} "))
                && s.contains(&format!("link-out peer {peer} HERD-RESYNC "))
        })
    };
    while !both_up(&since(&herd.log("Campbell"))) {
        assert!(
            std::time::Instant::now() < deadline,
            "links did not come back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let since = since(&herd.log("Campbell"));
    let received = since
        .lines()
        .filter(|l| l.contains(" in peer ") && l.contains(" AT "))
        .count();
    assert!(
        (N..N + 10).contains(&received),
        "Campbell received {received} AT lines for {N} clients:\n{since}"
    );
    // The held resync asked the second neighbour only for what is past the bootstrap.
    assert!(since.contains("HERD-COVERS"), "{since}");
}

#[test]
fn a_server_cut_off_catches_up_when_one_neighbour_returns() {
    let mut herd = Herd::classic("");
    herd.kill("Bernard");
    herd.kill("Juzang");
    let mut c = herd.client("Riley");
    c.send("IAMAT partitioned +1-1 5000\n");
    let at = c.line();
    herd.wait_for("Jaquez", "partitioned", &at);
    assert_eq!(herd.stored("Campbell", "partitioned"), None);
    herd.restart("Juzang");
    herd.wait_for("Campbell", "partitioned", &at);
}

#[test]
fn a_server_with_another_secret_learns_nothing_and_teaches_nothing() {
    let herd = Herd::start_with(&["A", "B", "C"], &[("A", "B"), ("B", "C")], "", |name| {
        Secrets {
            herd_secret: Some(
                if name == "C" {
                    "intruder"
                } else {
                    "shared-secret"
                }
                .into(),
            ),
            places_key: None,
        }
    });
    let mut a = herd.client("A");
    a.send("IAMAT from-a +1-1 1\n");
    let at_a = a.line();
    herd.wait_for("B", "from-a", &at_a);
    let mut c = herd.client("C");
    c.send("IAMAT from-c +2-2 2\n");
    let at_c = c.line();
    // B and C try to link for a while and must fail every time.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(herd.stored("C", "from-a"), None);
    assert_eq!(herd.stored("B", "from-c"), None);
    assert_eq!(herd.stored("A", "from-c"), None);
    assert_eq!(herd.stored("C", "from-c").as_deref(), Some(at_c.as_str()));
    herd.wait_log("B", "link-refused peer C");
    for name in ["A", "B", "C"] {
        let log = herd.log(name);
        assert!(
            !log.contains("shared-secret") && !log.contains("intruder"),
            "{name}: {log}"
        );
    }
}

#[test]
fn a_stopping_server_answers_what_it_has_read_and_drains_its_peer_queues() {
    let places = StandIn::start(Answer::Slow(Duration::from_millis(800), legacy_body(2)));
    let mut herd = Herd::start_with(
        &["A", "B"],
        &[("A", "B")],
        &format!("places google-legacy {}\n", places.legacy_url()),
        |_| Secrets {
            herd_secret: None,
            places_key: Some("k".into()),
        },
    );
    let mut c = herd.client("A");
    c.send("IAMAT before +1-2 1\n");
    let first = c.line();
    herd.wait_for("B", "before", &first);
    // A WHATSAT that waits on a slow places service, then an IAMAT behind it: both are
    // read before the stop and must be answered (and the IAMAT flooded to B) after it.
    c.send("WHATSAT before 1 1\nIAMAT last +3-4 2\n");
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    herd.kill("A");
    assert!(started.elapsed() < herd::server::SHUTDOWN_GRACE + Duration::from_secs(1));
    assert_eq!(c.line(), first);
    let json = c.read_json_reply();
    assert!(json.contains("\"status\" : \"OK\""), "{json}");
    let last = c.line();
    assert_at(&last, "A", "IAMAT last +3-4 2");
    assert!(c.closed_within(Duration::from_secs(2)));
    herd.wait_for("B", "last", &last);
}

/// Client IDs as long as a line allows (issue 8's case, 8172 bytes, and the lengths
/// around MAX_LINE): acknowledged, flooded to every server of the classic herd, stored
/// in each state file and loaded back; one byte past the bound is refused with `?`.
#[test]
fn the_longest_acknowledged_lines_flood_everywhere_and_survive_a_restart() {
    use herd::lines::MAX_LINE;
    let mut herd = Herd::classic("state-dir state\n");
    let iamat = |len: usize, tag: &str| {
        let tail = format!(" +0+0 {}", tag.len());
        let client = format!(
            "{tag}{}",
            "z".repeat(len - "IAMAT ".len() - tag.len() - tail.len())
        );
        (format!("IAMAT {client}{tail}"), client)
    };
    let mut acked = Vec::new();
    // 8172 bytes with its newline (issue 8), and the two longest lines that fit.
    for (len, tag) in [(8171, "a"), (MAX_LINE - 2, "bb"), (MAX_LINE - 1, "ccc")] {
        let (line, client) = iamat(len, tag);
        assert_eq!(line.len(), len);
        let mut c = herd.client("Riley");
        c.send(&format!("{line}\n"));
        let at = c.line();
        assert!(
            at.starts_with("AT Riley ") && at.ends_with(&format!("{client} +0+0 {}", tag.len()))
        );
        acked.push((client, at));
    }
    for name in CLASSIC_NAMES {
        for (client, at) in &acked {
            herd.wait_for(name, client, at);
        }
    }
    // One byte more is past the bound: `?` and the line's first MAX_LINE bytes.
    let (line, client) = iamat(MAX_LINE, "dddd");
    let mut c = herd.client("Riley");
    c.send(&format!("{line}\n"));
    assert_eq!(c.line(), format!("? {}", &line[..MAX_LINE]));
    assert_eq!(herd.stored("Riley", &client), None);
    // Campbell, restarted alone with its neighbours down, has them from its state file.
    for name in ["Bernard", "Juzang", "Campbell"] {
        herd.kill(name);
    }
    herd.restart("Campbell");
    for (client, at) in &acked {
        assert_eq!(
            herd.stored("Campbell", client).as_deref(),
            Some(at.as_str())
        );
    }
    assert!(!herd.log("Campbell").contains("state-repair"));
}
