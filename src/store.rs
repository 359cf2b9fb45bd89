//! The client store: per client, the AT line with the latest client time. One small
//! struct; each method takes the lock, decides and returns a plain value.

use crate::protocol;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A stored report: the AT line as the receiving server formed it, and its order key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The whole AT line, without terminator.
    pub line: Arc<str>,
    /// The client's send time in nanoseconds.
    pub time_ns: i128,
    /// Byte range of the receiving server's name in `line`.
    server: (usize, usize),
}

impl Report {
    /// Builds a report from an AT line; `None` if the line is not a valid AT line.
    pub fn from_line(line: &str) -> Option<(Report, String)> {
        let at = protocol::parse_at(line)?;
        let start = at.server.as_ptr() as usize - line.as_ptr() as usize;
        Some((
            Report {
                line: line.into(),
                time_ns: at.time_ns,
                server: (start, start + at.server.len()),
            },
            at.client.to_string(),
        ))
    }

    /// A report this server forms for an IAMAT: `line` is `AT SERVER ...` with a server
    /// name of `server_len` bytes.
    pub fn local(line: String, server_len: usize, time_ns: i128) -> Report {
        Report {
            line: line.into(),
            time_ns,
            server: (3, 3 + server_len),
        }
    }

    /// The server that received the IAMAT.
    pub fn server(&self) -> &str {
        &self.line[self.server.0..self.server.1]
    }

    /// True when `self` should replace `old`: a later client time, or the same time from
    /// a server whose name sorts later (so every server breaks ties the same way). A
    /// report equal in both never replaces the stored one.
    pub fn is_newer_than(&self, old: &Report) -> bool {
        (self.time_ns, self.server()) > (old.time_ns, old.server())
    }
}

/// Every client's latest report.
#[derive(Debug, Default)]
pub struct Store {
    clients: Mutex<HashMap<Box<str>, Report>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Report>> {
        // A panic while holding this lock cannot leave the map half-updated (each method
        // does one insert), so a poisoned lock still holds consistent data.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `report` for `client` if it is newer than what is held; true if it was.
    pub fn update(&self, client: &str, report: Report) -> bool {
        let mut clients = self.lock();
        match clients.get_mut(client) {
            Some(old) if !report.is_newer_than(old) => false,
            Some(old) => {
                *old = report;
                true
            }
            None => {
                clients.insert(client.into(), report);
                true
            }
        }
    }

    /// The stored AT line for `client`.
    pub fn get(&self, client: &str) -> Option<Arc<str>> {
        self.lock().get(client).map(|r| r.line.clone())
    }

    /// Every stored AT line, for a peer that has just linked up.
    pub fn snapshot(&self) -> Vec<Arc<str>> {
        self.lock().values().map(|r| r.line.clone()).collect()
    }

    /// How many clients are stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no client is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> (Report, String) {
        Report::from_line(line).expect("valid AT line")
    }

    #[test]
    fn newer_wins_older_never_replaces() {
        let store = Store::new();
        let (a, client) = report("AT A +0.000000001 kiwi +1+1 100");
        let (b, _) = report("AT B +0.000000001 kiwi +2+2 101");
        let (c, _) = report("AT C +0.000000001 kiwi +3+3 100.5");
        assert!(store.update(&client, a));
        assert!(store.update(&client, b.clone()));
        assert!(!store.update(&client, c));
        assert_eq!(store.get("kiwi"), Some(b.line));
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn equal_times_break_ties_by_server_name_and_keep_the_first() {
        let (a, client) = report("AT Alpha +0.000000001 kiwi +1+1 100");
        let (z, _) = report("AT Zulu +0.000000001 kiwi +2+2 100.000");
        let (a2, _) = report("AT Alpha +0.000000009 kiwi +9+9 100");
        for order in [[&a, &z], [&z, &a]] {
            let store = Store::new();
            for r in order {
                store.update(&client, r.clone());
            }
            assert_eq!(store.get("kiwi"), Some(z.line.clone()));
        }
        let store = Store::new();
        assert!(store.update(&client, a.clone()));
        assert!(!store.update(&client, a2));
        assert_eq!(store.get("kiwi"), Some(a.line));
        assert_eq!(
            report("AT Alpha +0.000000001 kiwi +1+1 100").0.server(),
            "Alpha"
        );
    }
}
