//! The pieces both ends of a session share: the frame writer, per-call queues of
//! received objects with their flow-control credit, send credit, cancellation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use streamkit::{BudgetShare, WriteHalf};
use tokio::sync::Notify;

use crate::error::RpcError;
use crate::wire::Message as Wire;

/// Bytes of objects a call may have in flight in each direction before the
/// receiver consumes them: fixed by the protocol, so both sides agree on it.
pub(crate) const CALL_WINDOW: usize = 256 << 10;

/// Objects smaller than this count as this much against credit, so that empty
/// objects cannot be queued without bound.
pub(crate) const MIN_COST: usize = 64;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn cost(len: usize) -> usize {
    len.max(MIN_COST)
}

/// Control messages waiting to jump the queue. Credit is merged per call, so a
/// peer that stops reading cannot make this grow beyond one entry per call.
#[derive(Default)]
struct Urgent {
    /// The latest catalogue: a newer one replaces one not yet sent.
    methods: Option<Bytes>,
    credit: std::collections::HashMap<u64, u64>,
    other: Vec<Bytes>,
}

impl Urgent {
    fn take(&mut self) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = self.methods.take().into_iter().collect();
        out.append(&mut self.other);
        out.extend(
            self.credit
                .drain()
                .map(|(id, bytes)| Wire::Credit { id, bytes }.encode()),
        );
        out
    }
}

/// Bytes of messages a session's queue holds before senders wait: the queue is
/// counted in bytes, not messages, so that what a peer that stops reading makes
/// us hold is bounded (this, one message over, and the urgent control messages).
pub(crate) const OUTBOX_BYTES: usize = 1 << 20;

/// Writes a session's frames from one task: callers queue them (bounded in
/// bytes), and control messages that must never wait (cancel, credit) jump the
/// queue. The task ends, closing our direction of the channel, when the last
/// `Outbox` goes.
pub(crate) struct Outbox {
    shared: Arc<OutShared>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Bytes>,
    bytes: usize,
    /// Every `Outbox` is gone: the writer drains and ends.
    closed: bool,
}

struct OutShared {
    /// What is queued is charged here (a callee's answers: the remote makes us
    /// hold them until it reads).
    share: Option<BudgetShare>,
    urgent: Mutex<Urgent>,
    queue: Mutex<Queue>,
    /// The writer has something to write.
    wake: Notify,
    /// The queue has room again.
    room: Notify,
    dead: AtomicBool,
    /// The session is over and its remote does not take what is left: reset.
    kill: Cancel,
}

/// The queue was full: the message was not queued.
#[derive(Debug)]
pub(crate) struct Full;

/// A place in the queue, waited for beforehand: messages sent through permits go
/// out in the order the permits are used.
pub(crate) struct Permit<'a> {
    out: &'a Outbox,
}

impl Permit<'_> {
    pub(crate) fn send(self, m: Bytes) {
        self.out.push(m);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
    }
}

impl Outbox {
    pub(crate) fn spawn(mut w: WriteHalf, share: Option<BudgetShare>) -> Arc<Outbox> {
        let shared = Arc::new(OutShared {
            share,
            urgent: Mutex::new(Urgent::default()),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            room: Notify::new(),
            dead: AtomicBool::new(false),
            kill: Cancel::default(),
        });
        let sh = shared.clone();
        tokio::spawn(async move {
            loop {
                let notified = sh.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let urgent = lock(&sh.urgent).take();
                // Whatever is queued goes out in the same turn, up to a bound.
                let (batch, closed) = {
                    let mut q = lock(&sh.queue);
                    let n = q.items.len().min(256);
                    let batch: Vec<Bytes> = q.items.drain(..n).collect();
                    (batch, q.closed && q.items.is_empty())
                };
                if urgent.is_empty() && batch.is_empty() {
                    if closed {
                        break;
                    }
                    notified.await;
                    continue;
                }
                let mut failed = false;
                let mut written = 0;
                for m in urgent.iter().chain(batch.iter()) {
                    // A write waits while the remote does not read; a killed
                    // session stops waiting.
                    let wrote = tokio::select! {
                        biased;
                        () = sh.kill.cancelled() => Err(()),
                        r = w.write_frame(m) => r.map_err(|_| ()),
                    };
                    failed |= wrote.is_err();
                    if failed {
                        break;
                    }
                }
                for m in &batch {
                    written += m.len();
                }
                {
                    let mut q = lock(&sh.queue);
                    q.bytes -= written;
                }
                if let Some(share) = &sh.share {
                    share.release(written);
                }
                sh.room.notify_waiters();
                if failed {
                    // Reset, so that the session's reader ends too and its
                    // calls fail instead of waiting for replies.
                    sh.dead.store(true, Ordering::SeqCst);
                    sh.room.notify_waiters();
                    w.reset();
                    return;
                }
            }
            // Last control messages, then our direction ends cleanly (unless the
            // session is killed meanwhile: then it is reset).
            let last = lock(&sh.urgent).take();
            let finish = async {
                for m in last {
                    w.write_frame(&m).await?;
                }
                w.close_write().await
            };
            let finished = tokio::select! {
                biased;
                () = sh.kill.cancelled() => false,
                r = finish => r.is_ok(),
            };
            if !finished {
                w.reset();
            }
        });
        Arc::new(Outbox { shared })
    }

