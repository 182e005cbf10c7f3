//! [`ServiceListener`]: the channels of one service, in a queue of their own.

use std::sync::{Arc, Weak};

use super::{AcceptError, PeerInner};
use crate::connection::accept::AcceptQueue;
use crate::connection::driver::lock;
use crate::connection::handle::{Channel, ChannelMeta};

/// The channels of one service, taken out of [`Peer::accept`](crate::Peer::accept) by [`Peer::listen`](crate::Peer::listen).
pub struct ServiceListener {
    pub(super) peer: Weak<PeerInner>,
    pub(super) service: String,
    pub(super) queue: Arc<AcceptQueue>,
}

impl std::fmt::Debug for ServiceListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceListener")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceListener {
    /// Waits for the next channel opened for this service. Cancel-safe. Fails once
    /// the peer shuts down (channels that arrived before are still returned).
    pub async fn accept(&self) -> Result<(ChannelMeta, Channel), AcceptError> {
        let ch = self.queue.pop().await.ok_or(AcceptError::ShutDown)?;
        Ok((ch.meta().clone(), ch))
    }

    /// The service this listener takes.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl ServiceListener {
    /// Gives the service back now (as dropping the listener does): opens for it
    /// are refused from here on, [`accept`](Self::accept) returns what was already
    /// queued and then fails, and the service can be listened to again at once.
    pub fn close(&self) {
        if let Some(peer) = self.peer.upgrade() {
            let mut listened = lock(&peer.listened);
            if listened
                .get(&self.service)
                .is_some_and(|q| Arc::ptr_eq(q, &self.queue))
            {
                listened.remove(&self.service);
            }
        }
        // Channels that arrive from now on are refused; those waiting are reset
        // when the last reference to the queue goes.
        self.queue.close();
    }
}

impl Drop for ServiceListener {
    fn drop(&mut self) {
        self.close();
    }
}
