//! Streamkit over SSH-2, via russh.
//!
//! The connecting peer is the SSH client, the bound peer the SSH server; after the
//! handshake both open channels the same way. Incoming channel traffic is taken
//! from russh's handler callbacks, on the session's own task, straight into the
//! connection's state; russh's per-channel queues are never used for it, so a
//! channel nobody reads can never stall the session (see `docs/PROTOCOL.md`, flow
//! control). The handler never awaits the application or another open: every open
//! is decided in one step on the connection's state.

pub(crate) mod client;
pub(crate) mod server;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use futures::FutureExt as _;
use russh::{ChannelId, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf, cipher};

use super::{HIGH_WATER, Host, KillSwitch, Outbound};
use crate::channel::{Headers, Transmit};
use crate::config::Options;
use crate::connection::driver::lock;
use crate::connection::state::Decision;
use crate::connection::{
    COMPAT_INITIAL_WINDOW, ChannelKey, Conn, Incoming, Link, OpenFailed, OpenWire, SendFailed,
};
use crate::wire::open::OpenRequest;
use crate::wire::reason::OpenRefusal;
use crate::wire::{EXT_CONTROL, EXT_ERROR};

/// SSH-level window per channel. Between Streamkit peers our own credit (at most
/// `max_channel_window`) bounds buffering and russh re-opens this window as packets
/// arrive, so it only needs to exceed the credit: twice the ceiling, so that the SSH
/// window never limits a channel whose credit has grown. For standard SSH clients it is the
/// flow control (granted by hand as the application reads), starting at this size.
pub(crate) fn ssh_window(opts: &Options) -> u32 {
    opts.max_channel_window
        .max(opts.channel_window)
        .saturating_mul(2)
}

/// Cipher preference: AES-GCM first where the CPU has AES instructions.
pub(crate) fn preferred() -> russh::Preferred {
    static AES_FIRST: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
    ];
    static CHACHA_FIRST: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::AES_256_CTR,
    ];
    let cipher = if has_aes_instructions() {
        AES_FIRST
    } else {
        CHACHA_FIRST
    };
    russh::Preferred {
        cipher: Cow::Borrowed(cipher),
        ..russh::Preferred::default()
    }
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// How a channel sends: russh's write half for its side of the connection.
pub(crate) enum Writer {
    Client(ChannelWriteHalf<russh::client::Msg>),
    Server(ChannelWriteHalf<russh::server::Msg>),
}

impl Writer {
    /// Bytes of data this channel may send now: the remote's SSH window, at most one
    /// packet. Zero means waiting for the remote to open its window.
    async fn room(&self) -> usize {
        match self {
            Writer::Client(w) => w.writable_packet_size().await,
            Writer::Server(w) => w.writable_packet_size().await,
        }
    }

    async fn send(&self, t: Transmit) -> Result<(), SendFailed> {
        macro_rules! go {
            ($w:expr) => {
                match t {
                    Transmit::Data(b) => $w.data_bytes(b).await,
                    Transmit::Error(b) => $w.extended_data_bytes(EXT_ERROR, b).await,
                    Transmit::Control(b) => $w.extended_data_bytes(EXT_CONTROL, b).await,
                    Transmit::Close { eof } => match if eof { $w.eof().await } else { Ok(()) } {
                        Ok(()) => $w.close().await,
                        Err(e) => Err(e),
                    },
                    Transmit::Eof { exit_status } => match exit_status {
                        Some(code) => match $w.exit_status(code).await {
                            Ok(()) => $w.eof().await,
                            Err(e) => Err(e),
                        },
                        None => $w.eof().await,
                    },
                    Transmit::WindowAdjust(n) => $w.adjust_window(n).await,
                }
            };
        }
        let r = match self {
            Writer::Client(w) => go!(w),
            Writer::Server(w) => go!(w),
        };
        r.map_err(|_| SendFailed)
    }
}

/// The russh session a connection runs on.
pub(crate) enum Session {
    Client(russh::client::Handle<client::ClientHandler>),
    Server(russh::server::Handle),
}

/// One connection's way to its russh session, for the connection's driver, and
/// what the session's handler shares with it.
pub(crate) struct SshLink {
    session: OnceLock<Session>,
    writers: Mutex<HashMap<ChannelKey, Arc<Writer>>>,
    out: Arc<Outbound>,
    kill: Arc<KillSwitch>,
}

