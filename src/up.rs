//! `herd up`: every server of the config as its own child process, output prefixed by
//! server name. SIGINT or SIGTERM is passed on to every child and waited for; a child
//! that dies on its own is reported.

use crate::config::Config;
use futures_lite::StreamExt;
use rustix::process::{kill_process, Pid, Signal};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

/// How long children get to stop after SIGTERM before they are killed: a server
/// usually stops in well under a second, and at worst waits two `SHUTDOWN_GRACE`
/// periods (clients, then links).
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs the whole herd; returns the process exit code.
pub fn run(config: &Config, config_path: &Path) -> i32 {
    smol::block_on(async {
        let mut signals = match async_signal::Signals::new([
            async_signal::Signal::Term,
            async_signal::Signal::Int,
            async_signal::Signal::Hup,
        ]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("herd up: cannot handle signals: {e}");
                return 1;
            }
        };
        let exe = match std::env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                eprintln!("herd up: cannot find the herd binary: {e}");
                return 1;
            }
        };
        let (exits_tx, exits) = async_channel::unbounded::<(usize, std::io::Result<ExitStatus>)>();
        let mut pids = Vec::new();
        for (i, server) in config.servers.iter().enumerate() {
            let child = Command::new(&exe)
                .arg("serve")
                .arg(&server.name)
                .arg("--config")
                .arg(config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("herd up: cannot start {}: {e}", server.name);
                    pids.push(None);
                    continue;
                }
            };
            println!(
                "herd up: started {} (pid {}) on {}, bus {}",
                server.name,
                child.id(),
                server.addr,
                server.bus
            );
            pids.push(Pid::from_raw(child.id() as i32));
            if let Some(out) = child.stdout.take() {
                prefix(out, server.name.clone(), false);
            }
            if let Some(err) = child.stderr.take() {
                prefix(err, server.name.clone(), true);
            }
            let tx = exits_tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send_blocking((i, child.wait()));
            });
        }
        drop(exits_tx);
        let mut alive = pids.iter().filter(|p| p.is_some()).count();
        let mut stopping = false;
        let mut code = 0;
        while alive > 0 {
            let event =
                futures_lite::future::or(async { exits.recv().await.ok().map(Some) }, async {
                    if stopping {
                        smol::Timer::after(STOP_GRACE).await;
                        return Some(None);
                    }
                    loop {
                        match signals.next().await {
                            // SIGHUP: every server reopens its log (logrotate).
                            Some(Ok(async_signal::Signal::Hup)) => {
                                for pid in pids.iter().flatten() {
                                    let _ = kill_process(*pid, Signal::HUP);
                                }
                            }
                            Some(_) => return Some(None),
                            None => return None,
                        }
                    }
                })
                .await;
            match event {
                Some(Some((i, status))) => {
                    alive -= 1;
                    pids[i] = None;
                    let name = &config.servers[i].name;
                    match status {
                        Ok(s) if stopping => println!("herd up: {name} stopped ({s})"),
                        Ok(s) => {
                            eprintln!(
                                "herd up: {name} died ({s}); the rest of the herd keeps running"
                            );
                            code = 1;
                        }
                        Err(e) => eprintln!("herd up: cannot wait for {name}: {e}"),
                    }
                }
                Some(None) if !stopping => {
                    println!("herd up: stopping {alive} servers");
                    stopping = true;
                    for pid in pids.iter().flatten() {
                        let _ = kill_process(*pid, Signal::TERM);
                    }
                }
                Some(None) | None => {
                    eprintln!(
                        "herd up: servers did not stop in {} s; killing them",
                        STOP_GRACE.as_secs()
                    );
                    for pid in pids.iter().flatten() {
                        let _ = kill_process(*pid, Signal::KILL);
                    }
                    stopping = true;
                }
            }
        }
        code
    })
}

/// Copies a child's output to ours, each line prefixed by the server's name.
fn prefix(stream: impl Read + Send + 'static, name: String, to_stderr: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            if to_stderr {
                let _ = writeln!(std::io::stderr(), "[{name}] {text}");
            } else {
                let _ = writeln!(std::io::stdout(), "[{name}] {text}");
            }
        }
    });
}
