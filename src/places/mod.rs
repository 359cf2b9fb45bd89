//! Places sources (SPEC §6): whatever the source, WHATSAT gets a JSON object in the
//! legacy Nearby Search shape, rendered the way Google renders it.
//!
//! HTTP goes through `ureq` (blocking, rustls, no tokio) on herd's own places worker
//! threads (`MAX_PLACES_IN_FLIGHT`); the agent is built once and reused.

pub mod google_new;
pub mod offline;

use crate::config::PlacesConfig;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use smol::lock::{Semaphore, SemaphoreGuardArc};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Default endpoint of the legacy Nearby Search.
pub const LEGACY_URL: &str = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

/// Whole-request timeout for the places service: Google answers in well under a
/// second; past 5 s a client waiting on WHATSAT is better served by an error object.
pub const PLACES_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest places response read, in bytes. A full 20-result page is about 40 KB; 1 MiB
/// leaves room for verbose answers while bounding memory per request.
pub const MAX_PLACES_RESPONSE: u64 = 1 << 20;

/// Places requests in flight at once, per server: one worker thread each (started as
/// needed), each holding up to `MAX_PLACES_RESPONSE` bytes; further WHATSATs wait.
pub const MAX_PLACES_IN_FLIGHT: usize = 32;

/// The environment variable holding the Google API key.
pub const KEY_VAR: &str = "GOOGLE_PLACES_API_KEY";

enum Source {
    Legacy { url: String, key: String },
    New { url: String, key: String },
    Offline(Arc<offline::Offline>, String),
    Unavailable(String),
}

/// A server's places source.
pub struct Places {
    source: Source,
    agent: ureq::Agent,
    workers: Workers,
}

impl Places {
    /// The source the config names; `key` is the API key from the environment, if any.
    /// Errors (an unreadable offline file) name what is wrong.
    pub fn new(config: &PlacesConfig, key: Option<String>) -> Result<Places, String> {
        let key = key.filter(|k| !k.is_empty());
        let need_key = |kind: &str| {
            key.clone()
                .ok_or_else(|| format!("places {kind} needs the API key in {KEY_VAR}"))
        };
        let source = match config {
            PlacesConfig::GoogleLegacy(url) => Source::Legacy {
                url: url.clone().unwrap_or_else(|| LEGACY_URL.into()),
                key: need_key("google-legacy")?,
            },
            PlacesConfig::Google(url) => Source::New {
                url: url.clone().unwrap_or_else(|| google_new::DEFAULT_URL.into()),
                key: need_key("google")?,
            },
            PlacesConfig::Default if key.is_some() => Source::Legacy {
                url: LEGACY_URL.into(),
                key: need_key("google-legacy")?,
            },
            PlacesConfig::Offline(Some(path)) => Source::Offline(
                Arc::new(offline::Offline::from_json_file(path)?),
                format!("offline {}", path.display()),
            ),
            PlacesConfig::Offline(None) | PlacesConfig::Default => match offline::Offline::builtin() {
                Some(data) => Source::Offline(
                    Arc::new(data),
                    "offline (built-in GeoNames cities1000, CC BY 4.0)".into(),
                ),
                None => Source::Unavailable(
                    "no places source is configured: set GOOGLE_PLACES_API_KEY or add a places line to herd.conf"
                        .into(),
                ),
            },
        };
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(PLACES_TIMEOUT))
            .http_status_as_error(false)
            // Keep a connection per worker alive, so busy WHATSATs reuse them.
            .max_idle_connections(MAX_PLACES_IN_FLIGHT)
            .max_idle_connections_per_host(MAX_PLACES_IN_FLIGHT)
            .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent =
            ureq::Agent::with_parts(config, DefaultConnector::default(), LiteralFirst::default());
        Ok(Places {
            source,
            agent,
            workers: Workers::new(),
        })
    }

    /// One line saying which source is in use (never the key).
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Legacy { url, .. } => format!("google-legacy {url} (key from {KEY_VAR})"),
            Source::New { url, .. } => format!("google {url} (key from {KEY_VAR})"),
            Source::Offline(_, label) => label.clone(),
            Source::Unavailable(why) => format!("none ({why})"),
        }
    }

    /// The places within `radius` km of `location` (ISO 6709 text), at most `bound`, as
    /// legacy-shaped JSON text ready for the reply. Never fails: trouble becomes an
    /// `UNKNOWN_ERROR` object. HTTP sources run on the places workers, which also parse,
    /// cut and render the answer, so the executor only waits.
    pub async fn nearby(&self, location: &str, radius: &str, bound: usize) -> String {
        let Some((lat, lng)) = crate::protocol::parse_location(location) else {
            return render(&error_object(
                "UNKNOWN_ERROR",
                "stored location is not valid",
            ));
        };
        let radius_m = crate::protocol::radius_metres(radius);
        let radius_f: f64 = radius_m.parse().unwrap_or(0.0);
        let job: Job = match &self.source {
            Source::Offline(data, _) => {
                let mut value = data.nearby(lat, lng, radius_f, bound);
                truncate_results(&mut value, bound);
                return render(&value);
            }
            Source::Unavailable(why) => return render(&error_object("UNKNOWN_ERROR", why)),
            Source::Legacy { url, key } => {
                let query = format!(
                    "{url}{}location={}&radius={}&key={}",
                    if url.contains('?') { '&' } else { '?' },
                    percent_encode(&location_query(location)),
                    percent_encode(&radius_m),
                    percent_encode(key)
                );
                let (agent, key) = (self.agent.clone(), key.clone());
                Box::new(move || match fetch(agent.get(&query).call()) {
                    Ok((_, body)) => legacy_answer(&body, bound),
                    Err(e) => render(&error_object("UNKNOWN_ERROR", &scrub(&e, &key))),
                })
            }
            Source::New { url, key } => {
                let body = google_new::request_body(lat, lng, radius_f, bound);
                let (agent, url, key) = (self.agent.clone(), url.clone(), key.clone());
                Box::new(move || {
                    let answer = fetch(
                        agent
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .header("X-Goog-Api-Key", &key)
                            .header("X-Goog-FieldMask", google_new::FIELD_MASK)
                            .send(body.as_bytes()),
                    );
                    let value = match answer {
                        Ok((status, body)) => google_new::translate(status, &body),
                        Err(e) => error_object("UNKNOWN_ERROR", &scrub(&e, &key)),
                    };
                    finish(value, bound)
                })
            }
        };
        self.workers.run(job).await
    }
}

