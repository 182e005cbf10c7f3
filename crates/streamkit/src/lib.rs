#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Streamkit: secure application communication over the SSH-2 protocol stack.
//!
//! ```text
//!   ┌────────── Peer "alice" ──────────┐            ┌────────── Peer "bob" ───────────┐
//!   │ open("bob", "echo", headers) ──┐ │  SSH-2 over │ ┌──▶ accept() → (meta, channel) │
//!   │                                ▼ │ tcp / unix, │ │                                │
//!   │                                  │ or inproc   │ │                                │
//!   │   Channel ◀══ bytes · frames · error frames · half-close · trailers · reset ══▶ Channel │
//!   └──────────────────────────────────┘            └────────────────────────────────┘
//! ```
//!
//! A [`Peer`] binds and connects endpoints like a ZeroMQ socket; which side dialled
//! does not matter once connected. A [`Channel`] is a multiplexed, flow-controlled
//! stream with a service name and headers: a byte stream (tokio `AsyncRead` +
//! `AsyncWrite`), message frames, error frames, a half-close and trailers, and
//! channels can be opened inside it ([`Channel::open`], [`Channel::accept`]).
//! `inproc://` endpoints join peers of one process with the same semantics and no
//! SSH at all.
//!
//! ```
//! use streamkit::{Identity, Peer, PeerConfig, Trust};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (alice_id, bob_id) = (Identity::generate(), Identity::generate());
//! let bob = Peer::new(PeerConfig::new("bob", bob_id.clone(), Trust::new().with_key(alice_id.public_key())))?;
//! let alice = Peer::new(PeerConfig::new("alice", alice_id, Trust::new().with_key(bob_id.public_key())))?;
//!
//! let at = bob.bind("tcp://127.0.0.1:0").await?;
//! alice.connect(&at.to_string()).await?;
//!
//! tokio::spawn(async move {
//!     while let Ok((meta, mut ch)) = bob.accept().await {
//!         assert_eq!(meta.service(), "echo");
//!         while let Ok(Some(frame)) = ch.read_frame().await {
//!             ch.write_frame(&frame).await.ok();
//!         }
//!         ch.close().await.ok();
//!     }
//! });
//!
//! let mut ch = alice.open("bob", "echo", ["lang=en"]).await?;
//! ch.write_frame(b"hello").await?;
//! assert_eq!(&ch.read_frame().await?.unwrap()[..], b"hello");
//! ch.close().await?;
//! # Ok(()) }
//! ```
//!
//! The wire protocol is described message by message in `docs/PROTOCOL.md`.

mod channel;
mod config;
mod connection;
pub mod endpoint;
pub mod error;
pub mod forward;
pub mod hub;
mod keys;
mod peer;
mod transport;
mod trust;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod wire;
#[cfg(not(feature = "fuzzing"))]
mod wire;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use bytes::Bytes;
pub use channel::Headers;
pub use config::{
    AccessRequest, Authorize, MAX_HEADER_BYTES_LIMIT, Options, PeerConfig, Reconnect, Services,
};
pub use connection::handle::{BudgetShare, Channel, ChannelMeta, ReadHalf, WriteHalf};
pub use connection::join::{Frames, JoinError, JoinStats};
pub use endpoint::Endpoint;
pub use error::{
    BindError, ChannelError, ConfigError, ConnectError, KeyError, LostReason, OpenError,
    OpenErrorKind,
};
pub use keys::{Identity, PublicKey};
pub use peer::events::{Event, Events};
pub use peer::{AcceptError, ListenError, Peer, PeerStats, Route, ServiceListener};
pub use trust::{RemoteIdentity, Trust};
pub use wire::reason::{OpenRefusal, ResetCode};
pub use wire::relay::RelayMode;

/// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
