//! Channels inside channels: a child's parent, a parent's children, and the
//! children waiting for the parent's `accept`.
//!
//! A child is named by its parent's open id on the wire (the table knows it by
//! key). Children waiting to be accepted count against the limit per parent and
//! per connection; a child that finished before it was accepted keeps its data (as
//! a TCP connection in a listen backlog does), one that was reset leaves the queue
//! at once. A parent that closes (its application closed, reset or dropped it, or
//! its SSH channel closed) resets its children and refuses new ones; the work is a
//! loop, not a recursion, since a remote can nest thousands deep.
//!
//! Children are taken only where an application will see them: not on a channel
//! whose handles were all dropped, nor on a standard client's session, nor on a
//! channel whose application said it takes none (`refuse_children`, or the peer's
//! `accept_children` option), all refused "parent does not accept channels". The
//! default is to take them, so that a child opened the moment its parent is open
//! is never refused for arriving before the application's first `accept`.

use std::collections::{BTreeSet, VecDeque};

use super::{ChannelKey, ConnectionState, Holder};
use crate::error::ChannelError;
use crate::wire::reason::OpenRefusal;

/// A channel's place among nested channels.
#[derive(Debug, Default)]
pub(super) struct Nest {
    parent: Option<ChannelKey>,
    /// Live children (open at the SSH level).
    children: BTreeSet<ChannelKey>,
    /// Children the remote opened, waiting for `accept`.
    queue: VecDeque<ChannelKey>,
    door: Door,
}

/// Whether a channel takes children.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// Children are taken into the accept queue.
    #[default]
    Open,
    /// The application takes none: each is refused.
    Refusing,
    /// The channel closed its children: none can come any more.
    Closed,
}

impl Nest {
    pub(super) fn parent(&self) -> Option<ChannelKey> {
        self.parent
    }

    pub(super) fn child_count(&self) -> usize {
        self.children.len()
    }

    pub(super) fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Whether children may still arrive (the channel did not close them).
    pub(super) fn accepts(&self) -> bool {
        self.door != Door::Closed
    }

    /// Whether the application refuses children.
    pub(super) fn refuses(&self) -> bool {
        self.door == Door::Refusing
    }
}

impl ConnectionState {
    /// Makes `child` a child of `parent`. A parent that no longer takes children
    /// resets the child at once.
    pub(super) fn adopt(&mut self, parent: ChannelKey, child: ChannelKey) {
        let takes = self
            .entries
            .get(&parent)
            .is_some_and(|p| p.nest.accepts() && p.state.accepts_children());
        if let Some(c) = self.entries.get_mut(&child) {
            c.nest.parent = Some(parent);
        }
        if !takes {
            self.with(child, |s| ((), s.on_parent_closed()));
            return;
        }
        let first = match self.entries.get_mut(&parent) {
            Some(p) => {
                p.nest.children.insert(child);
                p.nest.children.len() == 1
            }
            None => false,
        };
        if first {
            self.with(parent, |s| ((), s.set_has_children(true)));
        }
    }

    /// `child` waits in `parent`'s accept queue.
    pub(super) fn enqueue(&mut self, parent: ChannelKey, child: ChannelKey) {
        if let Some(p) = self.entries.get_mut(&parent) {
            p.nest.queue.push_back(child);
            self.queued_children += 1;
            self.wake.accept.push(parent);
        }
    }

    /// `child` leaves `parent`'s accept queue without being accepted.
    pub(super) fn unqueue(&mut self, child: ChannelKey, parent: Option<ChannelKey>) {
        let Some(p) = parent.and_then(|p| self.entries.get_mut(&p)) else {
            return;
        };
        if let Some(i) = p.nest.queue.iter().position(|k| *k == child) {
            p.nest.queue.remove(i);
            self.queued_children -= 1;
        }
    }

    /// `child`'s SSH channel closed: its parent forgets it (a queued child stays in
    /// the queue with its data, unless it failed).
    pub(super) fn leave_parent(&mut self, child: ChannelKey) {
        let Some(parent) = self.entries.get(&child).and_then(|c| c.nest.parent) else {
            return;
        };
        let last = match self.entries.get_mut(&parent) {
            Some(p) => p.nest.children.remove(&child) && p.nest.children.is_empty(),
            None => false,
        };
        if last {
            self.with(parent, |s| ((), s.set_has_children(false)));
        }
    }

