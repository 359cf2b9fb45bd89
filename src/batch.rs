//! The one loop every connection that carries updates runs, clients and peer links
//! alike: read what has arrived; log each line; let the connection's handler decide on
//! it; make the batch's updates durable and flood them (`Replica::commit`); then let the
//! handler finish the batch (a client's replies go out last, so a client that does not
//! read never holds up its own updates). Written once so both keep the same order.

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

    /// Runs after the batch is committed; an error ends the connection with it.
    async fn finish(&mut self) -> Result<(), String>;

    /// Why the connection ends after `line` said stop (it may first tidy up).
    async fn stopped(&mut self) -> String;

    /// Waits until the connection has bytes to read, when no line is in flight (so the
    /// read buffer can be freed meanwhile); by default it does not wait.
    async fn idle(&mut self) {}
}

/// Runs `handler` over the lines of `stream` until EOF, an error or a stop (or, given
/// `alive`, the server stopping); returns why it ended.
pub(crate) async fn run<R: AsyncRead + Unpin, H: Handler>(
    stream: &mut R,
    lines: &mut LineReader,
    replica: &Replica,
    log: &Logger,
    alive: Option<&Alive>,
    handler: &mut H,
) -> String {
    let mut batch = Batch::default();
    // Lines already buffered (after a handshake, say) come first; then each read.
    let mut read = Ok(usize::MAX);
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
        replica.commit(&mut batch).await;
        let finished = handler.finish().await;
        log.send(entry);
        if let Err(why) = finished {
            return why;
        }
        if !go_on {
            return handler.stopped().await;
        }
        match read {
            Ok(0) => return H::CLOSED.into(),
            Ok(_) => {}
            Err(e) => return format!("read failed: {e}"),
        }
        let fill = async {
            if lines.is_idle() {
                lines.release();
                handler.idle().await;
            }
            lines.fill(stream).await
        };
        read = match alive {
            Some(alive) => match alive.unless_stopped(fill).await {
                Some(read) => read,
                None => return "server stopping".into(),
            },
            None => fill.await,
        };
    }
}
