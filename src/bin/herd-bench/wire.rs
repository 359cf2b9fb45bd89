//! The client side of the herd protocol (SPEC §4) as the benchmark speaks it: IAMAT
//! lines with strictly increasing client times, a buffered line reader over one socket,
//! WHATSAT replies read up to their empty line, and timeouts for every network wait.

use async_net::TcpStream;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt, Future};
use smol::Timer;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a connect may take: on loopback a connect completes in microseconds unless
/// the backlog is full, so 2 s means the server is not accepting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one request may wait for its reply outside the timed loops: the server's
/// own places timeout is 5 s, so a WHATSAT gets that plus a margin.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest reply line accepted. An AT line is under 200 bytes and a rendered JSON line
/// far shorter; 64 KiB only stops a runaway server from growing the buffer forever.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest WHATSAT reply accepted: a 20-result page rendered by the herd is ~40 KB;
/// 4 MiB bounds memory against a server that never sends the empty line.
pub const MAX_REPLY: usize = 4 << 20;

/// Read buffer of a connection that carries pipelined replies: enough for hundreds of
/// AT lines per read system call.
pub const READ_CHUNK: usize = 64 * 1024;

/// The location every benchmark client reports (UCLA, as in the spec's example).
pub const LOCATION: &str = "+34.068930-118.445127";

/// An error of kind `TimedOut` naming what took too long.
pub fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Runs `fut`, failing with `TimedOut` after `limit`.
pub async fn timeout<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    future::or(fut, async {
        Timer::after(limit).await;
        Err(timed_out(what))
    })
    .await
}

/// Runs `fut` unless the already-armed `deadline` fires first. One timer serves a whole
/// loop, so the hot path does not create and cancel a timer per request.
pub async fn within<T>(
    deadline: &mut Timer,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    future::or(fut, async {
        deadline.await;
        Err(timed_out(what))
    })
    .await
}

/// Connects with `CONNECT_TIMEOUT`, Nagle off (every request is a small line).
pub async fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = timeout(CONNECT_TIMEOUT, "connect", TcpStream::connect(addr))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects from `source` (port chosen by the kernel) with `CONNECT_TIMEOUT`, Nagle
/// off. Each loopback source address has its own ~28,000 ephemeral ports, so spreading
/// tens of thousands of connections over 127.0.0.x keeps one run (and the TIME_WAITs of
/// the last) from running out of them.
pub async fn connect_from(source: Ipv4Addr, addr: &str) -> io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let target = addr
        .to_socket_addrs()?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no IPv4 address for {addr}"),
            )
        })?;
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    // No SO_REUSEADDR: the port bind picks must not be one an earlier run's connection
    // to the same server still holds in TIME_WAIT, whose connect then stalls (a second
    // run of 19,000 connections took 60 s, the length of TIME_WAIT, instead of 1.5 s).
    rustix::net::bind(&fd, &SocketAddrV4::new(source, 0)).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot bind {source}: {e}"),
        )
    })?;
    match rustix::net::connect(&fd, &target) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => {
            return Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot connect to {addr}: {e}"),
            ))
        }
    }
    let stream = smol::Async::new(std::net::TcpStream::from(fd))?;
    timeout(CONNECT_TIMEOUT, "connect", stream.writable()).await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(io::Error::new(
            e.kind(),
            format!("cannot connect to {addr}: {e}"),
        ));
    }
    let stream = TcpStream::from(stream);
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The `i`-th of `count` loopback source addresses from 127.0.0.`first` up (wrapping
/// within 127.0.0.1 ..= 127.0.0.250).
pub fn loopback_source(first: usize, i: usize, count: usize) -> Ipv4Addr {
    let count = count.clamp(1, 250);
    let host = 1 + ((first.max(1) - 1 + i % count) % 250) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) - 1 + host)
}

/// The last number of the first loopback source address this process uses (see
/// [`loopback_source`]): 1 ..= 250, picked by process id, so that a run's connections
/// most likely leave from other addresses than the run before it, whose ports may still
/// be in TIME_WAIT (a third run of 19,000 connections from the same three addresses
/// took 56 s). Runs whose pids differ by less than the address count modulo 250 share
/// some.
pub fn first_source_host() -> usize {
    1 + std::process::id() as usize % 250
}

