//! What happens to a peer's connections and channels, as a stream of events.

use std::time::Duration;

use tokio::sync::broadcast;

/// Something that happened to a peer's connections or channels.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A connection completed its handshake.
    Connected {
        /// The remote peer's name.
        peer: String,
        /// The dialled endpoint, or where an accepted connection came from.
        endpoint: String,
        /// Whether this side dialled (`connect`), as opposed to accepted.
        dialed: bool,
    },
    /// A connection ended; its channels have failed.
    Disconnected {
        /// The remote peer's name.
        peer: String,
        /// As in `Connected`.
        endpoint: String,
        /// Why (closed, lost, keepalive timeout, ...).
        reason: String,
    },
    /// An endpoint given to `connect` is about to be dialled again.
    Reconnecting {
        /// The endpoint.
        endpoint: String,
        /// Which attempt this will be (1 for the first retry).
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// Why the previous attempt or the connection failed.
        error: String,
    },
    /// An endpoint reached its attempt limit and is no longer dialled.
    GaveUp {
        /// The endpoint.
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// An accepted socket was refused before its handshake, for a limit (see
    /// [`PeerStats::refused`](crate::PeerStats::refused)).
    Refused {
        /// Where it came from.
        endpoint: String,
        /// Which limit, as the remote was told.
        reason: String,
    },
    /// A channel was opened, by either side.
    ChannelOpened {
        /// The remote peer's name.
        peer: String,
        /// The service.
        service: String,
        /// Whether this side opened it.
        local: bool,
    },
    /// A channel was closed (or failed with its connection).
    ChannelClosed {
        /// The remote peer's name.
        peer: String,
        /// The service.
        service: String,
    },
    /// A hub this peer dialled says a peer is reachable through it (presence).
    Reachable {
        /// The peer's name.
        peer: String,
        /// The hub's name.
        via: String,
    },
    /// A peer is no longer reachable through a hub (it left, or the hub is gone).
    Unreachable {
        /// The peer's name.
        peer: String,
        /// The hub's name.
        via: String,
    },
    /// A hub made a relay from one of its peers to another.
    Relayed {
        /// The calling peer.
        from: String,
        /// The peer reached.
        to: String,
    },
    /// A hub refused a relay (policy, a limit, the target gone or refusing).
    RelayRefused {
        /// The calling peer.
        from: String,
        /// The peer it asked for.
        to: String,
        /// Why, as the caller was told.
        reason: String,
    },
    /// A hub cut a relay short for one of its caps (bytes, time); both ends were
    /// told why (see [`HubConfig`](crate::hub::HubConfig)).
    RelayCut {
        /// The calling peer.
        from: String,
        /// The peer reached.
        to: String,
        /// Which cap.
        reason: String,
    },
    /// This subscriber fell behind and missed this many events.
    Missed(u64),
}

/// Events of one peer; see [`Peer::events`](crate::Peer::events).
///
/// Each subscriber gets every event from the moment it subscribed, buffered up to
/// 1,024; one that falls further behind gets [`Event::Missed`] and continues.
#[derive(Debug)]
pub struct Events {
    rx: broadcast::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<Event>) -> Events {
        Events { rx }
    }

    /// The next event; `None` once the peer is gone. Cancel-safe.
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::Missed(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Capacity of the event buffer per subscriber.
pub(crate) const CAPACITY: usize = 1024;

/// Sends events to whoever subscribed (nothing is buffered without subscribers).
#[derive(Debug)]
pub(crate) struct Emitter {
    tx: broadcast::Sender<Event>,
}

impl Default for Emitter {
    fn default() -> Emitter {
        Emitter {
            tx: broadcast::Sender::new(CAPACITY),
        }
    }
}

impl Emitter {
    pub(crate) fn emit(&self, e: impl FnOnce() -> Event) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(e());
        }
    }

    pub(crate) fn subscribe(&self) -> Events {
        Events::new(self.tx.subscribe())
    }
}