/// ureq's own resolver, except that an IP-literal host (`http://127.0.0.1:8080/json`)
/// is its own address. ureq resolves the host on every request, before it looks in its
/// pool of kept connections, and with a timeout set (`PLACES_TIMEOUT`) it starts a
/// thread for each lookup, even of a literal (ureq 3.5, `DefaultResolver`): a thread
/// started and joined per WHATSAT.
#[derive(Debug, Default)]
struct LiteralFirst(DefaultResolver);

impl Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.authority().and_then(|authority| {
            let host = authority.host();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            let ip: std::net::IpAddr = host.parse().ok()?;
            let port = authority.port_u16().or(match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })?;
            Some(std::net::SocketAddr::new(ip, port))
        });
        match literal {
            Some(addr)
                if config
                    .ip_family()
                    .keep_wanted(std::iter::once(addr))
                    .next()
                    .is_some() =>
            {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

/// A places request for a worker: fetch, parse, cut, render.
type Job = Box<dyn FnOnce() -> String + Send>;

/// What a worker is handed: the job, where its answer goes, and the permit it holds
/// until the job is done (so a request given up by its client still counts).
type Task = (Job, async_channel::Sender<String>, SemaphoreGuardArc);

/// The threads that run blocking places requests: at most `MAX_PLACES_IN_FLIGHT`,
/// each started when a request finds no idle one. The most recently idle worker takes
/// the next request: its stack, its malloc arena and its caches are warm, so light
/// load keeps one or two threads busy instead of cycling through all of them (a lone
/// server, one client, bound 1: CPU per WHATSAT 193–225 → 152–172 µs; BENCHMARKS.md).
/// An idle worker blocks on its channel with no timeout, so an idle server never wakes.
struct Workers {
    /// One permit per request running; further requests wait for one.
    permits: Arc<Semaphore>,
    /// Idle workers, the most recently idle last.
    idle: Arc<Mutex<Idle>>,
}

/// The idle stack: each idle worker's channel, and whether workers may still rejoin it.
struct Idle {
    workers: Vec<async_channel::Sender<Task>>,
    /// Cleared when `Workers` is dropped: a busy worker then ends after its job.
    open: bool,
}

impl Workers {
    fn new() -> Workers {
        Workers {
            permits: Arc::new(Semaphore::new(MAX_PLACES_IN_FLIGHT)),
            idle: Arc::new(Mutex::new(Idle {
                workers: Vec::new(),
                open: true,
            })),
        }
    }

    async fn run(&self, job: Job) -> String {
        let permit = self.permits.acquire_arc().await;
        let (reply, answer) = async_channel::bounded(1);
        let worker = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .workers
            .pop();
        let sent = match worker {
            Some(worker) => worker.try_send((job, reply, permit)).is_ok(),
            None => self.start((job, reply, permit)),
        };
        if !sent {
            return render(&error_object(
                "UNKNOWN_ERROR",
                "places workers are not running",
            ));
        }
        answer.recv().await.unwrap_or_else(|_| failed_inside())
    }

    /// Starts a worker with `first` as its first task; false if no thread could start.
    /// Holding a permit and finding no idle worker means fewer than
    /// `MAX_PLACES_IN_FLIGHT` are alive: a worker is back on the idle list before it
    /// lets its permit go, and a job that panics is caught, so its worker lives on
    /// (its client gets an `UNKNOWN_ERROR` object).
    fn start(&self, first: Task) -> bool {
        let (tx, rx) = async_channel::bounded::<Task>(1);
        if tx.try_send(first).is_err() {
            return false;
        }
        let idle = Arc::clone(&self.idle);
        std::thread::Builder::new()
            .name("herd-places".to_string())
            .spawn(move || {
                while let Ok((job, reply, permit)) = rx.recv_blocking() {
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                        .unwrap_or_else(|_| failed_inside());
                    let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
                    let open = idle.open;
                    if open {
                        idle.workers.push(tx.clone());
                    }
                    drop(idle);
                    let _ = reply.send_blocking(answer);
                    drop(permit);
                    if !open {
                        break;
                    }
                }
            })
            .map_err(|e| eprintln!("herd: cannot start a places worker: {e}"))
            .is_ok()
    }
}

/// The answer to a request whose job panicked or whose worker went away.
fn failed_inside() -> String {
    render(&error_object(
        "UNKNOWN_ERROR",
        "places request failed inside herd",
    ))
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing their channels ends the idle workers; busy ones end after their job.
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.open = false;
        for worker in idle.workers.drain(..) {
            worker.close();
        }
    }
}

/// Cuts `results` to `bound` and renders the answer.
fn finish(mut value: Value, bound: usize) -> String {
    truncate_results(&mut value, bound);
    render(&value)
}

/// Reads a response: its status and at most `MAX_PLACES_RESPONSE` bytes of body.
fn fetch(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Vec<u8>), String> {
    let mut response = response.map_err(describe_error)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_PLACES_RESPONSE)
        .read_to_vec()
        .map_err(describe_error)?;
    Ok((status, body))
}

