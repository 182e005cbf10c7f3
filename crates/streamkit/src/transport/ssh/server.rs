//! The bound side: an SSH server per accepted socket.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::keys::ssh_key;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet, SshId};

use super::{Session as SshSession, SshLink, Writer, failure, native_open, preferred, ssh_window};
use crate::channel::Headers;
use crate::connection::driver::lock;
use crate::connection::state::Decision;
use crate::connection::{COMPAT_INITIAL_WINDOW, Conn, Incoming};
use crate::error::LostReason;
use crate::forward::{ForwardEnd, ForwardRequest, Forwarder, MAX_REMOTE_FORWARDS_PER_CONNECTION};
use crate::keys::PublicKey;
use crate::transport::{Counted, Host, Relayed, Socket, SshStream};
use crate::trust::RemoteIdentity;
use crate::trust::Trust;
use crate::wire::ident;
use crate::wire::open::validate_service;
use crate::wire::reason::OpenRefusal;

/// Exit status for a service that does not exist, as shells use for a missing command.
const EXIT_NOT_FOUND: u32 = 127;
/// Exit status for a service the client may not use or that cannot take it now.
const EXIT_REFUSED: u32 = 126;

/// The russh server configuration for a peer's current options.
pub(crate) fn config(host: &dyn Host, relayed: Option<&Relayed>) -> Arc<russh::server::Config> {
    let opts = host.options();
    let trust = host.trust();
    let mut methods = vec![MethodKind::PublicKey];
    if trust.has_token() {
        methods.push(MethodKind::Password);
    }
    Arc::new(russh::server::Config {
        server_id: SshId::Standard(ident::server_ident(host.name()).into()),
        methods: MethodSet::from(&methods[..]),
        // Refusals take a fixed time so they do not reveal which check failed.
        auth_rejection_time: Duration::from_millis(200),
        // OpenSSH clients probe with "none" first; answering it need not be slow.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![(**host.identity().private()).clone()],
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
        preferred: relayed.map_or_else(preferred, Relayed::preferred),
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

/// Runs one accepted socket until its connection ends. `ready`, if given, hears
/// how the handshake ended. `relayed`: the socket is a relay channel, and the
/// client must authenticate as the name the hub vouched for.
pub(crate) async fn serve(
    host: Arc<dyn Host>,
    socket: Socket,
    remote_addr: String,
    ip: Option<IpAddr>,
    ready: Option<Ready>,
    relayed: Option<Relayed>,
) {
    let ready = Arc::new(std::sync::Mutex::new(ready));
    let opts = host.options();
    // Counted from accept to the end of the connection, handshakes included.
    struct Address(std::sync::Weak<dyn Host>, IpAddr);
    impl Drop for Address {
        fn drop(&mut self) {
            if let Some(host) = self.0.upgrade() {
                host.release_address(self.1);
            }
        }
    }
    // The limits are checked before anything costs us: an accepted socket over one
    // is told why in one line and closed before key exchange. A refused connection
    // holds no place: a client told to wait for a free one can have it as soon as
    // one is freed.
    let mut refusal = None;
    let counted = ip.and_then(|ip| {
        let place = Address(Arc::downgrade(&host), ip);
        if host.admit_address(ip) {
            return Some(place);
        }
        let max = opts.max_connections_per_address;
        refusal = Some(format!("too many connections from {ip} (limit {max})"));
        None
    });
    let accepted = Counted::new(host.accepted());
    if refusal.is_none() {
        let handshaking = host.handshakes().load(std::sync::atomic::Ordering::SeqCst);
        let served = host.accepted().load(std::sync::atomic::Ordering::SeqCst);
        if handshaking >= opts.max_handshakes {
            refusal = Some(format!(
                "too many connections in their handshake (limit {})",
                opts.max_handshakes
            ));
        } else if served > opts.max_connections {
            refusal = Some(format!(
                "too many connections (limit {})",
                opts.max_connections
            ));
        }
    }
    if let Some(why) = refusal {
        tracing::info!(remote = %remote_addr, "refused a connection before its handshake: {why}");
        host.refused(&remote_addr, &why);
        crate::transport::refuse_socket(socket, &why);
        drop((counted, accepted));
        if let Some(ready) = lock(&ready).take() {
            let _ = ready.send(Err(why));
        }
        return;
    }
    let handshaking = Some(Counted::new(host.handshakes()));
    let (stream, kill, out) = SshStream::new(socket);
    let shared = Arc::new(Shared {
        conn: OnceLock::new(),
        link: SshLink::new(out, kill.clone()),
    });
    let trust = match &relayed {
        Some(r) => r.trust(host.trust()),
        None => host.trust(),
    };
    let config = config(&*host, relayed.as_ref());
    let handler = ServerHandler {
        host: Arc::downgrade(&host),
        trust,
        allowed: relayed.as_ref().and_then(|r| r.allowed.clone()),
        vouched: relayed.map(|r| r.name),
        remote_addr: remote_addr.clone(),
        remote_ip: ip,
        shared: shared.clone(),
        user: None,
        ready: ready.clone(),
        handshaking,
        remote_id: None,
        refusal: None,
        forwards: Vec::new(),
    };
    // A client that has not authenticated within the handshake timeout is dropped,
    // whatever it is doing (garbage, a truncated handshake, silence).
    let timer = {
        let (shared, kill, addr) = (shared.clone(), kill.clone(), remote_addr.clone());
        let timeout = opts.handshake_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if shared.conn.get().is_none() {
                tracing::info!(remote = %addr, "dropping a client that did not authenticate within {timeout:?}");
                kill.kill();
            }
        })
    };
    drop(host);
    let result = match russh::server::run_stream(config, stream, handler).await {
        Ok(session) => session.await,
        Err(e) => Err(e),
    };
    timer.abort();
    let reason = match result {
        Ok(()) => LostReason::new("connection closed"),
        Err(e) if kill.is_killed() => format!("closed locally ({})", super::describe(&e)).into(),
        Err(e) => super::lost(e),
    };
    // Free the address's place before the peer leaves `peers()`, so that whoever sees
    // it gone can connect again at once.
    drop((counted, accepted));
    if let Some(ready) = lock(&ready).take() {
        let _ = ready.send(Err(reason.full()));
    }
    match shared.conn.get() {
        Some(conn) => conn.lose(reason),
        None => tracing::debug!(remote = %remote_addr, reason = %reason.full(), "handshake ended"),
    }
}

/// Reports how a served connection's handshake ended: the client's name, or why not.
pub(crate) type Ready = tokio::sync::oneshot::Sender<Result<String, String>>;

/// What the session's handler shares with the connection's driver.
struct Shared {
    conn: OnceLock<Arc<Conn>>,
    link: Arc<SshLink>,
}

pub(crate) struct ServerHandler {
    /// Weak: a connection does not keep its peer alive (dropping the peer closes it).
    host: std::sync::Weak<dyn Host>,
    trust: Trust,
    /// Through a hub: the name it vouched for, which the client must claim.
    vouched: Option<String>,
    /// Through a hub: the services its policy lets the client open.
    allowed: Option<Arc<crate::wire::relay::Allowed>>,
    remote_addr: String,
    /// The remote's IP address (TCP), whose connections share a memory budget.
    remote_ip: Option<IpAddr>,
    shared: Arc<Shared>,
    /// The user name that authenticated (the client's peer name).
    user: Option<String>,
    ready: Arc<std::sync::Mutex<Option<Ready>>>,
    /// Counts this connection as in its handshake until it authenticates.
    handshaking: Option<Counted>,
    /// What the client proved, once it authenticated.
    remote_id: Option<RemoteIdentity>,
    /// Why the last authentication request was refused, for the client to show.
    refusal: Option<String>,
    /// The remote forwards (`ssh -R`) this client holds, by the address and port
    /// it asked for and by the port listened on: dropping one ends it.
    forwards: Vec<RemoteForwardHeld>,
}

/// A remote forward a standard client holds.
struct RemoteForwardHeld {
    address: String,
    asked: u32,
    port: u32,
    _end: ForwardEnd,
}

impl ServerHandler {
    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        }
    }

    /// Whether `user` may be claimed here: through a hub, only the name it vouched for.
    fn claimable(&mut self, user: &str) -> bool {
        if ident::validate_peer_name(user).is_err() {
            return false;
        }
        match &self.vouched {
            Some(name) if name != user => {
                tracing::info!(
                    remote = %self.remote_addr, user,
                    "refused a relayed client: the hub vouched for {name:?}"
                );
                self.refusal = Some(format!(
                    "the hub says this is {name:?}, but the client claims {user:?}"
                ));
                false
            }
            _ => true,
        }
    }

    fn check_key(&mut self, user: &str, key: &ssh_key::PublicKey) -> bool {
        if !self.claimable(user) {
            return false;
        }
        self.trust
            .check_client_key(user, &PublicKey(key.clone()))
            .is_ok()
    }

    /// Refuses a client whose name is held by a live connection of another
    /// identity (the reason goes to it as a banner).
    fn name_free(&mut self, user: &str, id: &RemoteIdentity) -> bool {
        let Some(holder) = self
            .host
            .upgrade()
            .and_then(|h| h.name_held_by_other(user, id))
        else {
            return true;
        };
        tracing::info!(
            remote = %self.remote_addr, user,
            "refused a client: the name is held by {holder}"
        );
        self.refusal = Some(crate::transport::name_held_message(user));
        false
    }

    fn conn(&self) -> Option<&Arc<Conn>> {
        self.shared.conn.get()
    }

    /// The peer, while it exists and is not shutting down.
    fn host(&self) -> Result<Arc<dyn Host>, OpenRefusal> {
        match self.host.upgrade() {
            Some(h) if !h.is_shutting_down() => Ok(h),
            _ => Err(OpenRefusal::ShuttingDown),
        }
    }

    /// Refuses an open from a client this side has no connection for (yet).
    async fn no_conn(reply: ChannelOpenHandle) {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }

    /// `exec` or `subsystem`: the first word names the service; the rest, if any,
    /// becomes the header `args=REST`. `false` if it cannot be taken at all (no such
    /// session, or a second request); a service that does not exist or is refused is
    /// reported like a failing command (a message on stderr and exit status 127 or
    /// 126), since standard clients print little for a failed request.
    fn session_start(&self, channel: ChannelId, command: &[u8]) -> bool {
        let Some(conn) = self.conn() else {
            return false;
        };
        let ssh = channel.number();
        let Some(mut headers) = conn.step(|s| s.session_headers(ssh)) else {
            return false;
        };
        // Not UTF-8 cannot name a service: it is reported as not found.
        let command = String::from_utf8_lossy(command);
        let command = command.trim();
        let (service, args) = match command.split_once(char::is_whitespace) {
            Some((s, rest)) => (s, rest.trim_start()),
            None => (command, ""),
        };
        if !args.is_empty() {
            headers.push(format!("args={args}"));
        }
        let headers = Headers::from(headers);
        let admitted = self.host().and_then(|host| {
            validate_service(service).map_err(|_| OpenRefusal::ServiceNotFound)?;
            host.admit(&conn.info, service, &headers)
        });
        let outcome = match &admitted {
            Ok(_) => Ok(()),
            Err(refusal) => {
                tracing::info!(peer = %conn.info.remote_name, service, "refused: {}", refusal.description());
                let status = if *refusal == OpenRefusal::ServiceNotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_REFUSED
                };
                Err((
                    format!("streamkit: {service}: {}\n", refusal.description()),
                    status,
                ))
            }
        };
        let key = conn.step(|s| s.session_start(ssh, service, headers, outcome));
        if let (Some(key), Ok(slot)) = (key, admitted) {
            slot.push(conn.handle(key));
        }
        true
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
            let id = RemoteIdentity::key(PublicKey(key.public_key.clone()).fingerprint());
            if !self.name_free(user, &id) {
                return Ok(Self::reject());
            }
            self.user = Some(user.to_owned());
            self.remote_id = Some(id);
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

    fn auth_rejection_banner(&mut self) -> Option<String> {
        self.refusal.take().map(|m| format!("{m}\r\n"))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.claimable(user) && self.trust.check_token(password) {
            if self.trust.is_bound(user) {
                tracing::info!(
                    remote = %self.remote_addr, user,
                    "refused a token holder: the name is bound to a key"
                );
                self.refusal = Some(crate::transport::name_bound_message(user));
                return Ok(Self::reject());
            }
            if !self.name_free(user, &RemoteIdentity::Token) {
                return Ok(Self::reject());
            }
            self.user = Some(user.to_owned());
            self.remote_id = Some(RemoteIdentity::Token);
            Ok(Auth::Accept)
        } else {
            tracing::info!(remote = %self.remote_addr, user, "refused a client: wrong token");
            Ok(Self::reject())
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Ok(host) = self.host() else {
            return Err(russh::Error::Disconnect);
        };
        let Some(user) = self.user.clone() else {
            return Err(russh::Error::NotAuthenticated);
        };
        let remote = ident::parse_ident(session.remote_sshid()).ok();
        let version = remote.as_ref().and_then(|r| r.version);
        if let Some(v) = version
            && v != crate::wire::PROTOCOL_VERSION
        {
            let why = format!(
                "unsupported protocol version {v} (this peer speaks streamkit={})",
                crate::wire::PROTOCOL_VERSION
            );
            tracing::info!(remote = %self.remote_addr, user, "refused a client: {why}");
            let _ = session.disconnect(russh::Disconnect::ProtocolVersionNotSupported, &why, "en");
            return Ok(());
        }
        let native = version.is_some();
        if !native {
            // A standard SSH client: SSH's window is the flow control, so it is
            // opened only as the application reads.
            session.set_manual_window(true);
        }
        let link = self.shared.link.clone();
        link.set_session(SshSession::Server(session.handle()));
        let Some(remote_id) = self.remote_id.clone() else {
            return Err(russh::Error::NotAuthenticated);
        };
        let conn = crate::transport::new_conn(
            &*host,
            user,
            self.remote_addr.clone(),
            false,
            remote_id,
            self.remote_ip,
            self.allowed.clone(),
        );
        let _ = self.shared.conn.set(conn.clone());
        self.handshaking = None;
        conn.start(link);
        let name = conn.info.remote_name.clone();
        if let Err(why) = host.register(conn.clone()) {
            // Another handshake took the name meanwhile.
            let _ = session.disconnect(russh::Disconnect::ByApplication, &why, "en");
            conn.lose(why);
            return Ok(());
        }
        if let Some(ready) = lock(&self.ready).take() {
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
            Self::no_conn(reply).await;
            return Ok(());
        };
        let host = match self.host() {
            Ok(h) => h,
            Err(r) => {
                reply.reject(failure(r)).await;
                return Ok(());
            }
        };
        native_open(
            &*host,
            &self.shared.link,
            &conn,
            channel,
            socket_path,
            reply,
        );
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
        mut reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn().cloned() else {
            Self::no_conn(reply).await;
            return Ok(());
        };
        if let Err(r) = self.host() {
            reply.reject(failure(r)).await;
            return Ok(());
        }
        let ssh = channel.id().number();
        match conn.incoming(ssh, Incoming::Session) {
            Decision::Accept(key) => {
                let (_read, write) = channel.split();
                self.shared.link.add_writer(key, Writer::Server(write));
                reply.set_window_size(COMPAT_INITIAL_WINDOW);
                reply.accept().await;
                conn.established(key);
            }
            Decision::Refuse(r) => reply.reject(failure(r)).await,
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
        mut reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(conn) = self.conn().cloned() else {
            Self::no_conn(reply).await;
            return Ok(());
        };
        let host = match self.host() {
            Ok(h) => h,
            Err(r) => {
                reply.reject(failure(r)).await;
                return Ok(());
            }
        };
        if validate_service(host_to_connect).is_err() {
            reply.reject(failure(OpenRefusal::BadRequest)).await;
            return Ok(());
        }
        // On a hub, a peer's name is routed to that peer (`ssh -J`); otherwise the
        // host names a service. The authoriser is the application's code: it runs
        // before the connection's lock.
        let decided = host
            .forward(&conn.info, host_to_connect)
            .unwrap_or_else(|| host.admit(&conn.info, host_to_connect, &Headers::new()));
        let slot = match decided {
            Ok(slot) => slot,
            Err(r) => {
                reply.reject(failure(r)).await;
                return Ok(());
            }
        };
        let ssh = channel.id().number();
        let service = host_to_connect.to_owned();
        match conn.incoming(ssh, Incoming::DirectTcpip { service }) {
            Decision::Accept(key) => {
                let (_read, write) = channel.split();
                self.shared.link.add_writer(key, Writer::Server(write));
                slot.push(conn.handle(key));
                reply.set_window_size(COMPAT_INITIAL_WINDOW);
                reply.accept().await;
                conn.established(key);
            }
            Decision::Refuse(r) => reply.reject(failure(r)).await,
        }
        Ok(())
    }

    /// A standard client's `ssh -R`: the peer's hook listens, or it is refused.
    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(conn) = self.conn().cloned() else {
            return Ok(false);
        };
        let who = conn.info.remote_name.clone();
        let refuse = |why: &str| {
            tracing::info!(peer = %who, address, port = *port, "refused a remote forward: {why}");
            Ok(false)
        };
        let Some(hook) = self.host().ok().and_then(|h| h.remote_forward()) else {
            return refuse("this peer takes no remote forwards");
        };
        let Ok(asked) = u16::try_from(*port) else {
            return refuse("not a port");
        };
        if self.forwards.len() >= MAX_REMOTE_FORWARDS_PER_CONNECTION {
            return refuse(&format!(
                "the connection holds {MAX_REMOTE_FORWARDS_PER_CONNECTION} already (the limit)"
            ));
        }
        if asked != 0
            && self
                .forwards
                .iter()
                .any(|f| f.address == address && f.asked == *port)
        {
            return refuse("already forwarded");
        }
        let (forwarder, end) = Forwarder::new(&conn, address);
        let request = ForwardRequest {
            peer: who.clone(),
            identity: conn.info.remote_id.clone(),
            address: address.to_owned(),
            port: asked,
            forwarder,
        };
        match hook.listen(request) {
            Ok(bound) => {
                end.listening(bound);
                self.forwards.push(RemoteForwardHeld {
                    address: address.to_owned(),
                    asked: *port,
                    port: u32::from(bound),
                    _end: end,
                });
                *port = u32::from(bound);
                Ok(true)
            }
            Err(why) => refuse(&why),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let before = self.forwards.len();
        // Dropping it ends the forward: its hook stops listening.
        self.forwards
            .retain(|f| f.address != address || (f.asked != port && f.port != port));
        Ok(self.forwards.len() < before)
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
        let ssh = channel.number();
        match self.conn() {
            Some(c) if c.step(|s| s.session_env(ssh, variable_name, variable_value)) => {
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
        if self.session_start(channel, data) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.session_start(channel, name.as_bytes()) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
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
