//! The state of a channel shared between its handles, the connection's I/O task
//! (which feeds it what arrives) and the connection's send pump.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::state::{ChannelState, StateConfig, Step, Transmit, Wake};
use crate::Headers;
use crate::error::ChannelError;
use crate::peer::AcceptQueue;
use crate::peer::connection::Connection;
use crate::transport::Writer;
use crate::transport::{HIGH_WATER, Outbound};

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data
/// consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a channel is: fixed once the open completes.
#[derive(Debug)]
pub(crate) struct MetaInfo {
    pub service: String,
    pub headers: Headers,
    pub local_peer: String,
    pub remote_peer: String,
}

struct Inner {
    state: ChannelState,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// One channel, shared.
pub(crate) struct ChannelShared {
    inner: Mutex<Inner>,
    info: OnceLock<MetaInfo>,
    writer: OnceLock<Writer>,
    pump: Arc<Pump>,
    queued: AtomicBool,
    reader_alive: AtomicBool,
    writer_alive: AtomicBool,
    announced: AtomicBool,
    /// The SSH channel number on this side.
    pub(crate) ssh_id: u32,
    pub(crate) nest: Nest,
}

/// Resets channels that will never be accepted.
fn reset_all(channels: Vec<super::Channel>) {
    for mut ch in channels {
        ch.reset();
    }
}

/// A channel's place among nested channels.
#[derive(Default)]
pub(crate) struct Nest {
    /// The connection the channel belongs to (to open children on it).
    pub(crate) conn: Weak<Connection>,
    /// Which side opened the channel (`true`: this one) and its open id, if it has one.
    pub(crate) ident: OnceLock<(bool, u64)>,
    /// The channel this one was opened in.
    pub(crate) parent: OnceLock<Weak<ChannelShared>>,
    /// Live children, by SSH channel number.
    children: Mutex<HashMap<u32, Weak<ChannelShared>>>,
    /// Children the remote opened, waiting for `accept`.
    accept: OnceLock<Arc<AcceptQueue>>,
    /// Set once the channel closed its children: a queue made later is closed.
    children_closed: AtomicBool,
}

impl Nest {
    /// The queue of children waiting for `accept`.
    pub(crate) fn accept_queue(&self) -> &Arc<AcceptQueue> {
        let q = self.accept.get_or_init(|| match self.conn.upgrade() {
            Some(conn) => Arc::new(AcceptQueue::pooled(conn.queued_children.clone())),
            None => Arc::default(),
        });
        // Checked after creating it: `close_children` sets the flag before it
        // looks for a queue, so one of the two closes it.
        if self.children_closed.load(Ordering::SeqCst) {
            reset_all(q.close_and_take());
        }
        q
    }

    /// Live children (for tests of leaks and for closing them).
    pub(crate) fn child_count(&self) -> usize {
        lock(&self.children).len()
    }
}

impl std::fmt::Debug for ChannelShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelShared")
            .field("ssh_id", &self.ssh_id)
            .field("info", &self.info.get())
            .finish_non_exhaustive()
    }
}

impl ChannelShared {
    pub(crate) fn new(
        ssh_id: u32,
        cfg: StateConfig,
        pump: Arc<Pump>,
        conn: Weak<Connection>,
    ) -> Arc<ChannelShared> {
        Self::with_state(ssh_id, ChannelState::new(cfg), pump, conn)
    }

    pub(crate) fn with_state(
        ssh_id: u32,
        state: ChannelState,
        pump: Arc<Pump>,
        conn: Weak<Connection>,
    ) -> Arc<ChannelShared> {
        Arc::new(ChannelShared {
            inner: Mutex::new(Inner {
                state,
                read_waker: None,
                write_waker: None,
            }),
            info: OnceLock::new(),
            writer: OnceLock::new(),
            pump,
            queued: AtomicBool::new(false),
            reader_alive: AtomicBool::new(true),
            writer_alive: AtomicBool::new(true),
            announced: AtomicBool::new(false),
            ssh_id,
            nest: Nest {
                conn,
                ..Nest::default()
            },
        })
    }

    pub(crate) fn info(&self) -> Option<&MetaInfo> {
        self.info.get()
    }

    /// Completes the channel: its description and the way to send on it.
    pub(crate) fn establish(self: &Arc<Self>, info: MetaInfo, writer: Writer) {
        self.attach(writer);
        self.describe(info);
    }

    /// Gives the channel its way to send (it can close before it is described).
    pub(crate) fn attach(&self, writer: Writer) {
        let _ = self.writer.set(writer);
    }

