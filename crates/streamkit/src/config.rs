//! Peer configuration and the options that can change on a live peer.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Headers;
use crate::error::ConfigError;
use crate::forward::RemoteForward;
use crate::keys::Identity;
use crate::trust::Trust;
use crate::wire::INITIAL_CREDIT;

/// Everything needed to create a [`Peer`](crate::Peer).
#[derive(Clone)]
pub struct PeerConfig {
    /// This peer's name, announced to every remote (1 to 64 bytes, no control characters).
    pub name: String,
    /// The key this peer proves itself with.
    pub identity: Identity,
    /// Whom this peer trusts.
    pub trust: Trust,
    /// A token to present (as the SSH password) when our key is not trusted by a server.
    pub token: Option<String>,
    /// Options that may also change at run time.
    pub options: Options,
    /// Decides, per channel open, whether a remote peer may use a service.
    pub authorizer: Option<Arc<dyn Authorize>>,
    /// Takes standard SSH clients' remote forwards (`ssh -R`); without it they
    /// are refused.
    pub remote_forward: Option<Arc<dyn RemoteForward>>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("trust", &self.trust)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("options", &self.options)
            .field("authorizer", &self.authorizer.is_some())
            .field("remote_forward", &self.remote_forward.is_some())
            .finish()
    }
}

impl PeerConfig {
    /// A configuration with default options.
    pub fn new(name: impl Into<String>, identity: Identity, trust: Trust) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            identity,
            trust,
            token: None,
            options: Options::default(),
            authorizer: None,
            remote_forward: None,
        }
    }

    /// Sets the token presented to servers.
    pub fn with_token(mut self, token: impl Into<String>) -> PeerConfig {
        self.token = Some(token.into());
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: Options) -> PeerConfig {
        self.options = options;
        self
    }

    /// Sets the per-service authorisation hook.
    pub fn with_authorizer(mut self, authorizer: impl Authorize) -> PeerConfig {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// Takes standard SSH clients' remote forwards (`ssh -R`) with `hook`.
    pub fn with_remote_forward(mut self, hook: impl RemoteForward) -> PeerConfig {
        self.remote_forward = Some(Arc::new(hook));
        self
    }
}

/// What an authorisation hook is asked about.
#[derive(Debug)]
#[non_exhaustive]
pub struct AccessRequest<'a> {
    /// The remote peer's name.
    pub peer: &'a str,
    /// What it proved when it connected: its key (by fingerprint) or the token.
    pub identity: &'a crate::RemoteIdentity,
    /// The service it wants to open.
    pub service: &'a str,
    /// The headers it sent.
    pub headers: &'a Headers,
}

/// Decides whether a remote peer may open a channel to a service.
///
/// Called for every open, on the connection's I/O task: keep it quick and do not block.
/// Closures `Fn(&AccessRequest) -> bool` implement it.
pub trait Authorize: Send + Sync + 'static {
    /// `true` lets the open through; `false` refuses it with "access denied".
    fn authorize(&self, request: &AccessRequest<'_>) -> bool;
}

impl<F> Authorize for F
where
    F: Fn(&AccessRequest<'_>) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, request: &AccessRequest<'_>) -> bool {
        self(request)
    }
}

/// Which services a peer accepts channels for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Services {
    /// Every service name reaches [`Peer::accept`](crate::Peer::accept).
    #[default]
    Any,
    /// Only these; an open for another fails with "service not found".
    Only(BTreeSet<String>),
}

impl Services {
    /// No services: every open is refused (a pure client).
    pub fn none() -> Services {
        Services::Only(BTreeSet::new())
    }

    /// Exactly these services.
    pub fn only<I, S>(names: I) -> Services
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Services::Only(names.into_iter().map(Into::into).collect())
    }

    /// Whether `service` is served.
    pub fn contains(&self, service: &str) -> bool {
        match self {
            Services::Any => true,
            Services::Only(set) => set.contains(service),
        }
    }
}

