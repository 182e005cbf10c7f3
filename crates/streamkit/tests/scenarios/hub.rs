//! Peers that reach each other by name through a hub: presence, end-to-end
//! sessions inside relays, the hub-trusting mode, the policy and the limits.

use std::time::Duration;

use streamkit::hub::{Hub, HubConfig, Policy};
use streamkit::{
    Event, Headers, OpenErrorKind, OpenRefusal, Options, Peer, PeerConfig, Route, Trust,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A hub bound on loopback that trusts `trusted`, and its URL.
async fn hub(me: &Who, trusted: &[&Who], config: HubConfig) -> (Hub, String) {
    let mut trust = Trust::new();
    for t in trusted {
        trust = trust.with_key(t.id.public_key());
    }
    let hub = Hub::new(PeerConfig::new(me.name, me.id.clone(), trust), config).unwrap();
    let url = hub
        .peer()
        .bind("tcp://127.0.0.1:0")
        .await
        .unwrap()
        .to_string();
    (hub, url)
}

/// Waits until `peer` sees `name` reachable through `via`.
async fn reachable(peer: &Peer, name: &str, via: &str) {
    wait_while(&[peer], || {
        !peer
            .routes()
            .iter()
            .any(|r| r.peer == name && r.via.as_deref() == Some(via))
    })
    .await;
}

#[tokio::test]
async fn peers_behind_a_hub_reach_each_other_by_name_end_to_end() {
    let (h, a, c) = (who("hub"), who("alice"), who("carol"));
    let (hub, url) = hub(&h, &[&a, &c], HubConfig::default()).await;
    // Each end trusts the hub and the other's key: the session inside the relay
    // is checked end to end.
    let alice = peer(&a, &[&h, &c]);
    let carol = peer(&c, &[&h, &a]);
    let mut alice_events = alice.events();
    within(alice.connect(&url)).await.unwrap();
    within(carol.connect(&url)).await.unwrap();
    reachable(&alice, "carol", "hub").await;
    reachable(&carol, "alice", "hub").await;
    // The client saw it as an event too.
    within(async {
        loop {
            if let Some(Event::Reachable { peer, via }) = alice_events.next().await
                && peer == "carol"
            {
                assert_eq!(via, "hub");
                break;
            }
        }
    })
    .await;

    let carol_side = {
        let carol = carol.clone();
        tokio::spawn(async move {
            let (meta, mut ch) = carol.accept().await.unwrap();
            assert_eq!(meta.remote_peer(), "alice");
            assert_eq!(meta.service(), "echo");
            assert_eq!(meta.headers().get("lang"), Some("en"));
            assert_eq!(
                meta.remote_identity().fingerprint(),
                Some(a.id.public_key().fingerprint().as_str()),
                "carol checked alice's own key"
            );
            // Frames, an error frame, bytes and trailers back.
            let frame = ch.read_frame().await.unwrap().unwrap();
            ch.write_frame(&frame).await.unwrap();
            ch.write_error(b"a warning").await.unwrap();
            let mut rest = Vec::new();
            ch.read_to_end(&mut rest).await.unwrap();
            ch.write_all(&rest).await.unwrap();
            ch.write_trailers(["bytes=".to_owned() + &rest.len().to_string()])
                .await
                .unwrap();
            ch.close().await.unwrap();
            rest
        })
    };
    let mut ch = within(alice.open("carol", "echo", ["lang=en"]))
        .await
        .unwrap();
    ch.write_frame(b"hello through the hub").await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"hello through the hub"
    );
    assert_eq!(
        &within(ch.read_error()).await.unwrap().unwrap()[..],
        b"a warning"
    );
    let data = pattern(2 * 1024 * 1024 + 17, 7);
    let (mut r, mut w) = ch.split();
    let writer = async {
        w.write_all(&data).await.unwrap();
        w.close_write().await.unwrap();
        w
    };
    let reader = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        (back, r)
    };
    let (_w, (back, r)) = within(async { tokio::join!(writer, reader) }).await;
    assert!(back == data, "the bytes came back through the hub intact");
    assert_eq!(
        r.meta().trailers().unwrap().get("bytes"),
        Some(data.len().to_string().as_str())
    );
    assert!(within(carol_side).await.unwrap() == data);

    // The session is a connection of its own: alice now sees carol directly.
    let routes: Vec<Route> = alice.routes();
    assert!(routes.iter().any(|r| r.peer == "carol" && r.via.is_none()));
    // Carol opens back to alice over the same session.
    let alice_side = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let (meta, ch) = alice.accept().await.unwrap();
            assert_eq!(meta.remote_peer(), "carol");
            echo(ch).await;
        })
    };
    let mut back = within(carol.open("alice", "echo", Headers::new()))
        .await
        .unwrap();
    back.write_all(b"and back").await.unwrap();
    back.close_write().await.unwrap();
    let mut got = Vec::new();
    within(back.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"and back");
    within(alice_side).await.unwrap();
    assert_eq!(hub.stats().relayed, 1, "one relay carried every channel");

    // Carol leaves: alice hears it, and the name is no longer reachable.
    carol.shutdown().await;
    wait_while(&[&alice], || alice.peers().contains(&"carol".to_owned())).await;
}

