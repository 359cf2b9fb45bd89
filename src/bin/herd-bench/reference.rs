//! `reference`: a do-nothing line server to measure the herd against. One thread, raw
//! level-triggered epoll, non-blocking sockets: for each read from a connection it
//! answers every complete line in that read — `IAMAT ...` with one fixed AT line, any
//! other line with `? ` and the line — in ONE write. No parsing, no store, no log, no
//! peers: what is left is the kernel's share of a round trip (the read, the write, the
//! wake-ups) and the load generator's, which the herd pays too. The herd's latency
//! divided by this server's, measured in the same run on the same machine, says how
//! much of a figure is the herd's own work.

use crate::stats::Summary;
use rustix::event::epoll;
use rustix::fd::AsFd;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The answer to every IAMAT: the length of a typical herd AT line (a 20-byte client ID),
/// so both servers write the same bytes per reply.
pub const AT_LINE: &[u8] =
    b"AT Reference +0.000012345 bench-12345-0000001 +34.068930-118.445127 1700000000.000000001\n";

/// Bytes read per read call: what one read of a pipelined connection may carry.
pub const READ_CHUNK: usize = 64 * 1024;

/// Longest line kept while waiting for its end; a longer one is answered cut short.
pub const MAX_LINE: usize = 64 * 1024;

/// Connections served at once; past this new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 100_000;

/// Replies queued for a client that does not read before the connection is dropped.
pub const MAX_PENDING: usize = 4 << 20;

/// Longest a reference server may run, so a forgotten one stops by itself.
pub const MAX_SECS: u64 = 24 * 3600;

/// How often the event loop looks at the clock when nothing happens.
const TICK: Duration = Duration::from_secs(1);

/// Event data of the listener; a connection's is its slot plus one.
const LISTENER: u64 = 0;

/// One client connection.
struct Client {
    stream: TcpStream,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Replies the socket did not take yet; while any are queued, the connection is
    /// watched for writability instead of reads.
    pending: Vec<u8>,
}

/// Runs the reference server on `addr` for at most `secs` seconds; returns how many
/// lines it answered.
pub fn run(addr: &str, secs: u64) -> Result<u64, String> {
    let secs = secs.clamp(1, MAX_SECS);
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("reference: do-nothing line server on {local} for at most {secs} s");
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| e.to_string())?;
    epoll::add(
        &epoll,
        &listener,
        epoll::EventData::new_u64(LISTENER),
        epoll::EventFlags::IN,
    )
    .map_err(|e| e.to_string())?;
    let mut server = Server {
        epoll,
        clients: Vec::new(),
        free: Vec::new(),
        buf: vec![0; READ_CHUNK],
        out: Vec::with_capacity(READ_CHUNK * 2),
        answered: 0,
    };
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let mut events = Vec::with_capacity(256);
    let tick = rustix::time::Timespec {
        tv_sec: TICK.as_secs() as _,
        tv_nsec: 0,
    };
    while Instant::now() < stop_at {
        events.clear();
        match epoll::wait(
            &server.epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&tick),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("epoll_wait failed: {e}")),
        }
        for event in &events {
            match event.data.u64() {
                LISTENER => server.accept(&listener),
                slot => server.ready(slot as usize - 1, event.flags),
            }
        }
    }
    Ok(server.answered)
}

struct Server {
    epoll: rustix::fd::OwnedFd,
    clients: Vec<Option<Client>>,
    free: Vec<usize>,
    buf: Vec<u8>,
    out: Vec<u8>,
    answered: u64,
}

impl Server {
    /// Accepts every waiting connection.
    fn accept(&mut self, listener: &TcpListener) {
        loop {
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of descriptors, most likely: the next event retries.
                    eprintln!("reference: accept failed: {e}");
                    return;
                }
            };
            let live = self.clients.len() - self.free.len();
            if live >= MAX_CONNECTIONS
                || stream.set_nonblocking(true).is_err()
                || stream.set_nodelay(true).is_err()
            {
                continue; // dropping the stream closes it
            }
            let slot = self.free.pop().unwrap_or_else(|| {
                self.clients.push(None);
                self.clients.len() - 1
            });
            let data = epoll::EventData::new_u64(slot as u64 + 1);
            if epoll::add(&self.epoll, &stream, data, epoll::EventFlags::IN).is_err() {
                self.free.push(slot);
                continue;
            }
            self.clients[slot] = Some(Client {
                stream,
                partial: Vec::new(),
                pending: Vec::new(),
            });
        }
    }

    /// Serves one ready connection: flushes queued replies, or reads once and answers.
    fn ready(&mut self, slot: usize, flags: epoll::EventFlags) {
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        let keep = if !client.pending.is_empty() {
            flush(&self.epoll, slot, client)
        } else if flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::HUP) {
            self.out.clear();
            let keep = read_and_answer(client, &mut self.buf, &mut self.out, &mut self.answered);
            keep && write_once(&self.epoll, slot, client, &self.out)
        } else {
            !flags.contains(epoll::EventFlags::ERR)
        };
        if !keep {
            if let Some(client) = self.clients[slot].take() {
                let _ = epoll::delete(&self.epoll, client.stream.as_fd());
            }
            self.free.push(slot);
        }
    }
}