/// Options of a peer. `Options::default()` documents the defaults; each field says
/// when a change on a live peer ([`Peer::set_options`](crate::Peer::set_options)) takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Services accepted. Default: [`Services::Any`]. Applies to the next open.
    pub services: Services,
    /// Receive window each channel starts with, in bytes. Default 1 MiB, at least
    /// 64 KiB. Applies to new channels.
    pub channel_window: u32,
    /// Largest a channel's receive window grows to, in bytes: the most a channel
    /// buffers for a reader that does not read (a standard SSH client, which knows
    /// only SSH's window, starts with twice this). Default 8 MiB. The window doubles
    /// (from `channel_window`) each time the reader has kept up with a whole
    /// window's worth of data, so fast streams are not held back by credit round
    /// trips; a value not above `channel_window` keeps the window fixed. Applies to
    /// new channels.
    pub max_channel_window: u32,
    /// Most bytes one connection's remote can make this peer hold: unread data
    /// and error frames, frames being assembled, credit granted and not yet used,
    /// channels waiting to be accepted (each reserves its initial 64 KiB and its
    /// headers), standard clients' sessions before `exec`. Windows are granted
    /// beyond the initial credit only to channels the application has taken, and
    /// grow only within what is left; an incoming open it cannot hold is refused
    /// ("resource shortage"). Default 64 MiB, at least `max_frame_size` plus
    /// 64 KiB. Applies to new connections.
    pub memory_budget_per_connection: usize,
    /// The same over all of the peer's connections. Default 512 MiB, at least
    /// `memory_budget_per_address`. Fixed when the peer is made.
    pub memory_budget: usize,
    /// The same over the accepted connections from one remote IP address, so that
    /// one client cannot take the peer's whole budget by opening connections.
    /// Default 128 MiB, between `memory_budget_per_connection` and
    /// `memory_budget`. Applies to new connections.
    pub memory_budget_per_address: usize,
    /// Bytes a writer may queue on a channel before writes wait. Default 256 KiB.
    /// Applies to new channels.
    pub send_buffer: usize,
    /// Largest frame read or written, in bytes. Default 16 MiB. Applies to new channels.
    pub max_frame_size: usize,
    /// Largest encoded open request (service and headers) and trailers. Default
    /// 16 KiB, at most 192 KiB. Applies to the next open.
    pub max_header_bytes: usize,
    /// Most channels open at once on one connection, each way. Default 4096.
    /// Applies to the next open.
    pub max_channels_per_connection: usize,
    /// Most incoming channels waiting for [`Peer::accept`](crate::Peer::accept).
    /// Default 1024. Applies to the next open.
    pub max_pending_accepts: usize,
    /// Whether channels take channels the remote opens inside them (nested
    /// channels, for the channel's [`accept`](crate::Channel::accept)). Default
    /// `true`; a peer that never nests turns it off, and every child is refused
    /// with "parent does not accept channels" (so does a channel whose
    /// application called [`Channel::refuse_children`](crate::Channel::refuse_children),
    /// or dropped its handles). Applies to new connections.
    pub accept_children: bool,
    /// Time for a connection to complete its SSH handshake and authentication.
    /// Default 10 s. Applies to new connections.
    pub handshake_timeout: Duration,
    /// Time to wait for the remote to answer an open. Default 30 s. Applies to the next open.
    pub open_timeout: Duration,
    /// Time [`Peer::shutdown`](crate::Peer::shutdown) lets open channels finish,
    /// and time a channel closed with [`Channel::close`](crate::Channel::close) (or
    /// whose handles were dropped) waits for the remote to take what was written:
    /// past it, the channel is reset (`close` fails with
    /// [`ChannelError::CloseTimedOut`](crate::ChannelError::CloseTimedOut)).
    /// Default 10 s. Applies to the next close.
    pub close_timeout: Duration,
    /// Authentication attempts a client gets per connection. Default 6. Applies to new connections.
    pub max_auth_attempts: usize,
    /// Largest SSH packet accepted per channel message, in bytes. Default 64 KiB:
    /// measured faster over TCP than 256 KiB (the most russh accepts), whose buffers
    /// exceed the allocator's mmap threshold and churn pages. Applies to new
    /// connections.
    pub max_packet_size: u32,
    /// Most accepted connections (established or in their handshake) from one
    /// remote IP address. Default 256. A socket over the limit is told why in one
    /// line of text and closed before key exchange.
    pub max_connections_per_address: usize,
    /// Most accepted connections in their SSH handshake at once (key exchange and
    /// authentication: the costly part). Default 1,024, so that one address at its
    /// limit leaves room for others. Over it, a socket is refused like one over the
    /// per-address limit.
    pub max_handshakes: usize,
    /// Most accepted connections at once, established and in their handshake.
    /// Default 16,384. Over it, a socket is refused like one over the per-address
    /// limit.
    pub max_connections: usize,
    /// How a peer connected with [`Peer::connect`](crate::Peer::connect) re-dials.
    /// Applies to the next attempt.
    pub reconnect: Reconnect,
    /// How long [`Peer::open`](crate::Peer::open) waits for a peer that is not
    /// connected (yet, or again) before failing with "no connected peer has that
    /// name". Default 5 s; zero fails at once.
    pub open_wait: Duration,
    /// Keepalive: a remote is asked for a sign of life after 0.45 × this long without
    /// hearing from it, and declared gone within `keepalive_misses` times this long
    /// (after 0.9 × that of silence).
    /// Default 15 s; `None` disables keepalives. Applies to new connections.
    pub keepalive_interval: Option<Duration>,
    /// Keepalive: a remote silent for `keepalive_interval` × `keepalive_misses` is
    /// declared gone: its channels fail and it leaves `peers()`. Default 3 (at least 1).
    pub keepalive_misses: u32,
    /// A read on a channel that waits longer than this fails with
    /// [`ChannelError::TimedOut`](crate::ChannelError::TimedOut); the channel stays
    /// usable. The async methods (`read_frame`, ...) time each call; the
    /// `AsyncRead` and `poll_*` forms time from the first wait since the last read
    /// completed, so they act as an idle timeout. Default `None`. Applies to new
    /// channels (see also `Channel::set_read_timeout`).
    pub read_timeout: Option<Duration>,
    /// The same for writes that wait (for the send buffer or the peer's window).
    pub write_timeout: Option<Duration>,
    /// Hubs (by name) whose word this peer takes for who is at the other end of a
    /// relay: opens through them, and relays from them, skip the end-to-end key
    /// checks and run the session inside the relay without encryption (the hub's
    /// own connections are encrypted; the hub can read what it relays). For peers
    /// that know only the hub's key. Default empty: end to end through every hub.
    /// Applies to the next relay.
    pub trusted_hubs: Vec<String>,
    /// Whether a remote may open a relay to this peer (an end-to-end session from
    /// a peer it routes for, see `streamkit::hub`). The session's client still
    /// authenticates against this peer's trust as on a direct connection. Default
    /// `true`. Applies to the next relay.
    pub accept_relays: bool,
}

