//! Peer scenarios: trust, names, endpoints, limits, bad input on the listening port.

use std::time::Duration;

use crate::common::*;
use streamkit::{
    AccessRequest, BindError, ConnectError, Identity, OpenErrorKind, OpenRefusal, Options, Peer,
    PeerConfig, Services, Trust,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

over_all! {
    unknown_client_key_is_refused => unknown_client_key_is_refused;
    host_keys_are_checked => host_keys_are_checked;
    token_authentication => token_authentication;
    names_bound_to_keys => names_bound_to_keys;
    a_name_is_an_identity => a_name_is_an_identity;
    round_robin_over_two_servers => round_robin_over_two_servers;
    unbind_disconnect_and_drop => unbind_disconnect_and_drop;
    authorizer_decides_per_service => authorizer_decides_per_service;
    limits_refuse_cleanly => limits_refuse_cleanly;
    graceful_shutdown_lets_channels_finish => graceful_shutdown_lets_channels_finish;
}

async fn unknown_client_key_is_refused(kind: Kind) {
    let (a, b, m) = (who("alice"), who("bob"), who("mallory"));
    let scratch = Scratch::new();
    let bob = peer(&b, &[&a]);
    let url = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .unwrap()
        .to_string();
    serve_echo(&bob);
    let mallory = peer(&m, &[&b]);
    let err = within(mallory.connect(&url)).await.unwrap_err();
    assert!(matches!(err, ConnectError::AuthRejected { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("does not trust our key") && msg.contains(&m.id.public_key().fingerprint()),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(bob.peers().is_empty());
    // The server keeps serving the peers it trusts.
    let alice = peer(&a, &[&b]);
    within(alice.connect(&url)).await.unwrap();
    let mut ch = within(alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"ok").await.unwrap();
    assert_eq!(&within(ch.read_frame()).await.unwrap().unwrap()[..], b"ok");
}

async fn host_keys_are_checked(kind: Kind) {
    let (a, b, impostor) = (who("alice"), who("bob"), who("impostor"));
    let scratch = Scratch::new();
    let bob = peer(&b, &[&a]);
    let ep = bob.bind(&scratch.endpoint(kind, "bob")).await.unwrap();
    let url = ep.to_string();
    let host = match &ep {
        streamkit::Endpoint::Tcp { host, port } => format!("[{host}]:{port}"),
        streamkit::Endpoint::Unix(p) => p.display().to_string(),
        streamkit::Endpoint::Inproc(n) => n.clone(),
    };
    let connect_with = |trust: Trust| {
        let alice = Peer::new(PeerConfig::new("alice", a.id.clone(), trust)).unwrap();
        let url = url.clone();
        async move { within(alice.connect(&url)).await }
    };

    // No trust for the server at all.
    let err = connect_with(Trust::new()).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::UntrustedHostKey { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&b.id.public_key().fingerprint()),
        "{err}"
    );

    // known_hosts names this endpoint with another key: a mismatch.
    let wrong = format!("{host} {}\n", impostor.id.public_key().to_openssh());
    let err = connect_with(Trust::new().with_known_hosts(&wrong).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::HostKeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("host key mismatch"), "{err}");

    // known_hosts by endpoint, by peer name, and by fingerprint all work.
    let by_endpoint = format!("{host} {}\n", b.id.public_key().to_openssh());
    assert_eq!(
        connect_with(Trust::new().with_known_hosts(&by_endpoint).unwrap())
            .await
            .unwrap(),
        "bob"
    );
    let by_name = format!("bob {}\n", b.id.public_key().to_openssh());
    connect_with(Trust::new().with_known_hosts(&by_name).unwrap())
        .await
        .unwrap();
    let fp = b.id.public_key().fingerprint();
    connect_with(Trust::new().with_fingerprint(&fp).unwrap())
        .await
        .unwrap();
    connect_with(Trust::new().danger_accept_any_host_key())
        .await
        .unwrap();
}

async fn token_authentication(kind: Kind) {
    let (b, c) = (who("bob"), who("carol"));
    let scratch = Scratch::new();
    let bob = Peer::new(PeerConfig::new(
        "bob",
        b.id.clone(),
        Trust::new().with_token("s3cret"),
    ))
    .unwrap();
    let url = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .unwrap()
        .to_string();
    serve_echo(&bob);
    let client = |token: &str| {
        let trust = Trust::new().with_key(b.id.public_key());
        Peer::new(PeerConfig::new("carol", c.id.clone(), trust).with_token(token)).unwrap()
    };
    let wrong = client("guess");
    let err = within(wrong.connect(&url)).await.unwrap_err();
    assert!(matches!(err, ConnectError::AuthRejected { .. }), "{err}");
    assert!(err.to_string().contains("rejected our token"), "{err}");

    let right = client("s3cret");
    within(right.connect(&url)).await.unwrap();
    assert_eq!(bob.peers(), ["carol"]);
    let mut ch = within(right.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"in").await.unwrap();
    assert_eq!(&within(ch.read_frame()).await.unwrap().unwrap()[..], b"in");
}

async fn names_bound_to_keys(kind: Kind) {
    let (a, b) = (who("alice"), who("bob"));
    let scratch = Scratch::new();
    let keys = format!(
        "name=\"alice\" {} alice@laptop\n",
        a.id.public_key().to_openssh()
    );
    let bob = Peer::new(PeerConfig::new(
        "bob",
        b.id.clone(),
        Trust::new().with_authorized_keys(&keys).unwrap(),
    ))
    .unwrap();
    let url = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .unwrap()
        .to_string();
    let trust = || Trust::new().with_key(b.id.public_key());
    // alice's key, claiming another name.
    let eve = Peer::new(PeerConfig::new("eve", a.id.clone(), trust())).unwrap();
    let err = within(eve.connect(&url)).await.unwrap_err();
    assert!(matches!(err, ConnectError::AuthRejected { .. }), "{err}");
    let alice = Peer::new(PeerConfig::new("alice", a.id.clone(), trust())).unwrap();
    within(alice.connect(&url)).await.unwrap();
    assert_eq!(bob.peers(), ["alice"]);

    // The client checks the server's name against its key the same way.
    let imposter = Peer::new(PeerConfig::new(
        "alice",
        a.id.clone(),
        Trust::new().with_named_key("robert", b.id.public_key()),
    ))
    .unwrap();
    let err = within(imposter.connect(&url)).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::UntrustedHostKey { .. }),
        "{err}"
    );
}

/// A name is an identity: a bound name only with its key, an unbound one held by
/// the first live connection that claims it (its key, or the token), and taken
/// back by the same key.
async fn a_name_is_an_identity(kind: Kind) {
    let (a, b, c) = (who("alice"), who("bob"), who("carol"));
    let mallory = Identity::generate();
    let scratch = Scratch::new();
    let keys = format!(
        "name=\"alice\" {}\n{}\n{}\n",
        a.id.public_key().to_openssh(),
        c.id.public_key().to_openssh(),
        mallory.public_key().to_openssh()
    );
    let bob = Peer::new(PeerConfig::new(
        "bob",
        b.id.clone(),
        Trust::new()
            .with_authorized_keys(&keys)
            .unwrap()
            .with_token("s3cret"),
    ))
    .unwrap();
    let url = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .unwrap()
        .to_string();
    serve_echo(&bob);
    let client = |name: &str, id: &Identity, token: Option<&str>| {
        let mut config =
            PeerConfig::new(name, id.clone(), Trust::new().with_key(b.id.public_key()));
        if let Some(t) = token {
            config = config.with_token(t);
        }
        Peer::new(config).unwrap()
    };
    let refused = |err: ConnectError, why: &str| {
        assert!(
            matches!(
                err,
                ConnectError::AuthRejected { .. } | ConnectError::NameHeld { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{err} should say {why:?}");
    };

    // A bound name: not with another trusted key, not with the token.
    let err = within(client("alice", &mallory, None).connect(&url))
        .await
        .unwrap_err();
    refused(err, "does not trust our key");
    let err = within(client("alice", &Identity::generate(), Some("s3cret")).connect(&url))
        .await
        .unwrap_err();
    refused(err, "name \"alice\" is bound to a key");

    // An unbound name is held by the first live connection claiming it.
    let carol = client("carol", &c.id, None);
    within(carol.connect(&url)).await.unwrap();
    let held = "name \"carol\" is held by another key";
    let err = within(client("carol", &mallory, None).connect(&url))
        .await
        .unwrap_err();
    refused(err, held);
    let err = within(client("carol", &Identity::generate(), Some("s3cret")).connect(&url))
        .await
        .unwrap_err();
    refused(err, held);
    // The same key comes back under its name (a second connection, say after a
    // network change), and the good client kept working throughout.
    let carol_again = client("carol", &c.id, None);
    within(carol_again.connect(&url)).await.unwrap();
    let mut ch = within(carol.open("bob", "echo", ())).await.unwrap();
    // Each side sees what the other proved.
    assert_eq!(
        ch.meta().remote_identity().fingerprint(),
        Some(b.id.public_key().fingerprint().as_str())
    );
    ch.write_frame(b"still me").await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"still me"
    );
    drop(ch);

    // Once carol's connections are gone, the name is free again.
    carol.shutdown().await;
    carol_again.shutdown().await;
    wait_while(&[&bob], || bob.peers().iter().any(|p| p == "carol")).await;
    let now_mallory = client("carol", &mallory, None);
    within(now_mallory.connect(&url)).await.unwrap();
}

async fn round_robin_over_two_servers(kind: Kind) {
    let (a, b, c) = (who("alice"), who("bob"), who("carol"));
    let scratch = Scratch::new();
    let alice = peer(&a, &[&b, &c]);
    let bob = peer(&b, &[&a]);
    let carol = peer(&c, &[&a]);
    for (p, name) in [(&bob, "bob"), (&carol, "carol")] {
        let url = p
            .bind(&scratch.endpoint(kind, name))
            .await
            .unwrap()
            .to_string();
        within(alice.connect(&url)).await.unwrap();
        serve_echo(p);
    }
    assert_eq!(alice.peers(), ["bob", "carol"]);
    let mut counts = std::collections::HashMap::new();
    for i in 0..10u32 {
        let target = alice.next_peer().unwrap();
        assert_eq!(
            target,
            if i % 2 == 0 { "bob" } else { "carol" },
            "starts at the first, then alternates"
        );
        let mut ch = within(alice.open(&target, "echo", ())).await.unwrap();
        ch.write_frame(&i.to_be_bytes()).await.unwrap();
        assert_eq!(
            &within(ch.read_frame()).await.unwrap().unwrap()[..],
            &i.to_be_bytes()
        );
        assert_eq!(ch.meta().remote_peer(), target);
        *counts.entry(target).or_insert(0) += 1;
    }
    assert_eq!(counts["bob"], 5);
    assert_eq!(counts["carol"], 5);
}

async fn unbind_disconnect_and_drop(kind: Kind) {
    let p = pair(kind).await;
    serve_echo(&p.bob);
    // Unbinding stops new connections; the existing one stays up.
    p.bob.unbind(&p.url).await.unwrap();
    assert!(matches!(
        p.bob.unbind(&p.url).await,
        Err(BindError::NotBound(_))
    ));
    let late = peer_with(&who("alice"), &[], no_retry());
    assert!(within(late.connect(&p.url)).await.is_err());
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"x").await.unwrap();
    within(ch.read_frame()).await.unwrap().unwrap();

    // Rebind, and disconnect / reconnect / drop.
    let url = p
        .bob
        .bind(&p.scratch.endpoint(kind, "bob2"))
        .await
        .unwrap()
        .to_string();
    let carol_who = who("carol");
    let carol = {
        let trust = Trust::new().danger_accept_any_host_key();
        let mut opts = Options::default();
        opts.open_wait = Duration::ZERO;
        Peer::new(PeerConfig::new("carol", carol_who.id.clone(), trust).with_options(opts)).unwrap()
    };
    p.bob
        .set_trust(Trust::new().with_key(carol_who.id.public_key()));
    within(carol.connect(&url)).await.unwrap();
    assert!(matches!(
        within(carol.connect(&url)).await,
        Err(ConnectError::AlreadyConnected(_))
    ));
    within(carol.disconnect(&url)).await.unwrap();
    assert!(carol.peers().is_empty());
    assert!(matches!(
        within(carol.disconnect(&url)).await,
        Err(ConnectError::NotConnected(_))
    ));
    within(carol.connect(&url)).await.unwrap();
    assert_eq!(carol.peers(), ["bob"]);
    assert!(within(carol.drop_peer("bob")).await);
    assert!(carol.peers().is_empty());
    assert!(!within(carol.drop_peer("bob")).await);
    let err = within(carol.open("bob", "echo", ())).await.unwrap_err();
    assert!(matches!(err.kind, OpenErrorKind::NoSuchPeer(_)), "{err}");
}

async fn authorizer_decides_per_service(kind: Kind) {
    let (a, b) = (who("alice"), who("bob"));
    let scratch = Scratch::new();
    let trust = Trust::new().with_key(a.id.public_key());
    let alice_fp = a.id.public_key().fingerprint();
    let config = PeerConfig::new("bob", b.id.clone(), trust).with_authorizer(
        move |req: &AccessRequest<'_>| {
            // The hook sees the key the request came with, not only a name.
            req.identity.fingerprint() == Some(alice_fp.as_str())
                && (req.service != "admin" || req.headers.get("role") == Some("root"))
        },
    );
    let bob = Peer::new(config).unwrap();
    let url = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .unwrap()
        .to_string();
    serve_echo(&bob);
    let alice = peer(&a, &[&b]);
    within(alice.connect(&url)).await.unwrap();
    let err = within(alice.open("bob", "admin", ["role=user"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, OpenErrorKind::Refused(OpenRefusal::Denied));
    within(alice.open("bob", "admin", ["role=root"]))
        .await
        .unwrap();
    within(alice.open("bob", "public", ())).await.unwrap();
}

async fn limits_refuse_cleanly(kind: Kind) {
    let mut bob_opts = Options::default();
    bob_opts.max_pending_accepts = 2;
    bob_opts.max_channels_per_connection = 4;
    let p = pair_with(kind, Options::default(), bob_opts).await;
    // Nobody accepts: the third open finds the queue full.
    let _c1 = within(p.alice.open("bob", "s", ())).await.unwrap();
    let _c2 = within(p.alice.open("bob", "s", ())).await.unwrap();
    let err = within(p.alice.open("bob", "s", ())).await.unwrap_err();
    assert_eq!(
        err.kind,
        OpenErrorKind::Refused(OpenRefusal::AcceptQueueFull)
    );
    // Accepting makes room; the channel limit is next.
    let (_, _k1) = within(p.bob.accept()).await.unwrap();
    let (_, _k2) = within(p.bob.accept()).await.unwrap();
    let _c3 = within(p.alice.open("bob", "s", ())).await.unwrap();
    let _c4 = within(p.alice.open("bob", "s", ())).await.unwrap();
    let (_, _k3) = within(p.bob.accept()).await.unwrap();
    let (_, _k4) = within(p.bob.accept()).await.unwrap();
    let err = within(p.alice.open("bob", "s", ())).await.unwrap_err();
    assert_eq!(
        err.kind,
        OpenErrorKind::Refused(OpenRefusal::TooManyChannels)
    );
    // Headers over the limit never leave this side.
    let big = "x".repeat(20_000);
    let err = within(p.alice.open("bob", "s", [big.as_str()]))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind, OpenErrorKind::InvalidRequest(_)),
        "{err}"
    );
    // A bad option is refused on a live peer.
    let mut bad = p.bob.options();
    bad.channel_window = 10;
    assert!(p.bob.set_options(bad).is_err());
}

async fn graceful_shutdown_lets_channels_finish(kind: Kind) {
    let mut alice_opts = Options::default();
    alice_opts.open_wait = Duration::ZERO;
    let p = pair_with(kind, alice_opts, Options::default()).await;
    serve_echo(&p.bob);
    let mut tasks = Vec::new();
    for i in 0..5u64 {
        let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let data = pattern(200_000, i);
            for part in data.chunks(20_000) {
                ch.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
            ch.close_write().await.unwrap();
            let mut back = Vec::new();
            ch.read_to_end(&mut back).await.unwrap();
            assert!(back == data);
        }));
    }
    // Shut the server down while the transfers run: they finish, nothing is reset.
    let reset = within(p.bob.shutdown()).await;
    for t in tasks {
        within(t).await.unwrap();
    }
    assert_eq!(reset, 0);
    assert!(matches!(
        within(p.bob.accept()).await,
        Err(streamkit::AcceptError::ShutDown)
    ));
    let err = within(p.alice.open("bob", "echo", ())).await;
    assert!(err.is_err());
    let again = peer_with(&who("alice"), &[], no_retry());
    assert!(within(again.connect(&p.url)).await.is_err());
}

