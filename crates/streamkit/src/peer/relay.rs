//! Reaching peers through a hub: the names a hub says are reachable through it
//! (presence), the calling end of a relay (an SSH client over a relay channel) and
//! the called end (an SSH server over one). The hub's own side, which joins two
//! relay channels, is [`Router`], implemented above (`crate::hub`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use super::{PeerInner, events::Event};
use crate::channel::Headers;
use crate::connection::driver::lock;
use crate::connection::handle::Channel;
use crate::connection::{Conn, ConnInfo};
use crate::error::OpenErrorKind;
use crate::transport::{Host, Relayed, Socket};
use crate::wire::reason::OpenRefusal;
use crate::wire::relay::{
    self, ALLOW, Allowed, DENY, FROM, MAX_PRESENCE_NAMES, MODE, PRESENCE_SERVICE, PresenceUpdate,
    RELAY_SERVICE, RelayMode, TO,
};

/// A hub's routing, as its peer sees it (implemented by `crate::hub`).
pub(crate) trait Router: Send + Sync + 'static {
    /// Decides at once whether a relay from `from` to `target` will be routed.
    fn admit(&self, from: &ConnInfo, target: &str) -> Result<(), OpenRefusal>;
    /// A standard client's `direct-tcpip` to `target`: `None` if `target` is not a
    /// peer this hub routes to (the open is then a service of the hub's own),
    /// else whether it will be routed.
    fn forward(&self, from: &ConnInfo, target: &str) -> Option<Result<(), OpenRefusal>>;
    /// Takes an admitted channel: a relay (service [`RELAY_SERVICE`]) or a
    /// standard client's forward (service = the target's name).
    /// `counted` counts the channel as the peer's own while it lives.
    fn route(self: Arc<Self>, ch: Channel, counted: Internal);
}

/// How a peer can be reached: see [`Peer::routes`](crate::Peer::routes).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The peer's name.
    pub peer: String,
    /// `None` for a connection of its own (direct, or a session through a hub
    /// already made); the hub's name if it is reachable through that hub.
    pub via: Option<String>,
}

/// The names hubs say are reachable through them.
#[derive(Default)]
pub(crate) struct Presence {
    /// Name → the hubs' connections (id, hub name) that reach it, first learnt first.
    routes: HashMap<String, Vec<(u64, String)>>,
    /// Hub connection id → the names it announced.
    by_hub: HashMap<u64, HashSet<String>>,
}

impl Presence {
    /// A hub connection that reaches `name`, if any.
    pub(crate) fn via(&self, name: &str) -> Option<u64> {
        self.routes.get(name)?.first().map(|(id, _)| *id)
    }

