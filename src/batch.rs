//! The one loop every connection that carries updates runs, clients and peer links
//! alike: read what has arrived; log each line; let the connection's handler decide on
//! it (a link decides its updates together, in order, before the commit); make the
//! batch's updates durable and flood them (`Replica::commit`); then let the handler
//! finish the batch (a client's replies go out last, so a client that does not read
//! never holds up its own updates). Written once so both keep the same order.

use crate::lines::{Line, LineReader};
use crate::log::{Entry, Logger};
use crate::protocol::strip_terminator;
use crate::replica::{Batch, Replica};
use crate::shutdown::Alive;
use futures_lite::AsyncRead;

/// What a connection does with its lines.
pub(crate) trait Handler {
    /// The reason given when the other end closes ("closed by client").
    const CLOSED: &'static str;

    /// Who the lines come from, for the log.
    fn who(&self) -> &str;

    /// Handles one line (already logged as `in`); `false` stops reading once this
    /// batch is finished.
    async fn line(&mut self, line: Line<'_>, batch: &mut Batch, entry: &mut Entry) -> bool;

    /// Runs after the batch's last line, before it is committed (a handler that holds
    /// back decisions makes them here).
    fn before_commit(&mut self, _batch: &mut Batch) {}

    /// Runs after the batch is committed; an error ends the connection with it.
    async fn finish(&mut self) -> Result<(), String>;

    /// Why the connection ends after `line` said stop (it may first tidy up).
    async fn stopped(&mut self) -> String;

    /// True when [`run`] should return `None` once no line is in flight after a read,
    /// so the caller can wait for the next bytes holding none of the loop's state (a
    /// client connection between commands); false keeps reading in the loop.
    const LEAVE_WHEN_IDLE: bool = false;
}

/// Runs `handler` over the lines of `stream` until EOF, an error or a stop (or, given
/// `alive`, the server stopping) and returns why it ended; or, for a handler that
/// leaves when idle, returns `None` once everything read is answered and no partial
/// line is buffered (the read buffer is then freed). It always reads at least once.
pub(crate) async fn run<R: AsyncRead + Unpin, H: Handler>(
    stream: &mut R,
    lines: &mut LineReader,
    replica: &Replica,
    log: &Logger,
    alive: Option<&Alive>,
    handler: &mut H,
) -> Option<String> {
    let mut batch = Batch::default();
    // Lines already buffered (after a handshake, say) come first; then each read.
    let mut read = Ok(usize::MAX);
    let mut has_read = false;
    loop {
        let mut entry = log.entry();
        let mut go_on = true;
        while let Some(line) = lines.next_line() {
            let line = match line {
                Line::Full(l) => Line::Full(strip_terminator(l)),
                too_long => too_long,
            };
            let (Line::Full(text) | Line::TooLong(text)) = line;
            entry.line("in", handler.who(), text);
            if !handler.line(line, &mut batch, &mut entry).await {
                go_on = false;
                break;
            }
        }
        handler.before_commit(&mut batch);
        replica.commit(&mut batch).await;
        let finished = handler.finish().await;
        log.send(entry);
        if let Err(why) = finished {
            return Some(why);
        }
        if !go_on {
            return Some(handler.stopped().await);
        }
        match read {
            Ok(0) => return Some(H::CLOSED.into()),
            Ok(_) => {}
            Err(e) => return Some(format!("read failed: {e}")),
        }
        if lines.is_idle() {
            lines.release();
            if H::LEAVE_WHEN_IDLE && has_read {
                return None;
            }
        }
        has_read = true;
        let fill = lines.fill(stream);
        read = match alive {
            Some(alive) => match alive.unless_stopped(fill).await {
                Some(read) => read,
                None => return Some("server stopping".into()),
            },
            None => fill.await,
        };
    }
}