#[tokio::test]
async fn a_relay_checks_keys_end_to_end_not_the_hubs_word() {
    let (h, a, c) = (who("hub"), who("alice"), who("carol"));
    let (_hub, url) = hub(&h, &[&a, &c], HubConfig::default()).await;
    // Carol trusts the hub but not alice: the hub's word is not enough.
    let alice = peer(&a, &[&h, &c]);
    let carol = peer(&c, &[&h]);
    within(alice.connect(&url)).await.unwrap();
    within(carol.connect(&url)).await.unwrap();
    reachable(&alice, "carol", "hub").await;
    let e = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap_err();
    let OpenErrorKind::Relay { hub, why } = &e.kind else {
        panic!("expected a relay error, got {e}");
    };
    assert_eq!(hub, "hub");
    assert!(why.contains("does not trust our key"), "{why}");
}

#[tokio::test]
async fn a_caller_checks_the_reached_peers_key_itself() {
    let (h, a, c) = (who("hub"), who("alice"), who("carol"));
    let (_hub, url) = hub(&h, &[&a, &c], HubConfig::default()).await;
    // Alice trusts the hub but not carol's key.
    let alice = peer(&a, &[&h]);
    let carol = peer(&c, &[&h, &a]);
    within(alice.connect(&url)).await.unwrap();
    within(carol.connect(&url)).await.unwrap();
    reachable(&alice, "carol", "hub").await;
    let e = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap_err();
    let OpenErrorKind::Relay { why, .. } = &e.kind else {
        panic!("expected a relay error, got {e}");
    };
    assert!(why.contains(&c.id.public_key().fingerprint()), "{why}");
}

#[tokio::test]
async fn the_hub_trusting_mode_needs_only_the_hubs_key() {
    let (h, a, c) = (who("hub"), who("alice"), who("carol"));
    let (hub, url) = hub(&h, &[&a, &c], HubConfig::default()).await;
    let mut opts = Options::default();
    opts.trusted_hubs = vec!["hub".into()];
    // Both know only the hub's key.
    let alice = peer_with(&a, &[&h], opts.clone());
    let carol = peer_with(&c, &[&h], opts);
    within(alice.connect(&url)).await.unwrap();
    within(carol.connect(&url)).await.unwrap();
    reachable(&alice, "carol", "hub").await;
    serve_echo(&carol);
    let mut ch = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    let data = pattern(300_000, 3);
    ch.write_all(&data).await.unwrap();
    ch.close_write().await.unwrap();
    let mut back = Vec::new();
    within(ch.read_to_end(&mut back)).await.unwrap();
    assert!(back == data);
    assert_eq!(hub.stats().relayed, 1);
}

