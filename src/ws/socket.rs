//! The TCP socket under a WebSocket, so that a client the server gave up on can be cut off.
//!
//! Closing a WebSocket is a frame sent after everything queued before it. A client that stopped
//! reading never takes that frame: the HTTP server's write waits on a full kernel send queue
//! (megabytes of it) for as long as the peer keeps the connection open, holding a file
//! descriptor and kernel memory outside any limit. So every connection's socket is kept beside
//! it ([`remember`], a duplicate of its descriptor), and a session the server ends for the
//! client's fault ([`ClientSocket::abort`]) is reset once [`WS_ABORT_AFTER_CLOSE`] has given
//! the close frame its chance: `SO_LINGER` 0 discards the unsent bytes and sends a reset, and
//! the shutdown wakes the server's pending write, which fails and drops the connection.
//!
//! [`WS_ABORT_AFTER_CLOSE`]: crate::limits::WS_ABORT_AFTER_CLOSE

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use socket2::Socket;
use std::any::Any;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

/// A connection's socket, shared by its WebSocket session (a duplicated descriptor).
#[derive(Clone)]
pub struct ClientSocket(Arc<Socket>);

impl ClientSocket {
    /// Resets the connection: unsent bytes are discarded and the server's own write fails.
    pub fn abort(&self) {
        // Errors mean the connection is already gone, which is the goal.
        let _ = self.0.set_linger(Some(Duration::ZERO));
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// `HttpServer::on_connect`: keeps a duplicate of each TCP connection's socket in the
/// connection's data, where the WebSocket upgrade finds it. Dropped with the connection.
pub fn remember(connection: &dyn Any, data: &mut Extensions) {
    let Some(tcp) = connection.downcast_ref::<TcpStream>() else {
        return;
    };
    match tcp.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            data.insert(ClientSocket(Arc::new(Socket::from(fd))));
        }
        Err(e) => tracing::warn!(error = %e, "cannot keep the connection's socket"),
    }
}