/// A short, key-free description of an HTTP failure.
fn describe_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => format!(
            "places service did not answer within {} s",
            PLACES_TIMEOUT.as_secs()
        ),
        ureq::Error::BodyExceedsLimit(_) => {
            format!("places response is larger than {MAX_PLACES_RESPONSE} bytes")
        }
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            "places service refused the connection".into()
        }
        ureq::Error::HostNotFound => "places service host not found".into(),
        other => format!("places service could not be reached: {other}"),
    }
}

/// Removes the key from a message, should an error ever quote the URL.
fn scrub(message: &str, key: &str) -> String {
    if key.is_empty() {
        message.to_string()
    } else {
        message.replace(key, "[redacted]")
    }
}

/// The legacy API's `location=LAT,LNG` value from ISO 6709 text: `+34.06-118.4` →
/// `+34.06,-118.4` (signs kept; percent-encoding keeps `+` from becoming a space).
fn location_query(location: &str) -> String {
    match location[1..].find(['+', '-']) {
        Some(i) => format!("{},{}", &location[..=i], &location[i + 1..]),
        None => location.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A legacy service's body, rendered with `results` cut to `bound`; or an error object
/// saying why not. The body is validated and split without building a tree: each value
/// is re-indented from its own text, so key order, number spelling and string escapes
/// (`\u003c` in Google's `html_attributions`) pass through exactly.
///
/// Why a scanner and not serde_json's streaming: `serde_transcode` decodes strings and
/// numbers (`\u003c` comes out `<`, `1e5` comes out `100000.0` without serde_json's
/// `arbitrary_precision`), so it cannot keep the service's bytes. The byte-exact library
/// path, [`GoogleFormatter`] driven over `RawValue`s level by level (the oracle in this
/// module's tests), re-scans each value once per level it is nested in: on a 20-result,
/// 23 KB answer it runs 1,355 k instructions against the scanner's 524 k (the top-level
/// `RawValue` split, 229 k, is in both; the scanner then walks `results` once, cutting
/// it at the bound as it goes, and finds a string's end with `memchr2`), far past the
/// 10 % of a WHATSAT a cleaner renderer may cost. Measured with
/// `HERD_COST=scanner|library valgrind --tool=callgrind TESTBIN legacy_render_cost --ignored`.
fn legacy_answer(body: &[u8], bound: usize) -> String {
    let top = match legacy_top(body) {
        Ok(top) => top,
        Err(error) => return error,
    };
    let mut out = String::with_capacity(body.len() * 2);
    if top.0.is_empty() {
        out.push_str("{}");
        return out;
    }
    out.push('{');
    for (i, (key, raw)) in top.0.iter().enumerate() {
        out.push_str(if i == 0 { "\n   " } else { ",\n   " });
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push_str(" : ");
        let raw = raw.get();
        let written = match raw.starts_with('[') && key == "results" {
            // Cut while re-indenting: items past the bound are never walked.
            true if bound == 0 => {
                out.push_str("[]");
                true
            }
            true => reindent(raw, 1, bound, &mut out),
            false => reindent(raw, 1, usize::MAX, &mut out),
        };
        if !written {
            return too_deep();
        }
    }
    out.push_str("\n}");
    out
}

fn too_deep() -> String {
    render(&error_object(
        "UNKNOWN_ERROR",
        &format!("places answer is nested deeper than {MAX_JSON_DEPTH} or renders larger than {MAX_RENDERED} bytes"),
    ))
}

/// A JSON object's members in their order, values left as text; keys as `K` (`String`
/// to read them, `&RawValue` to copy them as written).
struct Ordered<'a, K>(Vec<(K, &'a RawValue)>);