/// Re-dialling policy for endpoints given to [`Peer::connect`](crate::Peer::connect).
///
/// Delays grow from `first_delay`, doubling up to `max_delay`, each with ±20% random
/// jitter, like ZeroMQ's `ZMQ_RECONNECT_IVL`/`ZMQ_RECONNECT_IVL_MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconnect {
    /// Delay before the first retry. Default 100 ms.
    pub first_delay: Duration,
    /// Longest delay between attempts. Default 10 s.
    pub max_delay: Duration,
    /// Attempts after which a lost endpoint is given up (and forgotten). Default
    /// `None`: keep trying until `disconnect`.
    pub max_attempts: Option<u32>,
    /// Whether `connect` itself retries while the endpoint cannot be reached
    /// (refused, unreachable, handshake timed out). Default `true`. Trust and
    /// authentication failures are never retried by `connect`: they need a fix.
    pub retry_first_connect: bool,
    /// Whether a lost connection is re-dialled at all. Default `true`.
    pub enabled: bool,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            retry_first_connect: true,
            enabled: true,
        }
    }
}

impl Reconnect {
    /// No re-dialling: `connect` tries once and a lost connection stays lost.
    pub fn never() -> Reconnect {
        Reconnect {
            retry_first_connect: false,
            enabled: false,
            ..Reconnect::default()
        }
    }

