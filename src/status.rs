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
