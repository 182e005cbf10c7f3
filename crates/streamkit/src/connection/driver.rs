//! [`Conn`]: a connection's [`ConnectionState`] behind one lock, the wakers of the
//! tasks waiting on it, and the driver task that does its I/O through a [`Link`].
//!
//! Every caller (a channel handle, the transport's handler, the driver) takes the
//! lock for one synchronous step on the state, collects the wakers that step made
//! ready, releases the lock, and only then wakes them. The driver is the only task
//! that awaits the transport on the connection's behalf: it sends what the state
//! has to send, asks the transport to open channels, and sleeps until the state's next deadline.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::handle::Channel;
use super::state::{
    ChannelKey, Command, ConnectionState, Decision, ForwardedTcpip, Incoming, Limits, Meta,
    OpenWire, OwnMap, Report, Wakeups,
};
use crate::channel::{ChannelState, Headers, Step, Transmit, Wake};
use crate::error::{ChannelError, LostReason, OpenErrorKind};
use crate::trust::RemoteIdentity;

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data
/// consistent before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Most bytes the driver hands the transport for one channel message (the SSH
/// layer splits further by the remote's packet size).
const MAX_CHUNK: usize = 256 * 1024;

/// What a connection is, fixed when it is made.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub id: u64,
    pub local_name: String,
    pub remote_name: String,
    /// Where the remote is, for messages (`tcp://addr` or the dialled endpoint).
    pub remote_addr: String,
    /// Whether this side dialled.
    pub dialed: bool,
    /// What the remote proved, with its name: the identity that holds the name.
    pub remote_id: RemoteIdentity,
    /// A session through a hub: the services the hub's policy lets the remote
    /// open here (`None`: no restriction but this peer's own).
    pub allowed: Option<Arc<crate::wire::relay::Allowed>>,
}

/// The transport under a connection, as the driver uses it. Channels are named by
/// their key; the transport keeps each channel's way to send under it.
pub(crate) trait Link: Send + Sync + 'static {
    /// Sends the open request `request` for `key`, telling `conn` the SSH id
    /// when it is assigned, before the request goes out ([`Conn::open_sent`]), then
    /// how it ended ([`Conn::open_confirmed`] once it can send on it, or
    /// [`Conn::open_refused`]). It runs inside the opener's future, which drops it
    /// when the open is given up.
    fn open(
        self: Arc<Self>,
        conn: Arc<Conn>,
        key: ChannelKey,
        request: OpenWire,
    ) -> impl Future<Output = ()> + Send + 'static;
    /// Bytes of data `key` may send now (the remote's SSH window, at most a packet).
    fn room(&self, key: ChannelKey) -> impl Future<Output = usize> + Send;
    /// Sends one transmit on `key`'s channel.
    fn send(
        &self,
        key: ChannelKey,
        t: Transmit,
    ) -> impl Future<Output = Result<(), SendFailed>> + Send;
    /// `key`'s SSH channel is closed here: drop its way to send.
    fn forget(&self, key: ChannelKey);
    /// Waits while the socket has too much queued (the connection's backpressure).
    fn drained(&self) -> impl Future<Output = ()> + Send;
    /// Ends the connection politely (SSH disconnect), best effort.
    fn disconnect(&self, why: String) -> impl Future<Output = ()> + Send;
    /// Ends the connection now: its I/O stops.
    fn kill(&self);
}

/// The transport refused to send: the connection is going away (its loss is
/// reported separately).
#[derive(Debug)]
pub(crate) struct SendFailed;

/// Why one of our opens did not open, from the transport.
#[derive(Debug)]
pub(crate) enum OpenFailed {
    Refused(u32),
    Gone,
}

/// What the connection tells the layer above it.
pub(crate) trait Observer: Send + Sync + 'static {
    /// A channel opened (`local`: by this side).
    fn opened(&self, conn: &ConnInfo, meta: &Meta, local: bool);
    /// A channel that was announced open closed.
    fn closed(&self, conn: &ConnInfo, meta: &Meta);
    /// The number of channels changed.
    fn changed(&self);
    /// The connection is going: it must no longer be found (its channels are
    /// failed next). `true` if it was known.
    fn forget(&self, conn: &ConnInfo) -> bool;
    /// A connection that was known is lost, for `reason`: after its channels
    /// were closed.
    fn lost(&self, conn: &ConnInfo, reason: &str);
}

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
    /// Children may be accepted by several tasks sharing the parent.
    accept: Vec<Waker>,
}

