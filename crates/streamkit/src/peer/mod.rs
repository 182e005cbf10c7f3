//! Peers: the sockets of Streamkit. A peer binds and connects any number of
//! endpoints; every connection carries channels both ways.

mod conns;
mod dialer;
pub mod events;
mod host;
mod listen;
pub(crate) mod relay;

pub use listen::ServiceListener;
pub use relay::Route;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::channel::Headers;
use crate::config::{Authorize, Options, PeerConfig};
use crate::connection::accept::{AcceptQueue, AcceptSlot};
use crate::connection::driver::lock;
use crate::connection::handle::{Channel, ChannelMeta};
use crate::connection::{Conn, PeerBudget};
use crate::endpoint::Endpoint;
use crate::error::{BindError, ConfigError, ConnectError, OpenError, OpenErrorKind};
use crate::keys::{Identity, PublicKey};
use crate::transport::ssh::server;
use crate::transport::{Host, Listener};
use crate::trust::Trust;
use crate::wire::ident::validate_peer_name;

/// A Streamkit peer.
///
/// Cheap to clone: clones share the same peer. Dropping the last clone closes
/// every connection and listener; [`shutdown`](Peer::shutdown) does it gracefully.
#[derive(Clone, Debug)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

/// What a peer holds at one moment: see [`Peer::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Connections established (authenticated), over every transport.
    pub connections: usize,
    /// Connections in their SSH handshake, accepted or dialled.
    pub handshakes: usize,
    /// Accepted sockets refused before their handshake for a limit
    /// (`max_connections_per_address`, `max_handshakes`, `max_connections`), since
    /// the peer was made.
    pub refused: u64,
    /// Channels open on all connections (not yet closed on this side), but for
    /// the peer's own: a hub's presence channel, the relays that carry sessions
    /// through a hub (and, on a hub, the relays it routes: see
    /// [`HubStats`](crate::hub::HubStats)).
    pub channels: usize,
    /// Bytes received and held for readers: data, error frames, frames being
    /// assembled.
    pub buffered: usize,
    /// Bytes written by the application and not yet handed to the connection.
    pub send_buffered: usize,
    /// Bytes charged to the memory budget over all connections: what remotes hold
    /// here (`buffered`) plus the credit they were granted and have not used, and
    /// the reservations of channels and sessions (see
    /// [`Options::memory_budget`](crate::Options::memory_budget)).
    pub budgeted: u64,
}

/// Why [`Peer::accept`] returned no channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The peer was shut down.
    #[error("peer is shut down")]
    ShutDown,
}

/// Why [`Peer::listen`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Another [`ServiceListener`] of this peer takes that service's channels.
    #[error("service {0:?} already has a listener")]
    InUse(String),
    /// The peer was shut down.
    #[error("peer is shut down")]
    ShutDown,
}

struct Settings {
    trust: Trust,
    options: Arc<Options>,
    authorizer: Option<Arc<dyn Authorize>>,
}

struct Bound {
    requested: String,
    endpoint: Endpoint,
    listener: Arc<Listener>,
    task: JoinHandle<()>,
}

