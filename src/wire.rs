//! Every message on the bus (SPEC §5), formatted and parsed in this one place: the
//! handshake, the status query, the resync offsets, and the updates themselves (AT
//! lines, exactly as the receiving server formed them). One message per line.
//!
//! ```text
//! dialer   -> HERD-HELLO <dialer> <nonce_d>          (or HERD-STATUS <nonce_d>: a status query)
//! acceptor -> HERD-WELCOME <acceptor> <nonce_a> <proof>
//! dialer   -> HERD-AUTH <proof>
//! both     -> HERD-HOLDS <peer> <history> <offset>     what I hold of each of my peers' updates
//! both     -> HERD-RESYNC <history> <offset>          what I hold of your updates
//!             (or HERD-RESYNC-LATER, then HERD-RESYNC when my bootstrap is done)
//! both     -> AT ... lines, each batch closed by HERD-OFFSET <history> <offset>
//! either   -> HERD-COVERS <server> <history> <offset>  after a full resync: what it brought
//! ```
//!
//! A server that starts empty takes its full resync from one peer first (a
//! *bootstrap*) and sends `HERD-RESYNC-LATER` to the others: they send it nothing
//! until its `HERD-RESYNC` follows, which it sends once that peer's
//! `HERD-COVERS` lines say which histories, up to which offsets, came with it (the
//! sender's cursors for its peers, then its own history last); it then asks the
//! others only for what is past that. See `Replica`'s bootstrap.
//!
//! With `HERD_SECRET` set, everything after `HERD-AUTH` travels inside the Noise session.

use crate::handshake::is_nonce;
use crate::protocol::fields;
use std::fmt;

/// One server's run of update offsets: a random id fixed when its store begins empty
/// and kept in its state file; offsets are only comparable within one history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct History(pub u64);

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl History {
    /// Parses the 16 hex digits `Display` writes.
    pub fn parse(text: &str) -> Option<History> {
        (text.len() == 16)
            .then(|| u64::from_str_radix(text, 16).ok())
            .flatten()
            .map(History)
    }
}

/// A position in a history: the peer holds every update of `history` up to `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Whose offsets these are.
    pub history: History,
    /// Every update at or below this offset has been received.
    pub offset: u64,
}