    /// The next child waiting in `parent`'s queue: `Ok(None)` while none waits,
    /// `Err` once none can come any more.
    pub(crate) fn poll_accept_child(
        &mut self,
        parent: ChannelKey,
    ) -> Result<Option<ChannelKey>, ChannelError> {
        let Some(p) = self.entries.get_mut(&parent) else {
            return Err(ChannelError::Closed);
        };
        match p.nest.queue.pop_front() {
            Some(child) => {
                self.queued_children -= 1;
                if let Some(c) = self.entries.get_mut(&child) {
                    c.holder = Holder::App {
                        reader: true,
                        writer: true,
                    };
                }
                self.accepted(child);
                Ok(Some(child))
            }
            None if p.nest.door != Door::Open || !p.state.accepts_children() => {
                Err(ChannelError::Closed)
            }
            None => Ok(None),
        }
    }

    /// The application takes no children on `parent`: those waiting are refused
    /// (reset), and new ones too.
    pub(crate) fn refuse_children(&mut self, parent: ChannelKey) {
        let Some(p) = self.entries.get_mut(&parent) else {
            return;
        };
        if p.nest.door != Door::Open {
            return;
        }
        p.nest.door = Door::Refusing;
        for child in self.refuse_queued(parent) {
            self.close_children(child);
        }
    }

    /// Resets the children waiting in `parent`'s queue (never accepted: their
    /// entries go once closed) and returns them, whose own children are the
    /// caller's to close.
    fn refuse_queued(&mut self, parent: ChannelKey) -> Vec<ChannelKey> {
        let Some(p) = self.entries.get_mut(&parent) else {
            return Vec::new();
        };
        let queued: Vec<ChannelKey> = p.nest.queue.drain(..).collect();
        self.queued_children -= queued.len();
        self.wake.accept.push(parent);
        for &child in &queued {
            if let Some(c) = self.entries.get_mut(&child) {
                c.holder = Holder::Released;
            }
            self.with(child, |s| ((), s.reset()));
            self.maybe_remove(child);
        }
        queued
    }

    /// Whether `parent` takes a child now: `Err` with why not.
    pub(super) fn takes_child(&self, parent: ChannelKey) -> Result<(), OpenRefusal> {
        let Some(p) = self.entries.get(&parent) else {
            return Err(OpenRefusal::ParentNotFound);
        };
        // A parent we are still opening takes children too: the remote confirmed it
        // (it opens inside it), however far our opener's task has got.
        if !p.state.accepts_children() || !p.nest.accepts() {
            return Err(OpenRefusal::ParentNotFound);
        }
        let seen = matches!(
            p.holder,
            Holder::Opener | Holder::Queued | Holder::Waiting | Holder::App { .. }
        );
        if !seen || p.nest.refuses() || !self.limits.accept_children {
            return Err(OpenRefusal::ChildrenRefused);
        }
        if p.nest.queue_len() >= self.limits.max_pending_accepts
            || self.queued_children >= self.limits.max_pending_accepts
        {
            return Err(OpenRefusal::AcceptQueueFull);
        }
        Ok(())
    }

    /// `parent` closed: its children are reset and those waiting to be accepted
    /// refused, down the whole tree.
    pub(super) fn close_children(&mut self, parent: ChannelKey) {
        let mut work = vec![parent];
        while let Some(p) = work.pop() {
            let Some(e) = self.entries.get_mut(&p) else {
                continue;
            };
            // A closed parent takes no children, and its own were seen to when it
            // closed: walking them again would make a deep tree quadratic.
            if e.nest.door == Door::Closed {
                continue;
            }
            e.nest.door = Door::Closed;
            let children: Vec<ChannelKey> = e.nest.children.iter().copied().collect();
            let queued = self.refuse_queued(p);
            work.extend(queued);
            for child in children {
                self.with(child, |s| ((), s.on_parent_closed()));
                work.push(child);
            }
        }
    }
}
