//! Noticing that a client left while the gateway waits on the upstream.
//!
//! actix-web keeps running a handler after its client disconnected (it
//! only finds out when it next writes). So each connection gets a probe: a
//! second handle on its socket that a handler can await, which resolves when
//! the client's side is closed. The gateway then drops the upstream call at
//! once instead of paying for an answer nobody will read.

use std::any::Any;
use std::os::fd::AsFd;
use std::rc::{Rc, Weak};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

/// A connection's probe, stored in its connection data.
#[derive(Debug, Clone)]
pub struct ClientProbe(Rc<tokio::net::TcpStream>);

impl ClientProbe {
    /// Attaches a probe to a new connection (for `HttpServer::on_connect`).
    pub fn attach(connection: &dyn Any, data: &mut Extensions) {
        let Some(stream) = connection.downcast_ref::<TcpStream>() else {
            return;
        };
        match Self::of(stream) {
            Ok(probe) => {
                data.insert(probe);
            }
            Err(error) => tracing::warn!(%error, "no disconnect probe for this connection"),
        }
    }

    fn of(stream: &TcpStream) -> std::io::Result<Self> {
        let socket = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
        socket.set_nonblocking(true)?;
        Ok(Self(Rc::new(tokio::net::TcpStream::from_std(socket)?)))
    }

    /// Closes the connection without an answer: the client is gone, and a
    /// client that only half-closed its side must not read a status that is
    /// meant for the logs (499). The server's own write then fails, and the
    /// connection ends.
    pub fn close(&self) {
        if let Err(error) = socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Both) {
            tracing::debug!(%error, "closing a left client's connection");
        }
    }

    /// Shuts the connection `after` from now, if the server has not closed
    /// it by then. Not at once: an answer written on a socket closed with
    /// the client's bytes still unread is lost to a reset.
    pub fn close_after(&self, after: std::time::Duration) {
        let socket = self.weak();
        actix_web::rt::spawn(async move {
            actix_web::rt::time::sleep(after).await;
            socket.shut("closing a connection whose body was not read");
        });
    }

    /// A handle on the connection for a timer: it does not keep the socket
    /// open, so the connection's own end (its last handle dropped) never
    /// waits for the timer.
    pub fn weak(&self) -> WeakProbe {
        WeakProbe(Rc::downgrade(&self.0))
    }

    /// Keeps at most `bytes` of answer waiting in the kernel for the client
    /// to take (`TCP_NOTSENT_LOWAT`), instead of up to the send buffer's
    /// 4 MiB: what a slow client has not taken stays in the gateway's
    /// hands, where the send deadline sees it, and the kernel asks for more
    /// as soon as the client has taken half of it.
    pub fn limit_unsent(&self, bytes: u32) {
        if let Err(error) = socket2::SockRef::from(&*self.0).set_tcp_notsent_lowat(bytes) {
            tracing::debug!(%error, "limiting a connection's unsent bytes");
        }
    }

    /// Resolves when the client has closed its side of the connection (or it
    /// broke). Never resolves while the connection is open, or when the
    /// client has already sent more bytes (a pipelined request): those are
    /// left for the server to read.
    pub async fn gone(&self) {
        let mut byte = [0_u8; 1];
        loop {
            match self.0.peek(&mut byte).await {
                Ok(0) => return,
                Ok(_) => std::future::pending::<()>().await,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// A connection's probe that does not keep its socket open (see
/// [`ClientProbe::weak`]).
#[derive(Debug, Clone)]
pub struct WeakProbe(Weak<tokio::net::TcpStream>);

impl WeakProbe {
    /// Shuts the connection if it is still open; `why` names the closing in
    /// the debug line of a failure.
    fn shut(&self, why: &'static str) {
        if let Some(socket) = self.0.upgrade()
            && let Err(error) = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Both)
        {
            tracing::debug!(%error, "{why}");
        }
    }

    /// Shuts the connection if it is still open, and has its last close
    /// reset it (`SO_LINGER` 0) rather than leave what the client never
    /// took queued in the kernel: the server's own write then fails, and
    /// the connection and its answer are dropped.
    pub fn abort(&self) {
        if let Some(socket) = self.0.upgrade()
            && let Err(error) = socket2::SockRef::from(&*socket).set_linger(Some(std::time::Duration::ZERO))
        {
            tracing::debug!(%error, "resetting a connection whose client stopped reading");
        }
        self.shut("closing a connection whose client stopped reading");
    }
}