struct Inner {
    state: ConnectionState,
    wakers: OwnMap<ChannelKey, Wakers>,
    /// The state's wake-up lists, swapped in and emptied at each step (so that
    /// their capacity is reused).
    spare: Wakeups,
    /// A polite disconnect was asked for.
    disconnect: Option<String>,
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Which waker slot a pending operation registers.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Read,
    Write,
    Accept,
}

/// Sends an open request through the transport: the future is the transport's
/// side of one open (see [`Link::open`]), run by the opener's own future.
type Opener = Box<
    dyn Fn(Arc<Conn>, ChannelKey, OpenWire) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// A connection (see the module docs).
pub(crate) struct Conn {
    pub(crate) info: ConnInfo,
    inner: Mutex<Inner>,
    /// Dropped when the connection is lost, so that the transport's state goes
    /// with it even while handles to this connection live on.
    opener: Mutex<Option<Arc<Opener>>>,
    driver: Notify,
    lost: Notify,
    /// Set by the first `lose`.
    losing: std::sync::atomic::AtomicBool,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The wakers a step made ready: most steps wake one or two, kept inline.
#[derive(Default)]
struct ToWake {
    first: [Option<Waker>; 2],
    more: Vec<Waker>,
}

impl ToWake {
    fn push(&mut self, w: Waker) {
        match self.first.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(w),
            None => self.more.push(w),
        }
    }

    fn wake(self) {
        self.first.into_iter().flatten().for_each(Waker::wake);
        self.more.into_iter().for_each(Waker::wake);
    }
}

/// What a step made ready, collected under the lock and acted on after it.
#[derive(Default)]
struct Ready {
    wakers: ToWake,
    driver: bool,
    reports: Vec<Report>,
}

impl Conn {
    pub(crate) fn new(info: ConnInfo, limits: Limits, observer: Arc<dyn Observer>) -> Arc<Conn> {
        let state = ConnectionState::new(
            limits,
            info.local_name.clone(),
            info.remote_name.clone(),
            info.remote_id.clone(),
        );
        Arc::new(Conn {
            info,
            inner: Mutex::new(Inner {
                state,
                wakers: OwnMap::default(),
                spare: Wakeups::default(),
                disconnect: None,
            }),
            opener: Mutex::new(None),
            driver: Notify::new(),
            lost: Notify::new(),
            losing: std::sync::atomic::AtomicBool::new(false),
            observer,
        })
    }

    /// One step on the state: `f` runs under the lock; what it made ready is woken
    /// after.
    pub(crate) fn step<R>(&self, f: impl FnOnce(&mut ConnectionState) -> R) -> R {
        let (r, ready) = {
            let mut inner = lock(&self.inner);
            let r = f(&mut inner.state);
            let ready = Self::collect(&mut inner);
            (r, ready)
        };
        self.act(ready);
        r
    }

    fn collect(inner: &mut Inner) -> Ready {
        let Inner {
            state,
            wakers,
            spare,
            ..
        } = inner;
        state.swap_wakeups(spare);
        let mut ready = Ready {
            driver: spare.driver,
            ..Ready::default()
        };
        for key in spare.read.drain(..) {
            if let Some(waker) = wakers.get_mut(&key).and_then(|s| s.read.take()) {
                ready.wakers.push(waker);
            }
        }
        for key in spare.write.drain(..) {
            if let Some(waker) = wakers.get_mut(&key).and_then(|s| s.write.take()) {
                ready.wakers.push(waker);
            }
        }
        for key in spare.accept.drain(..) {
            if let Some(slots) = wakers.get_mut(&key) {
                for w in slots.accept.drain(..) {
                    ready.wakers.push(w);
                }
            }
        }
        spare.driver = false;
        while let Some(r) = state.poll_report() {
            ready.reports.push(r);
        }
        ready
    }

    fn act(&self, ready: Ready) {
        ready.wakers.wake();
        if ready.driver {
            self.driver.notify_one();
        }
        let changed = !ready.reports.is_empty();
        for r in ready.reports {
            match r {
                Report::Opened { meta, local } => self.observer.opened(&self.info, &meta, local),
                Report::Closed { meta } => self.observer.closed(&self.info, &meta),
            }
        }
        if changed {
            self.observer.changed();
        }
    }

