//! What is particular to `inproc://`: process-wide names, binding it beside
//! `tcp://`, connecting before the name is bound, and the connection's life tied
//! to both peers. Every channel scenario also runs over it (tests/conformance.rs).

use crate::common::*;
use streamkit::{BindError, ChannelError, ConnectError, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn unique(name: &str) -> String {
    format!("inproc://{name}-{}", std::process::id())
}

async fn echo_round_trip(from: &streamkit::Peer, to: &str, msg: &[u8]) {
    let mut ch = within(from.open(to, "echo", ())).await.unwrap();
    ch.write_all(msg).await.unwrap();
    within(ch.close_write()).await.unwrap();
    let mut back = Vec::new();
    within(ch.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_binds_inproc_and_tcp_at_once() {
    let (a, b, c) = (who("alice"), who("bob"), who("carol"));
    let bob = peer(&b, &[&a, &c]);
    let alice = peer(&a, &[&b]);
    let carol = peer(&c, &[&b]);
    let name = unique("both");
    bob.bind(&name).await.unwrap();
    let tcp = bob.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    assert_eq!(bob.bound().len(), 2);
    serve_echo(&bob);
    within(alice.connect(&name)).await.unwrap();
    within(carol.connect(&tcp)).await.unwrap();
    let mut names = bob.peers();
    names.sort();
    assert_eq!(names, ["alice", "carol"]);
    echo_round_trip(&alice, "bob", &pattern(100_000, 1)).await;
    echo_round_trip(&carol, "bob", &pattern(100_000, 2)).await;
    // And bob opens towards both, whichever transport they came by.
    serve_echo(&alice);
    serve_echo(&carol);
    echo_round_trip(&bob, "alice", b"to alice, in process").await;
    echo_round_trip(&bob, "carol", b"to carol, over tcp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_held_by_one_live_peer() {
    let (b, c) = (who("bob"), who("carol"));
    let bob = peer(&b, &[]);
    let carol = peer(&c, &[]);
    let name = unique("held");
    bob.bind(&name).await.unwrap();
    let err = carol.bind(&name).await.unwrap_err();
    assert!(matches!(err, BindError::InUse(_)), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    // Free again once unbound, or once its holder is gone.
    bob.unbind(&name).await.unwrap();
    carol.bind(&name).await.unwrap();
    drop(carol);
    bob.bind(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_an_unbound_name_fails_or_waits() {
    let (a, b) = (who("alice"), who("bob"));
    let name = unique("later");
    // Without retries: a clear error at once.
    let impatient = peer_with(&a, &[&b], no_retry());
    let err = within(impatient.connect(&name)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nothing is bound"), "{err}");
    // With the default policy, connect waits until the name is bound.
    let alice = peer(&a, &[&b]);
    let mut events = alice.events();
    let connecting = tokio::spawn({
        let (alice, name) = (alice.clone(), name.clone());
        async move { alice.connect(&name).await }
    });
    // The first attempt failed and a retry is scheduled: now bind.
    loop {
        if let Event::Reconnecting { endpoint, .. } = within(events.next()).await.unwrap() {
            assert_eq!(endpoint, name);
            break;
        }
    }
    let bob = peer(&b, &[&a]);
    bob.bind(&name).await.unwrap();
    assert_eq!(within(connecting).await.unwrap().unwrap(), "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_ends_with_either_peer_and_comes_back() {
    let (a, b) = (who("alice"), who("bob"));
    let name = unique("lifecycle");
    let alice = peer(&a, &[&b]);
    let bob = peer(&b, &[&a]);
    bob.bind(&name).await.unwrap();
    within(alice.connect(&name)).await.unwrap();
    let bob2 = bob.clone();
    let held = tokio::spawn(async move { bob2.accept().await.unwrap() });
    let mut ch = within(alice.open("bob", "hold", ())).await.unwrap();
    let (_, _bobs_end) = within(held).await.unwrap();
    let mut events = alice.events();
    // bob's process part goes away (the peer is dropped, not shut down): alice's
    // channel fails, bob leaves alice's peers.
    drop(bob);
    drop(_bobs_end);
    let err = within(ch.read_frame()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::ConnectionLost(_) | ChannelError::ResetByPeer { .. }
        ),
        "{err}"
    );
    loop {
        if let Event::Disconnected { peer, .. } = within(events.next()).await.unwrap() {
            assert_eq!(peer, "bob");
            break;
        }
    }
    assert!(alice.peers().is_empty());
    // A new bob binds the name: alice re-dials it and bob is back.
    let bob = peer(&b, &[&a]);
    bob.bind(&name).await.unwrap();
    serve_echo(&bob);
    loop {
        if let Event::Connected { peer, .. } = within(events.next()).await.unwrap() {
            assert_eq!(peer, "bob");
            break;
        }
    }
    assert_eq!(alice.peers(), ["bob"]);
    echo_round_trip(&alice, "bob", b"back again").await;
}
