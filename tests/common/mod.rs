//! Test harness: whole herds in this process on port-0 listeners, a stand-in places
//! HTTP server, and a line-oriented client over real sockets.
#![allow(dead_code)]

use herd::config::Config;
use herd::server::{self, Secrets};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The classic herd's links.
pub const CLASSIC: [(&str, &str); 6] = [
    ("Riley", "Jaquez"),
    ("Riley", "Juzang"),
    ("Bernard", "Jaquez"),
    ("Bernard", "Juzang"),
    ("Bernard", "Campbell"),
    ("Juzang", "Campbell"),
];
/// The classic herd's servers.
pub const CLASSIC_NAMES: [&str; 5] = ["Riley", "Jaquez", "Juzang", "Bernard", "Campbell"];

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("herd-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // HERD_KEEP_TEST_DIRS=1 keeps configs, logs and state of a failed test to read.
        if std::env::var_os("HERD_KEEP_TEST_DIRS").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Running {
    stop: async_channel::Sender<()>,
    thread: JoinHandle<()>,
}

/// A herd running in this process.
pub struct Herd {
    pub dir: TempDir,
    pub config: Config,
    secrets: Vec<Secrets>,
    running: Vec<Option<Running>>,
}

impl Herd {
    /// Starts servers `names` with `links`; `extra` is appended to the config.
    pub fn start(names: &[&str], links: &[(&str, &str)], extra: &str) -> Herd {
        Herd::start_with(names, links, extra, |_| Secrets::default())
    }

    /// As `start`, with each server's secrets chosen by `secrets(name)`.
    pub fn start_with(
        names: &[&str],
        links: &[(&str, &str)],
        extra: &str,
        secrets: impl Fn(&str) -> Secrets,
    ) -> Herd {
        let dir = TempDir::new("herd");
        let listeners: Vec<_> = names
            .iter()
            .map(|_| server::Listeners {
                client: server::bind("127.0.0.1:0").expect("bind port 0"),
                bus: server::bind("127.0.0.1:0").expect("bind port 0"),
            })
            .collect();
        let mut text = String::new();
        for (name, l) in names.iter().zip(&listeners) {
            text += &format!(
                "server {name} {} bus {}\n",
                l.client.local_addr().unwrap(),
                l.bus.local_addr().unwrap()
            );
        }
        for (a, b) in links {
            text += &format!("link {a} {b}\n");
        }
        text += "log-dir logs\n";
        text += extra;
        let path = dir.0.join("herd.conf");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).expect("valid test config");
        let secrets: Vec<Secrets> = names.iter().map(|n| secrets(n)).collect();
        let mut herd = Herd {
            dir,
            config,
            secrets,
            running: names.iter().map(|_| None).collect(),
        };
        for (i, l) in listeners.into_iter().enumerate() {
            herd.run(i, l);
        }
        herd
    }

    /// The classic five-server herd.
    pub fn classic(extra: &str) -> Herd {
        Herd::start(&CLASSIC_NAMES, &CLASSIC, extra)
    }

    fn run(&mut self, i: usize, listener: server::Listeners) {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let config = self.config.clone();
        let name = config.servers[i].name.clone();
        let secrets = self.secrets[i].clone();
        let thread = std::thread::spawn(move || {
            let result = smol::block_on(server::run(listener, &config, &name, secrets, async {
                let _ = stopped.recv().await;
            }));
            result.expect("server runs");
        });
        self.running[i] = Some(Running { stop, thread });
    }

    fn index(&self, name: &str) -> usize {
        self.config.index_of(name).expect("server in herd")
    }

    /// The client address of server `name`.
    pub fn addr(&self, name: &str) -> String {
        self.config.servers[self.index(name)].addr.clone()
    }

    /// The bus address of server `name`.
    pub fn bus(&self, name: &str) -> String {
        self.config.servers[self.index(name)].bus.clone()
    }

    /// Stops server `name`: its listener, connections, links and memory are gone.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(r) = self.running[i].take() {
            drop(r.stop);
            r.thread.join().expect("server thread");
        }
    }

    /// Starts server `name` again on its address, with an empty store.
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.running[i].is_none(), "{name} is running");
        let server = &self.config.servers[i];
        let listeners = server::Listeners {
            client: server::bind(&server.addr).expect("rebind"),
            bus: server::bind(&server.bus).expect("rebind bus"),
        };
        self.run(i, listeners);
    }

    /// A client connected to server `name`.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(&self.addr(name))
    }

    /// The text of server `name`'s log so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.0.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// Waits (bounded) until server `name`'s log contains `needle`; returns the log.
    pub fn wait_log(&self, name: &str, needle: &str) -> String {
        wait_file_contains(&self.dir.0.join("logs").join(format!("{name}.log")), needle)
    }

    /// Waits (20 s at most, then fails) until server `name`'s log passes `test` (`what`
    /// names it in the failure); returns the log.
    pub fn wait_log_until(&self, name: &str, what: &str, test: impl Fn(&str) -> bool) -> String {
        wait_file_until(
            &self.dir.0.join("logs").join(format!("{name}.log")),
            what,
            test,
        )
    }

    /// Waits (bounded) until the link from `from` to `to` carries updates: sends
    /// a fresh client's IAMAT to `from` every 100 ms until `to` logs one of them as
    /// come straight from `from` (an update sent before the link is up reaches `to`
    /// another way, and the link's resync then has nothing to send).
    pub fn wait_linked(&self, from: &str, to: &str) {
        let start = Instant::now();
        let mut c = self.client(from);
        let needle = format!(" in peer {from} AT {from} ");
        let mut i = 0;
        loop {
            c.send(&format!("IAMAT link-{from}-{to}-{i} +0+0 1\n"));
            c.line();
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
            let log = self.log(to);
            let ours = format!(" link-{from}-{to}-");
            if log
                .lines()
                .any(|l| l.contains(&needle) && l.contains(&ours))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no update came from {from} to {to} over their link:\n{log}"
            );
        }
    }

    /// Waits (bounded) until server `name` answers WHATSAT for `client` with `at_line`.
    pub fn wait_for(&self, name: &str, client: &str, at_line: &str) -> Duration {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(10) {
            if let Some(line) = self.stored(name, client) {
                if line == at_line {
                    return start.elapsed();
                }
                last = line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} never stored {at_line:?} for {client} (last seen: {last:?})");
    }

    /// The AT line server `name` holds for `client`, if any.
    pub fn stored(&self, name: &str, client: &str) -> Option<String> {
        stored_at(&self.addr(name), client)
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        for r in self.running.iter_mut().filter_map(Option::take) {
            drop(r.stop);
            let _ = r.thread.join();
        }
    }
}