pub(crate) struct PeerInner {
    /// This peer, for the observers of its connections.
    me: Weak<PeerInner>,
    name: String,
    identity: Identity,
    token: Option<String>,
    /// Takes standard clients' remote forwards (`ssh -R`).
    remote_forward: Option<Arc<dyn crate::forward::RemoteForward>>,
    settings: RwLock<Settings>,
    listeners: Mutex<Vec<Bound>>,
    conns: Mutex<conns::Conns>,
    dialers: Mutex<HashMap<Endpoint, Arc<dialer::Dialer>>>,
    /// Connections (established or in their handshake) per remote IP address.
    per_address: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// Connections in their SSH handshake, either way (see [`PeerStats`]).
    handshakes: Arc<AtomicUsize>,
    /// Accepted connections being served, handshakes included.
    accepted: Arc<AtomicUsize>,
    /// Accepted sockets refused before their handshake, for a limit.
    refused: std::sync::atomic::AtomicU64,
    /// What remotes make this peer hold, over all connections.
    budget: Arc<PeerBudget>,
    /// The same per remote address, while it has connections.
    address_budgets: Mutex<HashMap<std::net::IpAddr, std::sync::Weak<PeerBudget>>>,
    pub(crate) events: events::Emitter,
    accept: Arc<AcceptQueue>,
    /// Services whose channels go to a [`ServiceListener`] instead of `accept`.
    listened: Mutex<HashMap<String, Arc<AcceptQueue>>>,
    round_robin: AtomicUsize,
    shutting_down: AtomicBool,
    changed: Notify,
    /// Channels of this peer's own services (relays, presence), each taken by a
    /// task of its own (see `relay`).
    internal: Arc<AcceptQueue>,
    /// The task taking them, started with the first.
    internal_task: std::sync::OnceLock<()>,
    /// What hubs say is reachable through them.
    presence: Mutex<relay::Presence>,
    /// Channels of this peer's own services open now (see `channels_gone`).
    internal_open: AtomicUsize,
    /// One relay session being made per name at a time.
    relaying: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The routing of a hub (`crate::hub`), if this peer is one.
    pub(crate) router: std::sync::OnceLock<Arc<dyn relay::Router>>,
}

impl std::fmt::Debug for PeerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerInner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PeerInner {
    pub(crate) fn options(&self) -> Arc<Options> {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .options
            .clone()
    }

    pub(crate) fn trust(&self) -> Trust {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .trust
            .clone()
    }

