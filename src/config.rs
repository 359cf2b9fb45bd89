//! The herd's configuration file (SPEC §3): servers, links, places source, directories.
//! Every error names the file and the line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One server of the herd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The server's name, a non-white-space word.
    pub name: String,
    /// `HOST:PORT` of its client port: the client protocol only (SPEC §1, §4).
    pub addr: String,
    /// `HOST:PORT` of its bus port, where linked servers dial it (SPEC §5). Defaults to
    /// the client host and port + `BUS_PORT_OFFSET`.
    pub bus: String,
}

/// The bus port's default distance from the client port, as Redis Cluster's bus does
/// (SPEC §3); a client port above `u16::MAX - BUS_PORT_OFFSET` needs an explicit bus.
pub const BUS_PORT_OFFSET: u16 = 10_000;

pub use crate::protocol::MAX_NAME;

/// Where WHATSAT gets its places (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacesConfig {
    /// No `places` line: `google-legacy` with a key in the environment, else `offline`.
    Default,
    /// Nearby Search (legacy), at this URL or Google's.
    GoogleLegacy(Option<String>),
    /// Places API (New), at this URL or Google's.
    Google(Option<String>),
    /// Local data: this file, or the built-in data set.
    Offline(Option<PathBuf>),
}

/// A parsed, validated herd.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    /// The servers, in file order.
    pub servers: Vec<Server>,
    /// Undirected links, each as indexes into `servers`, in file order.
    pub links: Vec<(usize, usize)>,
    /// The places source.
    pub places: PlacesConfig,
    /// Where `NAME.log` files go.
    pub log_dir: PathBuf,
    /// Where each server keeps its durable state, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// How often the state file is flushed to disk, if at all.
    pub fsync_interval: Option<Duration>,
    /// How big each `NAME.log` may grow and how many rotated files are kept.
    pub log_rotation: crate::log::Rotation,
}