#[tokio::test]
async fn a_peer_that_does_not_trust_the_hub_refuses_its_word() {
    let (h, a, c) = (who("hub"), who("alice"), who("carol"));
    let (_hub, url) = hub(&h, &[&a, &c], HubConfig::default()).await;
    let mut trusting = Options::default();
    trusting.trusted_hubs = vec!["hub".into()];
    let alice = peer_with(&a, &[&h], trusting);
    // Carol knows alice's key and takes no hub's word.
    let carol = peer(&c, &[&h, &a]);
    within(alice.connect(&url)).await.unwrap();
    within(carol.connect(&url)).await.unwrap();
    reachable(&alice, "carol", "hub").await;
    let e = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap_err();
    let OpenErrorKind::Relay { why, .. } = &e.kind else {
        panic!("expected a relay error, got {e}");
    };
    assert!(
        why.contains(OpenRefusal::HubNotTrusted.description()),
        "{why}"
    );
}

#[tokio::test]
async fn the_policy_decides_who_reaches_whom_and_which_service() {
    let (h, a, b, c) = (who("hub"), who("alice"), who("bob"), who("carol"));
    let mut config = HubConfig::default();
    config.policy = Policy::parse("alice -> carol:echo\ndeny * -> *\n").unwrap();
    let (hub, url) = hub(&h, &[&a, &b, &c], config).await;
    let alice = peer(&a, &[&h, &c]);
    let bob = peer(&b, &[&h, &c]);
    let carol = peer(&c, &[&h, &a, &b]);
    let mut hub_events = hub.peer().events();
    for p in [&alice, &bob, &carol] {
        within(p.connect(&url)).await.unwrap();
    }
    reachable(&alice, "carol", "hub").await;
    serve_echo(&carol);
    // alice may open echo on carol...
    let mut ch = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    ch.write_all(b"allowed").await.unwrap();
    ch.close_write().await.unwrap();
    let mut got = Vec::new();
    within(ch.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"allowed");
    // ...and nothing else: carol enforces what the hub's policy says.
    let e = within(alice.open("carol", "sink", Headers::new()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, OpenErrorKind::Refused(OpenRefusal::Denied), "{e}");
    // bob may reach nobody: carol is not even announced to him.
    assert!(!bob.peers().contains(&"carol".to_owned()));
    assert!(bob.peers().contains(&"hub".to_owned()));
    let mut o = Options::default();
    o.open_wait = Duration::ZERO;
    bob.set_options(o).unwrap();
    let e = within(bob.open("carol", "echo", Headers::new()))
        .await
        .unwrap_err();
    assert!(matches!(e.kind, OpenErrorKind::NoSuchPeer(_)), "{e}");
    // Asked all the same, the hub refuses it as access denied, and says so.
    let e = within(bob.open("hub", "$relay", ["to=carol", "mode=end-to-end"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, OpenErrorKind::Refused(OpenRefusal::Denied), "{e}");
    within(async {
        loop {
            if let Some(Event::RelayRefused { from, to, reason }) = hub_events.next().await {
                assert_eq!((from.as_str(), to.as_str()), ("bob", "carol"));
                assert_eq!(reason, OpenRefusal::Denied.description());
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_hub_refuses_past_its_relay_limit_and_says_so() {
    let (h, a, b, c, d) = (
        who("hub"),
        who("alice"),
        who("bob"),
        who("carol"),
        who("dave"),
    );
    let mut config = HubConfig::default();
    config.max_relays_per_peer = 1;
    let (hub, url) = hub(&h, &[&a, &b, &c, &d], config).await;
    let alice = peer(&a, &[&h, &c, &d]);
    let bob = peer(&b, &[&h, &c]);
    let carol = peer(&c, &[&h, &a, &b]);
    let dave = peer(&d, &[&h, &a]);
    let mut hub_events = hub.peer().events();
    for p in [&alice, &bob, &carol, &dave] {
        within(p.connect(&url)).await.unwrap();
    }
    reachable(&alice, "dave", "hub").await;
    reachable(&bob, "carol", "hub").await;
    serve_echo(&carol);
    serve_echo(&dave);
    let _first = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    let e = within(alice.open("dave", "echo", Headers::new()))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        OpenErrorKind::Refused(OpenRefusal::RelayLimit),
        "{e}"
    );
    within(async {
        loop {
            if let Some(Event::RelayRefused { from, to, reason }) = hub_events.next().await {
                assert_eq!((from.as_str(), to.as_str()), ("alice", "dave"));
                assert_eq!(reason, OpenRefusal::RelayLimit.description());
                break;
            }
        }
    })
    .await;
    // Another peer is not held back by alice's limit.
    let mut ch = within(bob.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    ch.write_all(b"still served").await.unwrap();
    ch.close_write().await.unwrap();
    let mut got = Vec::new();
    within(ch.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"still served");
    assert_eq!(hub.stats().relays, 2);
}

/// Two peers behind a hub with `config`, alice reaching carol's echo; the relay's
/// first channel, and the hub's events from before it.
async fn behind(config: HubConfig) -> (Hub, Peer, Peer, streamkit::Events) {
    let (h, a, c) = (who("hub"), who("alice"), who("carol"));
    let (hub, url) = hub(&h, &[&a, &c], config).await;
    let alice = peer(&a, &[&h, &c]);
    let carol = peer(&c, &[&h, &a]);
    within(alice.connect(&url)).await.unwrap();
    within(carol.connect(&url)).await.unwrap();
    reachable(&alice, "carol", "hub").await;
    serve_echo(&carol);
    let events = hub.peer().events();
    (hub, alice, carol, events)
}

/// Waits for the hub's `RelayCut` event; its reason.
async fn cut_reason(events: &mut streamkit::Events) -> String {
    within(async {
        loop {
            if let Some(Event::RelayCut { from, to, reason }) = events.next().await {
                assert_eq!((from.as_str(), to.as_str()), ("alice", "carol"));
                return reason;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_relay_over_its_byte_cap_is_cut_and_both_ends_hear_why() {
    let mut config = HubConfig::default();
    config.max_relay_bytes = Some(1 << 20);
    let (hub, alice, carol, mut events) = behind(config).await;
    let mut carol_events = carol.events();
    let ch = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    // Far more than the cap, both ways: the relay is cut part way.
    let data = pattern(8 << 20, 1);
    let (mut r, mut w) = ch.split();
    let writer = tokio::spawn(async move { w.write_all(&data).await });
    let mut back = Vec::new();
    let err = within(r.read_to_end(&mut back)).await.unwrap_err();
    assert!(back.len() < 8 << 20);
    let reason = cut_reason(&mut events).await;
    assert!(reason.contains("byte cap"), "{reason}");
    // Both sessions' ends heard the hub's words.
    assert!(err.to_string().contains("byte cap"), "{err}");
    let carol_heard = within(async {
        loop {
            if let Some(Event::Disconnected { peer, reason, .. }) = carol_events.next().await
                && peer == "alice"
            {
                return reason;
            }
        }
    })
    .await;
    assert!(carol_heard.contains("byte cap"), "{carol_heard}");
    let _ = writer.await;
    wait_while(&[&alice], || {
        alice
            .routes()
            .iter()
            .any(|r| r.peer == "carol" && r.via.is_none())
    })
    .await;
    assert_eq!(hub.stats().relays, 0);
    // The cap is per relay: a new one works.
    let mut again = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    again.write_all(b"fresh").await.unwrap();
    again.close_write().await.unwrap();
    let mut got = Vec::new();
    within(again.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"fresh");
}

#[tokio::test]
async fn a_relay_past_its_time_cap_is_cut() {
    let mut config = HubConfig::default();
    config.max_relay_time = Some(Duration::from_millis(300));
    let (_hub, alice, _carol, mut events) = behind(config).await;
    let mut ch = within(alice.open("carol", "echo", Headers::new()))
        .await
        .unwrap();
    ch.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    within(ch.read_exact(&mut four)).await.unwrap();
    // Idle from here: the cap ends it all the same.
    let reason = cut_reason(&mut events).await;
    assert!(reason.contains("time cap"), "{reason}");
    within(ch.read_frame()).await.unwrap_err();
}
