//! The connecting side: an SSH client per `connect` (or per stream given to
//! `connect_stream`).

use std::sync::{Arc, Mutex, OnceLock};

use russh::client::{ChannelOpenHandle, DisconnectReason, Msg, Session};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Channel, ChannelId, SshId};

use super::{
    Session as SshSession, SshLink, describe, failure, native_open, preferred, ssh_window,
};
use crate::connection::Conn;
use crate::connection::driver::lock;
use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::keys::PublicKey;
use crate::transport::{self, Host, Relayed, SshStream};
use crate::trust::RemoteIdentity;
use crate::trust::{Refusal, Trust};
use crate::wire::ident;
use crate::wire::reason::OpenRefusal;

fn config(host: &dyn Host, relayed: Option<&Relayed>) -> Arc<russh::client::Config> {
    let opts = host.options();
    Arc::new(russh::client::Config {
        client_id: SshId::Standard(ident::client_ident().into()),
        window_size: ssh_window(&opts),
        maximum_packet_size: opts.max_packet_size,
        inactivity_timeout: None,
        keepalive_interval: super::server::keepalive(&opts).0,
        keepalive_max: super::server::keepalive(&opts).1,
        nodelay: true,
        preferred: relayed.map_or_else(preferred, Relayed::preferred),
        ..Default::default()
    })
}

/// What the handshake learnt, shared between the handler and the dialling task.
#[derive(Default)]
struct Handshake {
    host_key: Option<PublicKey>,
    server_name: Option<String>,
    refusal: Option<ConnectError>,
    banner: Option<String>,
}

/// Most channels a server may open before our connection is ready (just after
/// authentication); they are decided once it is.
const MAX_EARLY_OPENS: usize = 64;

/// What the session's handler shares with the dialling task and the driver.
struct Shared {
    conn: OnceLock<Arc<Conn>>,
    link: Arc<SshLink>,
    host: std::sync::Weak<dyn Host>,
    /// Opens from the server that came before the connection was ready.
    early: Mutex<Vec<(Channel<Msg>, String, ChannelOpenHandle)>>,
    /// Why the session ended, if it did.
    ended: Mutex<Option<String>>,
}

impl Shared {
    fn open(&self, conn: &Arc<Conn>, channel: Channel<Msg>, path: &str, reply: ChannelOpenHandle) {
        match self.host.upgrade().filter(|h| !h.is_shutting_down()) {
            Some(host) => native_open(&*host, &self.link, conn, channel, path, reply),
            None => {
                let _ = futures::FutureExt::now_or_never(
                    reply.reject(failure(OpenRefusal::ShuttingDown)),
                );
            }
        }
    }
}

/// Connects to `ep`, runs the SSH handshake and authentication, and returns the
/// registered connection.
pub(crate) async fn dial(host: &Arc<dyn Host>, ep: &Endpoint) -> Result<Arc<Conn>, ConnectError> {
    let socket = transport::dial(ep)
        .await
        .map_err(|source| ConnectError::Io {
            endpoint: ep.to_string(),
            source,
        })?;
    handshake(host, socket, ep.to_string(), ep.known_host_names(), None).await
}