    pub(crate) fn authorizer(&self) -> Option<Arc<dyn Authorize>> {
        self.settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .authorizer
            .clone()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A place in the queue `service`'s channels go to.
    fn accept_slot(&self, service: &str, max: usize) -> Option<AcceptSlot> {
        let listened = lock(&self.listened).get(service).cloned();
        listened.as_ref().unwrap_or(&self.accept).reserve(max)
    }

    /// A place in the queue of this peer's own services; the task that takes
    /// them starts with the first.
    fn internal_slot(&self, max: usize) -> Option<AcceptSlot> {
        self.internal_task.get_or_init(|| {
            let (me, queue) = (self.me.clone(), self.internal.clone());
            tokio::spawn(async move {
                while let Some(ch) = queue.pop().await {
                    let Some(peer) = me.upgrade() else { return };
                    peer.take_internal(ch);
                }
            });
        });
        self.internal.reserve(max)
    }

    /// Whether a [`ServiceListener`] takes `service`'s channels.
    fn listens(&self, service: &str) -> bool {
        lock(&self.listened).contains_key(service)
    }

    /// Forgets a connection; `true` if it was registered.
    fn unregister(&self, id: u64) -> bool {
        let was = lock(&self.conns).remove(id).is_some();
        self.changed.notify_waiters();
        was
    }

    /// Stops keeping an endpoint connected (after its last attempt).
    pub(crate) fn forget_dialer(&self, d: &Arc<dialer::Dialer>) {
        let mut dialers = lock(&self.dialers);
        if dialers.get(&d.endpoint).is_some_and(|x| Arc::ptr_eq(x, d)) {
            dialers.remove(&d.endpoint);
        }
    }

    /// Counts a connection from `ip`; `false` if that is over the limit (it is
    /// counted anyway: release it with `release_address`).
    pub(crate) fn admit_address(&self, ip: std::net::IpAddr) -> bool {
        let max = self.options().max_connections_per_address;
        let mut per = lock(&self.per_address);
        let n = per.entry(ip).or_insert(0);
        *n += 1;
        *n <= max
    }

    pub(crate) fn release_address(&self, ip: std::net::IpAddr) {
        let mut per = lock(&self.per_address);
        if let Some(n) = per.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&ip);
            }
        }
    }

    /// Waits until `name` is reachable (a live connection, or a hub that reaches
    /// it), for at most `wait`.
    async fn route_to(&self, name: &str, wait: std::time::Duration) -> Option<relay::Target> {
        let waiting = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(t) = self.find_route(name) {
                    return t;
                }
                changed.await;
            }
        };
        match self.find_route(name) {
            Some(t) => Some(t),
            None if wait.is_zero() => None,
            None => tokio::time::timeout(wait, waiting).await.ok(),
        }
    }

    /// Waits until no channel of the application's is open (the peer's own, which
    /// carry relays and presence, end with their connections), for at most
    /// `timeout`; `false` if some still are.
    async fn channels_gone(&self, timeout: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.channel_count() == 0 {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The registered connections that are not lost.
    pub(crate) fn live_connections(&self) -> Vec<Arc<Conn>> {
        lock(&self.conns)
            .values()
            .filter(|c| c.lost().is_none())
            .cloned()
            .collect()
    }

    fn connections(&self) -> Vec<Arc<Conn>> {
        lock(&self.conns).values().cloned().collect()
    }

    /// Channels open, but for the peer's own (relays, presence).
    fn channel_count(&self) -> usize {
        let all: usize = lock(&self.conns).values().map(|c| c.channel_count()).sum();
        all.saturating_sub(self.internal_open.load(Ordering::SeqCst))
    }

    fn stats(&self) -> PeerStats {
        let conns = self.connections();
        let mut stats = PeerStats {
            connections: conns.len(),
            handshakes: self.handshakes.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            budgeted: self.budget.used(),
            ..PeerStats::default()
        };
        stats.channels = self.channel_count();
        for c in &conns {
            let (rx, tx) = c.buffered();
            stats.buffered += rx;
            stats.send_buffered += tx;
        }
        stats
    }
}

impl Drop for PeerInner {
    fn drop(&mut self) {
        for d in lock(&self.dialers).drain().map(|(_, d)| d) {
            d.stop();
        }
        for b in lock(&self.listeners).drain(..) {
            b.task.abort();
            b.listener.cleanup();
        }
        for c in lock(&self.conns).take_all() {
            c.lose("local peer dropped");
        }
    }
}

impl Peer {
    /// Creates a peer. Nothing is bound or connected yet.
    pub fn new(config: PeerConfig) -> Result<Peer, ConfigError> {
        validate_peer_name(&config.name)?;
        config.options.validate()?;
        let budget = PeerBudget::new(config.options.memory_budget as u64);
        Ok(Peer {
            inner: Arc::new_cyclic(|me| PeerInner {
                budget,
                address_budgets: Mutex::new(HashMap::new()),
                me: me.clone(),
                name: config.name,
                identity: config.identity,
                token: config.token,
                remote_forward: config.remote_forward,
                settings: RwLock::new(Settings {
                    trust: config.trust,
                    options: Arc::new(config.options),
                    authorizer: config.authorizer,
                }),
                listeners: Mutex::new(Vec::new()),
                conns: Mutex::new(conns::Conns::default()),
                dialers: Mutex::new(HashMap::new()),
                per_address: Mutex::new(HashMap::new()),
                handshakes: Arc::default(),
                accepted: Arc::default(),
                refused: std::sync::atomic::AtomicU64::new(0),
                events: events::Emitter::default(),
                accept: Arc::new(AcceptQueue::default()),
                listened: Mutex::new(HashMap::new()),
                round_robin: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                changed: Notify::new(),
                internal: Arc::new(AcceptQueue::default()),
                internal_task: std::sync::OnceLock::new(),
                internal_open: AtomicUsize::new(0),
                presence: Mutex::new(relay::Presence::default()),
                relaying: Mutex::new(HashMap::new()),
                router: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The peer's insides, for the layers built on it in this crate (the hub).
    pub(crate) fn inner(&self) -> &Arc<PeerInner> {
        &self.inner
    }

    /// This peer's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This peer's public key (give it to the peers that should trust it).
    pub fn public_key(&self) -> PublicKey {
        self.inner.identity.public_key()
    }

    /// The current options.
    pub fn options(&self) -> Options {
        (*self.inner.options()).clone()
    }

    /// Replaces the options of the live peer; each option's documentation says when
    /// the change takes effect.
    pub fn set_options(&self, options: Options) -> Result<(), ConfigError> {
        options.validate()?;
        self.inner
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .options = Arc::new(options);
        Ok(())
    }

    /// Replaces the trust policy; applies to connections made from now on.
    pub fn set_trust(&self, trust: Trust) {
        self.inner
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .trust = trust;
    }

    /// Listens on an endpoint (`tcp://host:port`, `unix:///path`, `inproc://name`).
    /// Returns the endpoint as bound: `tcp://127.0.0.1:0` comes back with its port.
    ///
    /// A Unix socket file left by a dead process is replaced; one that a live
    /// process listens on is [`BindError::InUse`], as is an `inproc://` name that
    /// another live peer of this process holds. `inproc://` names are shared by the
    /// whole process; connections to them skip SSH and encryption but keep every
    /// channel semantic, limit and trust check.
    pub async fn bind(&self, url: &str) -> Result<Endpoint, BindError> {
        if self.inner.is_shutting_down() {
            return Err(BindError::ShutDown);
        }
        let ep = Endpoint::parse(url)?;
        let (listener, bound, task) = if let Endpoint::Inproc(name) = &ep {
            let host: Arc<dyn Host> = self.inner.clone();
            crate::transport::inproc::bind(&host, name)?;
            let listener = Listener::Inproc(name.clone(), Arc::downgrade(&host));
            // Nothing to accept: connecting peers build both ends of the connection.
            (Arc::new(listener), ep.clone(), tokio::spawn(async {}))
        } else {
            let (listener, bound) = Listener::bind(&ep).await?;
            let listener = Arc::new(listener);
            let task = tokio::spawn(accept_loop(Arc::downgrade(&self.inner), listener.clone()));
            (listener, bound, task)
        };
        tracing::debug!(peer = %self.inner.name, endpoint = %bound, "bound");
        lock(&self.inner.listeners).push(Bound {
            requested: url.to_owned(),
            endpoint: bound.clone(),
            listener,
            task,
        });
        Ok(bound)
    }

    /// Stops listening on an endpoint (as passed to `bind` or as it returned).
    /// Connections already made stay up.
    pub async fn unbind(&self, url: &str) -> Result<(), BindError> {
        let ep = Endpoint::parse(url)?;
        let mut listeners = lock(&self.inner.listeners);
        let Some(i) = listeners
            .iter()
            .position(|b| b.requested == url || b.endpoint == ep)
        else {
            return Err(BindError::NotBound(url.to_owned()));
        };
        let b = listeners.remove(i);
        b.task.abort();
        b.listener.cleanup();
        Ok(())
    }

    /// The endpoints this peer listens on.
    pub fn bound(&self) -> Vec<Endpoint> {
        lock(&self.inner.listeners)
            .iter()
            .map(|b| b.endpoint.clone())
            .collect()
    }

    /// Connects to a bound peer and completes the handshake; returns the remote's name.
    ///
    /// Either side can open channels once connected. The endpoint is kept: if the
    /// connection is lost it is dialled again in the background (see
    /// [`Options::reconnect`](crate::Options)) until [`disconnect`](Peer::disconnect).
    /// While the endpoint cannot be reached `connect` itself retries too, unless
    /// `reconnect.retry_first_connect` is off; trust and authentication failures
    /// are returned at once. Dropping the future gives up.
    pub async fn connect(&self, url: &str) -> Result<String, ConnectError> {
        if self.inner.is_shutting_down() {
            return Err(ConnectError::ShutDown);
        }
        let ep = Endpoint::parse(url)?;
        let d = {
            let mut dialers = lock(&self.inner.dialers);
            if dialers.contains_key(&ep) {
                return Err(ConnectError::AlreadyConnected(ep.to_string()));
            }
            let d = dialer::Dialer::new(ep.clone());
            dialers.insert(ep, d.clone());
            d
        };
        // Forget the endpoint if this future is dropped or fails.
        struct Pending<'a>(&'a PeerInner, Option<Arc<dialer::Dialer>>);
        impl Drop for Pending<'_> {
            fn drop(&mut self) {
                if let Some(d) = self.1.take() {
                    d.stop();
                    self.0.forget_dialer(&d);
                }
            }
        }
        let mut pending = Pending(&self.inner, Some(d.clone()));
        let conn = dialer::first_connect(&self.inner, &d).await?;
        pending.1 = None;
        if self.inner.is_shutting_down() {
            // Shutdown began during the handshake; its sweep may have missed us.
            d.stop();
            self.inner.forget_dialer(&d);
            conn.close("peer shut down").await;
            return Err(ConnectError::ShutDown);
        }
        tokio::spawn(dialer::supervise(Arc::downgrade(&self.inner), d));
        Ok(conn.info.remote_name.clone())
    }

    /// Runs a connection over a byte stream that is already open (a pipe, a child
    /// process's stdio, a channel of another connection, an in-memory duplex), as
    /// the SSH client: the same handshake, trust checks and channels as
    /// [`connect`](Self::connect). The server's key is checked against this peer's
    /// trust by the name it announces, or by `label` in `known_hosts`; `label`
    /// also names the stream in messages and events. Returns the remote's name
    /// once authenticated. A stream has no address to dial again: when it ends,
    /// the connection is lost for good.
    pub async fn connect_stream<S>(&self, stream: S, label: &str) -> Result<String, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        if self.inner.is_shutting_down() {
            return Err(ConnectError::ShutDown);
        }
        let (r, w) = tokio::io::split(stream);
        let socket = crate::transport::Socket::Io(Box::new(r), Box::new(w));
        let host: Arc<dyn Host> = self.inner.clone();
        let conn = crate::transport::ssh::client::handshake(
            &host,
            socket,
            label.to_owned(),
            vec![label.to_owned()],
            None,
        )
        .await?;
        Ok(conn.info.remote_name.clone())
    }

    /// The other end of [`connect_stream`](Self::connect_stream): runs the SSH
    /// server over `stream`, and the remote authenticates as it would on a bound
    /// endpoint. Returns the remote's name once it has authenticated; the
    /// connection then runs in the background until the stream ends.
    pub async fn serve_stream<S>(&self, stream: S, label: &str) -> Result<String, ConnectError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        if self.inner.is_shutting_down() {
            return Err(ConnectError::ShutDown);
        }
        let (r, w) = tokio::io::split(stream);
        let socket = crate::transport::Socket::Io(Box::new(r), Box::new(w));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(server::serve(
            self.inner.clone() as Arc<dyn Host>,
            socket,
            label.to_owned(),
            None,
            Some(tx),
            None,
        ));
        let failed = |why: String| ConnectError::Handshake {
            endpoint: label.to_owned(),
            why,
        };
        match rx.await {
            Ok(Ok(name)) => Ok(name),
            Ok(Err(why)) => Err(failed(why)),
            Err(_) => Err(failed("connection closed during the handshake".into())),
        }
    }

    /// Closes the connection made by `connect(url)` and stops re-dialling it.
    pub async fn disconnect(&self, url: &str) -> Result<(), ConnectError> {
        let ep = Endpoint::parse(url)?;
        let d = lock(&self.inner.dialers)
            .remove(&ep)
            .ok_or_else(|| ConnectError::NotConnected(url.to_owned()))?;
        let mut gone: Vec<Arc<Conn>> = d.stop().into_iter().collect();
        // A re-dial that registered its connection but had not handed it to the
        // dialer yet would close it only after we return: closed here, so that
        // nothing dialled to this endpoint outlives `disconnect`.
        let addr = ep.to_string();
        gone.extend(
            lock(&self.inner.conns)
                .values()
                .filter(|c| c.info.dialed && c.info.remote_addr == addr)
                .filter(|c| !gone.iter().any(|g| Arc::ptr_eq(g, c)))
                .cloned()
                .collect::<Vec<_>>(),
        );
        for conn in gone {
            conn.close("disconnected").await;
        }
        Ok(())
    }

    /// Subscribes to events: connections made and lost, re-dial attempts, channels
    /// opened and closed. See [`Event`](crate::Event).
    pub fn events(&self) -> events::Events {
        self.inner.events.subscribe()
    }

    /// Names of the peers [`open`](Self::open) can reach: the connected ones, in
    /// the order they connected, then those reachable through a hub (sorted).
    /// [`routes`](Self::routes) says which is which.
    pub fn peers(&self) -> Vec<String> {
        self.routes().into_iter().map(|r| r.peer).collect()
    }

    /// How each peer [`open`](Self::open) can reach is reached: by a connection
    /// of its own (in the order they connected), or through a hub that announced
    /// it (presence; see [`Event::Reachable`](crate::Event::Reachable)). A peer
    /// with a connection is listed once, without the hubs that also reach it.
    pub fn routes(&self) -> Vec<Route> {
        let mut seen = std::collections::HashSet::new();
        let mut routes: Vec<Route> = Vec::new();
        for c in lock(&self.inner.conns).values() {
            if seen.insert(c.info.remote_name.clone()) {
                routes.push(Route {
                    peer: c.info.remote_name.clone(),
                    via: None,
                });
            }
        }
        for (peer, hub) in lock(&self.inner.presence).all() {
            if peer != self.inner.name && seen.insert(peer.clone()) {
                routes.push(Route {
                    peer,
                    via: Some(hub),
                });
            }
        }
        routes
    }

    /// Closes every connection to the named peer, and stops re-dialling the
    /// endpoints they came from (`connect` again to resume); `false` if none was
    /// connected.
    pub async fn drop_peer(&self, name: &str) -> bool {
        let conns: Vec<_> = self
            .inner
            .connections()
            .into_iter()
            .filter(|c| c.info.remote_name == name)
            .collect();
        // Also the dialers waiting to bring this peer back (between attempts).
        let mut stopped = false;
        lock(&self.inner.dialers).retain(|_, d| {
            let ours = d.peer_name().is_some_and(|n| n == name);
            if ours {
                d.stop();
                stopped = true;
            }
            !ours
        });
        for c in &conns {
            c.close("dropped").await;
        }
        !conns.is_empty() || stopped
    }

    /// The next connected peer, round-robin, starting with the first to connect.
    pub fn next_peer(&self) -> Option<String> {
        let peers = self.peers();
        if peers.is_empty() {
            return None;
        }
        let i = self.inner.round_robin.fetch_add(1, Ordering::Relaxed);
        peers.get(i % peers.len()).cloned()
    }

    /// Opens a channel to `service` on the named peer, with headers.
    ///
    /// One round trip: the service and headers travel in the open request. Fails
    /// with [`OpenErrorKind::Refused`] when the remote refuses (for example
    /// "service not found"); the connection stays up.
    pub async fn open(
        &self,
        peer: &str,
        service: &str,
        headers: impl Into<Headers>,
    ) -> Result<Channel, OpenError> {
        let err = |kind| OpenError::new(peer, service, kind);
        if self.inner.is_shutting_down() {
            return Err(err(OpenErrorKind::ShuttingDown));
        }
        let opts = self.inner.options();
        // The most recent live connection to that name, or a hub that reaches it,
        // waiting for one a while.
        let target = self
            .inner
            .route_to(peer, opts.open_wait)
            .await
            .ok_or_else(|| err(OpenErrorKind::NoSuchPeer(opts.open_wait)))?;
        let conn = match target {
            relay::Target::Direct(c) => c,
            relay::Target::Hub(hub) => self.inner.relay_connect(peer, hub).await.map_err(err)?,
        };
        conn.open(service, headers.into(), None).await.map_err(err)
    }

    /// Waits for the next channel a remote peer opened, on any connection.
    ///
    /// Cancel-safe: a channel is never lost by dropping the future. After
    /// [`shutdown`](Peer::shutdown) starts, channels already waiting are still
    /// returned; then it fails with [`AcceptError::ShutDown`].
    pub async fn accept(&self) -> Result<(ChannelMeta, Channel), AcceptError> {
        let ch = self.inner.accept.pop().await.ok_or(AcceptError::ShutDown)?;
        Ok((ch.meta().clone(), ch))
    }

    /// Takes the channels opened for `service` out of [`accept`](Self::accept):
    /// from now on they arrive at the returned listener's `accept`, whatever the
    /// peer's [`Services`](crate::Services) option says (the authoriser still
    /// decides who may open them). Dropping the listener gives the service back;
    /// channels it had not accepted are reset.
    ///
    /// This is how a layer such as an RPC server shares a peer with the
    /// application's own services.
    pub fn listen(&self, service: &str) -> Result<ServiceListener, ListenError> {
        let inner = &self.inner;
        if inner.is_shutting_down() {
            return Err(ListenError::ShutDown);
        }
        let mut listened = lock(&inner.listened);
        if listened.contains_key(service) {
            return Err(ListenError::InUse(service.to_owned()));
        }
        let queue = Arc::new(AcceptQueue::default());
        listened.insert(service.to_owned(), queue.clone());
        Ok(ServiceListener {
            peer: Arc::downgrade(inner),
            service: service.to_owned(),
            queue,
        })
    }

    /// Channels open on all connections (not yet closed on this side), but for
    /// the peer's own (see [`PeerStats::channels`]).
    pub fn channel_count(&self) -> usize {
        self.inner.channel_count()
    }

    /// What this peer holds now: connections, channels, bytes. A snapshot; cheap
    /// enough to poll, not free (it visits every channel).
    pub fn stats(&self) -> PeerStats {
        self.inner.stats()
    }

    /// Shuts down gracefully: stops listening and accepting, lets open channels
    /// finish for up to the close timeout, resets what is left, and closes every
    /// connection. Returns how many channels had to be reset.
    pub async fn shutdown(&self) -> usize {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        for d in lock(&inner.dialers).drain().map(|(_, d)| d) {
            d.stop();
        }
        for b in lock(&inner.listeners).drain(..) {
            b.task.abort();
            b.listener.cleanup();
        }
        inner.accept.close();
        for q in lock(&inner.listened).values() {
            q.close();
        }
        let timeout = inner.options().close_timeout;
        let finished = inner.channels_gone(timeout).await;
        let mut reset = 0;
        if !finished {
            for conn in inner.connections() {
                for key in conn.open_keys() {
                    reset += 1;
                    conn.step(|s| s.shutdown(key));
                }
            }
            // Give the resets a moment to leave.
            inner.channels_gone(std::time::Duration::from_secs(1)).await;
        }
        // Sessions through hubs first: they end inside the hubs' connections.
        let (relayed, direct): (Vec<_>, Vec<_>) = inner
            .connections()
            .into_iter()
            .partition(|c| relay::is_relayed(&c.info));
        futures::future::join_all(relayed.iter().map(|c| c.close("peer shut down"))).await;
        futures::future::join_all(direct.iter().map(|c| c.close("peer shut down"))).await;
        reset
    }
}

async fn accept_loop(peer: Weak<PeerInner>, listener: Arc<Listener>) {
    loop {
        match listener.accept().await {
            Ok((socket, addr, ip)) => {
                let Some(peer) = peer.upgrade() else { return };
                let peer: Arc<dyn Host> = peer;
                if peer.is_shutting_down() {
                    continue;
                }
                tokio::spawn(server::serve(peer, socket, addr, ip, None, None));
            }
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
