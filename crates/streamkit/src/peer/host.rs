//! The peer as its transports and connections see it: [`Host`] (what a transport
//! needs from its peer) and [`Observer`] (what a connection tells it).

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};

use super::{PeerInner, events};
use crate::channel::Headers;
use crate::config::{AccessRequest, Options};
use crate::connection::accept::AcceptSlot;
use crate::connection::driver::lock;
use crate::connection::{Conn, ConnInfo, Meta, Observer, PeerBudget};
use crate::keys::Identity;
use crate::transport::Host;
use crate::trust::RemoteIdentity;
use crate::trust::Trust;
use crate::wire::reason::OpenRefusal;
use crate::wire::relay::{MODE, PRESENCE_SERVICE, RELAY_SERVICE, RelayMode, TO};

/// The peer as its transports see it.
impl Host for PeerInner {
    fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn remote_forward(&self) -> Option<Arc<dyn crate::forward::RemoteForward>> {
        self.remote_forward.clone()
    }

    fn options(&self) -> Arc<Options> {
        PeerInner::options(self)
    }

    fn trust(&self) -> Trust {
        PeerInner::trust(self)
    }

    fn is_shutting_down(&self) -> bool {
        PeerInner::is_shutting_down(self)
    }

    fn handshakes(&self) -> &Arc<AtomicUsize> {
        &self.handshakes
    }

    fn accepted(&self) -> &Arc<AtomicUsize> {
        &self.accepted
    }

    fn refused(&self, remote_addr: &str, why: &str) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.events.emit(|| events::Event::Refused {
            endpoint: remote_addr.to_owned(),
            reason: why.to_owned(),
        });
    }

    fn admit_address(&self, ip: IpAddr) -> bool {
        PeerInner::admit_address(self, ip)
    }

    fn release_address(&self, ip: IpAddr) {
        PeerInner::release_address(self, ip)
    }

    fn observer(&self) -> Arc<dyn Observer> {
        Arc::new(PeerObserver {
            peer: self.me.clone(),
        })
    }

    fn budget(&self) -> Arc<PeerBudget> {
        self.budget.clone()
    }

    fn address_budget(&self, ip: IpAddr) -> Arc<PeerBudget> {
        let mut budgets = lock(&self.address_budgets);
        if let Some(b) = budgets.get(&ip).and_then(std::sync::Weak::upgrade) {
            return b;
        }
        budgets.retain(|_, w| w.strong_count() > 0);
        let b = PeerBudget::new(self.options().memory_budget_per_address as u64);
        budgets.insert(ip, Arc::downgrade(&b));
        b
    }

    fn name_held_by_other(&self, name: &str, id: &RemoteIdentity) -> Option<String> {
        held_by_other(&lock(&self.conns), name, id)
    }

    fn register(&self, conn: Arc<Conn>) -> Result<(), String> {
        if self.is_shutting_down() {
            // A handshake that finished after shutdown began.
            tokio::spawn(async move { conn.close("peer shut down").await });
            return Ok(());
        }
        let info = &conn.info;
        tracing::debug!(peer = %info.remote_name, addr = %info.remote_addr, "connected");
        let event = events::Event::Connected {
            peer: info.remote_name.clone(),
            endpoint: info.remote_addr.clone(),
            dialed: info.dialed,
        };
        {
            // Checked and inserted under the lock `lost` takes to unregister: a
            // connection lost meanwhile is never left registered, and its
            // Disconnected event cannot come before this Connected one.
            let mut conns = lock(&self.conns);
            // Checked again here, atomically with the insertion: two handshakes
            // claiming one name at once cannot both win.
            if let Some(holder) = held_by_other(&conns, &info.remote_name, &info.remote_id) {
                tracing::info!(
                    peer = %info.remote_name, addr = %info.remote_addr,
                    "refused a connection: the name is held by {holder}"
                );
                return Err(crate::transport::name_held_message(&info.remote_name));
            }
            if conn.lost().is_some() {
                return Ok(());
            }
            conns.insert(conn);
            self.events.emit(|| event);
        }
        self.changed.notify_waiters();
        Ok(())
    }

    fn admit(
        &self,
        conn: &ConnInfo,
        service: &str,
        headers: &Headers,
    ) -> Result<AcceptSlot, OpenRefusal> {
        if self.is_shutting_down() {
            return Err(OpenRefusal::ShuttingDown);
        }
        let opts = self.options();
        if service == RELAY_SERVICE || service == PRESENCE_SERVICE {
            return self.admit_internal(conn, service, headers, &opts);
        }
        if !opts.services.contains(service) && !self.listens(service) {
            return Err(OpenRefusal::ServiceNotFound);
        }
        if conn.allowed.as_ref().is_some_and(|a| !a.allows(service)) {
            return Err(OpenRefusal::Denied);
        }
        if let Some(auth) = self.authorizer() {
            let request = AccessRequest {
                peer: &conn.remote_name,
                identity: &conn.remote_id,
                service,
                headers,
            };
            if !auth.authorize(&request) {
                return Err(OpenRefusal::Denied);
            }
        }
        self.accept_slot(service, opts.max_pending_accepts)
            .ok_or(OpenRefusal::AcceptQueueFull)
    }

    fn forward(&self, conn: &ConnInfo, target: &str) -> Option<Result<AcceptSlot, OpenRefusal>> {
        let decided = self.router.get()?.forward(conn, target)?;
        Some(decided.and_then(|()| {
            self.internal_slot(self.options().max_pending_accepts)
                .ok_or(OpenRefusal::AcceptQueueFull)
        }))
    }
}

