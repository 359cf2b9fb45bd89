//! `scale`: a herd holding a million clients, and how fast a server that crashed is
//! whole again. The benchmark runs the herd itself (one `herd serve NAME` child per
//! server of the config, which must set `state-dir`), loads N distinct clients through
//! one pipelined connection to `--from`, reports the resident memory that cost `--from`
//! per client, then times three restarts, each from just before the process is
//! spawned:
//!
//! - (a) `--to` killed with SIGKILL and started with its state removed: until it holds a
//!   sample of the clients (a WHATSAT for each answers with the AT line, not `?`);
//! - (b) `--to` killed, `--sample` new clients reported to `--from` (and held by every
//!   other server), `--to` started on its own state: until it holds the new clients;
//! - (c) `--from` killed and started on its N-record state: until it first answers at
//!   all, until it answers WHATSAT for one client it held, and for the whole sample.
//!
//! Each restart also reports the bytes the restarted server had received on its links
//! (its open connections to anything but this benchmark) when it held the clients.

use crate::herdproc::{self, Herd};
use crate::procfs;
use crate::stats::Summary;
use crate::throughput::{converge, drive, Until};
use crate::wire::{self, Conn};
use smol::Timer;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Most clients one run loads: 10 million AT lines are about 1 GB in each server.
pub const MAX_N: u64 = 10_000_000;

/// Most clients in the sample polled at a restarted server.
pub const MAX_SAMPLE: usize = 100_000;

/// How long the herd may take to start and link up: a few seconds at most.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long loading the clients may take: 600 s is 1,700 updates/s for a million.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// How long every server may take to hold the sample after the load, or a batch of new
/// clients: the links carry the whole load after the last reply, at tens of thousands
/// of updates per second.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Pause between polling rounds at a restarting server: each round asks for every
/// pending client of the sample, and a server that is still catching up should spend
/// its time catching up, not answering `?`.
pub const RESTART_POLL_GAP: Duration = Duration::from_millis(5);

/// Pause between connection attempts while a restarted server does not listen yet.
pub const CONNECT_RETRY: Duration = Duration::from_millis(2);

/// How long the herd must use no CPU to count as settled (done catching up).
pub const QUIET: Duration = Duration::from_millis(500);

/// How long the herd may take to settle.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
pub struct Options {
    /// The herd binary.
    pub herd: PathBuf,
    /// The herd's config (with `state-dir`).
    pub config: PathBuf,
    /// The server that gets the load and is restarted in (c).
    pub from: String,
    /// The server restarted in (a) and (b): the one farthest from `from`.
    pub to: String,
    /// Clients loaded.
    pub n: u64,
    /// Clients polled at a restarted server, and new clients in (b).
    pub sample: usize,
    /// Requests in flight on the load connection.
    pub window: usize,
    /// How long a restarted server may take to hold what is polled for.
    pub restart_timeout: Duration,
}

/// A client ID of this run.
fn client(pid: u32, tag: &str, i: u64) -> String {
    format!("s{pid}{tag}-{i}")
}

/// Runs the mode.
pub fn run(o: &Options) -> Result<(Summary, bool), String> {
    if o.n == 0 || o.n > MAX_N || o.sample == 0 || o.sample > MAX_SAMPLE || o.window == 0 {
        return Err(format!(
            "--n must be from 1 to {MAX_N}, --sample from 1 to {MAX_SAMPLE}, --window at least 1"
        ));
    }
    let conf = herdproc::read_conf(&o.config)?;
    let Some(state_dir) = conf.state_dir.clone() else {
        return Err(format!(
            "{}: scale needs a state-dir line",
            o.config.display()
        ));
    };
    let addr = |name: &str| {
        conf.servers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| format!("{}: no server {name}", o.config.display()))
    };
    let from = addr(&o.from)?;
    addr(&o.to)?;
    procfs::raise_nofile().map_err(|e| format!("cannot raise the descriptor limit: {e}"))?;
    let out_dir = o
        .config
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let mut herd = Herd::new(&o.herd, &o.config, &out_dir);
    for (name, _) in &conf.servers {
        herd.start(name).map_err(|e| e.to_string())?;
    }
    let mut run = Run {
        o,
        herd,
        servers: conf.servers.clone(),
        state_dir,
        from,
        pid: std::process::id(),
        base: wire::epoch_secs(),
        summary: Summary::new("scale"),
        ok: true,
        ticks_at_kill: Vec::new(),
    };
    let result = smol::block_on(run.all());
    run.herd.stop_all();
    result.map_err(|e| e.to_string())?;
    Ok((run.summary, run.ok))
}