    /// Runs a channel operation for a task; when it cannot complete, registers the
    /// task's waker in `slot`, under the same lock as the check (no wake-up is lost).
    pub(crate) fn poll_op<T>(
        &self,
        key: ChannelKey,
        slot: Slot,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ConnectionState) -> Step<T>,
    ) -> Poll<Result<T, ChannelError>> {
        let (step, ready) = {
            let mut inner = lock(&self.inner);
            let step = f(&mut inner.state);
            if matches!(step, Step::Pending) {
                let slots = inner.wakers.entry(key).or_default();
                let waker = cx.waker();
                match slot {
                    Slot::Read => register(&mut slots.read, waker),
                    Slot::Write => register(&mut slots.write, waker),
                    Slot::Accept => {
                        if !slots.accept.iter().any(|w| w.will_wake(waker)) {
                            slots.accept.push(waker.clone());
                        }
                    }
                }
            }
            let ready = Self::collect(&mut inner);
            (step, ready)
        };
        self.act(ready);
        match step {
            Step::Ready(v) => Poll::Ready(Ok(v)),
            Step::Failed(e) => Poll::Ready(Err(e)),
            Step::Pending => Poll::Pending,
        }
    }

    /// Runs `f` on one channel's state (a channel operation the state delegates).
    pub(crate) fn channel_op<T>(
        &self,
        key: ChannelKey,
        slot: Slot,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        self.poll_op(key, slot, cx, |s| {
            s.op(key, f).unwrap_or(Step::Failed(ChannelError::Closed))
        })
    }

    /// Looks at one channel's state.
    pub(crate) fn peek<R>(&self, key: ChannelKey, f: impl FnOnce(&ChannelState) -> R) -> Option<R> {
        lock(&self.inner).state.peek(key, f)
    }

    /// The handles of `key` are gone: its wakers too.
    pub(crate) fn forget_wakers(&self, key: ChannelKey) {
        lock(&self.inner).wakers.remove(&key);
    }

    /// A channel handle's half was dropped (`reader`: the reading half).
    pub(crate) fn drop_half(&self, key: ChannelKey, reader: bool) {
        let now = tokio::time::Instant::now().into_std();
        let ready = {
            let mut inner = lock(&self.inner);
            if reader {
                inner.state.reader_dropped(key, now);
            } else {
                inner.state.writer_dropped(key, now);
            }
            if let Some(w) = inner.wakers.get_mut(&key) {
                if reader {
                    w.read = None;
                    w.accept.clear();
                } else {
                    w.write = None;
                }
                if w.read.is_none() && w.write.is_none() && w.accept.is_empty() {
                    inner.wakers.remove(&key);
                }
            }
            Self::collect(&mut inner)
        };
        self.act(ready);
    }

    // ---- opens ----

    /// Starts the driver of this connection, through `link`: the connection works
    /// from then on.
    pub(crate) fn start<L: Link>(self: &Arc<Self>, link: Arc<L>) {
        let l = link.clone();
        let opener: Opener =
            Box::new(move |conn, key, path| Box::pin(l.clone().open(conn, key, path)));
        *lock(&self.opener) = Some(Arc::new(opener));
        tokio::spawn(self.clone().drive(link));
    }

    /// Opens a channel (inside `parent`, if given) and waits for the remote's
    /// answer. The transport's side of the open runs in this future: dropping it
    /// gives the open up (a late success is closed).
    pub(crate) async fn open(
        self: &Arc<Self>,
        service: &str,
        headers: Headers,
        parent: Option<ChannelKey>,
    ) -> Result<Channel, OpenErrorKind> {
        self.open_with(|s, now| s.open(service, headers, parent, now))
            .await
    }

    /// Opens a `forwarded-tcpip` channel to a standard client, for a visitor of a
    /// remote forward it asked for (`ssh -R`), as [`open`](Self::open) does.
    pub(crate) async fn open_forwarded(
        self: &Arc<Self>,
        forward: ForwardedTcpip,
    ) -> Result<Channel, OpenErrorKind> {
        self.open_with(|s, now| s.open_forwarded(forward, now))
            .await
    }

    async fn open_with(
        self: &Arc<Self>,
        begin: impl FnOnce(
            &mut ConnectionState,
            std::time::Instant,
        ) -> Result<ChannelKey, OpenErrorKind>,
    ) -> Result<Channel, OpenErrorKind> {
        let now = tokio::time::Instant::now().into_std();
        let opener = lock(&self.opener).clone();
        let (key, request) = self.step(|s| {
            let key = begin(s, now)?;
            if opener.is_some() {
                Ok::<_, OpenErrorKind>((key, s.take_request(key)))
            } else {
                s.request_by_driver(key);
                Ok((key, None))
            }
        })?;
        struct GiveUp<'a>(&'a Arc<Conn>, ChannelKey, bool);
        impl Drop for GiveUp<'_> {
            fn drop(&mut self) {
                if !self.2 {
                    let key = self.1;
                    self.0.step(|s| s.abandon_open(key));
                    self.0.forget_wakers(key);
                }
            }
        }
        let mut guard = GiveUp(self, key, false);
        let mut transport = match (request, opener) {
            (Some(path), Some(opener)) => Some(opener(self.clone(), key, path)),
            _ => None,
        };
        let opened = std::future::poll_fn(|cx| {
            // The transport's side first: it reports into the state as it goes.
            if let Some(t) = &mut transport
                && t.as_mut().poll(cx).is_ready()
            {
                transport = None;
            }
            let r = {
                let mut inner = lock(&self.inner);
                let r = inner.state.poll_open(key);
                if matches!(r, Ok(false)) {
                    inner.wakers.entry(key).or_default().write = Some(cx.waker().clone());
                }
                r
            };
            match r {
                Ok(false) => Poll::Pending,
                Ok(true) => Poll::Ready(Ok(())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await;
        guard.2 = true;
        match opened {
            Ok(()) => Ok(Channel::new(self.clone(), key)),
            Err(e) => {
                self.forget_wakers(key);
                Err(e)
            }
        }
    }

    /// The transport assigned our open of `key` its SSH id.
    pub(crate) fn open_sent(&self, key: ChannelKey, ssh: u32) {
        self.step(|s| s.on_open_sent(key, ssh));
    }

    /// Our open of `key` was confirmed and the transport can now send on it;
    /// `false` if the channel already closed (the transport can drop its writer).
    pub(crate) fn open_confirmed(&self, key: ChannelKey) -> bool {
        self.step(|s| s.on_open_confirmed(key))
    }

    /// The transport accepted the remote's open of `key` and can send on it.
    pub(crate) fn established(&self, key: ChannelKey) {
        self.step(|s| s.established(key));
    }

    /// The transport's answer to our open, other than a confirmation.
    pub(crate) fn open_refused(&self, key: ChannelKey, why: OpenFailed) {
        let outcome = match why {
            OpenFailed::Refused(code) => super::state::OpenOutcome::Refused(code),
            OpenFailed::Gone => super::state::OpenOutcome::Gone,
        };
        self.step(|s| s.on_open_failed(key, outcome));
    }

    /// The SSH layer confirmed an open of ours; `false` if it was given up (the
    /// transport closes it).
    pub(crate) fn confirmed(&self, ssh: u32) -> bool {
        self.step(|s| s.on_confirmed(ssh))
    }

    /// The remote refused an open of ours (its opener may have given up already).
    pub(crate) fn refused(&self, ssh: u32) {
        self.step(|s| s.on_refused(ssh));
    }

    // ---- the remote's opens ----

    /// An open request from the remote (a top-level one admitted by the caller).
    pub(crate) fn incoming(&self, ssh: u32, req: Incoming) -> Decision {
        let now = tokio::time::Instant::now().into_std();
        self.step(|s| s.on_open_request(ssh, req, now))
    }

    // ---- from the transport ----

    pub(crate) fn on_data(&self, ssh: u32, data: bytes::Bytes) {
        self.step(|s| s.on_data(ssh, data));
    }

    pub(crate) fn on_extended(&self, ssh: u32, ext: u32, data: &[u8]) {
        self.step(|s| s.on_extended(ssh, ext, data));
    }

    pub(crate) fn on_eof(&self, ssh: u32) {
        self.step(|s| s.on_eof(ssh));
    }

    pub(crate) fn on_close(&self, ssh: u32) {
        self.step(|s| s.on_close(ssh));
    }

    pub(crate) fn on_window(&self, ssh: u32) {
        self.step(|s| s.on_window(ssh));
    }

    /// The connection is gone: every channel fails; the layer above forgets it.
    pub(crate) fn lose(&self, reason: impl Into<LostReason>) {
        if self.losing.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let reason = reason.into();
        let full = reason.full();
        tracing::debug!(peer = %self.info.remote_name, reason = %full, "connection lost");
        // Forget the connection first, so that whoever wakes up below already sees
        // the peer gone; tell of its loss after its channels' ends.
        let known = self.observer.forget(&self.info);
        self.step(|s| s.on_lost(ChannelError::ConnectionLost(reason)));
        if known {
            self.observer.lost(&self.info, &full);
        }
        lock(&self.opener).take();
        self.observer.changed();
        self.lost.notify_waiters();
        self.driver.notify_one();
    }

    /// The reason the connection was lost, if it was.
    pub(crate) fn lost(&self) -> Option<ChannelError> {
        lock(&self.inner).state.lost().cloned()
    }

    /// Waits until the connection is lost.
    pub(crate) async fn wait_lost(&self) {
        loop {
            let gone = self.lost.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.lost().is_some() {
                return;
            }
            gone.await;
        }
    }

    /// Closes the connection: a polite SSH disconnect, a moment for the remote to
    /// hang up, then the connection is lost here whatever it did.
    pub(crate) async fn close(&self, why: &str) {
        if self.lost().is_none() {
            lock(&self.inner).disconnect = Some(why.to_owned());
            self.driver.notify_one();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.wait_lost()).await;
        }
        self.lose(why);
    }

    // ---- for the layer above ----

    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.inner).state.channel_count()
    }

    /// Bytes held for readers and written but unsent.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        lock(&self.inner).state.buffered()
    }

    /// Channels open now (for shutdown).
    pub(crate) fn open_keys(&self) -> Vec<ChannelKey> {
        lock(&self.inner).state.open_keys()
    }

    /// A top-level channel from the remote as a handle for the application.
    pub(crate) fn handle(self: &Arc<Self>, key: ChannelKey) -> Channel {
        Channel::new(self.clone(), key)
    }

    // ---- the driver ----

    /// Drives the connection through `link` until it is lost.
    async fn drive<L: Link>(self: Arc<Self>, link: Arc<L>) {
        loop {
            let notified = self.driver.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lost().is_some() {
                break;
            }
            let why = lock(&self.inner).disconnect.take();
            if let Some(why) = why {
                link.disconnect(why).await;
            }
            self.run_commands(&link);
            self.transmit(&link).await;
            let deadline = self.step(|s| s.poll_timeout());
            let now = tokio::time::Instant::now();
            match deadline {
                Some(d) if tokio::time::Instant::from_std(d) <= now => {
                    self.step(|s| s.handle_timeout(now.into_std()));
                }
                Some(d) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(d)) => {
                            let now = tokio::time::Instant::now().into_std();
                            self.step(|s| s.handle_timeout(now));
                        }
                    }
                }
                None => notified.await,
            }
        }
        self.run_commands(&link);
        link.kill();
    }

    fn run_commands<L: Link>(self: &Arc<Self>, link: &Arc<L>) {
        while let Some(cmd) = self.step(|s| s.poll_command()) {
            match cmd {
                // The opener's future normally took the request already.
                Command::Open { key } => {
                    if let Some(path) = self.step(|s| s.take_request(key)) {
                        tokio::spawn(link.clone().open(self.clone(), key, path));
                    }
                }
                Command::Forget { key } => link.forget(key),
            }
        }
    }

    /// Sends what the channels have to send, channel by channel in turns.
    async fn transmit<L: Link>(self: &Arc<Self>, link: &Arc<L>) {
        loop {
            let Some(key) = self.step(|s| s.next_sender()) else {
                return;
            };
            loop {
                link.drained().await;
                // Never more than the remote's SSH window: a standard client that
                // does not read must not stall the others (it wakes us when it does).
                let room = link.room(key).await;
                let Some(t) = self.step(|s| s.poll_transmit(key, MAX_CHUNK.min(room))) else {
                    break;
                };
                if link.send(key, t).await.is_err() {
                    return; // the connection is going away; its loss is handled elsewhere
                }
                self.run_commands(link);
            }
        }
    }
}