impl Herd {
    /// Links to server `to` as the configured (but not running) server `name`, with the
    /// secret `secret`: HELLO, checks the acceptor's proof, AUTH. Returns the connection.
    pub fn link_as(&self, to: &str, name: &str, secret: &[u8]) -> Client {
        self.link_as_holding(to, name, secret).0
    }

    /// As [`Herd::link_as`], also returning the `HERD-HOLDS` lines `to` sent.
    pub fn link_as_holding(&self, to: &str, name: &str, secret: &[u8]) -> (Client, Vec<String>) {
        let (peer, holds, _) = self.link_as_answering(to, name, secret, "HERD-RESYNC - 0");
        (peer, holds)
    }

    /// As [`Herd::link_as`], the fake peer's resync line being `answer` (`HERD-RESYNC -
    /// 0`: it holds nothing of `to`'s updates; `HERD-RESYNC-LATER`: it is bootstrapping).
    /// Returns the connection, the `HERD-HOLDS` lines `to` sent and its resync line.
    pub fn link_as_answering(
        &self,
        to: &str,
        name: &str,
        secret: &[u8],
        answer: &str,
    ) -> (Client, Vec<String>, String) {
        use herd::handshake::{nonce, Role, Transcript};
        let mut peer = Client::connect(&self.bus(to));
        let nonce_d = nonce();
        peer.send(&format!("HERD-HELLO {name} {nonce_d}\n"));
        let welcome = peer.line();
        let words: Vec<&str> = welcome.split(' ').collect();
        assert_eq!(words.len(), 4, "{welcome}");
        assert_eq!(words[..2], ["HERD-WELCOME", to]);
        let transcript = Transcript {
            dialer: name,
            acceptor: to,
            nonce_d: &nonce_d,
            nonce_a: words[2],
        };
        assert!(transcript.verify(secret, Role::Accept, words[3]));
        peer.send(&format!(
            "HERD-AUTH {}\n",
            transcript.proof(secret, Role::Dial)
        ));
        // The resync. `to` says first what it holds of its own peers (HERD-HOLDS
        // lines), then its HERD-RESYNC (or HERD-RESYNC-LATER while it bootstraps from
        // another link).
        peer.send(&format!("{answer}\n"));
        let mut holds = Vec::new();
        let mut resync = peer.line();
        while resync.starts_with("HERD-HOLDS ") {
            holds.push(resync);
            resync = peer.line();
        }
        assert!(resync.starts_with("HERD-RESYNC"), "{resync}");
        (peer, holds, resync)
    }
}

/// A line-oriented test client.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// One reply line, without its newline; panics on EOF or timeout.
    pub fn line(&mut self) -> String {
        let bytes = self.line_bytes();
        String::from_utf8(bytes).expect("utf-8 reply")
    }

    pub fn line_bytes(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read reply");
        assert!(n > 0, "connection closed while a reply was expected");
        assert_eq!(
            line.pop(),
            Some(b'\n'),
            "reply line without newline: {line:?}"
        );
        line
    }

    /// After an AT line of a WHATSAT reply: the JSON text up to the empty line.
    pub fn read_json_reply(&mut self) -> String {
        let mut json = String::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return json;
            }
            if !json.is_empty() {
                json.push('\n');
            }
            json += &line;
        }
    }

    /// Closes our sending half and reads everything until the server closes.
    pub fn finish(mut self) -> Vec<u8> {
        self.stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to EOF");
        rest
    }

    /// True if the server closes the connection within `limit` (whatever it sends first
    /// is read and dropped).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while let Some(left) = limit.checked_sub(start.elapsed()) {
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }
}