    /// Every (name, hub) pair, names sorted.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .routes
            .iter()
            .filter_map(|(n, hubs)| hubs.first().map(|(_, h)| (n.clone(), h.clone())))
            .collect();
        v.sort();
        v
    }

    /// Applies a hub's updates; returns the events they make.
    fn apply(&mut self, hub_id: u64, hub: &str, mut updates: Vec<PresenceUpdate>) -> Vec<Event> {
        if updates.first() == Some(&PresenceUpdate::Reset) {
            // Everything reachable: what is not listed has left.
            let listed: HashSet<&str> = updates
                .iter()
                .filter_map(|u| match u {
                    PresenceUpdate::Joined(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            let gone: Vec<PresenceUpdate> = self
                .by_hub
                .get(&hub_id)
                .into_iter()
                .flatten()
                .filter(|n| !listed.contains(n.as_str()))
                .map(|n| PresenceUpdate::Left(n.clone()))
                .collect();
            updates.splice(0..1, gone);
        }
        let mut events = Vec::new();
        let names = self.by_hub.entry(hub_id).or_default();
        for u in updates {
            match u {
                PresenceUpdate::Reset => {}
                PresenceUpdate::Joined(name) => {
                    if names.len() >= MAX_PRESENCE_NAMES || !names.insert(name.clone()) {
                        continue;
                    }
                    self.routes
                        .entry(name.clone())
                        .or_default()
                        .push((hub_id, hub.to_owned()));
                    events.push(Event::Reachable {
                        peer: name,
                        via: hub.to_owned(),
                    });
                }
                PresenceUpdate::Left(name) => {
                    if !names.remove(&name) {
                        continue;
                    }
                    remove_route(&mut self.routes, &name, hub_id);
                    events.push(Event::Unreachable {
                        peer: name,
                        via: hub.to_owned(),
                    });
                }
            }
        }
        events
    }

    /// Forgets everything a hub connection announced.
    fn forget(&mut self, hub_id: u64, hub: &str) -> Vec<Event> {
        let names = self.by_hub.remove(&hub_id).unwrap_or_default();
        let mut events = Vec::with_capacity(names.len());
        for name in names {
            remove_route(&mut self.routes, &name, hub_id);
            events.push(Event::Unreachable {
                peer: name,
                via: hub.to_owned(),
            });
        }
        events
    }
}

fn remove_route(routes: &mut HashMap<String, Vec<(u64, String)>>, name: &str, hub_id: u64) {
    if let Some(hubs) = routes.get_mut(name) {
        hubs.retain(|(id, _)| *id != hub_id);
        if hubs.is_empty() {
            routes.remove(name);
        }
    }
}

impl PeerInner {
    /// Decides a relay opened to this peer (it is not a hub): taken if relays
    /// are accepted and, when the hub's word is to be taken, the hub is trusted.
    pub(super) fn admit_relayed(
        &self,
        conn: &ConnInfo,
        headers: &Headers,
    ) -> Result<(), OpenRefusal> {
        let opts = self.options();
        if !opts.accept_relays {
            return Err(OpenRefusal::ServiceNotFound);
        }
        let from = headers.get(FROM).ok_or(OpenRefusal::BadRequest)?;
        crate::wire::ident::validate_peer_name(from).map_err(|_| OpenRefusal::BadRequest)?;
        match headers.get(MODE).and_then(RelayMode::parse) {
            Some(RelayMode::EndToEnd) => Ok(()),
            Some(RelayMode::TrustHub) if opts.trusted_hubs.contains(&conn.remote_name) => Ok(()),
            Some(RelayMode::TrustHub) => Err(OpenRefusal::HubNotTrusted),
            None => Err(OpenRefusal::BadRequest),
        }
    }

    /// Takes a channel of this peer's own services ([`RELAY_SERVICE`],
    /// [`PRESENCE_SERVICE`], or a standard client's forward on a hub): each runs
    /// in a task of its own.
    pub(super) fn take_internal(self: &Arc<Self>, ch: Channel) {
        let service = ch.meta().service().to_owned();
        let counted = Internal::new(self, 1);
        if service == PRESENCE_SERVICE {
            tokio::spawn(read_presence(Arc::downgrade(self), ch, counted));
        } else if let Some(router) = self.router.get() {
            router.clone().route(ch, counted);
        } else if service == RELAY_SERVICE {
            tokio::spawn(serve_relayed(self.clone(), ch, counted));
        }
    }

    /// A live connection to `name`, or a hub connection that reaches it.
    pub(crate) fn find_route(&self, name: &str) -> Option<Target> {
        let conns = lock(&self.conns);
        if let Some(c) = conns.named(name).rev().find(|c| c.lost().is_none()) {
            return Some(Target::Direct(c.clone()));
        }
        let hub = lock(&self.presence).via(name)?;
        conns
            .get(hub)
            .filter(|c| c.lost().is_none())
            .map(|c| Target::Hub(c.clone()))
    }

    /// Makes a session with `name` through the hub on `hub` (or finds the one
    /// another open made meanwhile): a relay channel, then the SSH handshake
    /// inside it, as a client. The session is a connection like any other.
    pub(super) async fn relay_connect(
        self: &Arc<Self>,
        name: &str,
        hub: Arc<Conn>,
    ) -> Result<Arc<Conn>, OpenErrorKind> {
        // One session per name at a time: a second open waits for the first.
        let gate = lock(&self.relaying)
            .entry(name.to_owned())
            .or_default()
            .clone();
        let made = {
            let _held = gate.lock().await;
            match self.find_route(name) {
                Some(Target::Direct(c)) => Ok(c),
                _ => self.relay_session(name, hub).await,
            }
        };
        // The last one out forgets the name's gate.
        drop(gate);
        lock(&self.relaying).retain(|_, g| Arc::strong_count(g) > 1);
        made
    }

    /// A relay channel to `name` through `hub`, and the SSH session inside it.
    async fn relay_session(
        self: &Arc<Self>,
        name: &str,
        hub: Arc<Conn>,
    ) -> Result<Arc<Conn>, OpenErrorKind> {
        let hub_name = hub.info.remote_name.clone();
        let relay_err = |why: String| OpenErrorKind::Relay {
            hub: hub_name.clone(),
            why,
        };
        let mode = if self.options().trusted_hubs.contains(&hub_name) {
            RelayMode::TrustHub
        } else {
            RelayMode::EndToEnd
        };
        let mut headers = Headers::new();
        headers.insert(TO, name);
        headers.insert(MODE, mode.as_str());
        let mut ch = hub.open(RELAY_SERVICE, headers, None).await?;
        match ch.read_frame().await {
            Ok(Some(answer)) if answer.is_empty() => {}
            Ok(Some(why)) => return Err(relay_err(String::from_utf8_lossy(&why).into_owned())),
            Ok(None) => return Err(relay_err("the hub closed the relay".into())),
            Err(e) => return Err(relay_err(format!("the relay failed: {e}"))),
        }
        let socket = relay_socket(ch, Internal::new(self, 1));
        let host: Arc<dyn Host> = self.clone();
        crate::transport::ssh::client::handshake(
            &host,
            socket,
            relay_label(&hub_name),
            vec![name.to_owned()],
            Some(Relayed {
                name: name.to_owned(),
                mode,
                allowed: None,
            }),
        )
        .await
        .map_err(|e| relay_err(e.to_string()))
    }
}

/// Counts channels of the peer's own services while they are open: a peer's
/// shutdown waits for the application's channels, not for these.
pub(crate) struct Internal {
    peer: Weak<PeerInner>,
    n: usize,
}

impl Internal {
    pub(crate) fn new(peer: &Arc<PeerInner>, n: usize) -> Internal {
        peer.internal_open
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        Internal {
            peer: Arc::downgrade(peer),
            n,
        }
    }
}

impl Drop for Internal {
    fn drop(&mut self) {
        if let Some(p) = self.peer.upgrade() {
            p.internal_open
                .fetch_sub(self.n, std::sync::atomic::Ordering::SeqCst);
            p.changed.notify_waiters();
        }
    }
}

/// A relay's reading half as the session over it reads it: counted as the
/// peer's own channel while it lives, and when the hub ends the relay (a cap),
/// the end of the stream or the reset becomes an error in the hub's words, which
/// it sent as an error frame first.
struct RelayRead {
    inner: crate::connection::handle::ReadHalf,
    _counted: Internal,
}

impl tokio::io::AsyncRead for RelayRead {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        let read = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let ended = match &read {
            Poll::Ready(Ok(())) => buf.filled().len() == before && buf.remaining() > 0,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if ended && let Poll::Ready(Ok(Some(why))) = self.inner.poll_read_error(cx) {
            let kind = match &read {
                Poll::Ready(Err(e)) => e.kind(),
                _ => std::io::ErrorKind::ConnectionAborted,
            };
            return Poll::Ready(Err(std::io::Error::new(
                kind,
                format!("the hub ended the relay: {}", String::from_utf8_lossy(&why)),
            )));
        }
        read
    }
}

/// A relay channel as a socket for an SSH session.
fn relay_socket(ch: Channel, counted: Internal) -> Socket {
    let (r, w) = ch.split();
    let r = RelayRead {
        inner: r,
        _counted: counted,
    };
    Socket::Io(Box::new(r), Box::new(w))
}

/// Whether a connection is a session through a hub.
pub(super) fn is_relayed(info: &ConnInfo) -> bool {
    info.remote_addr.starts_with(RELAY_LABEL)
}

const RELAY_LABEL: &str = "via hub ";

/// Where a peer is: its own connection, or a hub's.
pub(crate) enum Target {
    Direct(Arc<Conn>),
    Hub(Arc<Conn>),
}

/// How a session through a hub names its other end in messages and events.
fn relay_label(hub: &str) -> String {
    format!("{RELAY_LABEL}{hub}")
}

/// Reads a hub's presence channel until it ends; then everything it announced
/// is forgotten.
async fn read_presence(peer: Weak<PeerInner>, mut ch: Channel, _counted: Internal) {
    let hub_id = ch.conn().info.id;
    let hub = ch.meta().remote_peer().to_owned();
    loop {
        let updates = match ch.read_frame().await {
            Ok(Some(frame)) => match relay::decode_presence(&frame) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(hub, "bad presence from the hub: {e}");
                    ch.reset();
                    break;
                }
            },
            _ => break,
        };
        let Some(p) = peer.upgrade() else { return };
        let events = lock(&p.presence).apply(hub_id, &hub, updates);
        p.announce(events);
    }
    if let Some(p) = peer.upgrade() {
        let events = lock(&p.presence).forget(hub_id, &hub);
        p.announce(events);
    }
}