struct Run<'a> {
    o: &'a Options,
    herd: Herd,
    servers: Vec<(String, String)>,
    state_dir: PathBuf,
    from: String,
    pid: u32,
    base: u64,
    summary: Summary,
    ok: bool,
    /// CPU ticks of each running server when the current restart began (the restarted
    /// server's new process starts from 0).
    ticks_at_kill: Vec<(String, u64)>,
}

impl Run<'_> {
    async fn all(&mut self) -> io::Result<()> {
        let started = Instant::now();
        for (_, addr) in &self.servers {
            serving(addr, started, START_TIMEOUT).await?;
        }
        let probe = [(
            client(self.pid, "probe", 0),
            wire::client_time(self.base, 1),
        )];
        self.report(&probe).await?;
        self.held_everywhere(&probe, &[&self.o.to], START_TIMEOUT)
            .await?;
        println!(
            "scale: herd up and linked in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        self.load().await?;
        let sample = self.sample();
        self.scenario_a(&sample).await?;
        self.scenario_b().await?;
        self.scenario_c(&sample).await
    }

    /// Every `n`-th client of the load, the first and last included, at its only time.
    fn sample(&self) -> Vec<(String, String)> {
        let (n, k) = (self.o.n, (self.o.sample as u64).min(self.o.n));
        let time = wire::client_time(self.base, 1);
        (0..k)
            .map(|i| if k == 1 { 0 } else { i * (n - 1) / (k - 1) })
            .map(|i| (client(self.pid, "", i), time.clone()))
            .collect()
    }

    /// Reports `clients` at `from` on one pipelined connection.
    async fn report(&self, clients: &[(String, String)]) -> io::Result<()> {
        let stream = wire::connect(&self.from).await?;
        let base = self.base;
        let done = drive(
            stream,
            self.o.window,
            Until::Count(clients.len() as u64),
            Instant::now() + LOAD_TIMEOUT,
            0,
            |buf, i| wire::push_iamat(buf, &clients[i as usize - 1].0, base, 1),
        )
        .await?;
        if done.invalid > 0 {
            return Err(io::Error::other(format!(
                "{} IAMATs were refused",
                done.invalid
            )));
        }
        Ok(())
    }

    /// The N clients at `from`: the load's rate, the time until every server holds the
    /// sample, and `from`'s resident memory per client once the herd has settled.
    async fn load(&mut self) -> io::Result<()> {
        let from_pid = self.pid_of(&self.o.from.clone())?;
        let rss_before = procfs::rss_kib(from_pid)?;
        let stream = wire::connect(&self.from).await?;
        let (pid, base) = (self.pid, self.base);
        let started = Instant::now();
        let done = drive(
            stream,
            self.o.window,
            Until::Count(self.o.n),
            started + LOAD_TIMEOUT,
            0,
            |buf, i| wire::push_iamat(buf, &client(pid, "", i - 1), base, 1),
        )
        .await?;
        let took = done.finished.saturating_duration_since(started);
        let rate = done.replies as f64 / took.as_secs_f64().max(1e-9);
        println!(
            "scale: {} clients reported to {} in {:.1} s: {rate:.0} updates/s ({} refused)",
            done.replies,
            self.o.from,
            took.as_secs_f64(),
            done.invalid
        );
        self.summary.add("n", self.o.n);
        self.summary
            .add("load_s", format!("{:.1}", took.as_secs_f64()));
        self.summary.add("load_rps", format!("{rate:.0}"));
        self.ok &= done.invalid == 0 && done.replies == self.o.n;

        let sample = self.sample();
        let everyone: Vec<&str> = self.servers.iter().map(|(n, _)| n.as_str()).collect();
        let took = self
            .held_everywhere(&sample, &everyone, CONVERGE_TIMEOUT)
            .await?;
        println!(
            "scale: every server holds the sample {:.1} s after the load began",
            took.as_secs_f64()
        );
        self.summary
            .add("converge_s", format!("{:.1}", took.as_secs_f64()));
        self.settle().await;
        let rss_after = procfs::rss_kib(from_pid)?;
        let per = (rss_after.saturating_sub(rss_before) * 1024) as f64 / self.o.n as f64;
        println!(
            "scale: {} RSS {rss_before} KiB before, {rss_after} KiB holding {} clients: {per:.0} bytes per client",
            self.o.from, self.o.n
        );
        self.summary.add("rss_before_kib", rss_before);
        self.summary.add("rss_after_kib", rss_after);
        self.summary
            .add("rss_per_client_bytes", format!("{per:.0}"));
        Ok(())
    }

    /// (a): `to` killed, its state removed, started: until it holds the sample.
    async fn scenario_a(&mut self, sample: &[(String, String)]) -> io::Result<()> {
        let to = self.o.to.clone();
        self.herd.kill9(&to)?;
        self.mark_ticks();
        herdproc::remove_state(&self.state_dir, &to)?;
        let spawned = self.herd.start(&to)?;
        self.restarted("a", &to, spawned, sample).await?;
        self.settle().await;
        Ok(())
    }

    /// (b): `to` killed, new clients reported meanwhile, started on its own state.
    async fn scenario_b(&mut self) -> io::Result<()> {
        let to = self.o.to.clone();
        self.herd.kill9(&to)?;
        self.mark_ticks();
        let time = wire::client_time(self.base, 1);
        let fresh: Vec<(String, String)> = (0..self.o.sample as u64)
            .map(|i| (client(self.pid, "b", i), time.clone()))
            .collect();
        self.report(&fresh).await?;
        let others: Vec<String> = self
            .servers
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| *n != to)
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        self.held_everywhere(&fresh, &others, CONVERGE_TIMEOUT)
            .await?;
        let spawned = self.herd.start(&to)?;
        self.restarted("b", &to, spawned, &fresh).await?;
        self.settle().await;
        Ok(())
    }

    /// (c): `from` killed and started on its state.
    async fn scenario_c(&mut self, sample: &[(String, String)]) -> io::Result<()> {
        let from = self.o.from.clone();
        self.herd.kill9(&from)?;
        self.mark_ticks();
        let spawned = self.herd.start(&from)?;
        let (mut conn, first) = serving(&self.from, spawned, self.o.restart_timeout).await?;
        let one = self.hold(&mut conn, &sample[..1], spawned).await?;
        self.summary.add("c_one_ms", ms(one));
        self.restarted_at("c", &from, spawned, first, conn, sample)
            .await
    }

    /// Times restarted server `name` from `spawned`: its first reply, then until it
    /// holds `clients`; adds `TAG_first_ms`, `TAG_hold_ms` and `TAG_link_bytes`.
    async fn restarted(
        &mut self,
        tag: &str,
        name: &str,
        spawned: Instant,
        clients: &[(String, String)],
    ) -> io::Result<()> {
        let addr = self.addr_of(name);
        let (conn, first) = serving(&addr, spawned, self.o.restart_timeout).await?;
        self.restarted_at(tag, name, spawned, first, conn, clients)
            .await
    }

    async fn restarted_at(
        &mut self,
        tag: &str,
        name: &str,
        spawned: Instant,
        first: Duration,
        mut conn: Conn,
        clients: &[(String, String)],
    ) -> io::Result<()> {
        let hold = self.hold(&mut conn, clients, spawned).await?;
        let cpu: Vec<String> = self
            .servers
            .iter()
            .filter_map(|(n, _)| {
                let now = procfs::cpu_ticks(self.herd.pid(n)?).ok()?;
                let before = self
                    .ticks_at_kill
                    .iter()
                    .find(|(m, _)| m == n)
                    .map_or(0, |t| t.1);
                Some(format!(
                    "{n}={}",
                    now.saturating_sub(before) * 1000 / procfs::USER_HZ
                ))
            })
            .collect();
        println!(
            "scale ({tag}): CPU ms per server until then: {}",
            cpu.join(" ")
        );
        let pid = self.pid_of(name)?;
        let bytes = herdproc::link_bytes_received(pid);
        println!(
            "scale ({tag}): {name} answered {:.0} ms after it was started, held all {} clients after {} ms; {} bytes received on its links",
            first.as_secs_f64() * 1000.0,
            clients.len(),
            ms(hold),
            bytes.map_or("?".into(), |b| b.to_string())
        );
        self.summary.add(
            &format!("{tag}_first_ms"),
            format!("{:.0}", first.as_secs_f64() * 1000.0),
        );
        self.summary.add(&format!("{tag}_hold_ms"), ms(hold));
        self.summary.add(
            &format!("{tag}_link_bytes"),
            bytes.map_or("-".into(), |b| b.to_string()),
        );
        Ok(())
    }

    /// Time since `spawned` until `conn`'s server holds `clients`; `None` (and the run
    /// failed) after the restart timeout.
    async fn hold(
        &mut self,
        conn: &mut Conn,
        clients: &[(String, String)],
        spawned: Instant,
    ) -> io::Result<Option<Duration>> {
        let limit = self.o.restart_timeout.saturating_sub(spawned.elapsed());
        match poll(conn, clients, spawned, limit).await? {
            Ok(t) => Ok(Some(t)),
            Err(missing) => {
                eprintln!(
                    "herd-bench: {missing} of {} clients still missing after {} s",
                    clients.len(),
                    self.o.restart_timeout.as_secs()
                );
                self.ok = false;
                Ok(None)
            }
        }
    }

    /// Waits until every server in `names` holds `clients`; the time that took.
    async fn held_everywhere(
        &self,
        clients: &[(String, String)],
        names: &[&str],
        limit: Duration,
    ) -> io::Result<Duration> {
        let started = Instant::now();
        for name in names {
            let mut conn = Conn::open(&self.addr_of(name)).await?;
            let left = limit.saturating_sub(started.elapsed());
            if let Err(missing) = poll(&mut conn, clients, started, left).await? {
                return Err(io::Error::other(format!(
                    "{name} still lacks {missing} of {} clients after {} s",
                    clients.len(),
                    limit.as_secs()
                )));
            }
        }
        Ok(started.elapsed())
    }

    /// Waits (at most `SETTLE_TIMEOUT`) until no server used CPU for `QUIET`: the herd
    /// has finished catching up, so the next measurement starts from rest.
    async fn settle(&self) {
        let pids: Vec<u32> = self
            .servers
            .iter()
            .filter_map(|(n, _)| self.herd.pid(n))
            .collect();
        let ticks = || {
            pids.iter()
                .filter_map(|&p| procfs::cpu_ticks(p).ok())
                .sum::<u64>()
        };
        let give_up = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < give_up {
            let before = ticks();
            Timer::after(QUIET).await;
            if ticks() == before {
                return;
            }
        }
        eprintln!(
            "herd-bench: the herd was still busy after {} s",
            SETTLE_TIMEOUT.as_secs()
        );
    }

    /// Records every running server's CPU ticks, the baseline of a restart's CPU figures.
    fn mark_ticks(&mut self) {
        self.ticks_at_kill = self
            .servers
            .iter()
            .filter_map(|(n, _)| Some((n.clone(), procfs::cpu_ticks(self.herd.pid(n)?).ok()?)))
            .collect();
    }

    fn addr_of(&self, name: &str) -> String {
        self.servers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    }

    fn pid_of(&self, name: &str) -> io::Result<u32> {
        self.herd
            .pid(name)
            .ok_or_else(|| io::Error::other(format!("{name} is not running")))
    }
}