    /// The delay before attempt `n` (1-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            services: Services::Any,
            channel_window: 1024 * 1024,
            max_channel_window: 8 * 1024 * 1024,
            send_buffer: 256 * 1024,
            memory_budget_per_connection: 64 * 1024 * 1024,
            memory_budget: 512 * 1024 * 1024,
            memory_budget_per_address: 128 * 1024 * 1024,
            max_frame_size: 16 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_channels_per_connection: 4096,
            max_pending_accepts: 1024,
            accept_children: true,
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(10),
            max_auth_attempts: 6,
            max_packet_size: 64 * 1024,
            max_connections_per_address: 256,
            max_handshakes: 1024,
            max_connections: 16 * 1024,
            reconnect: Reconnect::default(),
            open_wait: Duration::from_secs(5),
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_misses: 3,
            read_timeout: None,
            write_timeout: None,
            trusted_hubs: Vec::new(),
            accept_relays: true,
        }
    }
}

/// Most bytes an open request may take: it must fit well inside one SSH packet.
pub const MAX_HEADER_BYTES_LIMIT: usize = 192 * 1024;

impl Options {
    /// Checks every option is within range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |option, why: String| Err(ConfigError::Option { option, why });
        if self.channel_window < INITIAL_CREDIT {
            return bad(
                "channel_window",
                format!("must be at least {INITIAL_CREDIT}"),
            );
        }
        if self.send_buffer == 0 {
            return bad("send_buffer", "must not be zero".into());
        }
        if self.max_frame_size == 0 || self.max_frame_size > u32::MAX as usize {
            return bad("max_frame_size", "must be between 1 and 2^32-1".into());
        }
        if self.max_header_bytes < 256 || self.max_header_bytes > MAX_HEADER_BYTES_LIMIT {
            return bad(
                "max_header_bytes",
                format!("must be between 256 and {MAX_HEADER_BYTES_LIMIT}"),
            );
        }
        let floor = self.max_frame_size.saturating_add(INITIAL_CREDIT as usize);
        if self.memory_budget_per_connection < floor {
            return bad(
                "memory_budget_per_connection",
                format!("must be at least max_frame_size + {INITIAL_CREDIT} ({floor})"),
            );
        }
        if self.memory_budget_per_address < self.memory_budget_per_connection {
            return bad(
                "memory_budget_per_address",
                "must be at least memory_budget_per_connection".into(),
            );
        }
        if self.memory_budget < self.memory_budget_per_address {
            return bad(
                "memory_budget",
                "must be at least memory_budget_per_address".into(),
            );
        }
        if self.max_channels_per_connection == 0 {
            return bad("max_channels_per_connection", "must not be zero".into());
        }
        if self.max_packet_size < 4096 || self.max_packet_size > 256 * 1024 {
            return bad("max_packet_size", "must be between 4096 and 262144".into());
        }
        if self.max_auth_attempts == 0 {
            return bad("max_auth_attempts", "must not be zero".into());
        }
        if self.max_connections_per_address == 0 {
            return bad("max_connections_per_address", "must not be zero".into());
        }
        if self.max_handshakes == 0 {
            return bad("max_handshakes", "must not be zero".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must not be zero".into());
        }
        if self.keepalive_misses == 0 {
            return bad("keepalive_misses", "must be at least 1".into());
        }
        if self.keepalive_interval.is_some_and(|d| d.is_zero()) {
            return bad(
                "keepalive_interval",
                "must not be zero (use None to disable)".into(),
            );
        }
        if self.reconnect.first_delay.is_zero()
            || self.reconnect.max_delay < self.reconnect.first_delay
        {
            return bad("reconnect", "need 0 < first_delay <= max_delay".into());
        }
        Ok(())
    }
}