/// Runs the SSH client side over `socket`: key exchange, the server's key checked
/// against `host_names` (the names `known_hosts` may list it under) and its
/// announced name, authentication; returns the registered connection. `endpoint`
/// names the other end in messages. `relayed`: the socket is a relay channel, and
/// the server must announce the name the hub was asked for.
pub(crate) async fn handshake(
    host: &Arc<dyn Host>,
    socket: transport::Socket,
    endpoint: String,
    host_names: Vec<String>,
    relayed: Option<Relayed>,
) -> Result<Arc<Conn>, ConnectError> {
    let opts = host.options();
    let _handshaking = transport::Counted::new(host.handshakes());
    let (mut stream, kill, out) = SshStream::new(socket);
    let first = stream.first_bytes();
    let hs = Arc::new(Mutex::new(Handshake::default()));
    let shared = Arc::new(Shared {
        conn: OnceLock::new(),
        link: SshLink::new(out, kill.clone()),
        host: Arc::downgrade(host),
        early: Mutex::new(Vec::new()),
        ended: Mutex::new(None),
    });
    let trust = match &relayed {
        Some(r) => r.trust(host.trust()),
        None => host.trust(),
    };
    let config = config(&**host, relayed.as_ref());
    let handler = ClientHandler {
        trust,
        expected: relayed.map(|r| r.name),
        endpoint: endpoint.clone(),
        host_names,
        hs: hs.clone(),
        shared: shared.clone(),
        checked: false,
        disconnect: None,
    };
    let handshake = async {
        let handle = russh::client::connect_stream(config, stream, handler).await;
        let mut handle = match handle {
            Ok(h) => h,
            Err(e) => {
                if let Some(refused) = lock(&hs).refusal.take() {
                    return Err(refused);
                }
                // A server refusing before the handshake says why in a line first.
                let why = match transport::refusal_line(&lock(&first)) {
                    Some(line) => format!("the server says: {line}"),
                    None => describe(&e),
                };
                return Err(ConnectError::Handshake {
                    endpoint: endpoint.clone(),
                    why,
                });
            }
        };
        let name = lock(&hs).server_name.clone().unwrap_or_default();
        let auth_err = |e: russh::Error| ConnectError::Handshake {
            endpoint: endpoint.clone(),
            why: describe(&e),
        };
        let key = PrivateKeyWithHashAlg::new(host.identity().private().clone(), None);
        let by_key = handle
            .authenticate_publickey(host.name(), key)
            .await
            .map_err(auth_err)?;
        if !by_key.success() {
            let why = match host.token() {
                Some(token) => {
                    let by_token = handle
                        .authenticate_password(host.name(), token)
                        .await
                        .map_err(auth_err)?;
                    if by_token.success() {
                        None
                    } else {
                        Some(
                            "the server rejected our token (and does not trust our key)".to_owned(),
                        )
                    }
                }
                None => Some(format!(
                    "the server does not trust our key {} for peer name {:?}",
                    host.identity().public_key().fingerprint(),
                    host.name()
                )),
            };
            if let Some(mut why) = why {
                // A server that refuses for a reason of its own (a limit) says why in
                // its banner: that reason comes first, not a guess about our key.
                if let Some(banner) = lock(&hs).banner.take() {
                    why = format!("the server says: {} ({why})", banner.trim());
                }
                return Err(ConnectError::AuthRejected {
                    endpoint: endpoint.clone(),
                    why,
                });
            }
        }
        Ok((handle, name))
    };
    let (handle, name) = match tokio::time::timeout(opts.handshake_timeout, handshake).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            kill.kill();
            return Err(e);
        }
        Err(_) => {
            kill.kill();
            return Err(ConnectError::Timeout {
                endpoint,
                timeout: opts.handshake_timeout,
            });
        }
    };
    shared.link.set_session(SshSession::Client(handle));
    let remote_id = match &lock(&hs).host_key {
        Some(key) => RemoteIdentity::key(key.fingerprint()),
        None => RemoteIdentity::key(String::new()), // kex_done refuses a server without one
    };
    let conn = transport::new_conn(&**host, name, endpoint.clone(), true, remote_id, None, None);
    let _ = shared.conn.set(conn.clone());
    conn.start(shared.link.clone());
    // The session may have ended meanwhile: nobody else would notice.
    let ended = lock(&shared.ended).clone();
    if let Some(why) = ended {
        conn.lose(why.clone());
        return Err(ConnectError::Handshake {
            endpoint,
            why: format!("connection closed during the handshake ({why})"),
        });
    }
    if let Err(why) = host.register(conn.clone()) {
        conn.close(&why).await;
        return Err(ConnectError::NameHeld { endpoint, why });
    }
    let early = std::mem::take(&mut *lock(&shared.early));
    for (channel, path, reply) in early {
        shared.open(&conn, channel, &path, reply);
    }
    Ok(conn)
}

pub(crate) struct ClientHandler {
    trust: Trust,
    /// Through a hub: the name the server must announce.
    expected: Option<String>,
    /// The other end, for messages.
    endpoint: String,
    /// Names `known_hosts` may list the server under (its endpoint).
    host_names: Vec<String>,
    hs: Arc<Mutex<Handshake>>,
    shared: Arc<Shared>,
    /// The first key exchange has been checked (later ones are rekeys).
    checked: bool,
    disconnect: Option<String>,
}

impl ClientHandler {
    fn refuse(&self, e: ConnectError) -> russh::Error {
        lock(&self.hs).refusal = Some(e);
        russh::Error::UnknownKey
    }

    fn conn(&self) -> Option<&Arc<Conn>> {
        self.shared.conn.get()
    }
}

impl Drop for ClientHandler {
    fn drop(&mut self) {
        // The session task ends by dropping its handler: the connection is gone.
        let reason = self
            .disconnect
            .take()
            .unwrap_or_else(|| "connection closed".to_owned());
        *lock(&self.shared.ended) = Some(reason.clone());
        if let Some(conn) = self.shared.conn.get() {
            conn.lose(reason);
        }
        self.shared.link.kill_switch().kill();
    }
}

