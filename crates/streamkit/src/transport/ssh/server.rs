//! The bound side: an SSH server per accepted socket.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use russh::keys::ssh_key;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, SshId};

use super::{ConnSlot, Link, Writer, preferred, ssh_window};
use crate::keys::PublicKey;
use crate::peer::PeerInner;
use crate::peer::connection::Connection;
use crate::transport::{Outbound, Socket, SshStream};
use crate::trust::Trust;
use crate::wire::ident;
use crate::wire::reason::OpenRefusal;

/// The russh server configuration for a peer's current options.
pub(crate) fn config(peer: &PeerInner) -> Arc<russh::server::Config> {
    let opts = peer.options();
    let trust = peer.trust();
    let mut methods = vec![MethodKind::PublicKey];
    if trust.has_token() {
        methods.push(MethodKind::Password);
    }
    Arc::new(russh::server::Config {
        server_id: SshId::Standard(ident::server_ident(peer.name()).into()),
        methods: MethodSet::from(&methods[..]),
        // Refusals take a fixed time so they do not reveal which check failed.
        auth_rejection_time: Duration::from_millis(200),
        // OpenSSH clients probe with "none" first; answering it need not be slow.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![(**peer.identity().private()).clone()],
        window_size: ssh_window(&opts),
        maximum_packet_size: opts.max_packet_size,
        max_auth_attempts: opts.max_auth_attempts,
        // Idle connections are never cut by the SSH layer; dead ones are found by
        // keepalives (see `keepalive`).
        inactivity_timeout: None,
        keepalive_interval: keepalive(&opts).0,
        keepalive_max: keepalive(&opts).1,
        nodelay: true,
        event_buffer_size: 64,
        preferred: preferred(),
        ..Default::default()
    })
}

/// russh's keepalive settings for our interval × misses bound.
///
/// russh declares a peer gone once `max + 1` timer periods pass without hearing from
/// it; with `2 × misses − 1` as the maximum and a period of 0.45 × the interval,
/// that is 0.9 × `interval × misses`: the bound holds with a tenth to spare for
/// noticing and tearing down (and a single miss remains expressible).
pub(crate) fn keepalive(opts: &crate::config::Options) -> (Option<Duration>, usize) {
    match opts.keepalive_interval {
        Some(d) => (
            Some(d * 9 / 20),
            (2 * opts.keepalive_misses as usize)
                .saturating_sub(1)
                .max(1),
        ),
        None => (None, 0),
    }
}

/// Reports how a served connection's handshake ended: the client's name, or why not.
pub(crate) type Ready = tokio::sync::oneshot::Sender<Result<String, String>>;

/// Runs one accepted socket until its connection ends. `ready`, if given, hears
/// how the handshake ended.
pub(crate) async fn serve(
    peer: Arc<PeerInner>,
    socket: Socket,
    remote_addr: String,
    ip: Option<IpAddr>,
    ready: Option<Ready>,
) {
    let ready = Arc::new(std::sync::Mutex::new(ready));
    let opts = peer.options();
    // Counted from accept to the end of the connection, handshakes included.
    struct Counted(Weak<PeerInner>, IpAddr);
    impl Drop for Counted {
        fn drop(&mut self) {
            if let Some(p) = self.0.upgrade() {
                p.release_address(self.1);
            }
        }
    }
    let mut over_limit = None;
    let counted = ip.map(|ip| {
        if !peer.admit_address(ip) {
            let max = opts.max_connections_per_address;
            tracing::info!(%ip, max, "refusing a connection over the per-address limit");
            over_limit = Some(format!("too many connections from {ip} (limit {max})"));
        }
        Counted(Arc::downgrade(&peer), ip)
    });
    let handshaking = Some(crate::transport::Counted::new(&peer.handshakes));
    let (stream, kill, out) = SshStream::new(socket);
    let slot = Arc::new(ConnSlot::default());
    let handler = ServerHandler {
        peer: Arc::downgrade(&peer),
        trust: peer.trust(),
        remote_addr: remote_addr.clone(),
        slot: slot.clone(),
        kill: kill.clone(),
        out,
        user: None,
        over_limit,
        ready: ready.clone(),
        handshaking,
    };
    // A client that has not authenticated within the handshake timeout is dropped,
    // whatever it is doing (garbage, a truncated handshake, silence).
    let timer = {
        let (slot, kill, addr) = (slot.clone(), kill.clone(), remote_addr.clone());
        let timeout = opts.handshake_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if slot.get().is_none() {
                tracing::info!(remote = %addr, "dropping a client that did not authenticate within {timeout:?}");
                kill.kill();
            }
        })
    };
    let config = config(&peer);
    drop(peer);
    let result = match russh::server::run_stream(config, stream, handler).await {
        Ok(session) => session.await,
        Err(e) => Err(e),
    };
    timer.abort();
    let reason = match &result {
        Ok(()) => "connection closed".to_owned(),
        Err(e) if kill.is_killed() => format!("connection closed locally ({e})"),
        Err(e) => describe(e),
    };
    // Free the address's place before the peer leaves `peers()`, so that whoever sees
    // it gone can connect again at once.
    drop(counted);
    if let Some(ready) = crate::channel::shared::lock(&ready).take() {
        let _ = ready.send(Err(reason.clone()));
    }
    match slot.get() {
        Some(conn) => conn.lose(&reason),
        None => tracing::debug!(remote = %remote_addr, %reason, "handshake ended"),
    }
}

