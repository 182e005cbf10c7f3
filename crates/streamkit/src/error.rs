//! Error types, one family per operation.
//!
//! Messages are lower-case and name what failed and why. Channel errors convert
//! into `std::io::Error` with a fitting kind, so channels can implement tokio's I/O
//! traits.

use std::io;
use std::sync::Arc;

use crate::wire::reason::{OpenRefusal, ResetCode};

/// Why a connection ended: what happened, and the I/O error under it if there was
/// one (its [`source`](std::error::Error::source)).
#[derive(Debug, Clone)]
pub struct LostReason {
    what: Arc<str>,
    io: Option<Arc<io::Error>>,
}

impl LostReason {
    /// A reason without an I/O error under it.
    pub fn new(what: impl Into<Arc<str>>) -> LostReason {
        LostReason {
            what: what.into(),
            io: None,
        }
    }

    /// The socket (or stream) failed with `io`: described by its kind ("connection
    /// reset", "unexpected end of file"), the error itself being the source.
    pub fn io(io: io::Error) -> LostReason {
        LostReason {
            what: io.kind().to_string().into(),
            io: Some(Arc::new(io)),
        }
    }

    /// What happened, in words (the I/O error, if any, is the source).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The I/O error under the loss, if there was one.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.io.as_deref()
    }

    /// What happened and the I/O error under it, in one line (for events and logs).
    pub(crate) fn full(&self) -> String {
        match &self.io {
            Some(io) => format!("{}: {io}", self.what),
            None => self.what.to_string(),
        }
    }
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for LostReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for LostReason {
    fn eq(&self, other: &LostReason) -> bool {
        self.what == other.what
            && self.io.as_ref().map(|e| e.kind()) == other.io.as_ref().map(|e| e.kind())
    }
}

impl Eq for LostReason {}

impl From<&str> for LostReason {
    fn from(what: &str) -> LostReason {
        LostReason::new(what)
    }
}

impl From<String> for LostReason {
    fn from(what: String) -> LostReason {
        LostReason::new(what)
    }
}

/// Why a read or write on a channel failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The remote peer aborted the channel.
    #[error("channel reset by the remote peer ({code}){}{reason}", if reason.is_empty() { "" } else { ": " })]
    ResetByPeer {
        /// Why.
        code: ResetCode,
        /// The remote's explanation.
        reason: String,
    },
    /// This side aborted the channel with [`reset`](crate::Channel::reset).
    #[error("channel was reset locally")]
    ResetLocally,
    /// The remote closed the channel and reads no more: further writes cannot arrive.
    #[error("the remote peer closed the channel")]
    ClosedByPeer,
    /// The connection carrying the channel is gone. The I/O error under it, if any,
    /// is the [`source`](std::error::Error::source).
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] LostReason),
    /// A frame announced a length over the limit; the channel was reset.
    #[error("frame of {len} bytes is over the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    TruncatedFrame,
    /// A write after `close_write`.
    #[error("channel is closed for writing")]
    WriteClosed,
    /// A read or write after `close`.
    #[error("channel is closed")]
    Closed,
    /// Trailers over the header-size limit.
    #[error("trailers of {len} bytes are over the limit of {max}")]
    TrailersTooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The remote broke the protocol on this channel; it was reset.
    #[error("protocol violation by the remote peer: {0}")]
    Protocol(Arc<str>),
    /// The local peer shut down and the close timeout ran out.
    #[error("peer shut down")]
    Shutdown,
    /// The channel was closed (or its handles dropped) and the remote did not take
    /// what was written within the close timeout: the channel was reset.
    #[error(
        "the remote did not take the data within the close timeout ({0:?}); the channel was reset"
    )]
    CloseTimedOut(std::time::Duration),
    /// A read or write waited longer than the channel's timeout; the channel is
    /// still usable.
    #[error("timed out after {0:?}")]
    TimedOut(std::time::Duration),
    /// The channel this one was opened in closed, which closes its children.
    #[error("the parent channel closed")]
    ParentClosed,
}

impl From<ChannelError> for io::Error {
    fn from(e: ChannelError) -> io::Error {
        let kind = match &e {
            ChannelError::ResetByPeer { .. } => io::ErrorKind::ConnectionReset,
            ChannelError::ResetLocally | ChannelError::Shutdown | ChannelError::ParentClosed => {
                io::ErrorKind::ConnectionAborted
            }
            ChannelError::ClosedByPeer | ChannelError::WriteClosed | ChannelError::Closed => {
                io::ErrorKind::BrokenPipe
            }
            ChannelError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            ChannelError::FrameTooLarge { .. }
            | ChannelError::TrailersTooLarge { .. }
            | ChannelError::Protocol(_) => io::ErrorKind::InvalidData,
            ChannelError::TruncatedFrame => io::ErrorKind::UnexpectedEof,
            ChannelError::TimedOut(_) | ChannelError::CloseTimedOut(_) => io::ErrorKind::TimedOut,
        };
        io::Error::new(kind, e)
    }
}

/// Why [`Peer::open`](crate::Peer::open) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("open {service:?} on peer {peer:?}: {kind}")]
pub struct OpenError {
    /// The peer asked for.
    pub peer: String,
    /// The service asked for.
    pub service: String,
    /// What went wrong.
    pub kind: OpenErrorKind,
}

impl OpenError {
    pub(crate) fn new(peer: &str, service: &str, kind: OpenErrorKind) -> OpenError {
        OpenError {
            peer: peer.to_owned(),
            service: service.to_owned(),
            kind,
        }
    }
}

