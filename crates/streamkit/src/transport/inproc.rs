//! `inproc://name`: two peers of one process, joined without sockets, SSH or
//! encryption.
//!
//! Each side gets a connection like any other, with the same channel state, credit,
//! control records and limits; only the bottom layer differs. What a connection's
//! driver would hand to SSH is handed straight to the other side's connection
//! instead, as the SSH layer would after decryption. Opens are admitted and decided
//! by the other side exactly as over `tcp://` (services, headers, authorisation,
//! limits).
//!
//! Trust is checked as over SSH, against the keys the two peers hold: the bound
//! peer must trust the connecting peer's key (or its token) for its name, and the
//! connecting peer must trust the bound peer's key. No proof of possession is
//! needed: both keys live in this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use super::Host;
use crate::channel::{Headers, Transmit};
use crate::connection::accept::AcceptSlot;
use crate::connection::driver::lock;
use crate::connection::state::Decision;
use crate::connection::{ChannelKey, Conn, Incoming, Link, OpenFailed, OpenWire, SendFailed};
use crate::endpoint::Endpoint;
use crate::error::{BindError, ConnectError};
use crate::trust::Refusal;
use crate::trust::RemoteIdentity;
use crate::wire::open::OpenRequest;
use crate::wire::reason::OpenRefusal;
use crate::wire::{EXT_CONTROL, EXT_ERROR};

/// Bound `inproc://` names of this process.
static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<dyn Host>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Takes `name` for `host`; a name held by a live peer is in use.
pub(crate) fn bind(host: &Arc<dyn Host>, name: &str) -> Result<(), BindError> {
    let mut reg = lock(&REGISTRY);
    if let Some(holder) = reg.get(name).and_then(Weak::upgrade)
        && !holder.is_shutting_down()
    {
        return Err(BindError::InUse(format!("inproc://{name}")));
    }
    reg.insert(name.to_owned(), Arc::downgrade(host));
    Ok(())
}

/// Gives `name` back, if `host` still holds it.
pub(crate) fn unbind(host: &Weak<dyn Host>, name: &str) {
    let mut reg = lock(&REGISTRY);
    if reg
        .get(name)
        .is_some_and(|w| std::ptr::addr_eq(w.as_ptr(), host.as_ptr()))
    {
        reg.remove(name);
    }
}

fn refused(name: &str, why: &str) -> ConnectError {
    ConnectError::Io {
        endpoint: format!("inproc://{name}"),
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why.to_owned()),
    }
}

/// Connects `client` to the peer bound at `inproc://name`; both sides' connections
/// are registered. Returns the client's.
pub(crate) fn dial(client: &Arc<dyn Host>, name: &str) -> Result<Arc<Conn>, ConnectError> {
    let endpoint = format!("inproc://{name}");
    let server = lock(&REGISTRY)
        .get(name)
        .and_then(Weak::upgrade)
        .ok_or_else(|| refused(name, "nothing is bound at that name"))?;
    if server.is_shutting_down() {
        return Err(refused(name, "the bound peer is shutting down"));
    }
    // The bound peer judges the client, as its SSH server would.
    let client_key = client.identity().public_key();
    let by_key = server
        .trust()
        .check_client_key(client.name(), &client_key)
        .is_ok();
    let by_token = client
        .token()
        .is_some_and(|t| server.trust().check_token(t));
    if !by_key && by_token && server.trust().is_bound(client.name()) {
        let why = format!(
            "the server says: {}",
            super::name_bound_message(client.name())
        );
        return Err(ConnectError::AuthRejected { endpoint, why });
    }
    if !by_key && !by_token {
        let why = if client.token().is_some() {
            "the server rejected our token (and does not trust our key)".to_owned()
        } else {
            format!(
                "the server does not trust our key {} for peer name {:?}",
                client_key.fingerprint(),
                client.name()
            )
        };
        tracing::info!(endpoint, peer = client.name(), "refused an inproc client");
        return Err(ConnectError::AuthRejected { endpoint, why });
    }
    // The client judges the server's key, as it would a host key.
    let host_key = server.identity().public_key();
    let names = Endpoint::Inproc(name.to_owned()).known_host_names();
    match client
        .trust()
        .check_host_key(&names, server.name(), &host_key)
    {
        Ok(()) => {}
        Err(Refusal::Untrusted) => {
            return Err(ConnectError::UntrustedHostKey {
                endpoint,
                name: server.name().to_owned(),
                fingerprint: host_key.fingerprint(),
            });
        }
        Err(Refusal::Mismatch) => {
            return Err(ConnectError::HostKeyMismatch {
                endpoint,
                fingerprint: host_key.fingerprint(),
            });
        }
    }

    let client_conn = super::new_conn(
        &**client,
        server.name().to_owned(),
        endpoint.clone(),
        true,
        RemoteIdentity::key(host_key.fingerprint()),
        None,
        None,
    );
    let server_conn = super::new_conn(
        &*server,
        client.name().to_owned(),
        endpoint.clone(),
        false,
        if by_key {
            RemoteIdentity::key(client_key.fingerprint())
        } else {
            RemoteIdentity::Token
        },
        None,
        None,
    );
    let client_link = InprocLink::new(client, &client_conn);
    let server_link = InprocLink::new(&server, &server_conn);
    let _ = client_link
        .other
        .set((Arc::downgrade(&server_link), Arc::downgrade(&server_conn)));
    let _ = server_link
        .other
        .set((Arc::downgrade(&client_link), Arc::downgrade(&client_conn)));
    client_conn.start(client_link);
    server_conn.start(server_link);
    let registered = server
        .register(server_conn.clone())
        .and_then(|()| client.register(client_conn.clone()));
    if let Err(why) = registered {
        client_conn.lose(why.clone());
        server_conn.lose(why.clone());
        return Err(ConnectError::NameHeld { endpoint, why });
    }
    Ok(client_conn)
}

