//! The memory budget: what the remote can make this side hold, counted per
//! connection and over all of a peer's connections.
//!
//! Each channel is charged the credit it granted and the remote has not used, plus
//! the bytes it holds (unread data and error frames, a frame being assembled), and
//! never less than the initial credit while the remote may still send: that much
//! the protocol gives every channel, so it is reserved when the channel opens (an
//! incoming open the budget cannot hold is refused) and a channel can always make
//! progress. Each channel also costs its open request's size. Windows grow beyond
//! the initial credit only while three quarters of the budget or less is charged:
//! credit once granted cannot be taken back, so the last quarter is kept for the
//! reservations of new channels, which a connection full of grown windows would
//! otherwise refuse. A grant the budget cut short is retried as other channels
//! release memory, oldest first.
//!
//! The peer's total is an atomic counter shared by its connections (no lock), and
//! so is the total of each remote address's connections (so one client cannot
//! take the peer's whole budget by opening connections); a connection's own total
//! is plain. A connection that goes releases everything it was charged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ChannelKey;

/// A budget shared by several connections: the peer's, or one remote address's.
#[derive(Debug)]
pub(crate) struct PeerBudget {
    used: AtomicU64,
    max: u64,
}

impl PeerBudget {
    pub(crate) fn new(max: u64) -> Arc<PeerBudget> {
        Arc::new(PeerBudget {
            used: AtomicU64::new(0),
            max,
        })
    }

    /// Bytes charged now, over every connection.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Room for growth (see the module docs).
    fn free(&self) -> u64 {
        growth_cap(self.max).saturating_sub(self.used())
    }

    fn admits(&self, n: u64) -> bool {
        self.used() + n <= self.max
    }
}

/// The most a budget of `max` may be charged by grown windows.
fn growth_cap(max: u64) -> u64 {
    max / 4 * 3
}

/// One connection's budget.
#[derive(Debug)]
pub(super) struct Budget {
    used: u64,
    max: u64,
    peer: Arc<PeerBudget>,
    /// The share of the connections from the same remote address, if accepted.
    address: Option<Arc<PeerBudget>>,
    /// Channels whose grant the budget cut short, oldest first.
    starved: VecDeque<ChannelKey>,
}

impl Budget {
    pub(super) fn new(max: u64, peer: Arc<PeerBudget>, address: Option<Arc<PeerBudget>>) -> Budget {
        Budget {
            used: 0,
            max,
            peer,
            address,
            starved: VecDeque::new(),
        }
    }

    /// Bytes charged on this connection now.
    #[cfg(test)]
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    /// Bytes a channel's window may still grow by, by this connection's and the
    /// peer's budgets.
    pub(super) fn free(&self) -> u64 {
        let mut free = growth_cap(self.max)
            .saturating_sub(self.used)
            .min(self.peer.free());
        if let Some(a) = &self.address {
            free = free.min(a.free());
        }
        free
    }

    /// Bytes a channel assembling a frame may still be charged: up to the whole
    /// budget, not only the growth room (a frame larger than the window must be
    /// able to complete, or its channel would stall with no credit to give).
    pub(super) fn hard_free(&self) -> u64 {
        let mut free = self
            .max
            .saturating_sub(self.used)
            .min(self.peer.max.saturating_sub(self.peer.used()));
        if let Some(a) = &self.address {
            free = free.min(a.max.saturating_sub(a.used()));
        }
        free
    }

    /// Whether both budgets can take `n` more bytes of reservations.
    pub(super) fn admits(&self, n: u64) -> bool {
        self.used + n <= self.max
            && self.peer.admits(n)
            && self.address.as_ref().is_none_or(|a| a.admits(n))
    }

    /// A channel's charge went from `before` to `after`.
    pub(super) fn change(&mut self, before: u64, after: u64) {
        if after > before {
            self.add(after - before);
        } else {
            self.release(before - after);
        }
    }

    pub(super) fn add(&mut self, n: u64) {
        if n > 0 {
            self.used += n;
            self.peer.used.fetch_add(n, Ordering::Relaxed);
            if let Some(a) = &self.address {
                a.used.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn release(&mut self, n: u64) {
        let n = n.min(self.used);
        if n > 0 {
            self.used -= n;
            self.peer.used.fetch_sub(n, Ordering::Relaxed);
            if let Some(a) = &self.address {
                a.used.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// `key`'s grant was cut short (it is in the queue once: see `Entry::starved`).
    pub(super) fn starve(&mut self, key: ChannelKey) {
        self.starved.push_back(key);
    }

    /// The channel to retry next, if any and the budget has room worth a grant.
    pub(super) fn next_starved(&mut self, min_room: u64) -> Option<ChannelKey> {
        if self.free() < min_room {
            return None;
        }
        self.starved.pop_front()
    }

    pub(super) fn has_starved(&self) -> bool {
        !self.starved.is_empty()
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.peer.used.fetch_sub(self.used, Ordering::Relaxed);
        if let Some(a) = &self.address {
            a.used.fetch_sub(self.used, Ordering::Relaxed);
        }
    }
}