/// A message on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// A linked server dialing: its name and a fresh nonce.
    Hello {
        /// The dialing server's name.
        dialer: &'a str,
        /// Its nonce (`handshake::nonce`).
        nonce: &'a str,
    },
    /// `herd status` asking how the server is, with a fresh nonce.
    Status {
        /// The asker's nonce.
        nonce: &'a str,
    },
    /// The acceptor's answer: its name, its nonce and its proof.
    Welcome {
        /// The accepting server's name.
        acceptor: &'a str,
        /// Its nonce.
        nonce: &'a str,
        /// `Transcript::proof` for `Role::Accept`.
        proof: &'a str,
    },
    /// The dialer's proof.
    Auth {
        /// `Transcript::proof` for `Role::Dial`.
        proof: &'a str,
    },
    /// What the sender already holds of the receiver's updates; `None`: nothing.
    Resync(Option<Cursor>),
    /// The sender's `Resync` comes later (it is bootstrapping from another peer); the
    /// receiver sends it nothing until then.
    ResyncLater,
    /// Every update of the sender's history up to this offset has been sent.
    Offset(Cursor),
    /// What the sender holds of `peer`'s history (sent at link-up, once per peer).
    Holds {
        /// One of the sender's peers.
        peer: &'a str,
        /// What the sender holds of its updates.
        cursor: Cursor,
    },
    /// After a full resync: with it came every update of `server`'s history up to the
    /// cursor's offset (the sender's own history comes last and ends the set).
    Covers {
        /// A server whose updates the full resync brought.
        server: &'a str,
        /// How far.
        cursor: Cursor,
    },
    /// The status answer, one JSON object.
    StatusReport(&'a str),
    /// An update: an AT line.
    Update(&'a str),
}

/// First word of each message.
const HELLO: &str = "HERD-HELLO";
const STATUS: &str = "HERD-STATUS";
const WELCOME: &str = "HERD-WELCOME";
const AUTH: &str = "HERD-AUTH";
const RESYNC: &str = "HERD-RESYNC";
const OFFSET: &str = "HERD-OFFSET";
const REPORT: &str = "HERD-REPORT";
const HOLDS: &str = "HERD-HOLDS";
const RESYNC_LATER: &str = "HERD-RESYNC-LATER";
const COVERS: &str = "HERD-COVERS";

impl<'a> Message<'a> {
    /// Parses one line (without its terminator); `None` if it is no bus message. An
    /// `Update` is only checked to start with `AT `: the replica validates it.
    pub fn parse(line: &'a [u8]) -> Option<Message<'a>> {
        let text = std::str::from_utf8(line).ok()?;
        if text.starts_with("AT ") {
            return Some(Message::Update(text));
        }
        if let Some(json) = text.strip_prefix("HERD-REPORT ") {
            return Some(Message::StatusReport(json));
        }
        let words: Vec<&str> = fields(line)
            .map(|w| std::str::from_utf8(w).unwrap_or(""))
            .collect();
        let cursor = |history: &str, offset: &str| -> Option<Cursor> {
            Some(Cursor {
                history: History::parse(history)?,
                offset: offset.parse().ok()?,
            })
        };
        match words[..] {
            [HELLO, dialer, nonce] if is_nonce(nonce) => Some(Message::Hello { dialer, nonce }),
            [STATUS, nonce] if is_nonce(nonce) => Some(Message::Status { nonce }),
            [WELCOME, acceptor, nonce, proof] if is_nonce(nonce) => Some(Message::Welcome {
                acceptor,
                nonce,
                proof,
            }),
            [AUTH, proof] => Some(Message::Auth { proof }),
            [RESYNC, "-", "0"] => Some(Message::Resync(None)),
            [RESYNC_LATER] => Some(Message::ResyncLater),
            [RESYNC, h, o] => cursor(h, o).map(|c| Message::Resync(Some(c))),
            [OFFSET, h, o] => cursor(h, o).map(Message::Offset),
            [HOLDS, peer, h, o] => cursor(h, o).map(|cursor| Message::Holds { peer, cursor }),
            [COVERS, server, h, o] => cursor(h, o).map(|cursor| Message::Covers { server, cursor }),
            _ => None,
        }
    }

    /// Appends the message and its `\n` to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing to a Vec cannot fail.
        let _ = match self {
            Message::Hello { dialer, nonce } => writeln!(out, "{HELLO} {dialer} {nonce}"),
            Message::Status { nonce } => writeln!(out, "{STATUS} {nonce}"),
            Message::Welcome {
                acceptor,
                nonce,
                proof,
            } => writeln!(out, "{WELCOME} {acceptor} {nonce} {proof}"),
            Message::Auth { proof } => writeln!(out, "{AUTH} {proof}"),
            Message::Resync(None) => writeln!(out, "{RESYNC} - 0"),
            Message::Resync(Some(c)) => writeln!(out, "{RESYNC} {} {}", c.history, c.offset),
            Message::ResyncLater => writeln!(out, "{RESYNC_LATER}"),
            Message::Offset(c) => writeln!(out, "{OFFSET} {} {}", c.history, c.offset),
            Message::Holds { peer, cursor: c } => {
                writeln!(out, "{HOLDS} {peer} {} {}", c.history, c.offset)
            }
            Message::Covers { server, cursor: c } => {
                writeln!(out, "{COVERS} {server} {} {}", c.history, c.offset)
            }
            Message::StatusReport(json) => writeln!(out, "{REPORT} {json}"),
            Message::Update(line) => writeln!(out, "{line}"),
        };
    }

    /// The message as a line with its `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let cursor = Cursor {
            history: History(0xfeed_0000_0000_0001),
            offset: 1 << 40,
        };
        for m in [
            Message::Hello {
                dialer: "Riley",
                nonce,
            },
            Message::Status { nonce },
            Message::Welcome {
                acceptor: "Jaquez",
                nonce,
                proof: "ab12",
            },
            Message::Auth { proof: "cd34" },
            Message::Resync(None),
            Message::Resync(Some(cursor)),
            Message::ResyncLater,
            Message::Offset(cursor),
            Message::Holds {
                peer: "Juzang",
                cursor,
            },
            Message::Covers {
                server: "Bernard",
                cursor,
            },
            Message::StatusReport("{\"name\":\"Riley\"}"),
            Message::Update("AT Riley +0.1 kiwi +1+2 3"),
        ] {
            let line = m.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Message::parse(&line[..line.len() - 1]), Some(m));
        }
    }

    #[test]
    fn anything_else_is_no_message() {
        for line in [
            &b"HERD-HELLO Riley short"[..],
            b"HERD-HELLO Riley",
            b"HERD-RESYNC 12 3",
            b"HERD-OFFSET feed000000000001 -1",
            b"IAMAT a +1+1 1",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(Message::parse(line), None, "{line:?}");
        }
    }
}