impl PeerInner {
    /// Decides an open of this peer's own services: a relay (routed if this peer
    /// is a hub, served if not) or a hub's presence (taken only from a connection
    /// this peer dialled: it chose that hub).
    fn admit_internal(
        &self,
        conn: &ConnInfo,
        service: &str,
        headers: &Headers,
        opts: &Options,
    ) -> Result<AcceptSlot, OpenRefusal> {
        if service == PRESENCE_SERVICE {
            if !conn.dialed {
                return Err(OpenRefusal::Denied);
            }
        } else if let Some(router) = self.router.get() {
            let to = headers.get(TO).ok_or(OpenRefusal::BadRequest)?;
            headers
                .get(MODE)
                .and_then(RelayMode::parse)
                .ok_or(OpenRefusal::BadRequest)?;
            router.admit(conn, to)?;
        } else {
            self.admit_relayed(conn, headers)?;
        }
        self.internal_slot(opts.max_pending_accepts)
            .ok_or(OpenRefusal::AcceptQueueFull)
    }
}

/// What a connection reports to its peer (weakly: a connection does not keep its
/// peer alive).
struct PeerObserver {
    peer: Weak<PeerInner>,
}

impl Observer for PeerObserver {
    fn opened(&self, _conn: &ConnInfo, meta: &Meta, local: bool) {
        if let Some(peer) = self.peer.upgrade() {
            peer.events.emit(|| events::Event::ChannelOpened {
                peer: meta.remote_peer.clone(),
                service: meta.service.clone(),
                local,
            });
        }
    }

    fn closed(&self, _conn: &ConnInfo, meta: &Meta) {
        if let Some(peer) = self.peer.upgrade() {
            peer.events.emit(|| events::Event::ChannelClosed {
                peer: meta.remote_peer.clone(),
                service: meta.service.clone(),
            });
        }
    }

    fn changed(&self) {
        if let Some(peer) = self.peer.upgrade() {
            peer.changed.notify_waiters();
        }
    }

    fn forget(&self, conn: &ConnInfo) -> bool {
        self.peer
            .upgrade()
            .is_some_and(|peer| peer.unregister(conn.id))
    }

    fn lost(&self, conn: &ConnInfo, reason: &str) {
        let Some(peer) = self.peer.upgrade() else {
            return;
        };
        peer.events.emit(|| events::Event::Disconnected {
            peer: conn.remote_name.clone(),
            endpoint: conn.remote_addr.clone(),
            reason: reason.to_owned(),
        });
    }
}

/// The identity holding `name` among live connections, if it is not `id`.
fn held_by_other(conns: &super::conns::Conns, name: &str, id: &RemoteIdentity) -> Option<String> {
    conns
        .named(name)
        .filter(|c| c.lost().is_none())
        .find(|c| c.info.remote_id != *id)
        .map(|c| c.info.remote_id.to_string())
}
