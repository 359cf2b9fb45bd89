//! Encrypted links (SPEC §5, issue 11): two real servers whose configs differ only in
//! one bus address, so the dialer reaches its peer through a TCP relay written here.
//! With `HERD_SECRET` set, the relayed bytes hold no client name, location or secret,
//! and a byte flipped after the handshake never puts an altered location in the peer's
//! store: the link ends, redials and resynchronises.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "relay-test-secret-5d1c";

/// A relay from `listener` to `upstream`: every connection is piped both ways; what
/// the dialer sends is recorded, and when `flip` is set the next chunk it sends has
/// one byte flipped (once).
struct Relay {
    seen: Arc<Mutex<Vec<u8>>>,
    flip: Arc<AtomicBool>,
    flipped: Arc<AtomicBool>,
}

fn relay(listener: TcpListener, upstream: String) -> Relay {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let flip = Arc::new(AtomicBool::new(false));
    let flipped = Arc::new(AtomicBool::new(false));
    let r = Relay {
        seen: seen.clone(),
        flip: flip.clone(),
        flipped: flipped.clone(),
    };
    std::thread::spawn(move || {
        for down in listener.incoming().take(50) {
            let Ok(mut down) = down else { continue };
            let Ok(mut up) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut down2, mut up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = up2.read(&mut buf) {
                    if n == 0 || down2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = down2.shutdown(std::net::Shutdown::Both);
            });
            let (seen, flip, flipped) = (seen.clone(), flip.clone(), flipped.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = down.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    if flip.swap(false, Ordering::SeqCst) {
                        buf[n / 2] ^= 0x20;
                        flipped.store(true, Ordering::SeqCst);
                    }
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    r
}

#[test]
fn relayed_links_are_sealed_and_a_flipped_byte_never_alters_a_location() {
    let dir = TempDir::new("relay");
    let (a, b) = (free_port(), free_port());
    let (a_bus, b_bus) = (free_port(), free_port());
    let relay_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay_listener.local_addr().unwrap().port();
    // A dials B (A sorts first); A's config gives B's bus as the relay's address.
    let conf = |b_bus_seen: u16, tag: &str| {
        let path = dir.0.join(format!("{tag}.conf"));
        std::fs::write(
            &path,
            format!(
                "server A 127.0.0.1:{a} bus 127.0.0.1:{a_bus}\nserver B 127.0.0.1:{b} bus 127.0.0.1:{b_bus_seen}\nlink A B\nlog-dir logs\nplaces offline\n"
            ),
        )
        .unwrap();
        path
    };
    let (conf_a, conf_b) = (conf(relay_port, "a"), conf(b_bus, "b"));
    let relay = relay(relay_listener, format!("127.0.0.1:{b_bus}"));
    let env = format!("HERD_SECRET={SECRET}");
    let (_b, _) = serve_binary(&conf_b, "B", &format!("127.0.0.1:{b}"), &env);
    let (_a, _) = serve_binary(&conf_a, "A", &format!("127.0.0.1:{a}"), &env);
    let (addr_a, addr_b) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));

    let mut c = Client::connect(&addr_a);
    c.send("IAMAT secret-client.example +34.068930-118.445127 1621464827.959498503\n");
    let at = c.line();
    wait_stored(&addr_b, "secret-client.example", &at);
    {
        let seen = relay.seen.lock().unwrap();
        let text = String::from_utf8_lossy(&seen);
        assert!(
            text.contains("HERD-HELLO A "),
            "the relay saw the handshake"
        );
        for needle in [
            "secret-client.example",
            "+34.068930-118.445127",
            "1621464827",
            SECRET,
            "AT A ",
        ] {
            assert!(
                !text.contains(needle),
                "{needle:?} crossed the wire in clear"
            );
        }
    }
    assert!(std::fs::read_to_string(dir.0.join("logs/B.log"))
        .unwrap()
        .contains("Noise_NNpsk0"));

    // Flip one byte of the next frame A sends: the frame carrying this update.
    relay.flip.store(true, Ordering::SeqCst);
    c.send("IAMAT flipped.example +10.000000+20.000000 1700000000.5\n");
    let at2 = c.line();
    // B ends that link, A redials, the resync brings the update unaltered.
    let start = Instant::now();
    loop {
        match stored_at(&addr_b, "flipped.example") {
            Some(line) => {
                assert_eq!(line, at2, "B stored an altered update");
                break;
            }
            None => assert!(
                start.elapsed() < Duration::from_secs(15),
                "the link never recovered"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(relay.flipped.load(Ordering::SeqCst));
    let log_b = wait_file_contains(&dir.0.join("logs/B.log"), "link-down peer A read failed");
    assert!(log_b.matches("link-up peer A").count() >= 2, "{log_b}");
    for log in ["A.log", "B.log"] {
        let text = std::fs::read_to_string(dir.0.join("logs").join(log)).unwrap();
        assert!(!text.contains(SECRET), "the secret is in {log}");
    }
}
