//! A hub: a peer that routes channels between the peers connected to it, so that
//! peers behind NAT reach each other by name.
//!
//! Peers connect to a hub as to any peer. The hub tells each peer that dialled it
//! which names are reachable through it (presence), and keeps that true as peers
//! come and go. `peer.open("carol", ...)` on a peer whose only connection is to
//! the hub asks the hub for a *relay* to carol: the hub opens a relay channel to
//! carol, joins the two channels byte for byte, and the two ends run an SSH
//! session of their own inside: alice as the client, carol as the server, each
//! checking the other's key against its own trust as on a direct connection, and
//! the name the hub vouched for must agree. The hub sees ciphertext only. Every
//! channel of that session is an ordinary channel: headers, frames, error frames,
//! trailers, half-close, reset, nesting, RPC, flow control.
//!
//! Peers that know only the hub's key name it in
//! [`Options::trusted_hubs`](crate::Options::trusted_hubs): they take the hub's
//! word for who is at the other end, and the session inside is not encrypted.
//!
//! A standard SSH client reaches a peer's services through the hub with
//! OpenSSH's ProxyJump: `ssh -J alice@hub:port carol SERVICE` (the jump's
//! `direct-tcpip` to `carol` is routed to carol, which answers the SSH session
//! inside as it answers standard clients).
//!
//! The hub never holds more than its budgets: each relay is two channels, each
//! flow-controlled, joined by a task that forwards a chunk only once the other
//! side has room for it, so backpressure runs end to end.

mod policy;
mod presence;

pub use policy::{Policy, PolicyError};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::channel::Headers;
use crate::config::PeerConfig;
use crate::connection::driver::lock;
use crate::connection::handle::{Channel, ReadHalf, WriteHalf};
use crate::connection::{Conn, ConnInfo};
use crate::error::ConfigError;
use crate::peer::events::Event;
use crate::peer::relay::{Internal, Router};
use crate::peer::{Peer, PeerInner};
use crate::wire::reason::OpenRefusal;
use crate::wire::relay::{self, FROM, MODE, PRESENCE_SERVICE, RELAY_SERVICE, RelayMode, TO};

/// What a hub allows: the policy and the limits. Each limit, when reached,
/// refuses the relay with a clear reason (the caller's `open` fails with it) and
/// an [`Event::RelayRefused`] on the hub.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Who may reach whom, and which services. Default: every peer the hub trusts
    /// may reach every other.
    pub policy: Policy,
    /// Relays one peer may have open at once, as the caller. Default 1,024.
    pub max_relays_per_peer: usize,
    /// Bytes (both ways) after which a relay is reset. Default `None`: no cap.
    pub max_relay_bytes: Option<u64>,
    /// Time after which a relay is reset. Default `None`: no cap.
    pub max_relay_time: Option<Duration>,
    /// Bytes per second a peer may send through all its relays (either end).
    /// Default `None`: no cap.
    pub max_bandwidth_per_peer: Option<u64>,
    /// Presence updates to one peer are sent at most this often; changes in
    /// between are coalesced (a peer that joined and left is never announced).
    /// Default 100 ms.
    pub presence_interval: Duration,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            policy: Policy::allow_all(),
            max_relays_per_peer: 1024,
            max_relay_bytes: None,
            max_relay_time: None,
            max_bandwidth_per_peer: None,
            presence_interval: Duration::from_millis(100),
        }
    }
}

/// What a hub is doing: see [`Hub::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Relays open now.
    pub relays: usize,
    /// Relays made since the hub started.
    pub relayed: u64,
    /// Relays refused (policy, limits, target gone) since the hub started.
    pub refused: u64,
    /// Bytes forwarded through relays, both ways.
    pub bytes: u64,
}

