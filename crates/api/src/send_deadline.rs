//! The send deadline: a client that stops taking its answer loses it.
//!
//! actix polls a response body for more only when its write buffer has
//! room, so a client that stops reading stops the body where it is, with
//! all it holds: a whole answer's memory budget, the request's in-flight
//! slot, a stream's upstream connection. A timer inside the body would never
//! be polled either. So a body that is not done at its first poll (a
//! stream, a whole answer in more than one piece) gets a watchdog, a task
//! on its connection's worker that closes the connection (and thereby
//! drops the body) once the body has handed out bytes and not been asked
//! for more for `GATEWAYZ_SEND_TIMEOUT_MS`. Time the body itself waits for
//! bytes (a slow upstream between chunks) does not count: the upstream's
//! idle deadline governs that.
//!
//! The kernel keeps at most [`UNSENT_BYTES`] of such an answer for the
//! client and asks for more once it has taken half of that, so a client
//! that takes about 64 KiB per period is never cut. An answer done at its
//! first poll (a small JSON answer, an error) gets no watchdog and costs
//! nothing more.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::probe::{ClientProbe, WeakProbe};

/// What the kernel may hold of a watched answer that the client has not
/// taken yet.
pub const UNSENT_BYTES: u32 = 128 * 1024;

/// `GATEWAYZ_SEND_TIMEOUT_MS`, as app data of the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendTimeout(pub Duration);

/// The send deadline of one response body: told of each poll of the body,
/// it closes the connection when the client stalls.
#[derive(Debug)]
pub struct SendWatch(State);

#[derive(Debug)]
enum State {
    /// Not polled yet: whether it needs a watchdog is not known.
    Unpolled {
        probe: ClientProbe,
        timeout: Duration,
    },
    Watched {
        progress: Rc<Progress>,
        watchdog: JoinHandle<()>,
    },
    Off,
}

/// What the body and its watchdog share.
#[derive(Debug, Default)]
struct Progress {
    /// When the body last handed out bytes, if it has not been polled since:
    /// the client has had them (or their room) to take since then.
    handed_out: Cell<Option<Instant>>,
    /// The watchdog closed the connection.
    closed: Cell<bool>,
}

impl SendWatch {
    /// The watch of a body sent on the connection of `probe` (none without
    /// one: the deadline needs it to close the connection).
    pub fn new(probe: Option<ClientProbe>, timeout: Option<SendTimeout>) -> Self {
        match (probe, timeout) {
            (Some(probe), Some(SendTimeout(timeout))) => Self(State::Unpolled { probe, timeout }),
            _ => Self(State::Off),
        }
    }

    /// After each poll of the body that left it with more to send:
    /// `handed_out` when it returned bytes, not when it waits for its own.
    /// The first arms the watchdog.
    pub fn polled(&mut self, handed_out: bool) {
        match &self.0 {
            State::Off => {}
            State::Watched { progress, .. } => progress.handed_out.set(handed_out.then(Instant::now)),
            State::Unpolled { probe, timeout } => {
                let progress = Rc::new(Progress::default());
                progress.handed_out.set(handed_out.then(Instant::now));
                probe.limit_unsent(UNSENT_BYTES);
                let watchdog = actix_web::rt::spawn(watch(Rc::clone(&progress), probe.weak(), *timeout));
                self.0 = State::Watched { progress, watchdog };
            }
        }
    }

    /// The body is done with (sent, or failed): no watchdog, or no more.
    pub fn stop(&mut self) {
        if let State::Watched { watchdog, .. } = std::mem::replace(&mut self.0, State::Off) {
            watchdog.abort();
        }
    }

    /// Whether the deadline closed the connection.
    pub fn closed(&self) -> bool {
        matches!(&self.0, State::Watched { progress, .. } if progress.closed.get())
    }
}

impl Drop for SendWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Closes the connection of `socket` once `progress` says the body has
/// handed out bytes `timeout` ago and not been polled since. Wakes once a
/// period at most, not at each poll: each wake-up aims at the deadline of
/// the last bytes handed out.
async fn watch(progress: Rc<Progress>, socket: WeakProbe, timeout: Duration) {
    let mut wake = Instant::now() + timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        wake = match progress.handed_out.get() {
            Some(since) if now.duration_since(since) >= timeout => break,
            Some(since) => since + timeout,
            None => now + timeout,
        };
    }
    progress.closed.set(true);
    socket.abort();
}