    /// Describes the channel and opens its receive window.
    pub(crate) fn describe(self: &Arc<Self>, info: MetaInfo) {
        let _ = self.info.set(info);
        self.update(|s| ((), s.open_window()));
        self.schedule();
    }

    /// Records a channel opened inside this one.
    pub(crate) fn add_child(self: &Arc<Self>, child: &Arc<ChannelShared>) {
        let first = {
            let mut children = lock(&self.nest.children);
            children.insert(child.ssh_id, Arc::downgrade(child));
            children.len() == 1
        };
        if first {
            self.update(|s| ((), s.set_has_children(true)));
        }
    }

    /// Forgets a closed child.
    pub(crate) fn remove_child(self: &Arc<Self>, ssh_id: u32) {
        let last = {
            let mut children = lock(&self.nest.children);
            children.remove(&ssh_id).is_some() && children.is_empty()
        };
        if last {
            self.update(|s| ((), s.set_has_children(false)));
        }
    }

    /// The channel closed (or its connection went): its children are reset, and
    /// those waiting to be accepted are refused.
    ///
    /// Iterative, not recursive: a remote can queue a chain of never-accepted
    /// children thousands deep.
    pub(crate) fn close_children(self: &Arc<Self>) {
        let mut work = vec![self.clone()];
        while let Some(ch) = work.pop() {
            ch.nest.children_closed.store(true, Ordering::SeqCst);
            let queued = ch
                .nest
                .accept
                .get()
                .map(|q| q.close_and_take())
                .unwrap_or_default();
            for child in queued {
                let shared = child.read.shared.clone();
                shared.update(|s| ((), s.reset()));
                // Its own queue is emptied by this loop, before the last
                // reference to it can go.
                work.push(shared);
                drop(child);
            }
            let children: Vec<_> = lock(&ch.nest.children)
                .drain()
                .filter_map(|(_, c)| c.upgrade())
                .collect();
            for child in children {
                child.update(|s| ((), s.on_parent_closed()));
            }
        }
    }

    /// A queued child that was reset before anyone accepted it: out of
    /// the queue, since it has nothing left to read. (One that closed cleanly
    /// stays, with its data; the per-connection pool bounds those.) The caller
    /// drops what comes back, outside its locks.
    fn unqueue_child(&self, child: &Arc<ChannelShared>) -> Option<super::Channel> {
        if !child.peek(|s| s.has_failed()) {
            return None;
        }
        self.nest.accept.get().and_then(|q| q.remove(child))
    }

    /// The channel's SSH channel is closed: its parent forgets it. Called under
    /// the connection's channel map lock, so that the channel leaves its parent's
    /// queue as it leaves the map; the caller drops what comes back outside it.
    #[must_use]
    pub(crate) fn detach_from_parent(self: &Arc<Self>) -> Option<super::Channel> {
        let parent = self.nest.parent.get().and_then(Weak::upgrade)?;
        parent.remove_child(self.ssh_id);
        parent.unqueue_child(self)
    }

    /// Records that `ChannelOpened` was announced, so that `ChannelClosed` follows.
    pub(crate) fn announce(&self) {
        self.announced.store(true, Ordering::SeqCst);
    }

    pub(crate) fn announced(&self) -> bool {
        self.announced.load(Ordering::SeqCst)
    }

    /// Runs `f` on the state, then wakes whoever it made ready.
    pub(crate) fn update<R>(self: &Arc<Self>, f: impl FnOnce(&mut ChannelState) -> (R, Wake)) -> R {
        self.run(f, |_, _| {})
    }

