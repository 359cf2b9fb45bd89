//! `herd status` (SPEC §2): asks every server of the herd over its bus port how it is,
//! and prints one line per server — up or down, uptime, clients held, links up and
//! down as that server sees them — and any link the two ends disagree on.

use serde_json::{json, Value};

/// What one server says about itself, sent as one JSON object on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The server's name.
    pub name: String,
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Clients it holds a location for.
    pub clients: u64,
    /// Each configured link's peer and whether the link is up.
    pub links: Vec<(String, bool)>,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        let links: serde_json::Map<String, Value> = self
            .links
            .iter()
            .map(|(peer, up)| (peer.clone(), Value::from(if *up { "up" } else { "down" })))
            .collect();
        json!({
            "name": self.name,
            "uptime_ms": self.uptime_ms,
            "clients": self.clients,
            "links": links,
        })
        .to_string()
    }

    /// Parses `to_json`'s output.
    pub fn from_json(text: &str) -> Result<Report, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("bad status report: {e}"))?;
        let field = |k: &str| {
            v.get(k)
                .ok_or_else(|| format!("status report has no `{k}`"))
        };
        let links = field("links")?
            .as_object()
            .ok_or("status report `links` is not an object")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str() == Some("up")))
            .collect();
        Ok(Report {
            name: field("name")?.as_str().unwrap_or_default().to_string(),
            uptime_ms: field("uptime_ms")?.as_u64().unwrap_or_default(),
            clients: field("clients")?.as_u64().unwrap_or_default(),
            links,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let r = Report {
            name: "Riley".into(),
            uptime_ms: 1234,
            clients: 7,
            links: vec![("Jaquez".into(), true), ("Juzang".into(), false)],
        };
        assert_eq!(Report::from_json(&r.to_json()), Ok(r));
        assert!(Report::from_json("{}").is_err());
    }
}

/// How long `herd status` waits for one server: connect, handshake and answer. A
/// server that has not answered in 2 s on a LAN is as good as down to a person asking.
pub const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What asking one server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It answered.
    Up(Report),
    /// It did not, and why.
    Down(String),
}

/// Asks `server` over its bus port, proving `secret` as a peer would (SPEC §5).
pub fn query(server: &crate::config::Server, secret: &[u8]) -> Outcome {
    match ask(server, secret) {
        Ok(report) => Outcome::Up(report),
        Err(why) => Outcome::Down(why),
    }
}

fn ask(server: &crate::config::Server, secret: &[u8]) -> Result<Report, String> {
    use crate::handshake::{self, Role, Transcript};
    use crate::wire::Message;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let addr = server
        .bus
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", server.bus))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", server.bus))?;
    let stream = TcpStream::connect_timeout(&addr, STATUS_TIMEOUT).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + STATUS_TIMEOUT;
    let left = || {
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(std::time::Duration::from_millis(1))
    };
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let mut line = String::new();
    let mut read_line = |line: &mut String| -> Result<(), String> {
        line.clear();
        reader
            .get_ref()
            .set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        // Bounded: a status answer is one short line; a longer one is not a herd server.
        let n = Read::by_ref(&mut reader)
            .take(64 * 1024)
            .read_line(line)
            .map_err(|e| format!("no answer: {e}"))?;
        if n == 0 || !line.ends_with('\n') {
            return Err("closed without answering".into());
        }
        line.pop();
        Ok(())
    };
    let nonce_d = handshake::nonce();
    writer
        .write_all(&Message::Status { nonce: &nonce_d }.to_line())
        .map_err(|e| e.to_string())?;
    read_line(&mut line)?;
    let Some(Message::Welcome {
        acceptor,
        nonce: nonce_a,
        proof,
    }) = Message::parse(line.as_bytes())
    else {
        return Err("not a herd bus (no handshake)".into());
    };
    if acceptor != server.name {
        return Err(format!("answered as `{acceptor}`"));
    }
    let transcript = Transcript {
        dialer: "",
        acceptor: &server.name,
        nonce_d: &nonce_d,
        nonce_a,
    };
    if !transcript.verify(secret, Role::Accept, proof) {
        return Err("failed authentication: HERD_SECRET differs".into());
    }
    let auth = transcript.proof(secret, Role::Dial);
    writer
        .write_all(&Message::Auth { proof: &auth }.to_line())
        .map_err(|e| e.to_string())?;
    read_line(&mut line).map_err(|e| format!("{e} (HERD_SECRET differs?)"))?;
    match Message::parse(line.as_bytes()) {
        Some(Message::StatusReport(json)) => Report::from_json(json),
        _ => Err("answered something other than a status report".into()),
    }
}