impl PeerInner {
    fn announce(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        for e in events {
            self.events.emit(|| e);
        }
        self.changed.notify_waiters();
    }
}

/// The called end: runs the SSH server over a relay channel; the client must
/// authenticate as the name the hub vouched for.
async fn serve_relayed(peer: Arc<PeerInner>, ch: Channel, counted: Internal) {
    let headers = ch.meta().headers();
    let (Some(from), Some(mode)) = (
        headers.get(FROM).map(str::to_owned),
        headers.get(MODE).and_then(RelayMode::parse),
    ) else {
        return;
    };
    let allowed = Allowed::from_headers(headers.get_all(ALLOW), headers.get_all(DENY));
    let label = relay_label(ch.meta().remote_peer());
    let socket = relay_socket(ch, counted);
    crate::transport::ssh::server::serve(
        peer as Arc<dyn Host>,
        socket,
        label,
        None,
        None,
        Some(Relayed {
            name: from,
            mode,
            allowed: Some(Arc::new(allowed)),
        }),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_announces_at_most_the_cap_and_a_reset_forgets_the_rest() {
        let mut p = Presence::default();
        let many: Vec<PresenceUpdate> = (0..MAX_PRESENCE_NAMES + 10)
            .map(|i| PresenceUpdate::Joined(format!("n{i}")))
            .collect();
        let events = p.apply(1, "hub", many);
        assert_eq!(
            events.len(),
            MAX_PRESENCE_NAMES,
            "names past the cap are not kept"
        );
        assert_eq!(p.all().len(), MAX_PRESENCE_NAMES);
        // A full list replaces what the hub said before.
        let events = p.apply(
            1,
            "hub",
            vec![PresenceUpdate::Reset, PresenceUpdate::Joined("n0".into())],
        );
        assert_eq!(events.len(), MAX_PRESENCE_NAMES - 1, "all but n0 left");
        assert_eq!(p.via("n0"), Some(1));
        assert_eq!(p.via("n1"), None);
        // The hub gone, nothing is reachable through it.
        assert_eq!(p.forget(1, "hub").len(), 1);
        assert!(p.all().is_empty());
    }
}