    /// Runs `f` under the lock, lets `after` look at the result while still locked,
    /// then wakes whoever `f` made ready.
    fn run<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut ChannelState) -> (R, Wake),
        after: impl FnOnce(&R, &mut Inner),
    ) -> R {
        let (r, wake, rw, ww) = {
            let mut g = lock(&self.inner);
            let (r, wake) = f(&mut g.state);
            let rw = if wake.read { g.read_waker.take() } else { None };
            let ww = if wake.write {
                g.write_waker.take()
            } else {
                None
            };
            after(&r, &mut g);
            (r, wake, rw, ww)
        };
        if let Some(w) = rw {
            w.wake();
        }
        if let Some(w) = ww {
            w.wake();
        }
        if wake.transmit {
            self.schedule();
        }
        r
    }

    /// Reads the state without changing it.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(&ChannelState) -> R) -> R {
        f(&lock(&self.inner).state)
    }

    /// Runs a reading operation; when it cannot complete, registers the task to be woken.
    pub(crate) fn poll_read_op<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        self.poll_op(cx, true, f)
    }

    /// Runs a writing operation; when it cannot complete, registers the task to be woken.
    pub(crate) fn poll_write_op<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        self.poll_op(cx, false, f)
    }

    fn poll_op<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        read: bool,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        // The waker is registered under the same lock as the check: no wake-up is lost.
        let step = self.run(f, |step, g| {
            if matches!(step, Step::Pending) {
                let slot = if read {
                    &mut g.read_waker
                } else {
                    &mut g.write_waker
                };
                match slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
        });
        match step {
            Step::Ready(v) => Poll::Ready(Ok(v)),
            Step::Failed(e) => Poll::Ready(Err(e)),
            Step::Pending => Poll::Pending,
        }
    }

    /// Queues this channel for the send pump.
    pub(crate) fn schedule(self: &Arc<Self>) {
        if self.writer.get().is_none() {
            return; // `establish` schedules once the channel can send
        }
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.pump.push(self.clone());
        }
    }

    pub(crate) fn reader_dropped(self: &Arc<Self>) {
        self.reader_alive.store(false, Ordering::SeqCst);
        self.update(|s| ((), s.reader_dropped()));
        if !self.writer_alive.load(Ordering::SeqCst) {
            self.update(|s| ((), s.released()));
        }
    }

    pub(crate) fn writer_dropped(self: &Arc<Self>) {
        self.writer_alive.store(false, Ordering::SeqCst);
        if self.reader_alive.load(Ordering::SeqCst) {
            // Like a socket's write half: dropping it ends the stream.
            self.update(|s| {
                let (_, w) = s.close_write();
                ((), w)
            });
        } else {
            self.update(|s| ((), s.released()));
        }
    }
}

/// The per-connection queue of channels with something to send, drained by one task
/// so that everything a channel sends leaves in order and small writes coalesce
/// while the connection is busy.
#[derive(Debug, Default)]
pub(crate) struct Pump {
    ready: Mutex<VecDeque<Arc<ChannelShared>>>,
    notify: Notify,
    closed: AtomicBool,
}

/// Most bytes one channel sends before the pump moves on to the next.
const TURN_BUDGET: usize = 512 * 1024;

impl Pump {
    fn push(&self, ch: Arc<ChannelShared>) {
        // Checked under the queue's lock, so nothing is queued after `close` cleared
        // it (a queued channel holds the pump: that would be a reference cycle).
        let mut ready = lock(&self.ready);
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        ready.push_back(ch);
        drop(ready);
        self.notify.notify_one();
    }

    pub(crate) fn close(&self) {
        let drained = {
            let mut ready = lock(&self.ready);
            self.closed.store(true, Ordering::SeqCst);
            std::mem::take(&mut *ready)
        };
        drop(drained);
        self.notify.notify_one();
    }

    /// Sends queued channels' data until the pump is closed. `forget` is called for
    /// each channel after its SSH close went out.
    pub(crate) async fn run(
        self: Arc<Self>,
        max_chunk: usize,
        out: Option<Arc<Outbound>>,
        forget: impl Fn(&Arc<ChannelShared>),
    ) {
        loop {
            let notified = self.notify.notified();
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let next = lock(&self.ready).pop_front();
            let Some(ch) = next else {
                notified.await;
                continue;
            };
            ch.queued.store(false, Ordering::Release);
            let Some(writer) = ch.writer.get() else {
                continue;
            };
            let mut sent = 0usize;
            loop {
                // Backpressure from the socket: see `Outbound`.
                if let Some(out) = &out
                    && out.backlog() > HIGH_WATER
                {
                    out.wait_drained().await;
                }
                // Never more than the remote's SSH window: a standard client that
                // does not read must not stall the pump (it wakes us when it does).
                let room = writer.room().await;
                let t = ch.update(|s| s.poll_transmit(max_chunk.min(room)));
                let Some(t) = t else { break };
                let n = match &t {
                    Transmit::Data(b) | Transmit::Error(b) => b.len(),
                    _ => 0,
                };
                let close = matches!(t, Transmit::Close { .. });
                if writer.send(t).await.is_err() {
                    break; // the connection is going away; its loss is handled elsewhere
                }
                if close {
                    forget(&ch);
                    break;
                }
                sent += n;
                if sent >= TURN_BUDGET {
                    if ch.peek(ChannelState::wants_transmit) {
                        ch.schedule();
                    }
                    break;
                }
            }
        }
    }
}
