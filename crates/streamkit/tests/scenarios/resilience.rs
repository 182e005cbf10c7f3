//! Resilience under injected faults: a TCP proxy that cuts, stalls and drops bytes
//! between real peers; keepalive, reconnect, limits, shutdown and churn.

use std::time::Duration;

use crate::common::proxy::Proxy;
use crate::common::sim::Fault;
use crate::common::*;
use streamkit::{ChannelError, ConnectError, Event, Events, OpenErrorKind, Options, Reconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits for the first event `pred` accepts (a hang is caught by `within`).
async fn wait_for(events: &mut Events, mut pred: impl FnMut(&Event) -> bool) -> Event {
    within(async {
        loop {
            let e = events.next().await.expect("peer gone");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
}

fn fast_reconnect() -> Reconnect {
    let mut r = Reconnect::default();
    r.first_delay = Duration::from_millis(50);
    r.max_delay = Duration::from_millis(400);
    r
}

/// bob listens; alice connects to him through a fault proxy.
async fn proxied(alice_opts: Options, bob_opts: Options) -> (Pair, Proxy) {
    let (a, b) = (who("alice"), who("bob"));
    let alice = peer_with(&a, &[&b], alice_opts);
    let bob = peer_with(&b, &[&a], bob_opts);
    let scratch = Scratch::new();
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let proxy = Proxy::start(url.trim_start_matches("tcp://")).await;
    within(alice.connect(&proxy.url)).await.unwrap();
    (
        Pair {
            alice,
            bob,
            url: proxy.url.clone(),
            scratch,
            hub: None,
        },
        proxy,
    )
}

/// On the paused clock over a simulated link: the bound is exact, not a guess
/// padded for a slow machine.
#[tokio::test(start_paused = true)]
async fn keepalive_detects_a_stalled_connection_within_its_bound() {
    let mut opts = Options::default();
    opts.keepalive_interval = Some(Duration::from_millis(200));
    opts.keepalive_misses = 3;
    opts.reconnect = Reconnect::never();
    let (alice, bob, link) = sim_pair(opts.clone(), opts).await;
    serve_echo(&bob);
    let mut ch = within(alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"before").await.unwrap();
    within(ch.read_frame()).await.unwrap();
    let mut events = alice.events();
    // The link stops forwarding: packets are neither delivered nor refused.
    link.set(Fault::Stall);
    let stalled = tokio::time::Instant::now();
    let e = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    let took = stalled.elapsed();
    eprintln!("keepalive: a stalled link declared gone after {took:?} (virtual time)");
    let Event::Disconnected { peer, reason, .. } = e else {
        unreachable!()
    };
    assert_eq!(peer, "bob");
    assert!(
        reason.contains("keepalive") || reason.contains("Keepalive"),
        "{reason}"
    );
    // Declared gone within interval × misses (600 ms) of the last word from bob,
    // and not before 0.9 × that of silence (bob's last word came just before the
    // stall).
    assert!(took <= Duration::from_millis(600), "took {took:?}");
    assert!(took >= Duration::from_millis(500), "took {took:?}");
    assert!(alice.peers().is_empty());
    assert!(matches!(
        within(ch.read_frame()).await,
        Err(ChannelError::ConnectionLost(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn an_idle_healthy_connection_is_never_cut() {
    let mut opts = Options::default();
    opts.keepalive_interval = Some(Duration::from_millis(100));
    opts.keepalive_misses = 2;
    let (alice, bob, _link) = sim_pair(opts.clone(), opts).await;
    serve_echo(&bob);
    let mut events = alice.events();
    let mut ch = within(alice.open("bob", "echo", ())).await.unwrap();
    // Idle for a hundred times the keepalive bound (virtual time: the scenario is
    // the waiting itself).
    tokio::time::sleep(Duration::from_secs(20)).await;
    ch.write_frame(b"still here").await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"still here"
    );
    assert_eq!(alice.peers(), ["bob"]);
    while let Ok(Some(e)) = tokio::time::timeout(Duration::ZERO, events.next()).await {
        assert!(!matches!(e, Event::Disconnected { .. }), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_comes_back_and_old_channels_fail_clearly() {
    let mut opts = Options::default();
    opts.reconnect = fast_reconnect();
    let (p, proxy) = proxied(opts, Options::default()).await;
    serve_echo(&p.bob);
    let mut events = p.alice.events();
    let mut old = within(p.alice.open("bob", "echo", ())).await.unwrap();
    proxy.cut();
    let e = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(
        matches!(e, Event::Disconnected { ref peer, .. } if peer == "bob"),
        "{e:?}"
    );
    let e = wait_for(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
    assert!(matches!(e, Event::Reconnecting { attempt: 1, .. }), "{e:?}");
    wait_for(&mut events, |e| matches!(e, Event::Connected { .. })).await;
    assert_eq!(p.alice.peers(), ["bob"]);
    // The channel of the lost connection failed with a clear error...
    let err = within(old.read_frame()).await.unwrap_err();
    assert!(matches!(err, ChannelError::ConnectionLost(_)), "{err}");
    assert!(err.to_string().starts_with("connection lost"), "{err}");
    // ...and new channels work.
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"again").await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"again"
    );
    // disconnect stops the re-dialling: after another cut nothing comes back.
    within(p.alice.disconnect(&proxy.url)).await.unwrap();
    proxy.cut();
    assert!(p.alice.peers().is_empty());
    within(p.alice.connect(&proxy.url)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_waits_for_a_peer_that_is_coming_back() {
    let mut opts = Options::default();
    opts.reconnect = fast_reconnect();
    opts.open_wait = Duration::from_secs(30);
    let (p, proxy) = proxied(opts, Options::default()).await;
    serve_echo(&p.bob);
    let mut events = p.alice.events();
    proxy.cut();
    wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    // bob is away; the open waits for the reconnect instead of failing.
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"after the gap").await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"after the gap"
    );
    // A peer that never comes: a clear error once the wait is over.
    let mut short = p.alice.options();
    short.open_wait = Duration::from_millis(100);
    p.alice.set_options(short).unwrap();
    let err = within(p.alice.open("nobody", "echo", ()))
        .await
        .unwrap_err();
    assert!(matches!(err.kind, OpenErrorKind::NoSuchPeer(_)), "{err}");
    assert!(err.to_string().contains("waited 100ms"), "{err}");
}

/// Backoff on the paused clock, in-process: an unbound `inproc://` name is
/// retried like an unreachable address.
#[tokio::test(start_paused = true)]
async fn first_connect_retries_until_the_server_appears() {
    let (a, b) = (who("alice"), who("bob"));
    let scratch = Scratch::new();
    let url = scratch.endpoint(Kind::Inproc, "late-bob");
    let mut opts = Options::default();
    opts.reconnect = fast_reconnect();
    let alice = peer_with(&a, &[&b], opts);
    let mut events = alice.events();
    let connecting = {
        let (alice, url) = (alice.clone(), url.clone());
        tokio::spawn(async move { alice.connect(&url).await })
    };
    // It is retrying, with growing delays...
    let mut delays = Vec::new();
    for attempt in 1..=4 {
        let e = wait_for(&mut events, |e| matches!(e, Event::Reconnecting { .. })).await;
        let Event::Reconnecting {
            attempt: n, delay, ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(n, attempt);
        delays.push(delay);
    }
    // 50 ms doubling to the 400 ms cap, each within ±20 %.
    for (delay, base) in delays.iter().zip([50u64, 100, 200, 400]) {
        let base = Duration::from_millis(base);
        assert!(
            *delay >= base.mul_f64(0.8) && *delay <= base.mul_f64(1.2),
            "{delays:?}"
        );
    }
    // ...until bob shows up.
    let bob = peer(&b, &[&a]);
    bob.bind(&url).await.unwrap();
    assert_eq!(within(connecting).await.unwrap().unwrap(), "bob");
    // Asked not to retry, connect fails at once; trust failures are never retried.
    let nobody = scratch.endpoint(Kind::Inproc, "nobody");
    let once = peer_with(&a, &[&b], no_retry());
    assert!(matches!(
        within(once.connect(&nobody)).await,
        Err(ConnectError::Io { .. })
    ));
    let stranger = peer(&who("alice"), &[&b]);
    assert!(matches!(
        within(stranger.connect(&url)).await,
        Err(ConnectError::AuthRejected { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_limit_gives_up() {
    let mut opts = Options::default();
    let mut r = fast_reconnect();
    r.max_attempts = Some(3);
    opts.reconnect = r;
    let (a, b) = (who("alice"), who("bob"));
    let scratch = Scratch::new();
    let alice = peer_with(&a, &[&b], opts);
    let bob = peer(&b, &[&a]);
    let url = bob
        .bind(&scratch.endpoint(Kind::Inproc, "bob"))
        .await
        .unwrap()
        .to_string();
    within(alice.connect(&url)).await.unwrap();
    let mut events = alice.events();
    // bob goes away for good.
    drop(bob);
    let e = wait_for(&mut events, |e| matches!(e, Event::GaveUp { .. })).await;
    assert!(matches!(e, Event::GaveUp { attempts: 3, .. }), "{e:?}");
    // The endpoint is forgotten: connecting again is allowed (and fails, nobody listens).
    let mut once = alice.options();
    once.reconnect = Reconnect::never();
    alice.set_options(once).unwrap();
    assert!(matches!(
        within(alice.connect(&url)).await,
        Err(ConnectError::Io { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn bytes_dropped_one_way_are_detected_by_keepalive() {
    let mut opts = Options::default();
    opts.keepalive_interval = Some(Duration::from_millis(200));
    opts.keepalive_misses = 3;
    opts.reconnect = Reconnect::never();
    let (_alice, bob, link) = sim_pair(opts.clone(), opts).await;
    let mut events = bob.events();
    // alice's packets vanish on the way to bob: bob hears nothing and gives up on her.
    link.set(Fault::DropUpstream);
    let since = tokio::time::Instant::now();
    let e = wait_for(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert!(
        matches!(e, Event::Disconnected { ref peer, .. } if peer == "alice"),
        "{e:?}"
    );
    assert!(
        since.elapsed() <= Duration::from_millis(600),
        "{:?}",
        since.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn read_and_write_timeouts_leave_the_channel_usable() {
    let p = pair(Kind::Inproc).await;
    let bob = p.bob.clone();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        let (_, mut ch) = bob.accept().await.unwrap();
        go_rx.await.unwrap();
        ch.write_frame(b"late").await.unwrap();
        ch.close().await.unwrap();
    });
    let mut ch = within(p.alice.open("bob", "slow", ())).await.unwrap();
    ch.set_read_timeout(Some(Duration::from_millis(100)));
    let err = within(ch.read_frame()).await.unwrap_err();
    assert_eq!(err, ChannelError::TimedOut(Duration::from_millis(100)));
    assert_eq!(
        std::io::Error::from(err).kind(),
        std::io::ErrorKind::TimedOut
    );
    go_tx.send(()).unwrap();
    ch.set_read_timeout(None);
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"late"
    );
    assert!(within(ch.read_frame()).await.unwrap().is_none());
    within(ch.close()).await.unwrap();
    within(served).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited_with_a_clear_error() {
    let mut bob_opts = Options::default();
    bob_opts.max_connections_per_address = 2;
    let b = who("bob");
    let clients: Vec<_> = ["c0", "c1", "c2"].into_iter().map(who).collect();
    let refs: Vec<&Who> = clients.iter().collect();
    let bob = peer_with(&b, &refs, bob_opts);
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let peers: Vec<_> = clients
        .iter()
        .map(|c| peer_with(c, &[&b], no_retry()))
        .collect();
    within(peers[0].connect(&url)).await.unwrap();
    within(peers[1].connect(&url)).await.unwrap();
    let err = within(peers[2].connect(&url)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the server says: too many connections from 127.0.0.1 (limit 2)"),
        "{err}"
    );
    assert_eq!(bob.stats().refused, 1);
    // Everything else keeps working, and a freed place can be used.
    within(peers[0].disconnect(&url)).await.unwrap();
    wait_while(&[&bob], || bob.peers().len() > 1).await;
    within(peers[2].connect(&url)).await.unwrap();
}

/// Opens `n` sockets from `source` to `addr` that never send a byte: handshakes
/// that stall. Returns them, and how many the server refused at once (it says why
/// in one line and closes).
async fn stalled_sockets(
    source: &str,
    addr: std::net::SocketAddr,
    n: usize,
) -> (Vec<tokio::net::TcpStream>, Vec<String>) {
    let mut held = Vec::new();
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
        held.push(within(sock.connect(addr)).await.unwrap());
    }
    // A refused socket gets its line and end of file; an admitted one gets the
    // server's identification line and waits for ours (until the handshake timeout).
    let mut refusals = Vec::new();
    let mut kept = Vec::new();
    for mut s in held {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while within(s.read(&mut b)).await.unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let line = String::from_utf8(line).unwrap();
        if line.starts_with("SSH-") {
            kept.push(s);
        } else {
            refusals.push(line.trim_end().to_owned());
        }
    }
    (kept, refusals)
}

/// A flood of handshakes that never finish, from one address, is refused before
/// key exchange beyond that address's limit, and the handshakes in progress stay
/// bounded, while a good client from another address connects and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_one_address_do_not_keep_others_out() {
    let mut bob_opts = Options::default();
    bob_opts.max_connections_per_address = 8;
    bob_opts.max_handshakes = 12;
    let (a, b) = (who("alice"), who("bob"));
    let bob = peer_with(&b, &[&a], bob_opts);
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    let streamkit::Endpoint::Tcp { port, .. } = &url else {
        unreachable!()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    serve_echo(&bob);

    // 500 stalled handshakes from 127.0.0.2: 8 are admitted, the rest refused.
    let (flood, refusals) = stalled_sockets("127.0.0.2", addr, 500).await;
    assert_eq!(flood.len(), 8);
    assert_eq!(refusals.len(), 492);
    assert!(
        refusals
            .iter()
            .all(|r| r == "too many connections from 127.0.0.2 (limit 8)")
    );
    let stats = bob.stats();
    assert_eq!(stats.refused, 492);
    assert_eq!(stats.handshakes, 8);

    // The good client, from 127.0.0.1, gets in and is served byte for byte.
    let alice = peer_with(&a, &[&b], no_retry());
    within(alice.connect(&url.to_string())).await.unwrap();
    let mut ch = within(alice.open("bob", "echo", ())).await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    ch.write_all(&data).await.unwrap();
    ch.close_write().await.unwrap();
    let mut back = Vec::new();
    within(ch.read_to_end(&mut back)).await.unwrap();
    assert!(back == data, "echo differs");

    // Handshakes from a third address fill the handshake cap; past it, anyone is
    // refused before key exchange with the reason.
    let (more, _) = stalled_sockets("127.0.0.3", addr, 4).await;
    assert_eq!(more.len(), 4);
    let (none, refusals) = stalled_sockets("127.0.0.4", addr, 1).await;
    assert!(none.is_empty());
    assert_eq!(
        refusals,
        ["too many connections in their handshake (limit 12)"]
    );
    assert!(bob.stats().handshakes <= 12);
    drop((flood, more));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_the_story_of_a_connection() {
    let (a, b) = (who("alice"), who("bob"));
    let alice = peer_with(&a, &[&b], no_retry());
    let bob = peer(&b, &[&a]);
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    serve_echo(&bob);
    let mut events = alice.events();
    within(alice.connect(&url)).await.unwrap();
    let mut ch = within(alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"x").await.unwrap();
    within(ch.read_frame()).await.unwrap();
    within(ch.close()).await.unwrap();
    within(alice.disconnect(&url)).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let e = within(events.next()).await.unwrap();
        let done = matches!(e, Event::Disconnected { .. });
        seen.push(e);
        if done {
            break;
        }
    }
    assert!(
        matches!(&seen[0], Event::Connected { peer, dialed: true, .. } if peer == "bob"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(
            |e| matches!(e, Event::ChannelOpened { service, local: true, .. } if service == "echo")
        ),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::ChannelClosed { service, .. } if service == "echo")),
        "{seen:?}"
    );
}

/// 50 channels mid-transfer when the server shuts down: all finish byte for byte
/// within the close timeout; with a close timeout too short, they are reset and
/// their writers see errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_fifty_channels() {
    for too_short in [false, true] {
        let mut bob_opts = Options::default();
        bob_opts.close_timeout = if too_short {
            Duration::from_millis(1)
        } else {
            Duration::from_secs(60)
        };
        let p = pair_with(Kind::Tcp, no_retry(), bob_opts).await;
        let bob = p.bob.clone();
        // An echo that answers slowly, so that transfers are still running at shutdown.
        tokio::spawn(async move {
            while let Ok((_, ch)) = bob.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = ch.split();
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                    }
                    let _ = w.close_write().await;
                });
            }
        });
        let mut started = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..50u64 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let alice = p.alice.clone();
            started.push(rx);
            tasks.push(tokio::spawn(async move {
                let ch = alice.open("bob", "echo", ()).await.unwrap();
                let (mut r, mut w) = ch.split();
                // Too short a timeout: enough data that no writer can be done by then.
                let data = pattern(if too_short { 4 << 20 } else { 256 * 1024 }, i);
                let sent = data.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(&sent[..4096]).await?;
                    let _ = tx.send(());
                    w.write_all(&sent[4096..]).await?;
                    w.close_write().await.map_err(std::io::Error::from)
                });
                let mut back = Vec::new();
                let read = r.read_to_end(&mut back).await;
                let wrote = writer.await.unwrap();
                (data == back && read.is_ok(), wrote.is_ok())
            }));
        }
        for rx in started {
            within(rx).await.unwrap();
        }
        let reset = within(p.bob.shutdown()).await;
        let mut complete = 0;
        let mut writer_errors = 0;
        for t in tasks {
            let (same, wrote) = within(t).await.unwrap();
            complete += usize::from(same);
            writer_errors += usize::from(!wrote);
        }
        if too_short {
            assert_eq!(reset, 50, "every channel was still open and was reset");
            assert_eq!(complete, 0);
            assert_eq!(writer_errors, 50, "every writer saw an error");
        } else {
            assert_eq!(reset, 0);
            assert_eq!(complete, 50, "every channel finished byte for byte");
        }
    }
}