impl<'de: 'a, 'a, K: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<'a, K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members<K>(std::marker::PhantomData<K>);
        impl<'de, K: serde::Deserialize<'de>> serde::de::Visitor<'de> for Members<K> {
            type Value = Ordered<'de, K>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Ordered<'de, K>, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<K, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Members(std::marker::PhantomData))
    }
}

/// Deepest nesting passed on from a places answer; Google's is 5 deep. Past it (or past
/// `MAX_RENDERED`) the answer is refused: indentation grows with depth, so a hostile
/// answer could otherwise turn 1 MiB into gigabytes.
pub const MAX_JSON_DEPTH: usize = 32;

/// Largest rendered places JSON, in bytes.
pub const MAX_RENDERED: usize = 4 << 20;

/// Writes valid JSON text re-indented as `render` would: three spaces a level (starting
/// at `depth`), ` : ` after keys, `[]`/`{}` when empty, strings and numbers verbatim;
/// an outermost array or object is cut after its first `items` members (`items` ≥ 1).
/// Iterative, so nesting costs no stack; false if `MAX_JSON_DEPTH` or `MAX_RENDERED`
/// was crossed.
fn reindent(raw: &str, mut depth: usize, items: usize, out: &mut String) -> bool {
    let outer = depth + 1;
    let mut members = 1;
    let b = raw.as_bytes();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("   ");
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                // To the closing quote, over escapes.
                loop {
                    match memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or_default()) {
                        Some(at) if b[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at + 1;
                            break;
                        }
                        None => {
                            i = b.len();
                            break;
                        }
                    }
                }
                out.push_str(raw.get(start..i.min(b.len())).unwrap_or_default());
                continue;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let next = b[i + 1..].iter().position(|c| !c.is_ascii_whitespace());
                if next.is_some_and(|n| b[i + 1 + n] == close) {
                    out.push(open as char);
                    out.push(close as char);
                    i += next.unwrap_or(0) + 2;
                    continue;
                }
                out.push(open as char);
                depth += 1;
                if depth > MAX_JSON_DEPTH || out.len() > MAX_RENDERED {
                    return false;
                }
                newline(out, depth);
            }
            close @ (b'}' | b']') => {
                depth = depth.saturating_sub(1);
                newline(out, depth);
                out.push(close as char);
            }
            b',' if depth == outer && members == items => {
                // The cut: close the outermost container after its last member kept.
                let close = if b[0] == b'{' { b'}' } else { b']' };
                depth -= 1;
                newline(out, depth);
                out.push(close as char);
                return true;
            }
            b',' => {
                members += usize::from(depth == outer);
                out.push(',');
                newline(out, depth);
                if out.len() > MAX_RENDERED {
                    return false;
                }
            }
            b':' => out.push_str(" : "),
            b' ' | b'\t' | b'\n' | b'\r' => {}
            other => out.push(other as char),
        }
        i += 1;
    }
    true
}

/// Cuts `results` to `bound` entries.
fn truncate_results(value: &mut Value, bound: usize) {
    if let Some(Value::Array(results)) = value.get_mut("results") {
        results.truncate(bound);
    }
}

/// The legacy-shaped object for a failure: no results, a status, and what went wrong.
pub fn error_object(status: &str, message: &str) -> Value {
    let mut map = Map::new();
    map.insert("error_message".into(), Value::from(message));
    map.insert("html_attributions".into(), Value::Array(Vec::new()));
    map.insert("results".into(), Value::Array(Vec::new()));
    map.insert("status".into(), Value::from(status));
    Value::Object(map)
}