impl SshLink {
    pub(crate) fn new(out: Arc<Outbound>, kill: Arc<KillSwitch>) -> Arc<SshLink> {
        Arc::new(SshLink {
            session: OnceLock::new(),
            writers: Mutex::new(HashMap::new()),
            out,
            kill,
        })
    }

    pub(crate) fn set_session(&self, session: Session) {
        let _ = self.session.set(session);
    }

    pub(crate) fn kill_switch(&self) -> &Arc<KillSwitch> {
        &self.kill
    }

    fn add_writer(&self, key: ChannelKey, w: Writer) {
        lock(&self.writers).insert(key, Arc::new(w));
    }

    fn writer(&self, key: ChannelKey) -> Option<Arc<Writer>> {
        lock(&self.writers).get(&key).cloned()
    }

    /// Waits for the answer to our open of `key` (its SSH id reached `conn` when
    /// the session assigned it: see [`assigned`]).
    async fn finish_open<M>(
        &self,
        conn: &Conn,
        key: ChannelKey,
        open: impl Future<Output = Result<russh::Channel<M>, russh::Error>>,
        wrap: fn(ChannelWriteHalf<M>) -> Writer,
    ) where
        M: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
    {
        match open.await {
            Ok(ch) => {
                // The read half is dropped: incoming traffic comes through the handler.
                let (_read, write) = ch.split();
                self.add_writer(key, wrap(write));
                if !conn.open_confirmed(key) {
                    self.forget(key); // closed already
                }
            }
            Err(russh::Error::ChannelOpenFailure(r)) => {
                conn.open_refused(key, OpenFailed::Refused(r.code()));
            }
            Err(_) => conn.open_refused(key, OpenFailed::Gone),
        }
    }
}

/// Tells `conn`, on the session's task, the SSH id our open of `key` got, the
/// moment the session assigns it: before the request goes out, so before anything
/// the remote sends for the channel can arrive.
fn assigned(conn: &Arc<Conn>, key: ChannelKey) -> russh::OnAssigned {
    let conn = conn.clone();
    russh::OnAssigned(Box::new(move |id| conn.open_sent(key, id.number())))
}

impl Link for SshLink {
    async fn open(self: Arc<Self>, conn: Arc<Conn>, key: ChannelKey, request: OpenWire) {
        let on_assigned = Some(assigned(&conn, key));
        match (self.session.get(), request) {
            (Some(Session::Client(h)), OpenWire::Native(path)) => {
                let open = h.channel_open_direct_streamlocal_assigned(path, on_assigned);
                self.finish_open(&conn, key, open, Writer::Client).await;
            }
            (Some(Session::Server(h)), OpenWire::Native(path)) => {
                let open = h.channel_open_direct_streamlocal_assigned(path, on_assigned);
                self.finish_open(&conn, key, open, Writer::Server).await;
            }
            // A visitor of a standard client's remote forward: the window offered
            // is what the channel's state starts with (it is opened by hand).
            (Some(Session::Server(h)), OpenWire::Forwarded(f)) => {
                let open = h.channel_open_forwarded_tcpip_assigned(
                    f.connected_address,
                    f.connected_port,
                    f.originator_address,
                    f.originator_port,
                    COMPAT_INITIAL_WINDOW,
                    on_assigned,
                );
                self.finish_open(&conn, key, open, Writer::Server).await;
            }
            // Only a server is asked for remote forwards.
            (Some(Session::Client(_)), OpenWire::Forwarded(_)) | (None, _) => {
                conn.open_refused(key, OpenFailed::Gone)
            }
        }
    }

    async fn room(&self, key: ChannelKey) -> usize {
        match self.writer(key) {
            Some(w) => w.room().await,
            None => 0,
        }
    }

    async fn send(&self, key: ChannelKey, t: Transmit) -> Result<(), SendFailed> {
        match self.writer(key) {
            Some(w) => w.send(t).await,
            None => Err(SendFailed),
        }
    }

    fn forget(&self, key: ChannelKey) {
        lock(&self.writers).remove(&key);
    }