/// Asks every server of `config` at once; outcomes in config order.
pub fn query_all(config: &crate::config::Config, secret: &[u8]) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let asks: Vec<_> = config
            .servers
            .iter()
            .map(|server| s.spawn(move || query(server, secret)))
            .collect();
        asks.into_iter()
            .map(|a| {
                a.join()
                    .unwrap_or_else(|_| Outcome::Down("query failed".into()))
            })
            .collect()
    })
}

/// Links one end sees up and the other down, among servers that answered.
fn disagreements(
    config: &crate::config::Config,
    outcomes: &[Outcome],
) -> Vec<(usize, usize, bool)> {
    let sees = |i: usize, peer: &str| match &outcomes[i] {
        Outcome::Up(r) => r.links.iter().find(|(p, _)| p == peer).map(|(_, up)| *up),
        Outcome::Down(_) => None,
    };
    config
        .links
        .iter()
        .filter_map(|&(a, b)| {
            let (na, nb) = (&config.servers[a].name, &config.servers[b].name);
            match (sees(a, nb), sees(b, na)) {
                (Some(x), Some(y)) if x != y => Some((a, b, x)),
                _ => None,
            }
        })
        .collect()
}

/// True when every server answered with every link up.
pub fn healthy(outcomes: &[Outcome]) -> bool {
    outcomes.iter().all(|o| match o {
        Outcome::Up(r) => r.links.iter().all(|(_, up)| *up),
        Outcome::Down(_) => false,
    })
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The outcomes as aligned columns for a person, one line per server, then any link
/// the two ends see differently.
pub fn table(config: &crate::config::Config, outcomes: &[Outcome]) -> String {
    let width = config
        .servers
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!(
        "{:<width$}  {:<5}  {:>8}  {:>9}  LINKS\n",
        "SERVER", "STATE", "UPTIME", "CLIENTS"
    );
    for (server, outcome) in config.servers.iter().zip(outcomes) {
        match outcome {
            Outcome::Up(r) => {
                let links: Vec<String> = r
                    .links
                    .iter()
                    .map(|(p, up)| format!("{p} {}", if *up { "up" } else { "DOWN" }))
                    .collect();
                out += &format!(
                    "{:<width$}  {:<5}  {:>8}  {:>9}  {}\n",
                    server.name,
                    "up",
                    uptime(r.uptime_ms),
                    r.clients,
                    if links.is_empty() {
                        "-".into()
                    } else {
                        links.join(", ")
                    }
                );
            }
            Outcome::Down(why) => out += &format!("{:<width$}  down ({why})\n", server.name),
        }
    }
    for (a, b, up_at_a) in disagreements(config, outcomes) {
        let (na, nb) = (&config.servers[a].name, &config.servers[b].name);
        let (up, down) = if up_at_a { (na, nb) } else { (nb, na) };
        out += &format!("link {na} — {nb}: up as {up} sees it, down as {down} sees it\n");
    }
    out
}

/// The outcomes as one JSON document for scripts: `{"healthy": bool, "servers": [...],
/// "disagreements": [...]}`.
pub fn to_json(config: &crate::config::Config, outcomes: &[Outcome]) -> String {
    let servers: Vec<Value> = config
        .servers
        .iter()
        .zip(outcomes)
        .map(|(server, outcome)| match outcome {
            Outcome::Up(r) => {
                let mut v: Value = serde_json::from_str(&r.to_json()).unwrap_or(Value::Null);
                v["state"] = "up".into();
                v
            }
            Outcome::Down(why) => json!({"name": server.name, "state": "down", "reason": why}),
        })
        .collect();
    let links: Vec<Value> = disagreements(config, outcomes)
        .into_iter()
        .map(|(a, b, up_at_a)| {
            json!({"a": config.servers[a].name, "b": config.servers[b].name, "up_at_a": up_at_a, "up_at_b": !up_at_a})
        })
        .collect();
    json!({"healthy": healthy(outcomes), "servers": servers, "disagreements": links}).to_string()
}