/// Renders JSON the way the legacy service does: three-space indent and ` : ` between
/// key and value. The output has no blank lines and no trailing newline.
pub fn render(value: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoogleFormatter::default());
    // Serializing a Value into a Vec cannot fail: keys are strings and writes are infallible.
    let _ = serde::Serialize::serialize(value, &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// serde_json's pretty printer with Google's indent and key separator.
struct GoogleFormatter(serde_json::ser::PrettyFormatter<'static>);

impl Default for GoogleFormatter {
    fn default() -> Self {
        GoogleFormatter(serde_json::ser::PrettyFormatter::with_indent(b"   "))
    }
}

impl serde_json::ser::Formatter for GoogleFormatter {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b" : ")
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// The service's answer split into its top-level members, or the rendered error object
/// a client gets when it is not a JSON object (SPEC §4).
fn legacy_top(body: &[u8]) -> Result<Ordered<'_, String>, String> {
    serde_json::from_slice(body).map_err(|e| {
        let why = if e.classify() == serde_json::error::Category::Data {
            "places service answered JSON that is not an object"
        } else {
            "places service answered with something that is not JSON"
        };
        render(&error_object("UNKNOWN_ERROR", why))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::ser::Formatter as _;

    /// The oracle for [`legacy_answer`]: the same answer through serde_json's own
    /// machinery, [`GoogleFormatter`] driven over `RawValue`s level by level (byte-exact,
    /// but it re-scans each value once per level; see `legacy_answer`).
    fn library_answer(body: &[u8], bound: usize) -> String {
        let top = match legacy_top(body) {
            Ok(top) => top,
            Err(error) => return error,
        };
        let mut out = Json::with_capacity(body.len() * 2);
        out.fmt.begin_object(&mut out.text).ok();
        for (i, (key, raw)) in top.0.iter().enumerate() {
            out.fmt.begin_object_key(&mut out.text, i == 0).ok();
            out.raw(&serde_json::to_string(key).unwrap_or_default());
            out.fmt.begin_object_value(&mut out.text).ok();
            let results = (key == "results")
                .then(|| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
                .flatten();
            let written = match results {
                Some(items) => out.array(&items[..items.len().min(bound)]),
                None => out.value(raw),
            };
            if written.is_none() {
                return render(&error_object(
                    "UNKNOWN_ERROR",
                    &format!("places answer is nested deeper than {MAX_JSON_DEPTH} or renders larger than {MAX_RENDERED} bytes"),
                ));
            }
            out.fmt.end_object_value(&mut out.text).ok();
        }
        out.fmt.end_object(&mut out.text).ok();
        // Every byte written is the UTF-8 body's own text or ASCII punctuation.
        String::from_utf8(out.text).unwrap_or_default()
    }

    /// JSON text being written through [`GoogleFormatter`], whose indent follows the nesting.
    struct Json {
        text: Vec<u8>,
        fmt: GoogleFormatter,
        depth: usize,
    }

    impl Json {
        fn with_capacity(bytes: usize) -> Json {
            Json {
                text: Vec::with_capacity(bytes),
                fmt: GoogleFormatter::default(),
                depth: 1,
            }
        }

        /// Copies JSON text as it is.
        fn raw(&mut self, text: &str) {
            self.fmt.write_raw_fragment(&mut self.text, text).ok();
        }

        /// Writes one valid JSON value re-indented: containers member by member, strings and
        /// numbers as written. `None` once `MAX_JSON_DEPTH` or `MAX_RENDERED` is crossed.
        fn value(&mut self, raw: &RawValue) -> Option<()> {
            let text = raw.get();
            match text.as_bytes().first() {
                Some(b'{') => {
                    let members: Ordered<'_, &RawValue> = serde_json::from_str(text).ok()?;
                    self.fmt.begin_object(&mut self.text).ok();
                    self.deeper(members.0.is_empty())?;
                    for (i, (key, value)) in members.0.iter().enumerate() {
                        self.fmt.begin_object_key(&mut self.text, i == 0).ok();
                        self.bounded(i)?;
                        self.raw(key.get());
                        self.fmt.begin_object_value(&mut self.text).ok();
                        self.value(value)?;
                        self.fmt.end_object_value(&mut self.text).ok();
                    }
                    self.depth -= 1;
                    self.fmt.end_object(&mut self.text).ok();
                }
                Some(b'[') => {
                    let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
                    self.array(&items)?;
                }
                _ => self.raw(text),
            }
            Some(())
        }

        /// Writes `items` as a JSON array, each re-indented.
        fn array(&mut self, items: &[&RawValue]) -> Option<()> {
            self.fmt.begin_array(&mut self.text).ok();
            self.deeper(items.is_empty())?;
            for (i, item) in items.iter().enumerate() {
                self.fmt.begin_array_value(&mut self.text, i == 0).ok();
                self.bounded(i)?;
                self.value(item)?;
                self.fmt.end_array_value(&mut self.text).ok();
            }
            self.depth -= 1;
            self.fmt.end_array(&mut self.text).ok();
            Some(())
        }

        /// One level deeper, checked against the bounds unless the container is empty.
        fn deeper(&mut self, empty: bool) -> Option<()> {
            self.depth += 1;
            let over = self.depth > MAX_JSON_DEPTH || self.text.len() > MAX_RENDERED;
            (empty || !over).then_some(())
        }

        /// Checks the size bound after the separator before member `i` (not the first).
        fn bounded(&self, i: usize) -> Option<()> {
            (i == 0 || self.text.len() <= MAX_RENDERED).then_some(())
        }
    }

    /// Bodies that exercise the legacy path: every fuzz seed (with and without the two
    /// status bytes the fuzz target reads first) and hand-written tricky ones.
    fn legacy_bodies() -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/places_json");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("the fuzz corpus is in the repository")
            .map(|e| e.expect("a directory entry").path())
            .collect();
        names.sort();
        let mut bodies = Vec::new();
        for name in names {
            let data = std::fs::read(&name).expect("a corpus file");
            bodies.push(data.get(2..).unwrap_or_default().to_vec());
            bodies.push(data);
        }
        for tricky in [
            r#"{"results":[{"lat":34.0689300000000001,"lng":1e5,"z":-0.0,"e":1E+2,"big":123456789012345678901234567890,"tiny":5e-324,"huge":1e400}],"n":-0}"#,
            r#"{"html_attributions":["\u003ca href=\"x\"\u003eJ\u003c/a\u003e"],"results":[{"n\u0061me":"caf\u00e9 \/ \ud83c\udf5c","s":"\t\b\f"}],"status":"OK"}"#,
            "{ \"st\\u0061tus\" : \"OK\" , \"results\" : [ { } , [ ] , { \"a\" : [ ] } , [ [ ] , { } ] ] }",
            "{\"results\": {\"not\": \"a list\"}, \"results\": [1,2,3]}",
        ] {
            bodies.push(tricky.as_bytes().to_vec());
        }
        let deep = |n: usize| format!(r#"{{"results":[{}1{}]}}"#, "[".repeat(n), "]".repeat(n));
        for n in [29, 30, 31, 32, 40] {
            bodies.push(deep(n).into_bytes());
        }
        // Rendered past MAX_RENDERED only in a value's last element, before `results`
        // (found by review: the scanner once missed it there).
        let big = format!(
            r#"{{"a":{}{}"{}"{},"results":[1]}}"#,
            "[".repeat(31),
            "1,".repeat(42_314),
            "x".repeat(2000),
            "]".repeat(31)
        );
        bodies.push(big.into_bytes());
        bodies
    }

    #[test]
    fn scanner_is_byte_identical_to_the_library_path() {
        let bodies = legacy_bodies();
        assert!(bodies.len() > 300, "{}", bodies.len());
        let mut rendered = 0;
        for body in &bodies {
            for bound in [0, 1, 5, 20] {
                let library = library_answer(body, bound);
                let scanner = legacy_answer(body, bound);
                assert_eq!(
                    scanner,
                    library,
                    "bound {bound}, body {}",
                    String::from_utf8_lossy(body)
                );
                rendered += usize::from(!scanner.contains("UNKNOWN_ERROR"));
            }
        }
        assert!(rendered > 100, "{rendered}");
    }

    /// A 20-result answer shaped like Google's (and like `herd-bench standin`'s).
    fn google_page() -> String {
        let results: Vec<Value> = (0..20)
            .map(|i| {
                let (lat, lng) = (34.068930 + f64::from(i) * 0.0007, -118.445127 + f64::from(i) * 0.0005);
                json!({
                    "business_status": "OPERATIONAL",
                    "geometry": {"location": {"lat": lat, "lng": lng},
                        "viewport": {"northeast": {"lat": lat + 0.0013, "lng": lng + 0.0013},
                                     "southwest": {"lat": lat - 0.0013, "lng": lng - 0.0013}}},
                    "icon": "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/generic_business-71.png",
                    "icon_background_color": "#7B9EB0",
                    "icon_mask_base_uri": "https://maps.gstatic.com/mapfiles/place_api/icons/v2/generic_pinlet",
                    "name": format!("Bench Place {i}"),
                    "opening_hours": {"open_now": i % 3 != 0},
                    "photos": [{"height": 3024,
                        "html_attributions": [format!("<a href=\"https://maps.google.com/maps/contrib/{i}\">Bench Photographer</a>")],
                        "photo_reference": format!("AUc7tXW{}", "bench".repeat(40)), "width": 4032}],
                    "place_id": format!("ChIJbench{i:04}AAAAAAAAAAAAAAAAAAAAAAAAAA"),
                    "plus_code": {"compound_code": "3H9V+HX Los Angeles, California", "global_code": "85633H9V+HX"},
                    "rating": 4.0 + f64::from(i % 10) / 10.0,
                    "scope": "GOOGLE",
                    "types": ["restaurant", "food", "point_of_interest", "establishment"],
                    "user_ratings_total": 100 + i * 7,
                    "vicinity": format!("{} Westwood Plaza, Los Angeles", 100 + i)
                })
            })
            .collect();
        json!({"html_attributions": [], "results": results, "status": "OK"}).to_string()
    }

    /// Not a test: renders a 20-result answer 1000 times with the path named by
    /// `HERD_COST` (`scanner`, `library`, `parse`, or nothing), to count instructions:
    /// `perf stat -e instructions:u TESTBINARY legacy_render_cost --ignored`.
    #[test]
    #[ignore]
    fn legacy_render_cost() {
        let body = google_page();
        let path = std::env::var("HERD_COST").unwrap_or_default();
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            let body = std::hint::black_box(body.as_bytes());
            let n = match path.as_str() {
                "scanner" => legacy_answer(body, 20).len(),
                "library" => library_answer(body, 20).len(),
                "parse" => serde_json::from_slice::<Ordered<'_, String>>(body)
                    .unwrap()
                    .0
                    .len(),
                _ => 0,
            };
            std::hint::black_box(n);
        }
        println!(
            "{path}: {} bytes in, {:?} per answer",
            body.len(),
            t.elapsed() / 1000
        );
    }

    #[test]
    fn numbers_and_escapes_keep_the_services_spelling() {
        let body = r#"{"html_attributions":["\u003ca href=\"x\"\u003eJ\u003c/a\u003e \/"],"results":[{"lat":34.0689300000000001,"lng":1e5,"z":-0.0,"big":123456789012345678901234567890}],"status":"OK"}"#;
        assert_eq!(
            legacy_answer(body.as_bytes(), 5),
            r#"{
   "html_attributions" : [
      "\u003ca href=\"x\"\u003eJ\u003c/a\u003e \/"
   ],
   "results" : [
      {
         "lat" : 34.0689300000000001,
         "lng" : 1e5,
         "z" : -0.0,
         "big" : 123456789012345678901234567890
      }
   ],
   "status" : "OK"
}"#
        );
    }

    #[test]
    fn renders_like_google() {
        let v: Value = serde_json::from_str(
            r#"{"html_attributions":[],"results":[{"name":"A\n\nB","geometry":{"location":{"lat":1.5,"lng":-2}}}],"status":"OK"}"#,
        )
        .unwrap();
        assert_eq!(
            render(&v),
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"name\" : \"A\\n\\nB\",\n         \"geometry\" : {\n            \"location\" : {\n               \"lat\" : 1.5,\n               \"lng\" : -2\n            }\n         }\n      }\n   ],\n   \"status\" : \"OK\"\n}"
        );
    }

    #[test]
    fn legacy_answers_render_exactly_as_a_parsed_value_would() {
        for body in [
            r#"{"html_attributions":[],"results":[{"name":"A","geometry":{"location":{"lat":1.5,"lng":-2}},"types":["a","b"],"x":{},"y":[[]],"z":"q\"\\u00e9:,{["}],"status":"OK"}"#,
            r#"{ "results" : [ 1 , 2 , 3 , 4 , 5 , 6 , 7 ] , "next_page_token":"t" }"#,
            r#"{"status":"ZERO_RESULTS","results":[]}"#,
            r#"{"results":"not a list","a":null,"b":true,"c":-1.25e-7}"#,
            "{}",
        ] {
            let mut value: Value = serde_json::from_str(body).unwrap();
            truncate_results(&mut value, 5);
            let fast = legacy_answer(body.as_bytes(), 5);
            let reparsed: Value = serde_json::from_str(&fast).unwrap();
            assert_eq!(reparsed, value, "{fast}");
            if !body.contains("e-7") && !body.contains("u00e9") {
                assert_eq!(fast, render(&value));
            }
            assert!(!fast.contains("\n\n"));
        }
    }

    #[test]
    fn key_order_is_kept_and_results_cut() {
        let mut v: Value =
            serde_json::from_str(r#"{"status":"OK","zeta":1,"results":[1,2,3,4],"alpha":2}"#)
                .unwrap();
        truncate_results(&mut v, 2);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"status":"OK","zeta":1,"results":[1,2],"alpha":2}"#
        );
    }

    #[test]
    fn ip_literal_hosts_resolve_to_themselves_and_names_go_to_ureq() {
        use ureq::unversioned::transport::time::Duration;
        let config = ureq::config::Config::default();
        let resolve_within = |uri: &str, after| {
            let uri: ureq::http::Uri = uri.parse().unwrap();
            let timeout = NextTimeout {
                after,
                ..NextTimeout::default()
            };
            let addrs = LiteralFirst::default().resolve(&uri, &config, timeout);
            addrs.map(|addrs| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        };
        let resolve = |uri: &str| resolve_within(uri, Duration::NotHappening);
        // A literal needs no lookup and so no time: ureq's own resolver, given a
        // timeout, waits on a thread it starts, and with no time left gives up.
        let no_time = Duration::Exact(std::time::Duration::ZERO);
        let literal = resolve_within("http://127.0.0.1:8080/json", no_time);
        assert_eq!(literal.unwrap(), ["127.0.0.1:8080"]);
        assert_eq!(resolve("http://[::1]/json").unwrap(), ["[::1]:80"]);
        assert_eq!(resolve("https://10.1.2.3/json").unwrap(), ["10.1.2.3:443"]);
        // A name is ureq's to look up: `localhost` resolves, through the system.
        let local = resolve("http://localhost:9/json").unwrap();
        assert!(!local.is_empty());
        assert!(local.iter().all(|a| a.ends_with(":9")), "{local:?}");
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            location_query("+34.068930-118.445127"),
            "+34.068930,-118.445127"
        );
        assert_eq!(location_query("-1+2"), "-1,+2");
        assert_eq!(percent_encode("+34.06,-118.4"), "%2B34.06%2C-118.4");
        assert_eq!(percent_encode("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn error_objects_have_the_legacy_shape() {
        assert_eq!(
            error_object("UNKNOWN_ERROR", "boom"),
            json!({"error_message": "boom", "html_attributions": [], "results": [], "status": "UNKNOWN_ERROR"})
        );
        let status = |body: &[u8]| -> Value {
            serde_json::from_str::<Value>(&legacy_answer(body, 5)).unwrap()["status"].clone()
        };
        assert_eq!(status(b"<html>"), "UNKNOWN_ERROR");
        assert_eq!(status(b"[1]"), "UNKNOWN_ERROR");
        assert_eq!(status(b"{\"status\":\"OK\"} x"), "UNKNOWN_ERROR");
        assert_eq!(status(br#"{"status":"OK"}"#), "OK");
    }

    /// A job that says which thread ran it.
    fn thread_name_job() -> Job {
        Box::new(|| format!("{:?}", std::thread::current().id()))
    }

    #[test]
    fn one_request_at_a_time_keeps_one_warm_worker() {
        let workers = Workers::new();
        // A burst starts many workers; afterwards the most recently idle one serves.
        let burst: std::collections::HashSet<String> = std::thread::scope(|scope| {
            let requests: Vec<_> = (0..MAX_PLACES_IN_FLIGHT)
                .map(|_| {
                    let request = workers.run(Box::new(|| {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        format!("{:?}", std::thread::current().id())
                    }));
                    scope.spawn(|| smol::block_on(request))
                })
                .collect();
            requests.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(burst.len() > 1, "{burst:?}");
        let threads: std::collections::HashSet<String> = (0..3 * MAX_PLACES_IN_FLIGHT)
            .map(|_| smol::block_on(workers.run(thread_name_job())))
            .collect();
        assert_eq!(threads.len(), 1, "{threads:?}");
    }

    /// Polls `test` for up to 10 s.
    fn eventually(test: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !test() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_worker_keeps_its_permit_until_it_is_idle_again() {
        let workers = Workers::new();
        std::thread::scope(|scope| {
            // Made in the scope, so a failed assertion drops `release` (ending every
            // job) before the scope waits for its threads.
            let (release, held) = async_channel::unbounded::<()>();
            for _ in 0..MAX_PLACES_IN_FLIGHT {
                let held = held.clone();
                let request = workers.run(Box::new(move || {
                    let _ = held.recv_blocking();
                    String::new()
                }));
                scope.spawn(|| smol::block_on(request));
            }
            // Every permit is taken: each request has handed its job to a worker.
            assert!(eventually(|| workers.permits.try_acquire_arc().is_none()));
            // One job ends while its worker cannot get back on the idle stack: its
            // permit must not be free for another request, which would start a thread.
            let idle = workers.idle.lock().unwrap();
            release.try_send(()).unwrap();
            assert!(eventually(|| held.is_empty()));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(workers.permits.try_acquire_arc().is_none());
            drop(idle);
            assert!(eventually(|| workers.permits.try_acquire_arc().is_some()));
            for _ in 1..MAX_PLACES_IN_FLIGHT {
                release.try_send(()).unwrap();
            }
        });
    }

    #[test]
    fn a_job_that_panics_answers_an_error_and_keeps_its_worker() {
        let workers = Workers::new();
        let first = smol::block_on(workers.run(thread_name_job()));
        let answer = smol::block_on(workers.run(Box::new(|| panic!("a places bug"))));
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["status"], "UNKNOWN_ERROR");
        assert_eq!(smol::block_on(workers.run(thread_name_job())), first);
    }

    #[test]
    fn workers_stay_within_the_bound_when_clients_give_up() {
        use std::collections::HashSet;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let workers = Workers::new();
        let (release, held) = async_channel::unbounded::<()>();
        let started = Arc::new(AtomicUsize::new(0));
        let threads = Arc::new(Mutex::new(HashSet::new()));
        let job = |block: bool| -> Job {
            let (held, started, threads) =
                (held.clone(), Arc::clone(&started), Arc::clone(&threads));
            Box::new(move || {
                started.fetch_add(1, Ordering::SeqCst);
                threads.lock().unwrap().insert(std::thread::current().id());
                if block {
                    let _ = held.recv_blocking();
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                String::new()
            })
        };
        // Three times the bound of requests, each given up (dropped) by its client
        // after a moment: a job that started keeps its permit until it ends.
        smol::block_on(async {
            for _ in 0..3 * MAX_PLACES_IN_FLIGHT {
                let request = workers.run(job(true));
                futures_lite::future::or(async { drop(request.await) }, async {
                    smol::Timer::after(std::time::Duration::from_millis(2)).await;
                })
                .await;
            }
        });
        assert!(eventually(
            || started.load(Ordering::SeqCst) >= MAX_PLACES_IN_FLIGHT
        ));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(started.load(Ordering::SeqCst), MAX_PLACES_IN_FLIGHT);
        // Once they end, twice the bound of requests at once all run, on those threads.
        for _ in 0..MAX_PLACES_IN_FLIGHT {
            release.try_send(()).unwrap();
        }
        std::thread::scope(|scope| {
            for _ in 0..2 * MAX_PLACES_IN_FLIGHT {
                let request = workers.run(job(false));
                scope.spawn(|| smol::block_on(request));
            }
        });
        assert_eq!(started.load(Ordering::SeqCst), 3 * MAX_PLACES_IN_FLIGHT);
        let threads = threads.lock().unwrap().len();
        assert!(threads <= MAX_PLACES_IN_FLIGHT, "{threads} worker threads");
    }
}