    async fn drained(&self) {
        // Backpressure from the socket: see `Outbound`.
        if self.out.backlog() > HIGH_WATER {
            self.out.wait_drained().await;
        }
    }

    async fn disconnect(&self, why: String) {
        match self.session.get() {
            Some(Session::Client(h)) => {
                let _ = h
                    .disconnect(russh::Disconnect::ByApplication, &why, "en")
                    .await;
            }
            Some(Session::Server(h)) => {
                let _ = h
                    .disconnect(russh::Disconnect::ByApplication, why, "en".to_owned())
                    .await;
            }
            None => {}
        }
    }

    fn kill(&self) {
        lock(&self.writers).clear();
        self.kill.kill();
    }
}

/// The client's or the server's side of a russh session, by its message type.
pub(crate) trait Side:
    From<(ChannelId, ChannelMsg)> + Send + Sync + Sized + 'static
{
    fn wrap(w: ChannelWriteHalf<Self>) -> Writer;
}

impl Side for russh::client::Msg {
    fn wrap(w: ChannelWriteHalf<Self>) -> Writer {
        Writer::Client(w)
    }
}

impl Side for russh::server::Msg {
    fn wrap(w: ChannelWriteHalf<Self>) -> Writer {
        Writer::Server(w)
    }
}

/// Decides a native open from the remote and answers it, at once: never waits.
pub(crate) fn native_open<M: Side>(
    host: &dyn Host,
    link: &SshLink,
    conn: &Arc<Conn>,
    channel: russh::Channel<M>,
    path: &str,
    reply: russh::ChannelOpenHandleInner<M>,
) {
    let ssh = channel.id().number();
    let refuse = |reply: russh::ChannelOpenHandleInner<M>, r: OpenRefusal| {
        let _ = reply.reject(failure(r)).now_or_never();
    };
    if host.is_shutting_down() {
        return refuse(reply, OpenRefusal::ShuttingDown);
    }
    let opts = host.options();
    let req = match OpenRequest::decode(path, opts.max_header_bytes) {
        Ok(req) => req,
        Err(e) => {
            tracing::info!(peer = %conn.info.remote_name, error = %e, "refused an open");
            return refuse(reply, OpenRefusal::BadRequest);
        }
    };
    // The authoriser is the application's code: it runs before the connection's lock.
    let slot = match req.parent {
        None => {
            let headers = Headers::from(req.headers.clone());
            match host.admit(&conn.info, &req.service, &headers) {
                Ok(slot) => Some(slot),
                Err(r) => return refuse(reply, r),
            }
        }
        Some(_) => None,
    };
    match conn.incoming(ssh, Incoming::Native(req)) {
        Decision::Accept(key) => {
            let (_read, write) = channel.split();
            link.add_writer(key, M::wrap(write));
            // Queued for the application before the remote learns it is open.
            if let Some(slot) = slot {
                slot.push(conn.handle(key));
            }
            let _ = reply.accept().now_or_never();
            conn.established(key);
        }
        Decision::Refuse(r) => refuse(reply, r),
    }
}

/// The SSH open failure for a refusal: our code and description.
pub(crate) fn failure(refusal: OpenRefusal) -> ChannelOpenFailure {
    match refusal {
        OpenRefusal::Prohibited => ChannelOpenFailure::AdministrativelyProhibited,
        OpenRefusal::ConnectFailed => ChannelOpenFailure::ConnectFailed,
        OpenRefusal::UnknownChannelType => ChannelOpenFailure::UnknownChannelType,
        OpenRefusal::ResourceShortage => ChannelOpenFailure::ResourceShortage,
        r => ChannelOpenFailure::Other {
            code: r.code(),
            reason: r.description().to_owned(),
        },
    }
}

/// Why a session ended, as a connection's loss: an I/O error stays typed.
pub(crate) fn lost(e: russh::Error) -> crate::error::LostReason {
    match e {
        russh::Error::IO(io) => crate::error::LostReason::io(io),
        other => describe(&other).into(),
    }
}

/// A human description of why a session ended (without a "connection lost"
/// prefix: the channel errors that carry it add their own).
pub(crate) fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => io.to_string(),
        russh::Error::Disconnect => "peer disconnected".to_owned(),
        russh::Error::HUP => "peer hung up".to_owned(),
        other => other.to_string(),
    }
}
