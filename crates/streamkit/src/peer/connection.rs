//! One connection between two peers and the channels it carries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::{Notify, oneshot};

use super::events::Event;
use super::{AcceptSlot, PeerInner};
use crate::channel::shared::{ChannelShared, MetaInfo, Pump, lock};
use crate::channel::state::StateConfig;
use crate::channel::{Channel, Headers};
use crate::config::AccessRequest;
use crate::error::OpenErrorKind;
use crate::transport::inproc::InprocLink;
use crate::transport::ssh::OpenFailed;
use crate::transport::{KillSwitch, Outbound};
use crate::transport::{Link, Writer};
use crate::wire::open::{OpenRequest, ParentRef};
use crate::wire::reason::OpenRefusal;

/// Most bytes the pump hands russh for one channel message (russh splits further
/// by the remote's packet size).
const MAX_CHUNK: usize = 256 * 1024;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Whether `map` routes `ch`'s SSH number to `ch` itself (not to a newer channel
/// that reused the number, and not to nothing).
fn routes_to(map: &HashMap<u32, Arc<ChannelShared>>, ch: &Arc<ChannelShared>) -> bool {
    map.get(&ch.ssh_id).is_some_and(|c| Arc::ptr_eq(c, ch))
}

/// Channels we opened, between the SSH layer's confirmation and the opening task.
#[derive(Default)]
struct Unclaimed {
    /// Confirmed, not yet taken by the opener: kept here even if the remote closes
    /// them at once, so the opener gets the channel that saw the close, not a
    /// fresh one nothing will ever reach.
    waiting: HashMap<u32, Arc<ChannelShared>>,
    /// Taken by the opener before the confirmation reached us.
    claimed_early: std::collections::HashSet<u32>,
}

/// A live connection.
pub(crate) struct Connection {
    pub(crate) id: u64,
    pub(crate) local_name: String,
    pub(crate) remote_name: String,
    /// Where the remote is, for messages (`tcp://addr` or the dialled endpoint).
    pub(crate) remote_addr: String,
    /// Whether this side dialled.
    pub(crate) dialed: bool,
    /// Whether the remote speaks the native protocol (a plain SSH client does not).
    #[allow(dead_code)] // used by the standard-SSH-client mapping
    pub(crate) native: bool,
    link: Link,
    pub(super) peer: Weak<PeerInner>,
    pub(super) channels: Mutex<HashMap<u32, Arc<ChannelShared>>>,
    unclaimed: Mutex<Unclaimed>,
    /// `session` channels of standard SSH clients waiting for `exec`.
    pub(super) sessions: Mutex<HashMap<u32, super::compat::PendingSession>>,
    pending_opens: AtomicUsize,
    pub(super) pump: Arc<Pump>,
    kill: Arc<KillSwitch>,
    lost: OnceLock<Arc<str>>,
    lost_notify: Notify,
    next_open_id: AtomicU64,
    pub(super) cfg: StateConfig,
    /// The SSH window this side advertises for each channel.
    pub(super) ssh_window: u32,
    /// This connection, for its channels (to open children).
    me: Weak<Connection>,
    /// Channels by who opened them and their open id (`true`: this side), for
    /// nested opens that name their parent.
    idents: Mutex<HashMap<(bool, u64), u32>>,
    /// Ids of our opens in flight: a nested open may name one a moment before the
    /// opening task has registered it.
    opening: Mutex<HashSet<u64>>,
    /// Children waiting in the accept queues of this connection's channels.
    pub(crate) queued_children: Arc<AtomicUsize>,
    /// Opening tasks between taking their confirmed channel and recording its id.
    registering: AtomicUsize,
    idents_changed: Notify,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("remote_name", &self.remote_name)
            .field("remote_addr", &self.remote_addr)
            .finish_non_exhaustive()
    }
}

/// An incoming open that passed every check; `complete` finishes it once the SSH
/// layer has been told to accept.
pub(crate) struct Accepted {
    shared: Arc<ChannelShared>,
    info: MetaInfo,
    slot: AcceptSlot,
    peer: Weak<PeerInner>,
}

impl Accepted {
    pub(super) fn new(
        shared: Arc<ChannelShared>,
        info: MetaInfo,
        slot: AcceptSlot,
        peer: Weak<PeerInner>,
    ) -> Accepted {
        Accepted {
            shared,
            info,
            slot,
            peer,
        }
    }