impl russh::client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Remember the key; it is judged in `kex_done`, once the server's name is known.
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                lock(&self.hs).host_key = Some(PublicKey(key.clone()));
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }

    async fn kex_done(
        &mut self,
        _shared_secret: Option<&[u8]>,
        _names: &russh::Names,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.checked {
            return Ok(());
        }
        self.checked = true;
        let endpoint = self.endpoint.clone();
        let remote = ident::parse_ident(session.remote_sshid());
        if let Ok(ident::RemoteIdent {
            version: Some(version),
            ..
        }) = remote
            && version != crate::wire::PROTOCOL_VERSION
        {
            return Err(self.refuse(ConnectError::UnsupportedVersion { endpoint, version }));
        }
        let (name, software) = match remote {
            Ok(ident::RemoteIdent {
                version: Some(_),
                name: Some(name),
                ..
            }) => (name, String::new()),
            Ok(r) => (String::new(), r.software),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(session.remote_sshid()).into_owned(),
            ),
        };
        if name.is_empty() {
            return Err(self.refuse(ConnectError::NotStreamkit { endpoint, software }));
        }
        if let Some(expected) = self.expected.as_ref().filter(|e| **e != name) {
            return Err(self.refuse(ConnectError::Handshake {
                endpoint,
                why: format!("the hub reached a peer that announces {name:?}, not {expected:?}"),
            }));
        }
        let Some(key) = lock(&self.hs).host_key.clone() else {
            return Err(self.refuse(ConnectError::Handshake {
                endpoint,
                why: "no host key".into(),
            }));
        };
        match self.trust.check_host_key(&self.host_names, &name, &key) {
            Ok(()) => {
                lock(&self.hs).server_name = Some(name);
                Ok(())
            }
            Err(Refusal::Untrusted) => Err(self.refuse(ConnectError::UntrustedHostKey {
                endpoint,
                name,
                fingerprint: key.fingerprint(),
            })),
            Err(Refusal::Mismatch) => Err(self.refuse(ConnectError::HostKeyMismatch {
                endpoint,
                fingerprint: key.fingerprint(),
            })),
        }
    }

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Shown with an authentication failure (for example a connection limit).
        let text: String = banner
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        lock(&self.hs).banner = Some(text);
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        self.disconnect = Some(match reason {
            DisconnectReason::ReceivedDisconnect(info) if info.message.is_empty() => {
                "peer disconnected".to_owned()
            }
            DisconnectReason::ReceivedDisconnect(info) => {
                format!("peer disconnected: {}", info.message)
            }
            DisconnectReason::Error(e) => describe(&e),
        });
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.conn().cloned() {
            Some(conn) => self.shared.open(&conn, channel, socket_path, reply),
            None => {
                // Just after authentication, before the dialling task made the
                // connection: decided as soon as it has.
                let refused = {
                    let mut early = lock(&self.shared.early);
                    if early.len() >= MAX_EARLY_OPENS {
                        Some(reply)
                    } else {
                        early.push((channel, socket_path.to_owned(), reply));
                        None
                    }
                };
                if let Some(reply) = refused {
                    reply.reject(failure(OpenRefusal::ResourceShortage)).await;
                }
            }
        }
        Ok(())
    }

    // A server may not open anything else on a client.

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(failure(OpenRefusal::Prohibited)).await;
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(failure(OpenRefusal::Prohibited)).await;
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(failure(OpenRefusal::Prohibited)).await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(failure(OpenRefusal::Prohibited)).await;
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(failure(OpenRefusal::Prohibited)).await;
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(failure(OpenRefusal::Prohibited)).await;
        Ok(())
    }

    async fn channel_open_confirmation(
        &mut self,
        id: ChannelId,
        _max_packet_size: u32,
        _window_size: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn()
            && !conn.confirmed(id.number())
        {
            // An open of ours that was given up: nobody will use it.
            session.close(id)?;
        }
        Ok(())
    }

    async fn channel_open_failure(
        &mut self,
        channel: ChannelId,
        _reason: russh::ChannelOpenFailure,
        _description: &str,
        _language: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.refused(channel.number());
        }
        Ok(())
    }

    async fn data_bytes(
        &mut self,
        channel: ChannelId,
        data: bytes::Bytes,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Owned bytes: the channel keeps them without a copy.
        if let Some(conn) = self.conn() {
            conn.on_data(channel.number(), data);
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        ext: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.on_extended(channel.number(), ext, data);
        }
        Ok(())
    }

    async fn window_adjusted(
        &mut self,
        channel: ChannelId,
        _new_size: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.on_window(channel.number());
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.on_eof(channel.number());
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.on_close(channel.number());
        }
        Ok(())
    }
}