/// Reads once from `client` and appends the answer to every complete line to `out`;
/// false when the connection is done (EOF or error), after answering a last line cut
/// short by EOF.
fn read_and_answer(
    client: &mut Client,
    buf: &mut [u8],
    out: &mut Vec<u8>,
    answered: &mut u64,
) -> bool {
    let n = match client.stream.read(buf) {
        Ok(n) => n,
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
        {
            return true
        }
        Err(_) => return false,
    };
    if n == 0 {
        if !client.partial.is_empty() {
            answer(&client.partial, out);
            *answered += 1;
        }
        let _ = client.stream.write_all(out);
        return false;
    }
    let mut data = &buf[..n];
    while let Some(i) = data.iter().position(|&b| b == b'\n') {
        if client.partial.is_empty() {
            answer(&data[..i], out);
        } else {
            client.partial.extend_from_slice(&data[..i]);
            answer(&client.partial, out);
            client.partial.clear();
        }
        *answered += 1;
        data = &data[i + 1..];
    }
    let room = MAX_LINE.saturating_sub(client.partial.len());
    client
        .partial
        .extend_from_slice(&data[..data.len().min(room)]);
    true
}

/// The reply to one line.
fn answer(line: &[u8], out: &mut Vec<u8>) {
    if line.starts_with(b"IAMAT ") {
        out.extend_from_slice(AT_LINE);
    } else {
        out.extend_from_slice(b"? ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
    }
}

/// One write of `out`; what the socket does not take is queued and the connection
/// watched for writability. False when the connection failed.
fn write_once(epoll: &rustix::fd::OwnedFd, slot: usize, client: &mut Client, out: &[u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    let written = match client.stream.write(out) {
        Ok(n) => n,
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
        {
            0
        }
        Err(_) => return false,
    };
    if written < out.len() {
        client.pending.extend_from_slice(&out[written..]);
        return watch(epoll, slot, client, epoll::EventFlags::OUT);
    }
    true
}

/// Writes queued replies; back to reading once they are all out.
fn flush(epoll: &rustix::fd::OwnedFd, slot: usize, client: &mut Client) -> bool {
    match client.stream.write(&client.pending) {
        Ok(n) => {
            client.pending.drain(..n);
        }
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
        Err(_) => return false,
    }
    if client.pending.is_empty() {
        return watch(epoll, slot, client, epoll::EventFlags::IN);
    }
    client.pending.len() <= MAX_PENDING
}

/// Watches the connection for `flags` only.
fn watch(
    epoll: &rustix::fd::OwnedFd,
    slot: usize,
    client: &Client,
    flags: epoll::EventFlags,
) -> bool {
    let data = epoll::EventData::new_u64(slot as u64 + 1);
    epoll::modify(epoll, client.stream.as_fd(), data, flags).is_ok()
}

/// Runs the mode: serves until `secs` have passed.
pub fn mode(addr: &str, secs: u64) -> Result<(Summary, bool), String> {
    let answered = run(addr, secs)?;
    let mut summary = Summary::new("reference");
    summary.add("lines", answered);
    Ok((summary, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn answers_each_line_of_a_read_and_keeps_a_partial_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let server = std::thread::spawn({
            let addr = addr.clone();
            move || run(&addr, 2)
        });
        let mut stream = (0..200)
            .find_map(|_| {
                TcpStream::connect(&addr)
                    .map_err(|_| std::thread::sleep(Duration::from_millis(10)))
                    .ok()
            })
            .expect("the reference server listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(b"IAMAT a b c\nWHAT\r\nIAMAT d e").unwrap();
        let mut reader = io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.as_bytes(), AT_LINE);
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "? WHAT\n");
        stream.write_all(b" f\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.as_bytes(), AT_LINE);
        drop((stream, reader));
        assert_eq!(server.join().unwrap(), Ok(3));
    }
}