    /// Finishes the open; `writer` is `None` when the channel already has one.
    pub(crate) fn complete(self, writer: Option<Writer>) {
        self.shared.announce();
        if let Some(peer) = self.peer.upgrade() {
            peer.events.emit(|| Event::ChannelOpened {
                peer: self.info.remote_peer.clone(),
                service: self.info.service.clone(),
                local: false,
            });
        }
        if let Some(w) = writer {
            self.shared.attach(w);
        }
        self.shared.describe(self.info);
        self.slot.push(Channel::new(self.shared));
    }
}

impl Connection {
    pub(crate) fn new(
        peer: &Arc<PeerInner>,
        remote_name: String,
        remote_addr: String,
        link: Link,
        kill: Arc<KillSwitch>,
        out: Option<Arc<Outbound>>,
        native: bool,
    ) -> Arc<Connection> {
        let opts = peer.options();
        let conn = Arc::new_cyclic(|me| Connection {
            me: me.clone(),
            idents: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashSet::new()),
            registering: AtomicUsize::new(0),
            queued_children: Arc::default(),
            idents_changed: Notify::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            local_name: peer.name().to_owned(),
            remote_name,
            remote_addr,
            dialed: match &link {
                Link::Client(_) => true,
                Link::Server(_) => false,
                Link::Inproc(l) => l.dialed(),
            },
            native,
            link,
            peer: Arc::downgrade(peer),
            channels: Mutex::new(HashMap::new()),
            unclaimed: Mutex::default(),
            sessions: Mutex::new(HashMap::new()),
            pending_opens: AtomicUsize::new(0),
            pump: Arc::new(Pump::default()),
            kill,
            lost: OnceLock::new(),
            lost_notify: Notify::new(),
            next_open_id: AtomicU64::new(1),
            ssh_window: crate::transport::ssh::ssh_window(&opts),
            cfg: StateConfig {
                window: opts.channel_window,
                max_window: opts.max_channel_window,
                max_frame: opts.max_frame_size,
                send_buffer: opts.send_buffer,
                max_trailer_bytes: opts.max_header_bytes,
                read_timeout: opts.read_timeout,
                write_timeout: opts.write_timeout,
            },
        });
        let weak = Arc::downgrade(&conn);
        tokio::spawn(conn.pump.clone().run(MAX_CHUNK, out, move |ch| {
            if let Some(conn) = weak.upgrade() {
                conn.forget(ch);
            }
        }));
        conn
    }

    /// The options of the peer, while it exists and is not shutting down.
    pub(crate) fn options(&self) -> Option<Arc<crate::config::Options>> {
        self.admitting().ok().map(|(_, o)| o)
    }

    /// The in-process link, for an `inproc://` connection.
    pub(crate) fn inproc_link(&self) -> Option<&Arc<InprocLink>> {
        match &self.link {
            Link::Inproc(l) => Some(l),
            _ => None,
        }
    }

    /// The reason the connection was lost, if it was.
    pub(crate) fn lost(&self) -> Option<Arc<str>> {
        self.lost.get().cloned()
    }

    /// Number of channels this connection tracks.
    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.channels).len()
    }

    fn new_channel(&self, ssh_id: u32) -> Arc<ChannelShared> {
        let ch = ChannelShared::new(ssh_id, self.cfg.clone(), self.pump.clone(), self.me.clone());
        if let Some(reason) = self.lost() {
            ch.update(|s| ((), s.on_connection_lost(&reason)));
        }
        ch
    }

    /// The channel with this SSH number, created if unknown.
    fn get_or_create(&self, ssh_id: u32) -> (Arc<ChannelShared>, bool) {
        let mut map = lock(&self.channels);
        if let Some(ch) = map.get(&ssh_id) {
            return (ch.clone(), false);
        }
        let ch = self.new_channel(ssh_id);
        if self.lost().is_none() {
            map.insert(ssh_id, ch.clone());
        }
        (ch, true)
    }

    /// An open we sent was confirmed (called on the session task): data may follow
    /// before the opening task has run, so the channel must exist now.
    ///
    /// The SSH layer wakes the opening task before it calls this, so the opener
    /// may have claimed the channel already, and even used and closed it: then
    /// there is nothing to do (creating it again would leave a channel nothing
    /// ever reaches in the map).
    pub(crate) fn confirmed(&self, ssh_id: u32) {
        let mut unclaimed = lock(&self.unclaimed);
        if unclaimed.claimed_early.remove(&ssh_id) {
            return;
        }
        let (ch, created) = self.get_or_create(ssh_id);
        if created {
            unclaimed.waiting.insert(ssh_id, ch);
        }
    }

    /// The opening task takes its confirmed channel.
    fn claim(&self, ssh_id: u32) -> Arc<ChannelShared> {
        let mut unclaimed = lock(&self.unclaimed);
        if let Some(ch) = unclaimed.waiting.remove(&ssh_id) {
            return ch;
        }
        // Before `confirmed`, which must then leave it alone.
        unclaimed.claimed_early.insert(ssh_id);
        self.get_or_create(ssh_id).0
    }

    fn get(&self, ssh_id: u32) -> Option<Arc<ChannelShared>> {
        lock(&self.channels).get(&ssh_id).cloned()
    }

    /// Stops routing to a channel whose SSH channel is closed (unless its number
    /// already belongs to a newer channel).
    pub(crate) fn forget(&self, ch: &Arc<ChannelShared>) {
        let (ch, unqueued) = {
            let mut map = lock(&self.channels);
            if routes_to(&map, ch) {
                // Out of its parent's accept queue as it leaves the map: once
                // `channel_count` no longer counts it, `accept` cannot return it.
                (map.remove(&ch.ssh_id), ch.detach_from_parent())
            } else {
                (None, None)
            }
        };
        drop(unqueued);
        if let Some(ch) = ch {
            self.retire(&ch);
            self.closed(&ch);
        }
        self.channels_changed();
    }

    /// A channel removed from the map: its id is forgotten and its children closed.
    fn retire(&self, ch: &Arc<ChannelShared>) {
        self.forget_ident(ch);
        ch.close_children();
        drop(ch.detach_from_parent());
    }

    fn forget_ident(&self, ch: &ChannelShared) {
        if let Some(key) = ch.nest.ident.get() {
            let mut idents = lock(&self.idents);
            if idents.get(key) == Some(&ch.ssh_id) {
                idents.remove(key);
            }
        }
    }

    /// Records who opened `ch` and its id, if it is still routed to (under the
    /// map's lock, so that `forget` cannot miss it).
    fn register_ident(&self, ch: &Arc<ChannelShared>, local: bool, id: u64) {
        let map = lock(&self.channels);
        if routes_to(&map, ch) {
            let _ = ch.nest.ident.set((local, id));
            lock(&self.idents).insert((local, id), ch.ssh_id);
        }
    }

    /// Makes `child` a child of `parent`, if the child is still routed to (under
    /// the map's lock, so that a child closed at once is not left behind in its
    /// parent). A parent that closed meanwhile resets the child.
    fn adopt(&self, parent: &Arc<ChannelShared>, child: &Arc<ChannelShared>) {
        let map = lock(&self.channels);
        if !routes_to(&map, child) {
            return;
        }
        let _ = child.nest.parent.set(Arc::downgrade(parent));
        parent.add_child(child);
        drop(map);
        if !parent.peek(|s| s.accepts_children()) {
            parent.remove_child(child.ssh_id);
            child.update(|s| ((), s.on_parent_closed()));
        }
    }

    /// The channel a nested open names as its parent. One we opened may be named
    /// a moment before our opening task registered it (its confirmation has just
    /// arrived): wait for that, but only while a confirmed open is still being
    /// registered. This runs on the SSH session's task: waiting for an open the
    /// remote has not confirmed would stall the session, so that is refused.
    async fn find_parent(&self, parent: ParentRef) -> Option<Arc<ChannelShared>> {
        // As seen by the sender of the request: `Local` is a channel it opened.
        let key = match parent {
            ParentRef::Local(id) => (false, id),
            ParentRef::Remote(id) => (true, id),
        };
        let find = || {
            let ssh_id = *lock(&self.idents).get(&key)?;
            self.get(ssh_id)
        };
        let wait = async {
            loop {
                let changed = self.idents_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                // Read before looking: an open that registers in between is found.
                let in_flight = key.0
                    && lock(&self.opening).contains(&key.1)
                    && (!lock(&self.unclaimed).waiting.is_empty()
                        || self.registering.load(Ordering::SeqCst) > 0);
                if let Some(ch) = find() {
                    return Some(ch);
                }
                if !in_flight {
                    return None;
                }
                changed.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .ok()
            .flatten()
    }

    fn closed(&self, ch: &ChannelShared) {
        if !ch.announced() {
            return;
        }
        if let (Some(info), Some(peer)) = (ch.info(), self.peer.upgrade()) {
            peer.events.emit(|| Event::ChannelClosed {
                peer: info.remote_peer.clone(),
                service: info.service.clone(),
            });
        }
    }

    /// Waits until the connection is lost.
    pub(crate) async fn wait_lost(&self) {
        loop {
            let gone = self.lost_notify.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.lost().is_some() {
                return;
            }
            gone.await;
        }
    }

    fn channels_changed(&self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.channels_changed();
        }
    }

    // ---- from the session's handler ----

    /// Data handed over whole: kept without a copy where the channel can.
    pub(crate) fn on_data_owned(&self, ssh_id: u32, data: bytes::Bytes) {
        if let Some(ch) = self.get(ssh_id) {
            ch.update(|s| ((), s.on_data_owned(data)));
        }
    }

    pub(crate) fn on_extended(&self, ssh_id: u32, ext: u32, data: &[u8]) {
        if let Some(ch) = self.get(ssh_id) {
            ch.update(|s| ((), s.on_extended(ext, data)));
        }
    }

    pub(crate) fn on_eof(&self, ssh_id: u32) {
        if let Some(ch) = self.get(ssh_id) {
            ch.update(|s| ((), s.on_eof()));
        }
    }

    pub(crate) fn on_close(&self, ssh_id: u32) {
        self.forget_session(ssh_id);
        if let Some(ch) = self.get(ssh_id) {
            ch.update(|s| ((), s.on_close()));
            self.forget(&ch);
        }
    }

    /// Decides on an open request from the remote.
    pub(crate) async fn incoming_open(
        self: &Arc<Self>,
        ssh_id: u32,
        path: &str,
    ) -> Result<Accepted, OpenRefusal> {
        let (peer, opts) = self.admitting()?;
        let req = OpenRequest::decode(path, opts.max_header_bytes).map_err(|e| {
            tracing::info!(peer = %self.remote_name, error = %e, "refused an open");
            OpenRefusal::BadRequest
        })?;
        let headers = Headers::from(req.headers);
        let (slot, parent) = match req.parent {
            // The authoriser is the application's code: never run it under our locks.
            None => (self.admit(&peer, &opts, &req.service, &headers)?, None),
            // A child goes to its parent's `accept`; the parent is its scope, so
            // neither the peer's service list nor its authoriser applies.
            Some(p) => {
                let parent = self
                    .find_parent(p)
                    .await
                    .ok_or(OpenRefusal::ParentNotFound)?;
                if !parent.peek(|s| s.accepts_children()) {
                    return Err(OpenRefusal::ParentNotFound);
                }
                let slot = parent
                    .nest
                    .accept_queue()
                    .reserve(opts.max_pending_accepts)
                    .ok_or(OpenRefusal::AcceptQueueFull)?;
                (slot, Some(parent))
            }
        };
        let mut map = lock(&self.channels);
        // Checked under the lock `lose` drains the map with.
        if let Some(reason) = self.lost() {
            tracing::debug!(%reason, "refused an open on a lost connection");
            return Err(OpenRefusal::ShuttingDown);
        }
        if map.len() >= opts.max_channels_per_connection {
            return Err(OpenRefusal::TooManyChannels);
        }
        let shared = self.new_channel(ssh_id);
        if let Some(parent) = &parent {
            let _ = shared.nest.parent.set(Arc::downgrade(parent));
            parent.add_child(&shared);
            // Closed meanwhile: its children were already closed, without this one.
            if !parent.peek(|s| s.accepts_children()) {
                parent.remove_child(ssh_id);
                return Err(OpenRefusal::ParentNotFound);
            }
        }
        let replaced = map.insert(ssh_id, shared.clone());
        if let Some(id) = req.id {
            let _ = shared.nest.ident.set((false, id));
            lock(&self.idents).insert((false, id), ssh_id);
        }
        drop(map);
        if let Some(old) = replaced {
            // The SSH layer reused the number of a channel we had not forgotten yet.
            old.update(|s| ((), s.on_close()));
            self.retire(&old);
            self.closed(&old);
        }
        Ok(Accepted::new(
            shared,
            self.meta(req.service, headers),
            slot,
            self.peer.clone(),
        ))
    }

    /// The peer and its options, if it still takes channels.
    pub(super) fn admitting(
        &self,
    ) -> Result<(Arc<PeerInner>, Arc<crate::config::Options>), OpenRefusal> {
        let peer = self.peer.upgrade().ok_or(OpenRefusal::ShuttingDown)?;
        if peer.is_shutting_down() {
            return Err(OpenRefusal::ShuttingDown);
        }
        let opts = peer.options();
        Ok((peer, opts))
    }

    /// May the remote use `service`? If so, a place in the accept queue.
    pub(super) fn admit(
        &self,
        peer: &PeerInner,
        opts: &crate::config::Options,
        service: &str,
        headers: &Headers,
    ) -> Result<AcceptSlot, OpenRefusal> {
        if !opts.services.contains(service) && !peer.listens(service) {
            return Err(OpenRefusal::ServiceNotFound);
        }
        if let Some(auth) = peer.authorizer() {
            let request = AccessRequest {
                peer: &self.remote_name,
                service,
                headers,
            };
            if !auth.authorize(&request) {
                return Err(OpenRefusal::Denied);
            }
        }
        peer.accept_slot(service, opts.max_pending_accepts)
            .ok_or(OpenRefusal::AcceptQueueFull)
    }

    pub(super) fn meta(&self, service: String, headers: Headers) -> MetaInfo {
        MetaInfo {
            service,
            headers,
            local_peer: self.local_name.clone(),
            remote_peer: self.remote_name.clone(),
        }
    }

    /// Opens a channel to the remote, inside `parent` if given, within the limits
    /// and open timeout of `opts`.
    pub(crate) async fn open(
        self: &Arc<Self>,
        service: &str,
        headers: Headers,
        parent: Option<Arc<ChannelShared>>,
        opts: &crate::config::Options,
    ) -> Result<Channel, OpenErrorKind> {
        let (max_channels, max_header_bytes, timeout) = (
            opts.max_channels_per_connection,
            opts.max_header_bytes,
            opts.open_timeout,
        );
        if let Some(reason) = self.lost() {
            return Err(OpenErrorKind::ConnectionLost(reason));
        }
        let open_now = self.channel_count() + self.pending_opens.load(Ordering::SeqCst);
        if open_now >= max_channels {
            return Err(OpenErrorKind::TooManyChannels(max_channels));
        }
        let parent_ref = match &parent {
            None => None,
            Some(p) => {
                if !p.peek(|s| s.accepts_children()) {
                    return Err(OpenErrorKind::ParentClosed);
                }
                // As the receiver will see it: `Local` is a channel we (the sender) opened.
                match p.nest.ident.get() {
                    Some(&(true, id)) => Some(ParentRef::Local(id)),
                    Some(&(false, id)) => Some(ParentRef::Remote(id)),
                    None => {
                        return Err(OpenErrorKind::InvalidRequest(
                            "channels cannot be opened inside this channel (the remote gave it no id)"
                                .into(),
                        ));
                    }
                }
            }
        };
        let open_id = self.next_open_id.fetch_add(1, Ordering::Relaxed);
        let req = OpenRequest {
            service: service.to_owned(),
            headers: headers.as_slice().to_vec(),
            id: Some(open_id),
            parent: parent_ref,
        };
        let path = req
            .encode(max_header_bytes)
            .map_err(|e| OpenErrorKind::InvalidRequest(e.to_string()))?;
        let info = MetaInfo {
            service: service.to_owned(),
            headers,
            local_peer: self.local_name.clone(),
            remote_peer: self.remote_name.clone(),
        };
        // The open runs in its own task: if the caller gives up (timeout, dropped
        // future), a late confirmation still gets its channel closed properly.
        // It counts against the channel limit until it completes or the caller gives up.
        let (tx, rx) = oneshot::channel();
        let conn = self.clone();
        let counted = Arc::new(AtomicBool::new(true));
        self.pending_opens.fetch_add(1, Ordering::SeqCst);
        let uncount = {
            let (conn, counted) = (self.clone(), counted.clone());
            move || {
                if counted.swap(false, Ordering::SeqCst) {
                    conn.pending_opens.fetch_sub(1, Ordering::SeqCst);
                }
            }
        };
        let uncount_in_task = uncount.clone();
        lock(&self.opening).insert(open_id);
        tokio::spawn(async move {
            let res = conn.link.open_streamlocal(path).await;
            uncount_in_task();
            let res = match res {
                Ok((ssh_id, writer)) => {
                    conn.registering.fetch_add(1, Ordering::SeqCst);
                    let shared = conn.claim(ssh_id);
                    conn.register_ident(&shared, true, open_id);
                    conn.registering.fetch_sub(1, Ordering::SeqCst);
                    if let Some(parent) = &parent {
                        conn.adopt(parent, &shared);
                    }
                    shared.announce();
                    if let Some(peer) = conn.peer.upgrade() {
                        peer.events.emit(|| Event::ChannelOpened {
                            peer: info.remote_peer.clone(),
                            service: info.service.clone(),
                            local: true,
                        });
                    }
                    shared.establish(info, writer);
                    Ok(Channel::new(shared))
                }
                Err(OpenFailed::Refused(code)) => {
                    Err(OpenErrorKind::Refused(OpenRefusal::from_code(code)))
                }
                Err(OpenFailed::Gone) => Err(OpenErrorKind::ConnectionLost(
                    conn.lost()
                        .unwrap_or_else(|| Arc::from("connection closed")),
                )),
            };
            lock(&conn.opening).remove(&open_id);
            conn.idents_changed.notify_waiters();
            // If nobody waits any more, dropping the channel closes it.
            let _ = tx.send(res);
        });
        let res = tokio::time::timeout(timeout, rx).await;
        uncount();
        match res {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(OpenErrorKind::ConnectionLost(Arc::from(
                "connection closed",
            ))),
            Err(_) => Err(OpenErrorKind::Timeout(timeout)),
        }
    }

    /// Marks the connection lost: every channel fails, the peer forgets it.
    pub(crate) fn lose(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        if self.lost.set(reason.clone()).is_err() {
            return;
        }
        tracing::debug!(peer = %self.remote_name, %reason, "connection lost");
        // Forget the connection first, so that whoever wakes up below already sees
        // the peer gone.
        let peer = self.peer.upgrade();
        let was_registered = peer.as_ref().is_some_and(|p| p.unregister(self.id));
        *lock(&self.unclaimed) = Unclaimed::default();
        lock(&self.sessions).clear();
        let channels: Vec<_> = lock(&self.channels).drain().map(|(_, c)| c).collect();
        lock(&self.idents).clear();
        for ch in &channels {
            ch.update(|s| ((), s.on_connection_lost(&reason)));
        }
        for ch in channels {
            // Every child failed with the connection; only their queues remain.
            ch.close_children();
            drop(ch.detach_from_parent());
            self.closed(&ch);
        }
        self.idents_changed.notify_waiters();
        if let Some(peer) = peer.as_ref().filter(|_| was_registered) {
            peer.events.emit(|| Event::Disconnected {
                peer: self.remote_name.clone(),
                endpoint: self.remote_addr.clone(),
                reason: reason.to_string(),
            });
        }
        self.pump.close();
        self.kill.kill();
        if let Some(l) = self.inproc_link() {
            l.lost(&reason);
        }
        self.lost_notify.notify_waiters();
        if let Some(peer) = &peer {
            peer.channels_changed();
        }
    }

    /// Closes the connection: a polite SSH disconnect, a moment for the remote to
    /// hang up, then the socket.
    pub(crate) async fn close(&self, why: &str) {
        let gone = self.lost_notify.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if self.lost().is_none() {
            let grace = std::time::Duration::from_secs(1);
            let _ = tokio::time::timeout(grace, async {
                self.link.disconnect(why).await;
                gone.await;
            })
            .await;
        }
        self.lose(why);
    }

    /// Channels currently open (for shutdown).
    pub(crate) fn channels(&self) -> Vec<Arc<ChannelShared>> {
        lock(&self.channels).values().cloned().collect()
    }
}
