//! Remote forwards for standard SSH clients (`ssh -R`).
//!
//! A standard client asks the server, with SSH's `tcpip-forward` request, to
//! listen on a port and hand it every connection made there. A peer takes these
//! requests only if its configuration has a [`RemoteForward`] hook
//! ([`PeerConfig::with_remote_forward`](crate::PeerConfig::with_remote_forward)):
//! the hook decides, listens, and for each visitor opens a channel to the client
//! with [`Forwarder::open`]. The library keeps the SSH side: it answers the
//! request with the port, sends each visitor as a `forwarded-tcpip` channel (plain
//! bytes, flow-controlled by SSH's window), and ends the forward
//! ([`Forwarder::closed`]) when the client cancels it or goes.
//!
//! Streamkit peers do not use this: between peers, the same shape is a service of
//! the application's own (the CLI's `expose`).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::connection::handle::Channel;
use crate::connection::{Conn, ForwardedTcpip};
use crate::error::{OpenError, OpenErrorKind};
use crate::trust::RemoteIdentity;

/// Most remote forwards one connection may hold at once: each is a listening
/// socket on this side. A client asking for more is refused.
pub const MAX_REMOTE_FORWARDS_PER_CONNECTION: usize = 16;

/// Takes standard SSH clients' remote-forward requests (`ssh -R`).
///
/// Called on the connection's I/O task, which waits for the answer: bind the
/// listener and return, do not block (accept visitors on a task of your own).
pub trait RemoteForward: Send + Sync + 'static {
    /// `request` asks that connections to its address and port on this side go to
    /// the client. Listen there (or on a port of your choosing when it asks for
    /// port 0) and return the port listened on; or refuse, with why (for the log:
    /// the client is only told the request failed).
    fn listen(&self, request: ForwardRequest) -> Result<u16, String>;
}

/// A standard client's request for a remote forward.
#[derive(Debug)]
#[non_exhaustive]
pub struct ForwardRequest {
    /// The client's peer name (its SSH user name).
    pub peer: String,
    /// What it proved when it connected.
    pub identity: RemoteIdentity,
    /// The address it asks this side to listen on, as it sent it (`""`,
    /// `localhost`, `0.0.0.0`, an IP address).
    pub address: String,
    /// The port it asks for; 0 for any.
    pub port: u16,
    /// Opens a channel to the client per visitor.
    pub forwarder: Forwarder,
}

/// Opens a channel to the client of a remote forward for each visitor; tells
/// when the forward ends. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    conn: Weak<Conn>,
    address: String,
    /// The port listened on, once the hook answered.
    port: Arc<std::sync::OnceLock<u16>>,
    /// Ends (the sender is dropped) when the client cancels or its connection goes.
    ended: watch::Receiver<()>,
}

/// The connection's side of a forward: dropping it ends the forward.
#[derive(Debug)]
pub(crate) struct ForwardEnd {
    _ended: watch::Sender<()>,
    port: Arc<std::sync::OnceLock<u16>>,
}

impl ForwardEnd {
    /// Records the port the hook listens on.
    pub(crate) fn listening(&self, port: u16) {
        let _ = self.port.set(port);
    }
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("peer", &self.peer())
            .field("address", &self.address)
            .field("port", &self.port.get())
            .field("ended", &self.is_ended())
            .finish()
    }
}

impl Forwarder {
    /// A forwarder for a request on `conn`, and the end its connection keeps.
    pub(crate) fn new(conn: &Arc<Conn>, address: &str) -> (Forwarder, ForwardEnd) {
        let (tx, rx) = watch::channel(());
        let port = Arc::new(std::sync::OnceLock::new());
        (
            Forwarder {
                conn: Arc::downgrade(conn),
                address: address.to_owned(),
                port: port.clone(),
                ended: rx,
            },
            ForwardEnd { _ended: tx, port },
        )
    }

    /// Opens a channel to the client for a visitor that connected from
    /// `visitor`: the client connects it to its local target. The channel
    /// carries plain bytes (no frames, no trailers); [`Channel::close_write`] is
    /// SSH's EOF. Fails if the forward has ended or the client refuses.
    pub async fn open(&self, visitor: SocketAddr) -> Result<Channel, OpenError> {
        let fail = |kind| OpenError::new(&self.peer(), "forwarded-tcpip", kind);
        let conn = match self.conn.upgrade() {
            Some(c) if !self.is_ended() => c,
            _ => {
                return Err(fail(OpenErrorKind::ConnectionLost(
                    "the remote forward has ended".into(),
                )));
            }
        };
        let forward = ForwardedTcpip {
            connected_address: self.address.clone(),
            connected_port: u32::from(self.port.get().copied().unwrap_or(0)),
            originator_address: visitor.ip().to_string(),
            originator_port: u32::from(visitor.port()),
        };
        conn.open_forwarded(forward).await.map_err(fail)
    }

    /// Resolves when the forward ends: the client cancelled it or its connection
    /// ended. Stop listening then.
    pub async fn closed(&self) {
        let mut ended = self.ended.clone();
        while ended.changed().await.is_ok() {}
    }

    /// Whether the forward has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.has_changed().is_err()
    }

    fn peer(&self) -> String {
        self.conn
            .upgrade()
            .map_or_else(String::new, |c| c.info.remote_name.clone())
    }
}