/// Polls `conn` with `WHATSAT client 1 1` (radius 1 km, one place: the cheapest
/// lookup) until it holds every client at its time.
async fn poll(
    conn: &mut Conn,
    clients: &[(String, String)],
    since: Instant,
    limit: Duration,
) -> io::Result<Result<Duration, usize>> {
    converge(conn, clients, since, limit, RESTART_POLL_GAP).await
}

/// Connects to `addr` (retrying while nothing listens) and sends an empty line; the
/// connection and the time from `since` until the `? ` answer, within `limit` of `since`.
async fn serving(addr: &str, since: Instant, limit: Duration) -> io::Result<(Conn, Duration)> {
    loop {
        let left = limit.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{addr} did not answer within {} s", limit.as_secs()),
            ));
        }
        let Ok(stream) = wire::connect(addr).await else {
            Timer::after(CONNECT_RETRY).await;
            continue;
        };
        let mut conn = Conn::new(stream);
        let answered = wire::timeout(left, "first answer", async {
            conn.send(b"\n").await?;
            conn.line().await.map(|l| l == b"? ")
        })
        .await;
        match answered {
            Ok(true) => return Ok((conn, since.elapsed())),
            Ok(false) => {
                return Err(io::Error::other(format!(
                    "{addr} answered an empty line oddly"
                )))
            }
            // Accepted by a dying process, or reset while it starts: try again.
            Err(e) if e.kind() != io::ErrorKind::TimedOut => {
                Timer::after(CONNECT_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Milliseconds, or `-` when not reached.
fn ms(t: Option<Duration>) -> String {
    t.map_or("-".into(), |t| format!("{:.0}", t.as_secs_f64() * 1000.0))
}
