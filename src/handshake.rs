//! The proofs of the bus handshake (SPEC §5; the wire module formats its messages): each
//! side proves it knows `HERD_SECRET` with an HMAC-SHA256 over both names and both fresh
//! nonces, so the secret never crosses the wire and a recorded handshake cannot be
//! replayed. A `herd status` query proves itself the same way, with an empty dialer
//! name (no server can have one).
//!
//! With no secret set, both sides use the empty key: the exchange still names the
//! servers, but anyone who knows a server's name can pass it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// Which side a proof speaks for: the two proofs of one handshake differ, so one
/// side's proof cannot be reflected back as the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server that accepted the connection (sent in `HERD-WELCOME`).
    Accept,
    /// The server that dialed (sent in `HERD-AUTH`).
    Dial,
}

/// What both proofs of a handshake cover: who dials, who accepts, and both nonces.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The dialing server's name.
    pub dialer: &'a str,
    /// The accepting server's name.
    pub acceptor: &'a str,
    /// The dialer's nonce, from `HERD-HELLO`.
    pub nonce_d: &'a str,
    /// The acceptor's nonce, from `HERD-WELCOME`.
    pub nonce_a: &'a str,
}

impl Transcript<'_> {
    /// The proof `role` sends: HMAC-SHA256 keyed by the secret over the transcript.
    pub fn proof(&self, secret: &[u8], role: Role) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        let role = match role {
            Role::Accept => "accept",
            Role::Dial => "dial",
        };
        for part in [
            "herd-v1",
            role,
            self.dialer,
            self.acceptor,
            self.nonce_d,
            self.nonce_a,
        ] {
            m.update(part.as_bytes());
            m.update(b"\n");
        }
        hex(&m.finalize().into_bytes())
    }

    /// The bytes the link's Noise session binds as its prologue (SPEC §5, with
    /// `HERD_SECRET`): both names and both nonces, so the encrypted session belongs to
    /// exactly this handshake.
    pub fn prologue(&self) -> String {
        format!(
            "herd-v1\n{}\n{}\n{}\n{}",
            self.dialer, self.acceptor, self.nonce_d, self.nonce_a
        )
    }

    /// Checks `role`'s proof in constant time.
    pub fn verify(&self, secret: &[u8], role: Role, proof: &str) -> bool {
        let want = self.proof(secret, role);
        want.len() == proof.len()
            && want
                .bytes()
                .zip(proof.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
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
        let t = Transcript {
            dialer: "Riley",
            acceptor: "Jaquez",
            nonce_d: &d,
            nonce_a: &a,
        };
        let p = t.proof(b"s3cret", Role::Accept);
        assert!(t.verify(b"s3cret", Role::Accept, &p));
        assert!(!t.verify(b"other", Role::Accept, &p));
        assert!(!t.verify(b"s3cret", Role::Dial, &p));
        let other_name = Transcript {
            acceptor: "Juzang",
            ..t
        };
        assert!(!other_name.verify(b"s3cret", Role::Accept, &p));
        let fresh = nonce();
        let other_nonce = Transcript {
            nonce_a: &fresh,
            ..t
        };
        assert!(!other_nonce.verify(b"s3cret", Role::Accept, &p));
        assert!(!t.verify(b"s3cret", Role::Accept, &p[1..]));
        assert!(!p.contains("s3cret"));
        assert!(!is_nonce("xyz") && !is_nonce(&"g".repeat(32)));
    }
}