/// A hub: see the [module docs](self).
#[derive(Clone)]
pub struct Hub {
    peer: Peer,
    state: Arc<HubState>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("peer", &self.peer)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Hub {
    /// Makes a peer with the hub's routing. Must be called inside a tokio runtime
    /// (it starts the task that keeps presence up to date). Bind it with
    /// [`peer().bind`](Peer::bind); it also serves its own services (`config`'s
    /// options) like any peer.
    pub fn new(config: PeerConfig, hub: HubConfig) -> Result<Hub, ConfigError> {
        let peer = Peer::new(config)?;
        let (presence_changed, _) = watch::channel(0);
        let state = Arc::new(HubState {
            peer: Arc::downgrade(peer.inner()),
            config: hub,
            relays: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            presence: Mutex::new(presence::Presence::default()),
            presence_changed,
            pushing: Mutex::new(HashSet::new()),
            open: AtomicUsize::new(0),
            relayed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let router: Arc<dyn Router> = state.clone();
        let _ = peer.inner().router.set(router);
        tokio::spawn(track_presence(state.clone(), peer.events()));
        Ok(Hub { peer, state })
    }

    /// The hub's peer: bind it, read its events, shut it down.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// What the hub is doing now.
    pub fn stats(&self) -> HubStats {
        HubStats {
            relays: self.state.open.load(Ordering::SeqCst),
            relayed: self.state.relayed.load(Ordering::SeqCst),
            refused: self.state.refused.load(Ordering::SeqCst),
            bytes: self.state.bytes.load(Ordering::SeqCst),
        }
    }
}

struct HubState {
    peer: Weak<PeerInner>,
    config: HubConfig,
    /// Relays open per calling peer.
    relays: Mutex<HashMap<String, usize>>,
    /// Bandwidth per peer, when capped.
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The names connected to the hub, and the latest changes.
    presence: Mutex<presence::Presence>,
    /// The version of the latest change, for the peers' senders to wait on.
    presence_changed: watch::Sender<u64>,
    /// Connections (ids) that have a presence channel, or are getting one.
    pushing: Mutex<HashSet<u64>>,
    open: AtomicUsize,
    relayed: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
}

/// A token bucket: bytes a peer may send now, refilled at the cap per second up
/// to one second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn full(rate: f64, now: tokio::time::Instant) -> Bucket {
        Bucket {
            tokens: rate,
            at: now,
        }
    }

    /// Takes `n` bytes at `now`; how long to wait before sending them.
    fn take(&mut self, now: tokio::time::Instant, n: usize, rate: f64) -> Option<Duration> {
        self.refill(now, rate);
        self.tokens -= n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / rate))
    }

    fn refill(&mut self, now: tokio::time::Instant, rate: f64) {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate);
        self.at = now;
    }
}

/// Buckets kept before full ones (peers idle for a second) are dropped.
const MAX_IDLE_BUCKETS: usize = 1024;

impl HubState {
    /// The live connection of peer `name`, if connected.
    fn conn_of(&self, name: &str) -> Option<Arc<Conn>> {
        match self.peer.upgrade()?.find_route(name)? {
            crate::peer::relay::Target::Direct(c) => Some(c),
            crate::peer::relay::Target::Hub(_) => None,
        }
    }

