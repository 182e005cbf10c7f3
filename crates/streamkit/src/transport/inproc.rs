//! `inproc://name`: two peers of one process, joined without sockets, SSH or
//! encryption.
//!
//! Each side gets a [`Connection`] like any other, with the same channel state
//! machine, credit, control records and limits; only the bottom layer differs.
//! What a channel's send pump would hand to SSH is handed straight to the other
//! side's connection instead, as the SSH layer would after decryption. Opens go
//! through the remote's `incoming_open`, so services, headers, authorisation and
//! limits behave exactly as over `tcp://`.
//!
//! Trust is checked as over SSH, against the keys the two peers hold: the bound
//! peer must trust the connecting peer's key (or its token) for its name, and the
//! connecting peer must trust the bound peer's key. No proof of possession is
//! needed: both keys live in this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, Weak};

use crate::channel::shared::lock;
use crate::channel::state::Transmit;
use crate::endpoint::Endpoint;
use crate::error::{BindError, ConnectError};
use crate::peer::PeerInner;
use crate::peer::connection::Connection;
use crate::transport::KillSwitch;
use crate::trust::Refusal;
use crate::wire::{EXT_CONTROL, EXT_ERROR};

/// Bound `inproc://` names of this process.
static REGISTRY: LazyLock<Mutex<HashMap<String, Weak<PeerInner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Takes `name` for `peer`; a name held by a live peer is in use.
pub(crate) fn bind(peer: &Arc<PeerInner>, name: &str) -> Result<(), BindError> {
    let mut reg = lock(&REGISTRY);
    if let Some(holder) = reg.get(name).and_then(Weak::upgrade)
        && !holder.is_shutting_down()
    {
        return Err(BindError::InUse(format!("inproc://{name}")));
    }
    reg.insert(name.to_owned(), Arc::downgrade(peer));
    Ok(())
}

/// Gives `name` back, if `peer` still holds it.
pub(crate) fn unbind(peer: *const PeerInner, name: &str) {
    let mut reg = lock(&REGISTRY);
    if reg
        .get(name)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), peer))
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
pub(crate) fn dial(client: &Arc<PeerInner>, name: &str) -> Result<Arc<Connection>, ConnectError> {
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

    let client_link = InprocLink::new(true);
    let server_link = InprocLink::new(false);
    let client_conn = Connection::new(
        client,
        server.name().to_owned(),
        endpoint.clone(),
        crate::transport::Link::Inproc(client_link.clone()),
        Arc::new(KillSwitch::default()),
        None,
        true,
    );
    let server_conn = Connection::new(
        &server,
        client.name().to_owned(),
        endpoint,
        crate::transport::Link::Inproc(server_link.clone()),
        Arc::new(KillSwitch::default()),
        None,
        true,
    );
    client_link.join(&client_conn, &server_conn);
    server_link.join(&server_conn, &client_conn);
    server.register(server_conn);
    client.register(client_conn.clone());
    Ok(client_conn)
}

/// One side of an in-process connection.
pub(crate) struct InprocLink {
    /// Whether this side connected (the other side bound).
    dialed: bool,
    /// This side's connection and the other side's.
    ends: OnceLock<(Weak<Connection>, Weak<Connection>)>,
    /// Channel numbers on this side.
    next_id: AtomicU32,
}

/// Why an in-process open failed.
pub(crate) enum InprocOpenFailed {
    Refused(u32),
    Gone,
}

impl InprocLink {
    fn new(dialed: bool) -> Arc<InprocLink> {
        Arc::new(InprocLink {
            dialed,
            ends: OnceLock::new(),
            next_id: AtomicU32::new(0),
        })
    }

    pub(crate) fn dialed(&self) -> bool {
        self.dialed
    }

    fn join(&self, this: &Arc<Connection>, other: &Arc<Connection>) {
        let _ = self.ends.set((Arc::downgrade(this), Arc::downgrade(other)));
    }

    fn this(&self) -> Option<Arc<Connection>> {
        self.ends.get().and_then(|(t, _)| t.upgrade())
    }

    fn other(&self) -> Option<Arc<Connection>> {
        self.ends.get().and_then(|(_, o)| o.upgrade())
    }

    /// The next channel number on this side.
    pub(crate) fn allocate(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a channel on the other side, as an SSH `CHANNEL_OPEN` would.
    pub(crate) async fn open(&self, path: &str) -> Result<(u32, InprocWriter), InprocOpenFailed> {
        let (Some(this), Some(other)) = (self.this(), self.other()) else {
            return Err(InprocOpenFailed::Gone);
        };
        if other.lost().is_some() || this.lost().is_some() {
            return Err(InprocOpenFailed::Gone);
        }
        let Some(other_link) = other.inproc_link() else {
            return Err(InprocOpenFailed::Gone);
        };
        let local_id = self.allocate();
        let remote_id = other_link.allocate();
        let accepted = other
            .incoming_open(remote_id, path)
            .await
            .map_err(|r| InprocOpenFailed::Refused(r.code()))?;
        // Registered here before the other side can send: its data may follow at once.
        this.confirmed(local_id);
        accepted.complete(Some(crate::transport::Writer::Inproc(InprocWriter {
            to: Arc::downgrade(&this),
            id: local_id,
        })));
        Ok((
            local_id,
            InprocWriter {
                to: Arc::downgrade(&other),
                id: remote_id,
            },
        ))
    }

    /// Ends the connection on both sides: this one for `why`, the other told so.
    pub(crate) fn disconnect(&self, why: &str) {
        if let Some(this) = self.this() {
            this.lose(why);
        }
    }

    /// This side's connection is gone: the other side's goes too.
    pub(crate) fn lost(&self, why: &str) {
        if let Some(other) = self.other() {
            other.lose(&format!("peer closed the connection: {why}"));
        }
    }
}

/// How a channel of an in-process connection sends: straight into the other
/// side's channel.
pub(crate) struct InprocWriter {
    to: Weak<Connection>,
    id: u32,
}

impl InprocWriter {
    pub(crate) fn send(&self, t: Transmit) -> Result<(), ()> {
        let to = self.to.upgrade().ok_or(())?;
        if to.lost().is_some() {
            return Err(());
        }
        match t {
            Transmit::Data(b) => to.on_data_owned(self.id, b),
            Transmit::Error(b) => to.on_extended(self.id, EXT_ERROR, &b),
            Transmit::Control(b) => to.on_extended(self.id, EXT_CONTROL, &b),
            Transmit::Close { eof } => {
                if eof {
                    to.on_eof(self.id);
                }
                to.on_close(self.id);
            }
            // Only channels of standard SSH clients send these.
            Transmit::Eof { .. } | Transmit::WindowAdjust(_) => {}
        }
        Ok(())
    }
}
