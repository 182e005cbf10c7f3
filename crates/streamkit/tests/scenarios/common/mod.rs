//! Shared set-up for the scenario tests: peers with fresh keys that trust each
//! other, over any transport (TCP, Unix sockets, in-process), and a timeout that
//! only catches hangs.
#![allow(dead_code)]

pub mod proxy;
pub mod sim;

use std::future::Future;
use std::time::Duration;

use streamkit::{Channel, Identity, Options, Peer, PeerConfig, Trust};

use tokio::io::AsyncWriteExt;

/// Which transport the connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SSH over TCP on loopback.
    Tcp,
    /// SSH over a Unix socket.
    Unix,
    /// In-process, without SSH.
    Inproc,
    /// Through a hub over TCP: an end-to-end session inside a relay.
    ViaHub,
    /// Through a hub over TCP, taking the hub's word (no key checks inside).
    ViaTrustedHub,
}

impl Kind {
    /// Whether connections of this kind run over a socket (and SSH).
    pub fn has_socket(self) -> bool {
        self != Kind::Inproc
    }

    /// Whether the pair reaches each other through a hub.
    pub fn via_hub(self) -> bool {
        matches!(self, Kind::ViaHub | Kind::ViaTrustedHub)
    }
}

/// Fails the test if `f` takes longer than a generous bound: it catches hangs, it
/// does not time anything.
pub async fn within<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => panic!("operation hung for 60 s"),
    }
}

/// Waits while `cond` holds (for counts that settle in the background), failing
/// the test only if that hangs. The condition is checked again at each event of
/// `peers` (channels and connections closing) and, for what has no event (tasks
/// ending, descriptors closing), every 10 ms: it never spins.
pub async fn wait_while(peers: &[&Peer], mut cond: impl FnMut() -> bool) {
    let mut events: Vec<_> = peers.iter().map(|p| p.events()).collect();
    within(async {
        while cond() {
            let tick = tokio::time::sleep(Duration::from_millis(10));
            if events.is_empty() {
                tick.await;
                continue;
            }
            let any_event =
                futures::future::select_all(events.iter_mut().map(|e| Box::pin(e.next())));
            tokio::select! {
                _ = any_event => {}
                () = tick => {}
            }
        }
    })
    .await;
}

/// A place for Unix sockets that disappears with the test.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A fresh endpoint of the given kind.
    pub fn endpoint(&self, kind: Kind, name: &str) -> String {
        match kind {
            Kind::Tcp | Kind::ViaHub | Kind::ViaTrustedHub => "tcp://127.0.0.1:0".to_string(),
            Kind::Unix => format!(
                "unix://{}",
                self.dir.path().join(format!("{name}.sock")).display()
            ),
            // Names are shared by the whole process (and tests run in parallel).
            Kind::Inproc => format!(
                "inproc://{name}-{}",
                self.dir
                    .path()
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
            ),
        }
    }
}

/// A named peer identity.
pub struct Who {
    pub name: &'static str,
    pub id: Identity,
}

pub fn who(name: &'static str) -> Who {
    Who {
        name,
        id: Identity::generate(),
    }
}

/// A peer that trusts every key in `trusted`.
pub fn peer(me: &Who, trusted: &[&Who]) -> Peer {
    peer_with(me, trusted, Options::default())
}

pub fn peer_with(me: &Who, trusted: &[&Who], options: Options) -> Peer {
    let mut trust = Trust::new();
    for t in trusted {
        trust = trust.with_key(t.id.public_key());
    }
    Peer::new(PeerConfig::new(me.name, me.id.clone(), trust).with_options(options))
        .expect("valid config")
}

/// Options for a peer whose `connect` fails at once when nobody listens.
pub fn no_retry() -> Options {
    let mut o = Options::default();
    o.reconnect = streamkit::Reconnect::never();
    o
}

/// "bob" bound, "alice" connected to him.
pub struct Pair {
    pub alice: Peer,
    pub bob: Peer,
    /// Where alice connected (the hub, for the kinds through one).
    pub url: String,
    pub scratch: Scratch,
    /// The hub between them, for the kinds through one.
    pub hub: Option<streamkit::hub::Hub>,
}

pub async fn pair(kind: Kind) -> Pair {
    pair_with(kind, Options::default(), Options::default()).await
}

pub async fn pair_with(kind: Kind, alice_opts: Options, bob_opts: Options) -> Pair {
    if kind.via_hub() {
        return pair_via_hub(kind, alice_opts, bob_opts).await;
    }
    let (a, b) = (who("alice"), who("bob"));
    let alice = peer_with(&a, &[&b], alice_opts);
    let bob = peer_with(&b, &[&a], bob_opts);
    let scratch = Scratch::new();
    let url = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .expect("bind")
        .to_string();
    let name = within(alice.connect(&url)).await.expect("connect");
    assert_eq!(name, "bob");
    Pair {
        alice,
        bob,
        url,
        scratch,
        hub: None,
    }
}