    /// Counts a refused relay and reports it (log, event).
    fn refused(&self, from: &str, to: &str, reason: &str) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        tracing::info!(from, to, "relay refused: {reason}");
        if let Some(p) = self.peer.upgrade() {
            p.events.emit(|| Event::RelayRefused {
                from: from.to_owned(),
                to: to.to_owned(),
                reason: reason.to_owned(),
            });
        }
    }

    fn refuse(&self, from: &str, to: &str, why: OpenRefusal) -> OpenRefusal {
        self.refused(from, to, why.description());
        why
    }

    /// The checks made before a relay is admitted, and again when it is routed;
    /// the target's connection if it passes.
    fn check(&self, from: &str, to: &str) -> Result<Arc<Conn>, OpenRefusal> {
        let target = self
            .conn_of(to)
            .filter(|_| to != from)
            .ok_or(OpenRefusal::NotReachable)?;
        if !self.config.policy.reaches(from, to) {
            return Err(OpenRefusal::Denied);
        }
        let open = lock(&self.relays).get(from).copied().unwrap_or(0);
        if open >= self.config.max_relays_per_peer {
            return Err(OpenRefusal::RelayLimit);
        }
        Ok(target)
    }

    /// Counts a relay of `from`'s (released when the guard drops); `None` over the limit.
    fn count(self: &Arc<Self>, from: &str) -> Option<Counted> {
        let mut relays = lock(&self.relays);
        let n = relays.entry(from.to_owned()).or_insert(0);
        if *n >= self.config.max_relays_per_peer {
            return None;
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(Counted {
            state: self.clone(),
            from: from.to_owned(),
        })
    }

    /// Waits until `peer` may send `n` more bytes.
    async fn pace(&self, peer: &str, n: usize) {
        let Some(rate) = self.config.max_bandwidth_per_peer else {
            return;
        };
        let rate = rate.max(1) as f64;
        let wait = {
            let mut buckets = lock(&self.buckets);
            let now = tokio::time::Instant::now();
            if buckets.len() > MAX_IDLE_BUCKETS {
                // A full bucket is the same as none: peers come and go.
                buckets.retain(|_, b| {
                    b.refill(now, rate);
                    b.tokens < rate
                });
            }
            buckets
                .entry(peer.to_owned())
                .or_insert_with(|| Bucket::full(rate, now))
                .take(now, n, rate)
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One relay of a calling peer's, counted while it lives.
struct Counted {
    state: Arc<HubState>,
    from: String,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut relays = lock(&self.state.relays);
        if let Some(n) = relays.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                relays.remove(&self.from);
            }
        }
        self.state.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Router for HubState {
    fn admit(&self, from: &ConnInfo, target: &str) -> Result<(), OpenRefusal> {
        self.check(&from.remote_name, target)
            .map(drop)
            .map_err(|r| self.refuse(&from.remote_name, target, r))
    }

    fn forward(&self, from: &ConnInfo, target: &str) -> Option<Result<(), OpenRefusal>> {
        self.conn_of(target)?;
        Some(self.admit(from, target))
    }

    fn route(self: Arc<Self>, ch: Channel, counted: Internal) {
        tokio::spawn(async move {
            relay(&self, ch).await;
            drop(counted);
        });
    }
}

/// Most bytes forwarded in one step of a relay.
const CHUNK: usize = 256 * 1024;

/// Routes one admitted channel: opens the relay to its target, answers the
/// caller, and joins the two channels until both ends are done.
async fn relay(state: &Arc<HubState>, mut from_ch: Channel) {
    let meta = from_ch.meta().clone();
    let from = meta.remote_peer().to_owned();
    // A native relay names its target and mode; a standard client's forward
    // (ProxyJump) names the target as its host and is end to end.
    let native = meta.service() == RELAY_SERVICE;
    let (to, mode) = if native {
        let mode = meta.headers().get(MODE).and_then(RelayMode::parse);
        match (meta.headers().get(TO), mode) {
            (Some(to), Some(mode)) => (to.to_owned(), mode),
            _ => return from_ch.reset(),
        }
    } else {
        (meta.service().to_owned(), RelayMode::EndToEnd)
    };
    let refused = |why: String, mut ch: Channel| async move {
        if native {
            // The caller reads why in the first frame.
            let _ = ch.write_frame(&relay::answer(Some(&why))).await;
            let _ = ch.close().await;
        } else {
            ch.reset();
        }
    };
    // Checked again: the target may have gone, or other relays taken the places.
    let checked = state.check(&from, &to).and_then(|target| {
        let counted = state.count(&from).ok_or(OpenRefusal::RelayLimit)?;
        Ok((target, counted))
    });
    let (target, counted) = match checked {
        Ok(v) => v,
        Err(why) => {
            let why = state.refuse(&from, &to, why);
            return refused(why.description().to_owned(), from_ch).await;
        }
    };
    let mut headers = Headers::new();
    headers.insert(FROM, &from);
    headers.insert(MODE, mode.as_str());
    for h in state.config.policy.allowed(&from, &to).to_headers() {
        headers.push(h);
    }
    let to_ch = match target.open(RELAY_SERVICE, headers, None).await {
        Ok(ch) => ch,
        Err(kind) => {
            state.refused(&from, &to, &kind.to_string());
            return refused(format!("{to}: {kind}"), from_ch).await;
        }
    };
    if native && from_ch.write_frame(&relay::answer(None)).await.is_err() {
        return;
    }
    state.relayed.fetch_add(1, Ordering::SeqCst);
    if let Some(p) = state.peer.upgrade() {
        p.events.emit(|| Event::Relayed {
            from: from.clone(),
            to: to.clone(),
        });
    }
    // The second channel is the hub's own too.
    let _also = state
        .peer
        .upgrade()
        .map(|p| crate::peer::relay::Internal::new(&p, 1));
    splice(state, from_ch, &from, to_ch, &to).await;
    drop(counted);
}

/// Joins two channels both ways, half-close included, within the hub's caps; a
/// reset or failure on either side resets the other. A relay cut for a cap gets
/// the reason as an error frame on both channels before the reset.
async fn splice(state: &Arc<HubState>, a: Channel, a_name: &str, b: Channel, b_name: &str) {
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let cut = Cut::default();
    let carried = AtomicU64::new(0);
    let both = async {
        tokio::join!(
            pump(state, ar, bw, a_name, &carried, &cut),
            pump(state, br, aw, b_name, &carried, &cut)
        )
    };
    let timer = async {
        match state.config.max_relay_time {
            Some(cap) => {
                tokio::time::sleep(cap).await;
                cut.cut(format!(
                    "the hub's time cap on a relay ({cap:?}) is reached"
                ));
                std::future::pending::<()>().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = both => {}
        () = timer => {}
    }
    if let Some(why) = cut.reason() {
        tracing::info!(a_name, b_name, "relay cut: {why}");
        if let Some(p) = state.peer.upgrade() {
            p.events.emit(|| Event::RelayCut {
                from: a_name.to_owned(),
                to: b_name.to_owned(),
                reason: why,
            });
        }
    }
}

/// Why a relay was cut short, shared by its two pumps.
#[derive(Default)]
struct Cut {
    reason: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Cut {
    fn cut(&self, why: String) {
        lock(&self.reason).get_or_insert(why);
        self.notify.notify_waiters();
    }

    fn reason(&self) -> Option<String> {
        lock(&self.reason).clone()
    }

    async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(why) = self.reason() {
                return why;
            }
            notified.await;
        }
    }
}

/// How long a cut relay's reason may take to leave before the reset.
const CUT_NOTICE: Duration = Duration::from_secs(1);

/// Forwards what `r` reads to `w` (sent by peer `sender`) until the end of
/// stream, which it forwards as a half-close.
async fn pump(
    state: &HubState,
    mut r: ReadHalf,
    mut w: WriteHalf,
    sender: &str,
    carried: &AtomicU64,
    cut: &Cut,
) {
    let why = loop {
        let chunk = tokio::select! {
            read = r.read_chunk(CHUNK) => match read {
                Ok(c) if c.is_empty() => {
                    let _ = w.close_write().await;
                    return;
                }
                Ok(c) => c,
                Err(_) => return w.reset(),
            },
            why = cut.wait() => break why,
        };
        let n = chunk.len();
        let total = carried.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if let Some(cap) = state.config.max_relay_bytes.filter(|cap| total > *cap) {
            cut.cut(format!(
                "the hub's byte cap on a relay ({cap} bytes) is reached"
            ));
            continue;
        }
        let sent = async {
            state.pace(sender, n).await;
            // Handed over as received: the hub copies nothing.
            w.write_bytes(chunk).await
        };
        tokio::select! {
            sent = sent => if sent.is_err() { return },
            why = cut.wait() => break why,
        }
        state.bytes.fetch_add(n as u64, Ordering::Relaxed);
    };
    // Both ends hear why (an error frame, then the end of the stream, which
    // the error frame is sure to precede); a remote that does not take them in
    // time is reset.
    let notice = async {
        w.write_error(why.as_bytes()).await?;
        w.close_write().await
    };
    if !matches!(tokio::time::timeout(CUT_NOTICE, notice).await, Ok(Ok(()))) {
        w.reset();
    }
}

/// Keeps the presence set equal to the connected names, and gives every
/// connection that dialled the hub a presence channel.
async fn track_presence(state: Arc<HubState>, mut events: crate::peer::events::Events) {
    loop {
        let Some(peer) = state.peer.upgrade() else {
            return;
        };
        let conns = peer.live_connections();
        drop(peer);
        let names: BTreeSet<String> = conns.iter().map(|c| c.info.remote_name.clone()).collect();
        let changed = {
            let mut presence = lock(&state.presence);
            presence.set(names).then(|| presence.version())
        };
        if let Some(version) = changed {
            state.presence_changed.send_replace(version);
        }
        let live: HashSet<u64> = conns.iter().map(|c| c.info.id).collect();
        let new: Vec<Arc<Conn>> = {
            let mut pushing = lock(&state.pushing);
            pushing.retain(|id| live.contains(id));
            conns
                .into_iter()
                .filter(|c| !c.info.dialed && pushing.insert(c.info.id))
                .collect()
        };
        for conn in new {
            tokio::spawn(push_presence(state.clone(), conn));
        }
        // Connections come and go with events; a subscriber that fell behind
        // recomputes all the same.
        loop {
            match events.next().await {
                None => return,
                Some(Event::Connected { .. } | Event::Disconnected { .. } | Event::Missed(_)) => {
                    break;
                }
                Some(_) => {}
            }
        }
    }
}

/// Sends one connection the names reachable through the hub (those the policy
/// lets it reach), then every change, coalesced over the presence interval. It
/// keeps only the version it has sent: the hub holds one set and one log for all.
async fn push_presence(state: Arc<HubState>, conn: Arc<Conn>) {
    let me = conn.info.remote_name.clone();
    // Peers that do not take presence (standard clients, peers that were
    // dialled by another) refuse it; that is all.
    // Boxed: the open's future is large, and this task lives as long as the peer.
    let opened = Box::pin(conn.open(PRESENCE_SERVICE, Headers::new(), None)).await;
    let Ok(mut ch) = opened else {
        return;
    };
    let shown = |n: &str| n != me && state.config.policy.reaches(&me, n);
    let mut rx = state.presence_changed.subscribe();
    let mut seen = 0u64;
    loop {
        // Marked seen before the log is read: a change after it wakes us again.
        rx.borrow_and_update();
        let (frame, now) = lock(&state.presence).frame_since(seen, shown);
        seen = now;
        if let Some(frame) = frame
            && ch.write_frame(&frame).await.is_err()
        {
            return;
        }
        tokio::time::sleep(state.config.presence_interval).await;
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_second_through_then_paces_at_the_rate() {
        let t0 = tokio::time::Instant::now();
        let rate = 1000.0;
        let mut b = Bucket::full(rate, t0);
        assert_eq!(b.take(t0, 1000, rate), None, "a second's worth at once");
        assert_eq!(b.take(t0, 500, rate), Some(Duration::from_millis(500)));
        // Half a second later, the debt is paid.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(t1, 0, rate), None);
        // An idle bucket fills up to one second's worth, no more.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.take(t2, 1000, rate), None);
        assert!(b.take(t2, 1, rate).is_some());
    }
}
