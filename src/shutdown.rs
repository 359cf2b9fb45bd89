//! Stopping in order (STYLE: shutdown by closing channels): every long-lived task holds
//! an [`Alive`] token; the server closes one channel to say "stop" and waits until every
//! token is dropped. And [`timeout`], the one way herd bounds a network wait.

use futures_lite::{future, Future};
use smol::Timer;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Handed to every task the server starts: `shutdown` closes when the server stops,
/// and the server waits until every clone's `_done` sender is dropped.
#[derive(Clone)]
pub(crate) struct Alive {
    shutdown: async_channel::Receiver<()>,
    _done: async_channel::Sender<()>,
}

impl Alive {
    /// A token tied to `shutdown`, and the receiver that closes once every clone of the
    /// token is dropped.
    pub(crate) fn new(
        shutdown: &async_channel::Receiver<()>,
    ) -> (Alive, async_channel::Receiver<()>) {
        let (done_tx, done) = async_channel::bounded::<()>(1);
        let alive = Alive {
            shutdown: shutdown.clone(),
            _done: done_tx,
        };
        (alive, done)
    }

    /// True once the server is stopping.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_closed()
    }

    /// Runs `fut` unless the server stops first; `None` if it did.
    pub(crate) async fn unless_stopped<T>(&self, fut: impl Future<Output = T>) -> Option<T> {
        future::or(async { Some(fut.await) }, async {
            let _ = self.shutdown.recv().await;
            None
        })
        .await
    }

    /// Polls `poll` until it is ready unless the server stops first; `None` if it did.
    /// The small form of `unless_stopped` for what thousands of connections wait on at
    /// once (an idle client waiting for readability): it holds only the closure and the
    /// shutdown wait, not two async blocks around a future.
    pub(crate) async fn poll_unless_stopped<T>(
        &self,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Option<T> {
        let mut stop = pin!(self.shutdown.recv());
        future::poll_fn(|cx| match poll(cx) {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending => stop.as_mut().poll(cx).map(|_| None),
        })
        .await
    }
}

/// Runs `fut`, giving up after `limit`.
pub(crate) async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// How far ahead `forget_dropped_timers` sets its own timer.
const NUDGE: Duration = Duration::from_micros(50);

/// Makes the reactor forget the timers dropped before they fired (every `timeout` whose
/// future finished first). async-io deregisters a dropped timer without waking the
/// reactor, which, if it is waiting with that deadline, then wakes once at it for
/// nothing: in a fresh herd, the connect and handshake timeouts of every link woke the
/// servers 2-5 s after start (issue 10: an idle herd wakes 0 times). Registering a timer
/// wakes the reactor, which drops them, and sleeps again until this one fires
/// (`NUDGE` later); then it waits for I/O alone.
pub(crate) async fn forget_dropped_timers() {
    Timer::after(NUDGE).await;
}