    fn push(&self, m: Bytes) {
        self.charge(m.len());
        let mut q = lock(&self.shared.queue);
        q.bytes += m.len();
        q.items.push_back(m);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Waits until the queue holds fewer than [`OUTBOX_BYTES`].
    async fn wait_room(&self) -> Result<(), RpcError> {
        loop {
            let notified = self.shared.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.dead.load(Ordering::SeqCst) {
                return Err(RpcError::unavailable("connection lost"));
            }
            if lock(&self.shared.queue).bytes < OUTBOX_BYTES {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Queues a message, waiting while the queue is full.
    pub(crate) async fn send(&self, m: Wire) -> Result<(), RpcError> {
        let m = m.encode();
        loop {
            self.wait_room().await?;
            let mut q = lock(&self.shared.queue);
            if q.bytes < OUTBOX_BYTES {
                self.charge(m.len());
                q.bytes += m.len();
                q.items.push_back(m);
                drop(q);
                self.shared.wake.notify_one();
                return Ok(());
            }
        }
    }

    /// Queues a message if the queue has room; never waits (a session's reader
    /// must not: it would stop taking the remote's cancels and credit).
    pub(crate) fn try_send(&self, m: Wire) -> Result<(), Full> {
        if self.shared.dead.load(Ordering::SeqCst) {
            return Ok(()); // nowhere to go: dropped, as every other message
        }
        let mut q = lock(&self.shared.queue);
        if q.bytes >= OUTBOX_BYTES {
            return Err(Full);
        }
        let m = m.encode();
        self.charge(m.len());
        q.bytes += m.len();
        q.items.push_back(m);
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Counts queued bytes in the budget: the queue is bounded on its own, so
    /// this never refuses; it keeps the budget's count true.
    fn charge(&self, n: usize) {
        if let Some(share) = &self.shared.share {
            share.charge(n);
        }
    }

    /// Resets the session's direction now: what is queued is dropped.
    pub(crate) fn kill(&self) {
        self.shared.kill.cancel();
    }

    /// Resets the session's direction if what is queued is not written within
    /// `grace` (a remote that stopped reading cannot keep it forever).
    pub(crate) fn kill_after(&self, grace: std::time::Duration) {
        let kill = self.shared.kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            kill.cancel();
        });
    }

    /// Waits for room in the queue (see [`Permit`]).
    pub(crate) async fn reserve(&self) -> Result<Permit<'_>, RpcError> {
        self.wait_room().await?;
        Ok(Permit { out: self })
    }

    /// Queues a control message without waiting (from `Drop`, or from a reader
    /// that must not stall). What waits stays bounded: credit merges per call, a
    /// catalogue replaces the one before it, and cancels are one per call.
    pub(crate) fn send_now(&self, m: Wire) {
        {
            let mut u = lock(&self.shared.urgent);
            match m {
                Wire::Credit { id, bytes } => {
                    let c = u.credit.entry(id).or_default();
                    *c = c.saturating_add(bytes);
                }
                m @ Wire::Methods { .. } => u.methods = Some(m.encode()),
                m => u.other.push(m.encode()),
            }
        }
        self.shared.wake.notify_one();
    }
}

/// The objects received for one call in one direction, bounded by the credit the
/// receiver has granted.
pub(crate) struct Inbox {
    st: Mutex<InboxState>,
    notify: Notify,
    window: usize,
    /// Bytes buffered over every call of the caller (its budget here).
    total: Arc<AtomicUsize>,
    share: Option<BudgetShare>,
    /// Where credit goes as objects are consumed.
    grant: Mutex<Option<(Arc<Outbox>, u64)>>,
}

struct InboxState {
    items: VecDeque<Bytes>,
    end: Option<Result<(), RpcError>>,
    buffered: usize,
    consumed: usize,
}

/// Why an object was not queued.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The sender ignored its credit.
    Overrun,
    /// The connection's memory budget cannot hold it.
    Budget,
}

impl Inbox {
    /// `share`: the connection budget the objects are charged to (a callee's
    /// inputs: the remote makes us hold them).
    pub(crate) fn new(
        window: usize,
        total: Arc<AtomicUsize>,
        share: Option<BudgetShare>,
    ) -> Arc<Inbox> {
        Arc::new(Inbox {
            total,
            share,
            st: Mutex::new(InboxState {
                items: VecDeque::new(),
                end: None,
                buffered: 0,
                consumed: 0,
            }),
            notify: Notify::new(),
            window,
            grant: Mutex::new(None),
        })
    }