/// Whole seconds since the epoch, the base of every client time a run sends.
pub fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The client time of a client's `counter`-th report: `base` seconds plus `counter`
/// nanoseconds, so each report is newer than the last and floods through the herd.
pub fn client_time(base: u64, counter: u64) -> String {
    format!(
        "{}.{:09}",
        base + counter / 1_000_000_000,
        counter % 1_000_000_000
    )
}

/// Appends `IAMAT client LOCATION time\n` for the client's `counter`-th report.
pub fn push_iamat(out: &mut Vec<u8>, client: &str, base: u64, counter: u64) {
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        out,
        "IAMAT {client} {LOCATION} {}.{:09}",
        base + counter / 1_000_000_000,
        counter % 1_000_000_000
    );
}

/// Nanoseconds from `from` to `to`, saturating at `u64::MAX`.
pub fn nanos(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX)
}

/// One WHATSAT reply as read.
#[derive(Debug)]
pub enum Reply {
    /// A single line that is not an AT line (`? ...` for an unknown client).
    Other(String),
    /// An AT line, then the places JSON up to the empty line.
    At {
        /// The stored AT line.
        line: String,
        /// Bytes of JSON, newlines included.
        json_bytes: usize,
        /// Results in the JSON (lines whose key is `place_id`).
        results: usize,
        /// The JSON's top-level `status`, unquoted (`OK`, `UNKNOWN_ERROR`, ...).
        status: String,
    },
}

/// A connection with a line buffer that grows only up to `MAX_LINE`.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    /// Connects to `addr` with a read buffer of `READ_CHUNK` bytes.
    pub async fn open(addr: &str) -> io::Result<Conn> {
        Ok(Conn::new(connect(addr).await?))
    }

    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next line, without its `\n`. The server closing the connection is an error:
    /// the benchmark only reads when it expects a reply.
    pub async fn line(&mut self) -> io::Result<&[u8]> {
        let at = loop {
            if let Some(i) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                break i;
            }
            self.fill().await?;
        };
        let start = self.start;
        self.start += at + 1;
        Ok(&self.buf[start..start + at])
    }

    /// Reads one WHATSAT reply: an AT line and JSON up to the empty line, or one other line.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        let first = self.line().await?;
        if !first.starts_with(b"AT ") {
            return Ok(Reply::Other(String::from_utf8_lossy(first).into_owned()));
        }
        let line = String::from_utf8_lossy(first).into_owned();
        let (mut json_bytes, mut results, mut status) = (0, 0, String::new());
        loop {
            let l = self.line().await?;
            if l.is_empty() {
                break;
            }
            json_bytes += l.len() + 1;
            if json_bytes > MAX_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("WHATSAT reply longer than {MAX_REPLY} bytes"),
                ));
            }
            let key = l.trim_ascii_start();
            if key.starts_with(b"\"place_id\"") {
                results += 1;
            } else if let Some(rest) = key.strip_prefix(b"\"status\"") {
                status = String::from_utf8_lossy(rest)
                    .trim_matches(|c: char| c == ' ' || c == ':' || c == '"' || c == ',')
                    .to_string();
            }
        }
        Ok(Reply::At {
            line,
            json_bytes,
            results,
            status,
        })
    }

    /// Reads more bytes into the buffer, compacting or growing it as needed.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("reply line longer than {MAX_LINE} bytes"),
                ));
            }
            self.buf.resize((self.buf.len() * 2).min(MAX_LINE), 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_from_the_source_address_asked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let source = Ipv4Addr::new(127, 0, 0, 3);
        let stream = smol::block_on(connect_from(source, &addr)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        assert_eq!(stream.local_addr().unwrap(), peer);
    }

    #[test]
    fn client_times_increase_and_carry_into_seconds() {
        assert_eq!(client_time(100, 1), "100.000000001");
        assert_eq!(client_time(100, 1_000_000_001), "101.000000001");
        let mut out = Vec::new();
        push_iamat(&mut out, "c", 7, 42);
        assert_eq!(out, b"IAMAT c +34.068930-118.445127 7.000000042\n");
        assert_eq!(loopback_source(1, 0, 4), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(loopback_source(1, 5, 4), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(loopback_source(250, 1, 3), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(loopback_source(9, 2, 3), Ipv4Addr::new(127, 0, 0, 11));
    }
}