/// On the paused clock, in-process: the close timeout is virtual time.
#[tokio::test(start_paused = true)]
async fn shutdown_resets_channels_that_overstay() {
    let mut opts = Options::default();
    opts.close_timeout = Duration::from_secs(10);
    let p = pair_with(Kind::Inproc, Options::default(), opts).await;
    let mut ch = within(p.alice.open("bob", "idle", ())).await.unwrap();
    let (_, _held) = within(p.bob.accept()).await.unwrap();
    // The accepted channel is never closed: shutdown resets it after the timeout,
    // not before.
    let started = tokio::time::Instant::now();
    assert_eq!(within(p.bob.shutdown()).await, 1);
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(within(ch.read_frame()).await.is_err());
}

/// A remote that never reads cannot keep a closing channel (and what was written
/// into it) forever: `close()` resets it after the close timeout with an error
/// that says so, and dropped handles do the same in the background.
#[tokio::test(start_paused = true)]
async fn closes_to_a_remote_that_never_reads_end_after_the_close_timeout() {
    let mut opts = Options::default();
    opts.close_timeout = Duration::from_secs(10);
    let p = pair_with(Kind::Inproc, opts.clone(), opts).await;
    let big = vec![5u8; 4 << 20]; // far beyond the window: most of it stays queued
    let mut ch = within(p.alice.open("bob", "never-read", ())).await.unwrap();
    let (_, mut held) = within(p.bob.accept()).await.unwrap();
    let writer = tokio::spawn(async move {
        // The writes stop when the send buffer is full: the remote does not read.
        let _ = tokio::time::timeout(Duration::from_secs(1), ch.write_all(&big)).await;
        let started = tokio::time::Instant::now();
        let r = ch.close().await;
        (r, started.elapsed())
    });
    let (r, waited) = within(writer).await.unwrap();
    assert_eq!(
        r.unwrap_err(),
        streamkit::ChannelError::CloseTimedOut(Duration::from_secs(10))
    );
    assert!(waited >= Duration::from_secs(10), "{waited:?}");
    // The remote is told: its channel is reset, whatever it had not read.
    assert!(within(held.read_frame()).await.is_err());
    drop(held);
    wait_while(&[&p.alice, &p.bob], || {
        p.alice.stats().channels > 0 || p.bob.stats().channels > 0
    })
    .await;

    // Dropped handles: the channel finishes in the background, or is reset.
    let mut ch = within(p.alice.open("bob", "never-read", ())).await.unwrap();
    let (_, _held) = within(p.bob.accept()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), ch.write_all(&vec![1u8; 4 << 20])).await;
    assert!(p.alice.stats().send_buffered > 0);
    drop(ch);
    wait_while(&[&p.alice], || {
        let s = p.alice.stats();
        s.channels > 0 || s.send_buffered > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_unix_socket_is_replaced_live_one_is_not() {
    let scratch = Scratch::new();
    let path = scratch.dir.path().join("s.sock");
    // A socket file whose listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let url = format!("unix://{}", path.display());
    let bob = peer(&who("bob"), &[]);
    bob.bind(&url).await.unwrap();
    // A second peer must not steal it while bob listens.
    let other = peer(&who("carol"), &[]);
    let err = other.bind(&url).await.unwrap_err();
    assert!(matches!(err, BindError::InUse(_)), "{err}");
    assert!(err.to_string().contains("in use by a live peer"), "{err}");
    // A path that is not a socket is left alone.
    let file = scratch.dir.path().join("plain");
    std::fs::write(&file, b"data").unwrap();
    assert!(
        other
            .bind(&format!("unix://{}", file.display()))
            .await
            .is_err()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    // unbind removes the file.
    bob.unbind(&url).await.unwrap();
    assert!(!path.exists());
}

/// Garbage, truncated handshakes and silent clients are dropped within the
/// handshake timeout; a good client keeps working meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_dropped_within_the_handshake_timeout() {
    let mut opts = Options::default();
    opts.handshake_timeout = Duration::from_millis(500);
    let p = pair_with(Kind::Tcp, Options::default(), opts).await;
    serve_echo(&p.bob);
    let addr = p.url.trim_start_matches("tcp://").to_string();
    let mut bad = Vec::new();
    for i in 0..30 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match i % 3 {
            0 => s.write_all(&pattern(5000, i)).await.unwrap_or(()), // garbage
            1 => s.write_all(b"SSH-2.0-truncated\r\n\0\0\0").await.unwrap(), // a handshake cut short
            _ => {}                                                          // silence
        }
        bad.push(s);
    }
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    for i in 0..200u32 {
        ch.write_frame(&i.to_be_bytes()).await.unwrap();
        assert_eq!(
            &within(ch.read_frame()).await.unwrap().unwrap()[..],
            &i.to_be_bytes()
        );
    }
    for mut s in bad {
        // The server closes each one: reading ends (EOF or reset), it does not hang.
        let mut sink = Vec::new();
        let _ = within(s.read_to_end(&mut sink)).await;
    }
    assert_eq!(p.bob.peers(), ["alice"]);
}

#[tokio::test]
async fn config_errors_are_clear() {
    let id = Identity::generate();
    let err = Peer::new(PeerConfig::new("", id.clone(), Trust::new())).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = Peer::new(PeerConfig::new("a\nb", id.clone(), Trust::new())).unwrap_err();
    assert!(err.to_string().contains("control"), "{err}");
    let mut opts = Options::default();
    opts.max_header_bytes = 10_000_000;
    let err = Peer::new(PeerConfig::new("a", id, Trust::new()).with_options(opts)).unwrap_err();
    assert!(err.to_string().contains("max_header_bytes"), "{err}");
    let bob = peer(&who("bob"), &[]);
    assert!(bob.bind("tcp://nowhere").await.is_err());
    assert!(bob.connect("ftp://x:1").await.is_err());
    let mut s = bob.options();
    s.services = Services::none();
    bob.set_options(s).unwrap();
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Peer>();
    check::<streamkit::Channel>();
    check::<streamkit::ReadHalf>();
    check::<streamkit::WriteHalf>();
    check::<streamkit::ChannelMeta>();
    check::<streamkit::ChannelError>();
    check::<streamkit::OpenError>();
    check::<ConnectError>();
    check::<BindError>();
}