    /// Credit for consumed objects is sent as `Credit { id }` through `out`.
    pub(crate) fn grant_to(&self, out: Arc<Outbox>, id: u64) {
        *lock(&self.grant) = Some((out, id));
    }

    /// Adds a received object. `slack` is how far past the window one object
    /// may reach (the sender may send while it has any credit left).
    pub(crate) fn push(&self, item: Bytes, slack: usize) -> Result<(), Refused> {
        let mut st = lock(&self.st);
        if st.end.is_some() {
            return Ok(()); // finished (failed) already: dropped
        }
        let c = cost(item.len());
        if st.buffered + c > self.window + slack {
            return Err(Refused::Overrun);
        }
        if let Some(share) = &self.share
            && !share.try_charge(c)
        {
            return Err(Refused::Budget);
        }
        st.buffered += c;
        self.total.fetch_add(c, Ordering::Relaxed);
        st.items.push_back(item);
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// No more objects: `Ok` for a clean end, or the call's error.
    pub(crate) fn finish(&self, res: Result<(), RpcError>) {
        let mut st = lock(&self.st);
        if st.end.is_none() {
            st.end = Some(res);
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Fails the call now, dropping what was not read.
    pub(crate) fn fail(&self, e: RpcError) {
        let mut st = lock(&self.st);
        st.items.clear();
        self.total.fetch_sub(st.buffered, Ordering::Relaxed);
        if let Some(share) = &self.share {
            share.release(st.buffered);
        }
        st.buffered = 0;
        st.end = Some(Err(e));
        drop(st);
        self.notify.notify_one();
    }

    pub(crate) fn is_finished(&self) -> bool {
        lock(&self.st).end.is_some()
    }

    /// The next object; `None` at a clean end.
    pub(crate) async fn recv(&self) -> Option<Result<Bytes, RpcError>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.st);
                if let Some(item) = st.items.pop_front() {
                    let c = cost(item.len());
                    st.buffered -= c;
                    self.total.fetch_sub(c, Ordering::Relaxed);
                    if let Some(share) = &self.share {
                        share.release(c);
                    }
                    st.consumed += c;
                    let grant = (st.consumed >= self.window / 2 && st.end.is_none())
                        .then(|| std::mem::take(&mut st.consumed));
                    drop(st);
                    if let Some(n) = grant
                        && let Some((out, id)) = &*lock(&self.grant)
                    {
                        out.send_now(Wire::Credit {
                            id: *id,
                            bytes: n as u64,
                        });
                    }
                    return Some(Ok(item));
                }
                match &st.end {
                    Some(Ok(())) => return None,
                    Some(Err(e)) => return Some(Err(e.clone())),
                    None => {}
                }
            }
            notified.await;
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let st = lock(&self.st);
        self.total.fetch_sub(st.buffered, Ordering::Relaxed);
        if let Some(share) = &self.share {
            share.release(st.buffered);
        }
    }
}

/// Send credit for one call in one direction.
pub(crate) struct Gate {
    st: Mutex<(i64, Option<RpcError>)>,
    notify: Notify,
}

impl Gate {
    pub(crate) fn new(window: usize) -> Arc<Gate> {
        Arc::new(Gate {
            st: Mutex::new((window as i64, None)),
            notify: Notify::new(),
        })
    }

    /// Waits for credit, then takes what an object of `len` bytes costs.
    pub(crate) async fn take(&self, len: usize) -> Result<(), RpcError> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.st);
                if let Some(e) = &st.1 {
                    return Err(e.clone());
                }
                if st.0 > 0 {
                    st.0 -= cost(len) as i64;
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    pub(crate) fn grant(&self, n: u64) {
        let mut st = lock(&self.st);
        st.0 = st.0.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
        drop(st);
        self.notify.notify_waiters();
    }

    /// No more sending: waiting and later senders get `e`.
    pub(crate) fn close(&self, e: RpcError) {
        let mut st = lock(&self.st);
        if st.1.is_none() {
            st.1 = Some(e);
        }
        drop(st);
        self.notify.notify_waiters();
    }
}

/// A cancellation flag that can be awaited.
#[derive(Clone, Default)]
pub(crate) struct Cancel(Arc<(AtomicBool, Notify)>);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