/// A config error: the file, the line (0 when the file could not be read) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// The 1-based line number, or 0 for the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses config text; relative paths are taken from `path`'s folder.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let relative = |p: &str| -> PathBuf { base.join(p) };
        let mut config = Config {
            path: path.to_path_buf(),
            servers: Vec::new(),
            links: Vec::new(),
            places: PlacesConfig::Default,
            log_dir: relative("logs"),
            state_dir: None,
            fsync_interval: None,
            log_rotation: crate::log::Rotation::default(),
        };
        let mut pending_links = Vec::new();
        let mut seen = [false; 6];
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| ConfigError {
                path: path.to_path_buf(),
                line,
                message,
            };
            let content = raw.split('#').next().unwrap_or("");
            let words: Vec<&str> = content
                // Every byte the protocol treats as white space splits words here too,
                // so no server name can hold one and break its own AT lines.
                .split(|c: char| c.is_ascii() && crate::protocol::is_space(c as u8))
                .filter(|w| !w.is_empty())
                .collect();
            let Some((&keyword, args)) = words.split_first() else {
                continue;
            };
            let mut once = |slot: usize| {
                if std::mem::replace(&mut seen[slot], true) {
                    Err(err(format!("`{keyword}` given twice")))
                } else {
                    Ok(())
                }
            };
            match (keyword, args) {
                ("server", [name, addr, rest @ ..]) if matches!(rest, [] | ["bus", _]) => {
                    if config.servers.iter().any(|s| s.name == *name) {
                        return Err(err(format!("duplicate server `{name}`")));
                    }
                    if name.len() > MAX_NAME {
                        return Err(err(format!(
                            "server name `{name}` is longer than {MAX_NAME} bytes"
                        )));
                    }
                    let port = check_addr(addr).map_err(err)?;
                    let bus = match rest {
                        [_, bus] => {
                            check_addr(bus).map_err(err)?;
                            bus.to_string()
                        }
                        _ => default_bus(addr, port).map_err(err)?,
                    };
                    if bus == *addr {
                        return Err(err(format!(
                            "server `{name}`: client and bus addresses are both `{addr}`"
                        )));
                    }
                    for other in &config.servers {
                        let taken = [other.addr.as_str(), other.bus.as_str()];
                        if let Some(clash) = [*addr, bus.as_str()]
                            .into_iter()
                            .find(|a| taken.contains(a))
                        {
                            return Err(err(format!(
                                "`{clash}` is already used by server `{}`",
                                other.name
                            )));
                        }
                    }
                    config.servers.push(Server {
                        name: name.to_string(),
                        addr: addr.to_string(),
                        bus,
                    });
                }
                ("server", _) => {
                    return Err(err(
                        "expected `server NAME HOST:PORT [bus HOST:PORT]`".into()
                    ))
                }
                ("link", [a, b]) => {
                    if a == b {
                        return Err(err(format!("server `{a}` linked to itself")));
                    }
                    pending_links.push((line, a.to_string(), b.to_string()));
                }
                ("link", _) => return Err(err("expected `link NAME NAME`".into())),
                ("places", [kind, rest @ ..]) => {
                    once(0)?;
                    let one_arg = |rest: &[&str]| -> Result<Option<String>, ConfigError> {
                        match rest {
                            [] => Ok(None),
                            [arg] => Ok(Some(arg.to_string())),
                            _ => Err(err(format!("`places {kind}` takes at most one argument"))),
                        }
                    };
                    config.places = match *kind {
                        "google-legacy" => PlacesConfig::GoogleLegacy(check_url(one_arg(rest)?).map_err(err)?),
                        "google" => PlacesConfig::Google(check_url(one_arg(rest)?).map_err(err)?),
                        "offline" => PlacesConfig::Offline(one_arg(rest)?.map(|p| relative(&p))),
                        other => {
                            return Err(err(format!(
                                "unknown places source `{other}` (expected google-legacy, google or offline)"
                            )))
                        }
                    };
                }
                ("places", []) => return Err(err("expected `places KIND [ARG]`".into())),
                ("log-dir", [dir]) => {
                    once(1)?;
                    config.log_dir = relative(dir);
                }
                ("state-dir", [dir]) => {
                    once(2)?;
                    config.state_dir = Some(relative(dir));
                }
                ("fsync-interval", [ms]) => {
                    once(3)?;
                    let ms: u64 = ms.parse().ok().filter(|&ms| ms > 0).ok_or_else(|| {
                        err(format!(
                            "fsync-interval `{ms}` is not a positive number of milliseconds"
                        ))
                    })?;
                    config.fsync_interval = Some(Duration::from_millis(ms));
                }
                ("log-max-bytes", [size]) => {
                    once(4)?;
                    config.log_rotation.max_bytes = parse_size(size).map_err(err)?;
                }
                ("log-keep", [n]) => {
                    once(5)?;
                    config.log_rotation.keep = n
                        .parse()
                        .ok()
                        .filter(|&n| n <= crate::log::MAX_LOG_KEEP)
                        .ok_or_else(|| {
                            err(format!(
                                "log-keep `{n}` is not a number of files from 0 to {}",
                                crate::log::MAX_LOG_KEEP
                            ))
                        })?;
                }
                ("log-dir" | "state-dir" | "fsync-interval" | "log-max-bytes" | "log-keep", _) => {
                    return Err(err(format!("`{keyword}` takes exactly one argument")))
                }
                (other, _) => return Err(err(format!("unknown keyword `{other}`"))),
            }
        }
        for (line, a, b) in pending_links {
            let find = |name: &str| {
                config
                    .servers
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| ConfigError {
                        path: path.to_path_buf(),
                        line,
                        message: format!("link to unknown server `{name}`"),
                    })
            };
            let (ia, ib) = (find(&a)?, find(&b)?);
            let key = (ia.min(ib), ia.max(ib));
            if config
                .links
                .iter()
                .any(|&(x, y)| (x.min(y), x.max(y)) == key)
            {
                return Err(ConfigError {
                    path: path.to_path_buf(),
                    line,
                    message: format!("duplicate link `{a}` — `{b}`"),
                });
            }
            config.links.push((ia, ib));
        }
        if config.servers.is_empty() {
            return Err(ConfigError {
                path: path.to_path_buf(),
                line: 0,
                message: "no `server` lines".into(),
            });
        }
        Ok(config)
    }

    /// The index of the server called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// The servers linked to server `index`, in link order.
    pub fn neighbours(&self, index: usize) -> Vec<usize> {
        self.links
            .iter()
            .filter_map(|&(a, b)| match (a == index, b == index) {
                (true, _) => Some(b),
                (_, true) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// A human-readable summary of the herd, as `herd check` prints it.
    pub fn describe(&self, places: &str) -> String {
        let mut out = format!("herd {}\n", self.path.display());
        out += &format!("servers ({}):\n", self.servers.len());
        let width = self.servers.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &self.servers {
            out += &format!(
                "  {:<width$}  client {:<21}  bus {}\n",
                s.name, s.addr, s.bus
            );
        }
        out += &format!("links ({}):\n", self.links.len());
        for &(a, b) in &self.links {
            out += &format!("  {} — {}\n", self.servers[a].name, self.servers[b].name);
        }
        out += &format!("places: {places}\n");
        out += &format!("log-dir: {}\n", self.log_dir.display());
        let rotation = self.log_rotation;
        if rotation.max_bytes == 0 {
            out += "log rotation: off (log-max-bytes 0; reopened on SIGHUP)\n";
        } else {
            out += &format!(
                "log rotation: at {} bytes, {} old files kept (reopened on SIGHUP)\n",
                rotation.max_bytes, rotation.keep
            );
        }
        match &self.state_dir {
            Some(dir) => out += &format!("state-dir: {}\n", dir.display()),
            None => out += "state-dir: none (state is kept in memory only)\n",
        }
        if let Some(interval) = self.fsync_interval {
            out += &format!("fsync-interval: {} ms\n", interval.as_millis());
        }
        out
    }
}

/// Smallest nonzero `log-max-bytes`: below one batch of log lines every write would
/// rotate.
pub const MIN_LOG_MAX_BYTES: u64 = 64 << 10;

/// `log-max-bytes`: bytes, or with a `K`, `M` or `G` suffix (powers of 1024); 0 (no
/// rotation) or at least [`MIN_LOG_MAX_BYTES`].
fn parse_size(text: &str) -> Result<u64, String> {
    let bad =
        || format!("log-max-bytes `{text}` is not 0 or a size of at least 64K (N, NK, NM or NG)");
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(bad)?;
    if bytes != 0 && bytes < MIN_LOG_MAX_BYTES {
        return Err(bad());
    }
    Ok(bytes)
}

/// Checks `HOST:PORT` with a numeric port; returns the port.
fn check_addr(addr: &str) -> Result<u16, String> {
    let bad = || format!("`{addr}` is not HOST:PORT");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(port) if !host.is_empty() => Ok(port),
        _ => Err(bad()),
    }
}

/// The default bus address: the client's host, port + `BUS_PORT_OFFSET` (SPEC §3).
fn default_bus(addr: &str, port: u16) -> Result<String, String> {
    let host = &addr[..addr.len() - port.to_string().len() - 1];
    match port.checked_add(BUS_PORT_OFFSET) {
        Some(bus) => Ok(format!("{host}:{bus}")),
        None => Err(format!(
            "`{addr}`: port {port} leaves no room for the default bus port (port + {BUS_PORT_OFFSET}); \
             give one with `bus HOST:PORT`"
        )),
    }
}

/// Checks a places URL is http or https.
fn check_url(url: Option<String>) -> Result<Option<String>, String> {
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(format!(
            "places URL `{u}` must start with http:// or https://"
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/herd/herd.conf"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn classic_herd() {
        let c = parse(
            "# the classic herd\n\
             server Riley 127.0.0.1:12101\n\
             server Jaquez\t127.0.0.1:12102   # trailing comment\n\
             \n\
             link Riley Jaquez\n\
             places google-legacy http://127.0.0.1:9/x\n\
             log-dir ../logs\n\
             state-dir state\n\
             fsync-interval 100\n",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[1].addr, "127.0.0.1:12102");
        assert_eq!(c.servers[1].bus, "127.0.0.1:22102");
        assert_eq!(c.links, vec![(0, 1)]);
        assert_eq!(c.neighbours(1), vec![0]);
        assert_eq!(
            c.places,
            PlacesConfig::GoogleLegacy(Some("http://127.0.0.1:9/x".into()))
        );
        assert_eq!(c.log_dir, Path::new("/etc/herd/../logs"));
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/etc/herd/state")));
        assert_eq!(c.fsync_interval, Some(Duration::from_millis(100)));
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, want) in [
            ("server A 1:1\nserver A 1:2\n", "/etc/herd/herd.conf:2: duplicate server `A`"),
            ("server A 1:1\nlink A A\n", "/etc/herd/herd.conf:2: server `A` linked to itself"),
            ("server A 1:1\n\nlink A B\n", "/etc/herd/herd.conf:3: link to unknown server `B`"),
            ("server A 1:1\nfrobnicate\n", "/etc/herd/herd.conf:2: unknown keyword `frobnicate`"),
            ("server A nope\n", "/etc/herd/herd.conf:1: `nope` is not HOST:PORT"),
            ("server A 1:99999\n", "/etc/herd/herd.conf:1: `1:99999` is not HOST:PORT"),
            ("server A\n", "/etc/herd/herd.conf:1: expected `server NAME HOST:PORT [bus HOST:PORT]`"),
            ("server A\x0bB 1:1\n", "/etc/herd/herd.conf:1: expected `server NAME HOST:PORT [bus HOST:PORT]`"),
            ("server A 1:1 bus\n", "/etc/herd/herd.conf:1: expected `server NAME HOST:PORT [bus HOST:PORT]`"),
            ("server A 1:1 via 1:2\n", "/etc/herd/herd.conf:1: expected `server NAME HOST:PORT [bus HOST:PORT]`"),
            ("server A 1:1 bus 1:x\n", "/etc/herd/herd.conf:1: `1:x` is not HOST:PORT"),
            ("server A h:55536\n", "/etc/herd/herd.conf:1: `h:55536`: port 55536 leaves no room for the default bus port (port + 10000); give one with `bus HOST:PORT`"),
            ("server A h:5 bus h:5\n", "/etc/herd/herd.conf:1: server `A`: client and bus addresses are both `h:5`"),
            ("server A h:5\nserver B h:5 bus h:6\n", "/etc/herd/herd.conf:2: `h:5` is already used by server `A`"),
            ("server A h:5\nserver B h:6 bus h:10005\n", "/etc/herd/herd.conf:2: `h:10005` is already used by server `A`"),
            ("server A h:10005\nserver B h:5\n", "/etc/herd/herd.conf:2: `h:10005` is already used by server `A`"),
            ("server A 1:1\nplaces bing\n", "/etc/herd/herd.conf:2: unknown places source `bing` (expected google-legacy, google or offline)"),
            ("server A 1:1\nfsync-interval 0\n", "/etc/herd/herd.conf:2: fsync-interval `0` is not a positive number of milliseconds"),
            ("server A 1:1\nlog-dir a\nlog-dir b\n", "/etc/herd/herd.conf:3: `log-dir` given twice"),
            ("server A 1:1\nserver B 1:2\nlink A B\nlink B A\n", "/etc/herd/herd.conf:4: duplicate link `B` — `A`"),
            ("# nothing\n", "/etc/herd/herd.conf: no `server` lines"),
        ] {
            assert_eq!(parse(text).unwrap_err(), want, "{text:?}");
        }
        let long = "n".repeat(MAX_NAME + 1);
        assert_eq!(
            parse(&format!("server {long} h:5\n")).unwrap_err(),
            format!("/etc/herd/herd.conf:1: server name `{long}` is longer than 64 bytes")
        );
        assert!(parse(&format!("server {} h:5\n", &long[1..])).is_ok());
    }

    #[test]
    fn bus_addresses() {
        let c = parse(
            "server A [::1]:55535\nserver B 10.0.0.2:70 bus 192.168.1.2:7000\nserver C h:65535 bus h:1\n",
        )
        .unwrap();
        let bus: Vec<&str> = c.servers.iter().map(|s| s.bus.as_str()).collect();
        assert_eq!(bus, ["[::1]:65535", "192.168.1.2:7000", "h:1"]);
        let text = c.describe("offline");
        let line = text
            .lines()
            .find(|l| l.starts_with("  B  "))
            .expect("B listed");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            ["B", "client", "10.0.0.2:70", "bus", "192.168.1.2:7000"]
        );
    }

    #[test]
    fn log_rotation_keywords() {
        let rotation =
            |lines: &str| parse(&format!("server A 1:1\n{lines}")).map(|c| c.log_rotation);
        let default = crate::log::Rotation::default();
        assert_eq!(rotation(""), Ok(default));
        assert_eq!(default.max_bytes, 64 << 20);
        assert_eq!(default.keep, 4);
        let set = |max_bytes, keep| Ok(crate::log::Rotation { max_bytes, keep });
        assert_eq!(
            rotation("log-max-bytes 64M\nlog-keep 2\n"),
            set(64 << 20, 2)
        );
        assert_eq!(rotation("log-max-bytes 65536\n"), set(65536, 4));
        assert_eq!(rotation("log-max-bytes 64k\n"), set(65536, 4));
        assert_eq!(rotation("log-max-bytes 2G\nlog-keep 0\n"), set(2 << 30, 0));
        assert_eq!(rotation("log-max-bytes 0\n"), set(0, 4));
        assert_eq!(rotation("log-keep 1000\n"), set(64 << 20, 1000));
        let bad = "log-max-bytes `{}` is not 0 or a size of at least 64K (N, NK, NM or NG)";
        for size in ["65535", "63K", "1.5M", "-1", "M", "20000000000G", "64KB"] {
            assert_eq!(
                rotation(&format!("log-max-bytes {size}\n")).unwrap_err(),
                format!("/etc/herd/herd.conf:2: {}", bad.replace("{}", size))
            );
        }
        assert_eq!(
            rotation("log-keep 1001\n").unwrap_err(),
            "/etc/herd/herd.conf:2: log-keep `1001` is not a number of files from 0 to 1000"
        );
        assert_eq!(
            rotation("log-keep 1\nlog-keep 2\n").unwrap_err(),
            "/etc/herd/herd.conf:3: `log-keep` given twice"
        );
        assert_eq!(
            rotation("log-max-bytes\n").unwrap_err(),
            "/etc/herd/herd.conf:2: `log-max-bytes` takes exactly one argument"
        );
        let shown = |lines: &str| {
            parse(&format!("server A 1:1\n{lines}"))
                .unwrap()
                .describe("p")
        };
        assert!(
            shown("").contains(
                "log rotation: at 67108864 bytes, 4 old files kept (reopened on SIGHUP)\n"
            ),
            "{}",
            shown("")
        );
        assert!(shown("log-max-bytes 0\n")
            .contains("log rotation: off (log-max-bytes 0; reopened on SIGHUP)\n"));
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/herd.conf")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/herd.conf: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn places_sources() {
        let places = |line: &str| parse(&format!("server A 1:1\n{line}\n")).map(|c| c.places);
        assert_eq!(places(""), Ok(PlacesConfig::Default));
        assert_eq!(places("places google"), Ok(PlacesConfig::Google(None)));
        assert_eq!(
            places("places offline my.json"),
            Ok(PlacesConfig::Offline(Some("/etc/herd/my.json".into())))
        );
        assert!(places("places google ftp://x").is_err());
        assert!(places("places offline a b").is_err());
    }
}