/// A human description of why a session ended.
pub(crate) fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => format!("connection lost: {io}"),
        russh::Error::Disconnect => "peer disconnected".to_owned(),
        russh::Error::HUP => "peer hung up".to_owned(),
        other => other.to_string(),
    }
}

pub(crate) struct ServerHandler {
    peer: Weak<PeerInner>,
    trust: Trust,
    remote_addr: String,
    slot: Arc<ConnSlot>,
    kill: Arc<crate::transport::KillSwitch>,
    out: Arc<Outbound>,
    /// The user name that authenticated (the client's peer name).
    user: Option<String>,
    /// Why this client is refused before it authenticates (shown as the banner).
    over_limit: Option<String>,
    ready: Arc<std::sync::Mutex<Option<Ready>>>,
    /// Counts this connection as in its handshake until it authenticates.
    handshaking: Option<crate::transport::Counted>,
}

impl ServerHandler {
    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        }
    }

    fn check_key(&self, user: &str, key: &ssh_key::PublicKey) -> bool {
        if self.over_limit.is_some() || ident::validate_peer_name(user).is_err() {
            return false;
        }
        self.trust
            .check_client_key(user, &PublicKey(key.clone()))
            .is_ok()
    }

    fn conn(&self) -> Option<&Arc<Connection>> {
        self.slot.get()
    }
}

impl russh::server::Handler for ServerHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.check_key(user, offer.public_key) {
            Auth::Accept
        } else {
            Self::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.check_key(user, key.public_key) {
            self.user = Some(user.to_owned());
            Ok(Auth::Accept)
        } else {
            tracing::info!(
                remote = %self.remote_addr, user,
                key = %PublicKey(key.public_key.clone()).fingerprint(),
                "refused a client: key not trusted"
            );
            Ok(Self::reject())
        }
    }

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        Ok(self.over_limit.as_ref().map(|m| format!("{m}\r\n")))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.over_limit.is_none()
            && ident::validate_peer_name(user).is_ok()
            && self.trust.check_token(password)
        {
            self.user = Some(user.to_owned());
            Ok(Auth::Accept)
        } else {
            tracing::info!(remote = %self.remote_addr, user, "refused a client: wrong token");
            Ok(Self::reject())
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(peer) = self.peer.upgrade() else {
            return Err(russh::Error::Disconnect);
        };
        let Some(user) = self.user.clone() else {
            return Err(russh::Error::NotAuthenticated);
        };
        let remote = ident::parse_ident(session.remote_sshid()).ok();
        let native = remote.as_ref().and_then(|r| r.version).is_some();
        if !native {
            // A standard SSH client: SSH's window is the flow control, so it is
            // opened only as the application reads.
            session.set_manual_window(true);
        }
        let conn = Connection::new(
            &peer,
            user,
            self.remote_addr.clone(),
            Link::Server(session.handle()),
            self.kill.clone(),
            Some(self.out.clone()),
            native,
        );
        // The session runs this callback, so it cannot have ended yet.
        let _ = self.slot.set(conn.clone());
        self.handshaking = None;
        let name = conn.remote_name.clone();
        peer.register(conn);
        if let Some(ready) = crate::channel::shared::lock(&self.ready).take() {
            let _ = ready.send(Ok(name));
        }
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn().cloned() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let id = channel.id().number();
        let (_read, write) = channel.split();
        match conn.incoming_open(id, socket_path).await {
            Ok(accepted) => {
                reply.accept().await;
                accepted.complete(Some(Writer::Server(write)));
            }
            Err(refusal) => reply.reject(failure(refusal)).await,
        }
        Ok(())
    }

    // Standard SSH clients: a `session` channel becomes a service at `exec` or
    // `subsystem`, with `env` requests as headers; `direct-tcpip` names a service
    // as its host. Everything else a client may ask (a pty, a shell, X11, agent
    // forwarding, window changes) is answered with failure, rather than left
    // unanswered as russh's defaults would.

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn().cloned() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let id = channel.id().number();
        let (_read, write) = channel.split();
        match conn.session_opened(id, Writer::Server(write)) {
            Ok(()) => reply.accept().await,
            Err(refusal) => reply.reject(failure(refusal)).await,
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn().cloned() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let id = channel.id().number();
        let (_read, write) = channel.split();
        match conn.incoming_direct_tcpip(id, host_to_connect) {
            Ok(accepted) => {
                reply.accept().await;
                accepted.complete(Some(Writer::Server(write)));
            }
            Err(refusal) => reply.reject(failure(refusal)).await,
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

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.conn() {
            Some(c) if c.session_env(channel.number(), variable_name, variable_value) => {
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.conn().cloned() {
            Some(c) if c.session_start(channel.number(), data) => session.channel_success(channel),
            _ => session.channel_failure(channel),
        }
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.conn().cloned() {
            Some(c) if c.session_start(channel.number(), name.as_bytes()) => {
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn channel_open_confirmation(
        &mut self,
        id: ChannelId,
        _max_packet_size: u32,
        _window_size: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.confirmed(id.number());
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
            conn.on_data_owned(channel.number(), data);
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(conn) = self.conn() {
            conn.on_extended(channel.number(), code, data);
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