/// alice and bob, each connected only to a hub, each seeing the other through it.
async fn pair_via_hub(kind: Kind, mut alice_opts: Options, mut bob_opts: Options) -> Pair {
    let (h, a, b) = (who("hub"), who("alice"), who("bob"));
    let hub_trust = Trust::new()
        .with_key(a.id.public_key())
        .with_key(b.id.public_key());
    let hub = streamkit::hub::Hub::new(
        PeerConfig::new(h.name, h.id.clone(), hub_trust),
        streamkit::hub::HubConfig::default(),
    )
    .expect("hub");
    let url = hub
        .peer()
        .bind("tcp://127.0.0.1:0")
        .await
        .expect("bind")
        .to_string();
    let (alice, bob) = if kind == Kind::ViaTrustedHub {
        alice_opts.trusted_hubs = vec!["hub".into()];
        bob_opts.trusted_hubs = vec!["hub".into()];
        (
            peer_with(&a, &[&h], alice_opts),
            peer_with(&b, &[&h], bob_opts),
        )
    } else {
        (
            peer_with(&a, &[&h, &b], alice_opts),
            peer_with(&b, &[&h, &a], bob_opts),
        )
    };
    within(alice.connect(&url)).await.expect("alice connects");
    within(bob.connect(&url)).await.expect("bob connects");
    let sees = |p: &Peer, name: &str| p.peers().iter().any(|n| n == name);
    wait_while(&[&alice, &bob], || {
        !sees(&alice, "bob") || !sees(&bob, "alice")
    })
    .await;
    Pair {
        alice,
        bob,
        url,
        scratch: Scratch::new(),
        hub: Some(hub),
    }
}

/// "bob" serving, "alice" connected to him over a simulated link (in-memory pipes
/// with real SSH on top, see [`sim`]): for tests on tokio's paused clock.
pub async fn sim_pair(alice_opts: Options, bob_opts: Options) -> (Peer, Peer, sim::Link) {
    let (a, b) = (who("alice"), who("bob"));
    let alice = peer_with(&a, &[&b], alice_opts);
    let bob = peer_with(&b, &[&a], bob_opts);
    let link = sim::Link::default();
    let (dialling, serving) = link.ends();
    let (name, served) = within(async {
        tokio::join!(
            alice.connect_stream(dialling, "sim"),
            bob.serve_stream(serving, "sim")
        )
    })
    .await;
    assert_eq!(name.expect("connect over the link"), "bob");
    assert_eq!(served.expect("serve over the link"), "alice");
    (alice, bob, link)
}

/// Serves every accepted channel with `echo`: bytes back, then the trailers back.
pub fn serve_echo(peer: &Peer) -> tokio::task::JoinHandle<()> {
    let peer = peer.clone();
    tokio::spawn(async move {
        while let Ok((_meta, ch)) = peer.accept().await {
            tokio::spawn(echo(ch));
        }
    })
}

/// Copies the byte stream back, then the remote's trailers, then closes.
pub async fn echo(ch: Channel) {
    let meta = ch.meta().clone();
    let (mut r, mut w) = ch.split();
    if tokio::io::copy(&mut r, &mut w).await.is_err() {
        return;
    }
    if let Some(t) = meta.trailers().filter(|t| !t.is_empty()) {
        let _ = w.write_trailers(t).await;
    }
    let _ = w.shutdown().await;
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs a scenario over every transport: TCP, Unix sockets and in-process. A new
/// transport added to [`Kind`] and here gets every scenario that uses this.
#[macro_export]
macro_rules! over_all {
    ($($name:ident => $body:path;)*) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tcp() {
                    $body(Kind::Tcp).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn unix() {
                    $body(Kind::Unix).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn inproc() {
                    $body(Kind::Inproc).await
                }
            }
        )*
    };
}

/// The same scenarios between two peers that reach each other through a hub,
/// end to end and taking the hub's word.
macro_rules! over_hub {
    ($($name:ident => $body:path;)*) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn via_hub() {
                    $body(Kind::ViaHub).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn via_trusted_hub() {
                    $body(Kind::ViaTrustedHub).await
                }
            }
        )*
    };
}

/// [`over_all!`], and the same scenarios through a hub in a module of their own
/// (`through_hub`), from one list.
macro_rules! over_all_and_hubs {
    ($($name:ident => $body:path;)*) => {
        over_all! { $($name => $body;)* }
        mod through_hub {
            use super::*;
            over_hub! { $($name => $body;)* }
        }
    };
}

/// A raw SSH client (russh, with none of our channel logic) that trusts any server.
pub struct RawClient;

impl russh::client::Handler for RawClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A raw russh client on `url`, announcing `ident`, that tried to log in as
/// `user` with `key`: its handle and whether the server accepted it.
pub async fn raw_login<H: russh::client::Handler + Send + 'static>(
    url: &streamkit::Endpoint,
    ident: &str,
    user: &str,
    key: &Identity,
    handler: H,
) -> (russh::client::Handle<H>, bool) {
    let streamkit::Endpoint::Tcp { host, port } = url else {
        unreachable!()
    };
    let config = std::sync::Arc::new(russh::client::Config {
        client_id: russh::SshId::Standard(ident.to_owned().into()),
        nodelay: true,
        ..Default::default()
    });
    let mut h = within(russh::client::connect(
        config,
        (host.as_str(), *port),
        handler,
    ))
    .await
    .unwrap();
    let key = russh::keys::PrivateKey::from_openssh(key.to_openssh()).unwrap();
    let auth = within(h.authenticate_publickey(
        user,
        russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(key), None),
    ))
    .await;
    let ok = auth.is_ok_and(|a| a.success());
    (h, ok)
}

/// What OpenSSH announces: a standard client to a Streamkit server.
pub const OPENSSH: &str = "SSH-2.0-OpenSSH_9.9";