/// What the stand-in places server does with a request.
#[derive(Clone)]
pub enum Answer {
    /// Answer with this status and body.
    Reply(u16, String),
    /// Wait this long, then answer 200 with the body.
    Slow(Duration, String),
    /// Close the connection without answering.
    Hangup,
}

/// A stand-in places HTTP server on a port-0 listener, recording every request.
pub struct StandIn {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub answer: Arc<Mutex<Answer>>,
}

/// One recorded HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The percent-decoded value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else if bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl StandIn {
    pub fn start(answer: Answer) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new(answer));
        let (reqs, ans) = (requests.clone(), answer.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (reqs, ans) = (reqs.clone(), ans.clone());
                std::thread::spawn(move || serve_http(stream, &reqs, &ans));
            }
        });
        StandIn {
            addr,
            requests,
            answer,
        }
    }

    /// The URL of the legacy Nearby Search path on this stand-in.
    pub fn legacy_url(&self) -> String {
        format!("http://{}/maps/api/place/nearbysearch/json", self.addr)
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_http(stream: TcpStream, reqs: &Mutex<Vec<Request>>, ans: &Mutex<Answer>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        reqs.lock().unwrap().push(Request {
            method,
            target,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let answer = ans.lock().unwrap().clone();
        let (status, body) = match answer {
            Answer::Reply(status, body) => (status, body),
            Answer::Slow(delay, body) => {
                std::thread::sleep(delay);
                (200, body)
            }
            Answer::Hangup => return,
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// A legacy Nearby Search answer with `n` results, in Google's key order.
pub fn legacy_body(n: usize) -> String {
    let results: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"geometry":{{"location":{{"lat":34.06{i},"lng":-118.44{i}}}}},"name":"Place {i}","place_id":"id{i}","types":["cafe"],"vicinity":"Westwood"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"html_attributions":[],"next_page_token":"tok","results":[{}],"status":"OK"}}"#,
        results.join(",")
    )
}

/// The path of the built `herd` binary.
pub fn herd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_herd"))
}

/// Waits (bounded) until the file at `path` contains `needle`; returns its text.
pub fn wait_file_contains(path: &Path, needle: &str) -> String {
    wait_file_until(path, &format!("{needle:?}"), |text| text.contains(needle))
}

/// Waits (bounded, 20 s) until the text of `path` passes `test`; returns the text.
pub fn wait_file_until(path: &Path, what: &str, test: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if test(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never said {what}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The AT line the server at `addr` holds for `client`, if any (via `WHATSAT client 1 1`).
pub fn stored_at(addr: &str, client: &str) -> Option<String> {
    let mut c = Client::connect(addr);
    c.send(&format!("WHATSAT {client} 1 1\n"));
    let first = c.line();
    if first.starts_with("? ") {
        return None;
    }
    c.read_json_reply();
    Some(first)
}

/// A child process (a real `herd serve`), killed with SIGKILL when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `herd serve NAME --config CONF` through `bash -c`, after `shell_prefix` (such
/// as `ulimit -n 64 &&`), and waits (bounded) until it accepts connections on `addr`;
/// returns the process and that first connection.
pub fn serve_binary(conf: &Path, name: &str, addr: &str, shell_prefix: &str) -> (Proc, TcpStream) {
    let child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{shell_prefix} exec '{}' serve '{name}' --config '{}'",
            herd_bin().display(),
            conf.display()
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return (proc, s),
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{name} never listened on {addr}: {e}"),
        }
    }
}

/// Waits (bounded) until a new client of `addr` gets an AT reply to an IAMAT.
pub fn wait_served(addr: &str) {
    let start = Instant::now();
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"IAMAT served +1-2 4\n").unwrap();
        let mut line = String::new();
        if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("AT ") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "service did not resume"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-server herd.conf (`server A` on free loopback ports, logs in `dir/logs`) and
/// its client address.
pub fn lone_server_conf(dir: &Path) -> (std::path::PathBuf, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let conf = dir.join("herd.conf");
    let text = format!(
        "server A {addr} bus 127.0.0.1:{}\nlog-dir logs\n",
        free_port()
    );
    std::fs::write(&conf, text).unwrap();
    (conf, addr)
}

/// Waits (bounded) until the server at `addr` holds `at` for `client`.
pub fn wait_stored(addr: &str, client: &str, at: &str) {
    let start = Instant::now();
    while stored_at(addr, client).as_deref() != Some(at) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} never learned {client}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
