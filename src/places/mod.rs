//! Places sources (SPEC §6): whatever the source, WHATSAT gets a JSON object in the
//! legacy Nearby Search shape, rendered the way Google renders it.
//!
//! HTTP goes through `ureq` (blocking, rustls, no tokio) on smol's blocking pool; the
//! agent is built once and reused.

pub mod google_new;
pub mod offline;

use crate::config::PlacesConfig;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Default endpoint of the legacy Nearby Search.
pub const LEGACY_URL: &str = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";

/// Whole-request timeout for the places service: Google answers in well under a
/// second; past 5 s a client waiting on WHATSAT is better served by an error object.
pub const PLACES_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest places response read, in bytes. A full 20-result page is about 40 KB; 1 MiB
/// leaves room for verbose answers while bounding memory per request.
pub const MAX_PLACES_RESPONSE: u64 = 1 << 20;

/// Places requests in flight at once, per server: one worker thread each, each holding
/// up to `MAX_PLACES_RESPONSE` bytes; as many more may queue, then WHATSATs wait.
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
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(PLACES_TIMEOUT))
            .http_status_as_error(false)
            // Keep a connection per worker alive, so busy WHATSATs reuse them.
            .max_idle_connections(MAX_PLACES_IN_FLIGHT)
            .max_idle_connections_per_host(MAX_PLACES_IN_FLIGHT)
            .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
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

/// A places request for a worker: fetch, parse, cut, render.
type Job = Box<dyn FnOnce() -> String + Send>;

/// `MAX_PLACES_IN_FLIGHT` threads that run blocking places requests, started on the
/// first one. They wait on a channel with no timeout, so an idle server never wakes.
struct Workers {
    jobs: std::sync::OnceLock<async_channel::Sender<(Job, async_channel::Sender<String>)>>,
}

impl Workers {
    fn new() -> Workers {
        Workers {
            jobs: std::sync::OnceLock::new(),
        }
    }

    async fn run(&self, job: Job) -> String {
        let jobs = self.jobs.get_or_init(|| {
            let (tx, rx) = async_channel::bounded::<(Job, async_channel::Sender<String>)>(
                MAX_PLACES_IN_FLIGHT,
            );
            for i in 0..MAX_PLACES_IN_FLIGHT {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("herd-places-{i}"))
                    .spawn(move || {
                        while let Ok((job, reply)) = rx.recv_blocking() {
                            let _ = reply.send_blocking(job());
                        }
                    });
                if spawned.is_err() {
                    eprintln!("herd: cannot start places worker {i}");
                }
            }
            tx
        });
        let (reply, answer) = async_channel::bounded(1);
        if jobs.send((job, reply)).await.is_err() {
            return render(&error_object(
                "UNKNOWN_ERROR",
                "places workers are not running",
            ));
        }
        answer.recv().await.unwrap_or_else(|_| {
            render(&error_object(
                "UNKNOWN_ERROR",
                "places request failed inside herd",
            ))
        })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends every worker once it finishes its request.
        if let Some(jobs) = self.jobs.get() {
            jobs.close();
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
/// is re-indented from its own text, so key order and number spelling pass through
/// exactly, and a 20-result answer costs a fraction of a parse into `Value` and back.
fn legacy_answer(body: &[u8], bound: usize) -> String {
    let top: Ordered<'_> = match serde_json::from_slice(body) {
        Ok(top) => top,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return render(&error_object(
                "UNKNOWN_ERROR",
                "places service answered JSON that is not an object",
            ))
        }
        Err(_) => {
            return render(&error_object(
                "UNKNOWN_ERROR",
                "places service answered with something that is not JSON",
            ))
        }
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
        let results = (key == "results")
            .then(|| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
            .flatten();
        match results {
            Some(items) if !items.is_empty() && bound > 0 => {
                out.push('[');
                for (j, item) in items.iter().take(bound).enumerate() {
                    out.push_str(if j == 0 { "\n      " } else { ",\n      " });
                    if !reindent(item.get(), 2, &mut out) {
                        return too_deep();
                    }
                }
                out.push_str("\n   ]");
            }
            Some(_) => out.push_str("[]"),
            None if !reindent(raw.get(), 1, &mut out) => return too_deep(),
            None => {}
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

/// A JSON object's members in their order, values left as text.
struct Ordered<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Ordered<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Ordered<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Ordered<'de>, M::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// Deepest nesting passed on from a places answer; Google's is 5 deep. Past it (or past
/// `MAX_RENDERED`) the answer is refused: indentation grows with depth, so a hostile
/// answer could otherwise turn 1 MiB into gigabytes.
pub const MAX_JSON_DEPTH: usize = 32;

/// Largest rendered places JSON, in bytes.
pub const MAX_RENDERED: usize = 4 << 20;

/// Writes valid JSON text re-indented as `render` would: three spaces a level (starting
/// at `depth`), ` : ` after keys, `[]`/`{}` when empty, strings and numbers verbatim.
/// Iterative, so nesting costs no stack; false if `MAX_JSON_DEPTH` or `MAX_RENDERED`
/// was crossed.
fn reindent(raw: &str, mut depth: usize, out: &mut String) -> bool {
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
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
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
            b',' => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