/// One side of an in-process connection.
pub(crate) struct InprocLink {
    /// This side's peer (it admits the other side's opens).
    host: Weak<dyn Host>,
    this: Weak<Conn>,
    /// The other side's link and connection.
    other: OnceLock<(Weak<InprocLink>, Weak<Conn>)>,
    /// Channel numbers on this side.
    next_id: AtomicU32,
    /// Where each of our channels' transmits go: the other side's channel number.
    routes: Mutex<HashMap<ChannelKey, u32>>,
}

impl InprocLink {
    fn new(host: &Arc<dyn Host>, this: &Arc<Conn>) -> Arc<InprocLink> {
        Arc::new(InprocLink {
            host: Arc::downgrade(host),
            this: Arc::downgrade(this),
            other: OnceLock::new(),
            next_id: AtomicU32::new(0),
            routes: Mutex::new(HashMap::new()),
        })
    }

    fn other(&self) -> Option<(Arc<InprocLink>, Arc<Conn>)> {
        let (l, c) = self.other.get()?;
        Some((l.upgrade()?, c.upgrade()?))
    }

    fn allocate(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The other side asks this side to open a channel (as SSH `CHANNEL_OPEN`
    /// would); this side admits and decides it.
    fn incoming(
        &self,
        conn: &Arc<Conn>,
        ssh: u32,
        path: &str,
    ) -> Result<(ChannelKey, Option<AcceptSlot>), OpenRefusal> {
        let host = self
            .host
            .upgrade()
            .filter(|h| !h.is_shutting_down())
            .ok_or(OpenRefusal::ShuttingDown)?;
        let opts = host.options();
        let req = OpenRequest::decode(path, opts.max_header_bytes)
            .map_err(|_| OpenRefusal::BadRequest)?;
        let slot = match req.parent {
            None => {
                let headers = Headers::from(req.headers.clone());
                Some(host.admit(&conn.info, &req.service, &headers)?)
            }
            Some(_) => None,
        };
        drop(host);
        match conn.incoming(ssh, Incoming::Native(req)) {
            Decision::Accept(key) => Ok((key, slot)),
            Decision::Refuse(r) => Err(r),
        }
    }
}

impl Link for InprocLink {
    async fn open(self: Arc<Self>, conn: Arc<Conn>, key: ChannelKey, request: OpenWire) {
        {
            // Only standard SSH clients are sent anything but native opens.
            let OpenWire::Native(path) = request else {
                return conn.open_refused(key, OpenFailed::Gone);
            };
            let Some((other_link, other)) = self.other() else {
                return conn.open_refused(key, OpenFailed::Gone);
            };
            if other.lost().is_some() || conn.lost().is_some() {
                return conn.open_refused(key, OpenFailed::Gone);
            }
            let local = self.allocate();
            let remote = other_link.allocate();
            conn.open_sent(key, local);
            match other_link.incoming(&other, remote, &path) {
                Ok((rkey, slot)) => {
                    // Each side's transmits find the other's channel from now on.
                    lock(&other_link.routes).insert(rkey, local);
                    lock(&self.routes).insert(key, remote);
                    // Queued for the other side's application before this side
                    // learns it is open (a shutdown there must find it queued).
                    if let Some(slot) = slot {
                        slot.push(other.handle(rkey));
                    }
                    other.established(rkey);
                    if !conn.open_confirmed(key) {
                        self.forget(key); // closed already
                    }
                }
                Err(r) => conn.open_refused(key, OpenFailed::Refused(r.code())),
            }
        }
    }

    async fn room(&self, _key: ChannelKey) -> usize {
        // Our own credit is the only window.
        usize::MAX
    }

    async fn send(&self, key: ChannelKey, t: Transmit) -> Result<(), SendFailed> {
        let remote = lock(&self.routes).get(&key).copied().ok_or(SendFailed)?;
        let (_, other) = self.other().ok_or(SendFailed)?;
        if other.lost().is_some() {
            return Err(SendFailed);
        }
        match t {
            Transmit::Data(b) => other.on_data(remote, b),
            Transmit::Error(b) => other.on_extended(remote, EXT_ERROR, &b),
            Transmit::Control(b) => other.on_extended(remote, EXT_CONTROL, &b),
            Transmit::Close { eof } => {
                if eof {
                    other.on_eof(remote);
                }
                other.on_close(remote);
            }
            // Only channels of standard SSH clients send these.
            Transmit::Eof { .. } | Transmit::WindowAdjust(_) => {}
        }
        Ok(())
    }

    fn forget(&self, key: ChannelKey) {
        lock(&self.routes).remove(&key);
    }

    async fn drained(&self) {}

    async fn disconnect(&self, why: String) {
        if let Some(this) = self.this.upgrade() {
            this.lose(why);
        }
    }

    fn kill(&self) {
        lock(&self.routes).clear();
        let why = self
            .this
            .upgrade()
            .and_then(|c| c.lost())
            .map(|e| crate::connection::state::lost_reason(&e).full())
            .unwrap_or_else(|| "connection closed".into());
        if let Some((_, other)) = self.other() {
            other.lose(format!("peer closed the connection: {why}"));
        }
    }
}
