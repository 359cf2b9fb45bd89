//! The peer handshake (SPEC §5): the dialing server says who it is, and each side proves
//! it knows `HERD_SECRET` with an HMAC-SHA256 over both fresh nonces, so the secret never
//! crosses the wire and a recorded handshake cannot be replayed.
//!
//! ```text
//! dialer   -> HERD-HELLO <dialer> <nonce_d>
//! acceptor -> HERD-WELCOME <acceptor> <nonce_a> <mac("accept")>
//! dialer   -> HERD-AUTH <mac("dial")>
//! ```
//!
//! With no secret set, both sides use the empty key: the exchange still names the
//! servers, but anyone who knows a server's name can pass it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// First word of the dialer's greeting; on a client connection any other first word
/// is a client command.
pub const HELLO: &str = "HERD-HELLO";
/// First word of the acceptor's answer.
pub const WELCOME: &str = "HERD-WELCOME";
/// First word of the dialer's proof.
pub const AUTH: &str = "HERD-AUTH";
/// Random bytes in a nonce: 128 bits makes a repeat across any herd's lifetime
/// vanishingly unlikely.
const NONCE_BYTES: usize = 16;

/// A fresh random nonce as hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    // The OS random source only fails on systems too broken to run a server; fall back
    // to time-and-address entropy rather than panic.
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let addr = &bytes as *const _ as usize as u128;
        bytes.copy_from_slice(&(t ^ addr.rotate_left(64)).to_le_bytes());
    }
    hex(&bytes)
}

/// True for text shaped like a nonce from `nonce`.
pub fn is_nonce(s: &str) -> bool {
    s.len() == NONCE_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The proof one side sends: `role` is `"accept"` or `"dial"`.
pub fn mac(
    secret: &[u8],
    role: &str,
    dialer: &str,
    acceptor: &str,
    nonce_d: &str,
    nonce_a: &str,
) -> String {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in ["herd-v1", role, dialer, acceptor, nonce_d, nonce_a] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    hex(&m.finalize().into_bytes())
}

/// Checks a proof in constant time.
pub fn verify(
    secret: &[u8],
    role: &str,
    dialer: &str,
    acceptor: &str,
    nonce_d: &str,
    nonce_a: &str,
    proof: &str,
) -> bool {
    let want = mac(secret, role, dialer, acceptor, nonce_d, nonce_a);
    want.len() == proof.len()
        && want
            .bytes()
            .zip(proof.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_roles_names_and_nonces() {
        let (d, a) = (nonce(), nonce());
        assert!(is_nonce(&d) && d != a);
        let p = mac(b"s3cret", "accept", "Riley", "Jaquez", &d, &a);
        assert!(verify(b"s3cret", "accept", "Riley", "Jaquez", &d, &a, &p));
        assert!(!verify(b"other", "accept", "Riley", "Jaquez", &d, &a, &p));
        assert!(!verify(b"s3cret", "dial", "Riley", "Jaquez", &d, &a, &p));
        assert!(!verify(b"s3cret", "accept", "Riley", "Juzang", &d, &a, &p));
        assert!(!verify(
            b"s3cret",
            "accept",
            "Riley",
            "Jaquez",
            &d,
            &nonce(),
            &p
        ));
        assert!(!verify(
            b"s3cret",
            "accept",
            "Riley",
            "Jaquez",
            &d,
            &a,
            &p[1..]
        ));
        assert!(!p.contains("s3cret"));
        assert!(!is_nonce("xyz") && !is_nonce(&"g".repeat(32)));
    }
}
