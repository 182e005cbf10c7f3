//! Incoming top-level channels waiting for the application's `accept`, from any
//! connection of a peer. A place is reserved before the SSH open is accepted, so a
//! full queue refuses the open instead of holding it. A channel the remote reset
//! while it waited is never handed out and gives its place up: a remote that opens
//! and resets channels cannot fill the queue. One that finished cleanly keeps its
//! place and its data (a TCP listen backlog does the same). Taking a channel from
//! the queue is what opens its window beyond the initial credit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::driver::lock;
use super::handle::Channel;

/// A queue of channels (see the module docs).
#[derive(Default)]
pub(crate) struct AcceptQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Channel>,
    reserved: usize,
    closed: bool,
    /// Reservations refused for a full queue since the last purge.
    full: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Channels nobody accepted are reset, so their openers see an error.
        for ch in self.queue.drain(..) {
            refuse(ch);
        }
    }
}

/// Resets a channel the application never took.
fn refuse(ch: Channel) {
    let key = ch.key();
    ch.conn().step(|s| s.refuse_unaccepted(key));
}

/// A full queue looks for dead channels at the first refused reservation and
/// then at every this many.
const PURGE_EVERY: usize = 64;

/// Whether a queued channel was reset while it waited.
fn was_reset(ch: &Channel) -> bool {
    let key = ch.key();
    ch.conn().step(|s| s.was_reset(key))
}

/// Removes the channels that were reset while they waited; they are dropped
/// (released) by the caller, outside the queue's lock.
fn purge(queue: &mut VecDeque<Channel>) -> Vec<Channel> {
    let mut gone = Vec::new();
    let mut i = 0;
    while i < queue.len() {
        if was_reset(&queue[i]) {
            gone.extend(queue.remove(i));
        } else {
            i += 1;
        }
    }
    gone
}

/// A place in an accept queue, taken before the SSH open is accepted.
pub(crate) struct AcceptSlot {
    queue: Arc<AcceptQueue>,
    used: bool,
}

impl AcceptSlot {
    /// Queues the channel (reset at once if the queue closed meanwhile).
    pub(crate) fn push(mut self, ch: Channel) {
        self.used = true;
        let mut q = lock(&self.queue.inner);
        q.reserved -= 1;
        if q.closed {
            drop(q);
            refuse(ch);
            return;
        }
        q.queue.push_back(ch);
        drop(q);
        self.queue.notify.notify_waiters();
    }
}

impl Drop for AcceptSlot {
    fn drop(&mut self) {
        if !self.used {
            lock(&self.queue.inner).reserved -= 1;
        }
    }
}

impl AcceptQueue {
    /// A place, if fewer than `max` channels wait or are on their way.
    pub(crate) fn reserve(self: &Arc<Self>, max: usize) -> Option<AcceptSlot> {
        // Dropped after the lock (declared before it): a dropped channel steps its
        // connection.
        let _gone;
        let mut q = lock(&self.inner);
        if !q.closed && q.queue.len() + q.reserved >= max {
            // Full: channels that died while they waited give their places up.
            // Looking costs a step per channel, so not at every refused open.
            if q.full.is_multiple_of(PURGE_EVERY) {
                _gone = purge(&mut q.queue);
            }
            q.full += 1;
        }
        if q.closed || q.queue.len() + q.reserved >= max {
            return None;
        }
        q.reserved += 1;
        Some(AcceptSlot {
            queue: self.clone(),
            used: false,
        })
    }

    /// Admits no more channels; those already queued can still be accepted.
    pub(crate) fn close(&self) {
        lock(&self.inner).closed = true;
        self.notify.notify_waiters();
    }

    /// The next channel; `None` once the queue is closed and empty. Cancel-safe.
    pub(crate) async fn pop(&self) -> Option<Channel> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            loop {
                let Some(ch) = lock(&self.inner).queue.pop_front() else {
                    break;
                };
                let key = ch.key();
                if ch.conn().step(|s| s.accepted(key)) {
                    return Some(ch);
                }
                // Reset while it waited: dropped here (released), never handed out.
            }
            if lock(&self.inner).closed {
                return None;
            }
            notified.await;
        }
    }
}