/// The reason inside an [`OpenError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenErrorKind {
    /// The remote refused the open.
    #[error("{}", .0.description())]
    Refused(OpenRefusal),
    /// No peer of that name was connected, or came within the open wait.
    #[error("no connected peer has that name{}", if .0.is_zero() { String::new() } else { format!(" (waited {:?})", .0) })]
    NoSuchPeer(std::time::Duration),
    /// The service name or headers could not be encoded.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// This side already has as many channels on that connection as allowed.
    #[error("too many channels on this connection (limit {0})")]
    TooManyChannels(usize),
    /// No answer within the open timeout.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection went away.
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] LostReason),
    /// This peer is shutting down.
    #[error("local peer is shutting down")]
    ShuttingDown,
    /// A nested open on a channel that is closed (or closing) on this side.
    #[error("the parent channel is closed")]
    ParentClosed,
    /// Through a hub: the hub could not reach the peer, or the session with it
    /// failed (its key not trusted, the name not what the hub vouched for, ...).
    #[error("through hub {hub:?}: {why}")]
    Relay {
        /// The hub's name.
        hub: String,
        /// What went wrong, in words.
        why: String,
    },
}

/// Why [`Peer::bind`](crate::Peer::bind) or [`Peer::unbind`](crate::Peer::unbind) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The endpoint could not be parsed.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// A live process already listens on that Unix socket.
    #[error("bind {0}: address in use by a live peer")]
    InUse(String),
    /// The socket could not be created.
    #[error("bind {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `unbind` of an endpoint that is not bound.
    #[error("{0} is not bound")]
    NotBound(String),
    /// The peer is shut down.
    #[error("peer is shut down")]
    ShutDown,
}

/// Why [`Peer::connect`](crate::Peer::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint could not be parsed.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// The socket could not be connected.
    #[error("connect {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server's host key is not trusted.
    #[error("connect {endpoint}: host key {fingerprint} of peer {name:?} is not trusted")]
    UntrustedHostKey {
        /// The endpoint.
        endpoint: String,
        /// The server's claimed name.
        name: String,
        /// SHA-256 fingerprint of the offered key.
        fingerprint: String,
    },
    /// `known_hosts` lists other keys for this host: possible man in the middle.
    #[error(
        "connect {endpoint}: host key mismatch: {fingerprint} is not the key known_hosts has for this host"
    )]
    HostKeyMismatch {
        /// The endpoint.
        endpoint: String,
        /// SHA-256 fingerprint of the offered key.
        fingerprint: String,
    },
    /// The server refused our credentials.
    #[error("connect {endpoint}: authentication failed: {why}")]
    AuthRejected {
        /// The endpoint.
        endpoint: String,
        /// Which credential was refused.
        why: String,
    },
    /// The remote is an SSH server but not a Streamkit peer.
    #[error("connect {endpoint}: not a streamkit peer (remote software {software:?})")]
    NotStreamkit {
        /// The endpoint.
        endpoint: String,
        /// Software version the remote announced.
        software: String,
    },
    /// The remote's peer name is held here by a live connection that proved
    /// another identity (see `docs/PROTOCOL.md` §3).
    #[error("connect {endpoint}: {why}")]
    NameHeld {
        /// The endpoint.
        endpoint: String,
        /// Which name, held by whom.
        why: String,
    },
    /// The remote is a Streamkit peer speaking another version of the protocol.
    #[error(
        "connect {endpoint}: unsupported protocol version {version} (this peer speaks streamkit={})",
        crate::wire::PROTOCOL_VERSION
    )]
    UnsupportedVersion {
        /// The endpoint.
        endpoint: String,
        /// The version the remote announced.
        version: u32,
    },
    /// The handshake did not finish within the handshake timeout.
    #[error("connect {endpoint}: handshake timed out after {timeout:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The SSH handshake failed.
    #[error("connect {endpoint}: handshake failed: {why}")]
    Handshake {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        why: String,
    },
    /// The endpoint is already connected.
    #[error("{0} is already connected")]
    AlreadyConnected(String),
    /// `disconnect` (or `drop_peer`, or `shutdown`) stopped this `connect` before it
    /// succeeded.
    #[error("connect {0}: cancelled by disconnect")]
    Cancelled(String),
    /// `disconnect` of an endpoint that is not connected.
    #[error("{0} is not connected")]
    NotConnected(String),
    /// The peer is shut down.
    #[error("peer is shut down")]
    ShutDown,
}

/// Why a peer could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An invalid peer name.
    #[error(transparent)]
    Name(#[from] crate::wire::ident::IdentError),
    /// An option is out of range.
    #[error("invalid option {option}: {why}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// Why a key or trust file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The key could not be parsed.
    #[error("{what}: {why}")]
    Parse {
        /// What was being parsed (a path, or "key").
        what: String,
        /// Why it failed.
        why: String,
    },
    /// The key is not ed25519.
    #[error("{0}: only ed25519 identity keys are supported")]
    Unsupported(String),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_lost_connection_says_why_once_and_keeps_its_cause() {
        let e = ChannelError::ConnectionLost(LostReason::io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "early eof",
        )));
        assert_eq!(e.to_string(), "connection lost: unexpected end of file");
        let reason = e.source().expect("the reason");
        let io = reason.source().expect("the I/O error");
        assert_eq!(io.to_string(), "early eof");
        let plain = ChannelError::ConnectionLost("peer disconnected".into());
        assert_eq!(plain.to_string(), "connection lost: peer disconnected");
        assert!(plain.source().and_then(|r| r.source()).is_none());
    }
}
