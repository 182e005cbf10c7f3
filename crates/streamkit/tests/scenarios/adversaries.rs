//! Authenticated peers that misbehave, each against a serving peer ("bob") while a
//! good client ("alice") keeps working byte for byte. What bob holds for the bad
//! one ("mallory") is counted with `peer.stats()` and stays within the budgets of
//! `Options`; once mallory is gone, bob holds nothing for her.

use std::sync::Arc;

use crate::common::*;
use streamkit::{Channel, OpenErrorKind, OpenRefusal, Options, Peer, PeerConfig, Services, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes each channel starts with, and all it gets until its reader reads.
const INITIAL: usize = 64 * 1024;

struct Stage {
    bob: Peer,
    alice: Peer,
    mallory: Peer,
    /// mallory's key (bob trusts it).
    mallory_id: streamkit::Identity,
    url: String,
    _scratch: Scratch,
}

/// bob serves `echo` (through a listener) and trusts alice and mallory; both are
/// connected to him over TCP. Other services go to bob's `accept`, which nobody
/// calls.
async fn stage(bob_opts: Options, mallory_opts: Options) -> Stage {
    let (a, b, m) = (who("alice"), who("bob"), who("mallory"));
    let bob = peer_with(&b, &[&a, &m], bob_opts);
    let alice = peer(&a, &[&b]);
    let mallory = peer_with(&m, &[&b], mallory_opts);
    let scratch = Scratch::new();
    let url = bob
        .bind(&scratch.endpoint(Kind::Tcp, "bob"))
        .await
        .unwrap()
        .to_string();
    let echo_listener = bob.listen("echo").unwrap();
    tokio::spawn(async move {
        while let Ok((_, ch)) = echo_listener.accept().await {
            tokio::spawn(echo(ch));
        }
    });
    within(alice.connect(&url)).await.unwrap();
    within(mallory.connect(&url)).await.unwrap();
    Stage {
        bob,
        alice,
        mallory,
        mallory_id: m.id.clone(),
        url,
        _scratch: scratch,
    }
}

/// alice sends 1 MiB through bob's echo and gets it back, byte for byte.
async fn good_client_round_trip(alice: &Peer, seed: u64) {
    let data = pattern(1 << 20, seed);
    let ch = within(alice.open("bob", "echo", ())).await.unwrap();
    let (mut r, mut w) = ch.split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    within(r.read_to_end(&mut back)).await.unwrap();
    within(writer).await.unwrap();
    assert!(back == data, "the good client's bytes came back changed");
}

/// Writes up to 16 MiB into `ch` (it never finishes: nobody reads).
fn push_16_mib(mut ch: Channel, chunk: Arc<Vec<u8>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..(16 << 20) / chunk.len() {
            if ch.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
}

/// mallory opens 1,000 channels and pushes 16 MiB into each: 500 that bob's
/// application never accepts, 500 it accepts and never reads. Each holds its
/// initial credit and no more, so the whole stays within the connection's budget,
/// and alice's echo works throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_channels_never_read_hold_only_their_initial_credit() {
    let mut m_opts = Options::default();
    m_opts.send_buffer = 16 * 1024; // mallory's own memory, in this test process
    let s = stage(Options::default(), m_opts).await;
    // bob's application takes "hoard" channels and never reads them, until told
    // to let them go.
    let hoard = s.bob.listen("hoard").unwrap();
    let (let_go, mut told) = tokio::sync::oneshot::channel::<()>();
    let hoarded = tokio::spawn(async move {
        let mut kept = Vec::new();
        loop {
            tokio::select! {
                got = hoard.accept() => kept.push(got.unwrap().1),
                _ = &mut told => return kept.len(),
            }
        }
    });
    let chunk = Arc::new(pattern(64 * 1024, 1));
    let mut writers = Vec::new();
    for i in 0..1000 {
        let service = if i % 2 == 0 { "parked" } else { "hoard" };
        let ch = within(s.mallory.open("bob", service, ())).await.unwrap();
        writers.push(push_16_mib(ch, chunk.clone()));
    }
    // Everything mallory may send has arrived: one initial credit per channel.
    wait_while(&[&s.bob], || s.bob.stats().buffered < 1000 * INITIAL).await;
    good_client_round_trip(&s.alice, 2).await;
    let stats = s.bob.stats();
    assert_eq!(stats.buffered, 1000 * INITIAL, "{stats:?}");
    let budget = Options::default().memory_budget_per_connection as u64;
    assert!(stats.budgeted <= budget, "{stats:?} over {budget}");
    // mallory's writers are stuck, not failed: the limit is flow control.
    assert!(writers.iter().all(|w| !w.is_finished()));
    // mallory goes. What waited in the accept queue goes with her at once; what
    // the application took stays readable until it lets the channels go.
    drop(writers);
    s.mallory.disconnect(&s.url).await.unwrap();
    wait_while(&[&s.bob], || s.bob.stats().buffered > 500 * INITIAL).await;
    let_go.send(()).unwrap();
    assert_eq!(within(hoarded).await.unwrap(), 500);
    wait_while(&[&s.bob], || s.bob.stats().budgeted > 0).await;
    assert_eq!(s.bob.stats().buffered, 0);
    good_client_round_trip(&s.alice, 3).await;
}

/// A connection whose budget is spent is refused new channels with a clear
/// reason; another connection is not, and mallory's own channels work again once
/// she closes some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_its_budget_is_refused_new_channels() {
    let mut bob_opts = Options::default();
    bob_opts.max_frame_size = 1 << 20;
    bob_opts.memory_budget_per_connection = 4 << 20;
    bob_opts.memory_budget_per_address = 6 << 20;
    bob_opts.memory_budget = 6 << 20;
    let s = stage(bob_opts, Options::default()).await;
    let mut parked = Vec::new();
    let refusal = loop {
        match within(s.mallory.open("bob", "parked", ())).await {
            Ok(ch) => parked.push(ch),
            Err(e) => break e,
        }
        assert!(parked.len() <= 64, "the budget never refused an open");
    };
    assert_eq!(
        refusal.kind,
        OpenErrorKind::Refused(OpenRefusal::OverBudget)
    );
    assert!(
        refusal.to_string().contains("memory budget"),
        "unclear refusal: {refusal}"
    );
    // 4 MiB holds 63 channels with their initial credit and request.
    assert_eq!(parked.len(), 63);
    assert!(s.bob.stats().budgeted <= 4 << 20);
    // alice's connection has its own budget, within the peer's 6 MiB.
    good_client_round_trip(&s.alice, 4).await;
    assert!(s.bob.stats().budgeted <= 6 << 20);
    // mallory closes ten channels: she may open again.
    for mut ch in parked.drain(..10) {
        within(ch.close()).await.unwrap();
    }
    wait_while(&[&s.bob], || s.bob.stats().channels > 53).await;
    let mut again = within(s.mallory.open("bob", "echo", ())).await.unwrap();
    again.write_all(b"after").await.unwrap();
    again.close_write().await.unwrap();
    let mut back = Vec::new();
    within(again.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"after");
}

/// Children opened into a parent whose application takes none are refused at
/// once ("parent does not accept channels"); bob holds none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_flooded_into_a_parent_that_takes_none_are_refused() {
    let s = stage(Options::default(), Options::default()).await;
    let parents = s.bob.listen("parent").unwrap();
    let held = tokio::spawn(async move {
        let (_, ch) = parents.accept().await.unwrap();
        ch.refuse_children();
        ch
    });
    let parent = within(s.mallory.open("bob", "parent", ())).await.unwrap();
    let bob_parent = within(held).await.unwrap();
    for i in 0..500 {
        let err = within(parent.open("child", [format!("n={i}")]))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind,
            OpenErrorKind::Refused(OpenRefusal::ChildrenRefused)
        );
        assert!(err.to_string().contains("parent does not accept channels"));
    }
    assert_eq!(s.bob.stats().channels, 1, "only the parent");
    assert_eq!(bob_parent.child_count(), 0);
    // The parent itself still works.
    good_client_round_trip(&s.alice, 5).await;
    drop(bob_parent);
    // A peer that takes no children at all refuses them on every channel.
    let mut no_nest = Options::default();
    no_nest.accept_children = false;
    no_nest.services = Services::none();
    let (c, b2) = (who("carol"), who("bob2"));
    let carol = peer_with(&c, &[&b2], no_nest);
    let bob2 = Peer::new(PeerConfig::new(
        "bob2",
        b2.id.clone(),
        Trust::new().with_key(c.id.public_key()),
    ))
    .unwrap();
    let url = bob2.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    within(carol.connect(&url)).await.unwrap();
    let b2c = bob2.clone();
    let accepted = tokio::spawn(async move { b2c.accept().await.unwrap().1 });
    let _mine = within(carol.open("bob2", "parent", ())).await.unwrap();
    let theirs = within(accepted).await.unwrap();
    let err = within(theirs.open("child", ())).await.unwrap_err();
    assert_eq!(
        err.kind,
        OpenErrorKind::Refused(OpenRefusal::ChildrenRefused)
    );
}

/// A standard SSH client opens 200 `session` channels and pushes 16 MiB into each
/// without ever naming a service (`exec`): each holds its initial SSH window and
/// no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_client_sessions_without_exec_hold_their_initial_window() {
    let m = who("mallory");
    let b = who("bob");
    let bob = peer_with(&b, &[&m], Options::default());
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    let (h, ok) = raw_login(&url, OPENSSH, "mallory", &m.id, RawClient).await;
    assert!(ok);
    let chunk = pattern(32 * 1024, 6);
    let mut pushers = Vec::new();
    for _ in 0..200 {
        let ch = within(h.channel_open_session()).await.unwrap();
        let chunk = chunk.clone();
        pushers.push(tokio::spawn(async move {
            for _ in 0..(16 << 20) / chunk.len() {
                if ch.data(&chunk[..]).await.is_err() {
                    return;
                }
            }
        }));
    }
    wait_while(&[&bob], || bob.stats().buffered < 200 * INITIAL).await;
    let stats = bob.stats();
    assert_eq!(stats.buffered, 200 * INITIAL, "{stats:?}");
    assert!(stats.budgeted <= Options::default().memory_budget_per_connection as u64);
    assert!(pushers.iter().all(|p| !p.is_finished()));
    drop(pushers);
    h.disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    wait_while(&[&bob], || bob.stats().budgeted > 0).await;
}

/// Connections from one address share a budget: a client that opens a second
/// connection does not get a second budget's worth, and a client from another
/// address is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_share_a_budget() {
    let mut bob_opts = Options::default();
    bob_opts.max_frame_size = 1 << 20;
    bob_opts.memory_budget_per_connection = 4 << 20;
    bob_opts.memory_budget_per_address = 6 << 20;
    let s = stage(bob_opts, Options::default()).await;
    let streamkit::Endpoint::Tcp { port, .. } = streamkit::Endpoint::parse(&s.url).unwrap() else {
        unreachable!()
    };
    // mallory, twice more, from 127.0.0.2 (the same key: it may hold several
    // connections under its name).
    let mut mallories = Vec::new();
    for _ in 0..2 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let stream = within(sock.connect(format!("127.0.0.1:{port}").parse().unwrap()))
            .await
            .unwrap();
        let mut trust = Trust::new();
        trust = trust.with_key(s.bob.public_key());
        let mallory = Peer::new(PeerConfig::new("mallory", s.mallory_id.clone(), trust)).unwrap();
        within(mallory.connect_stream(stream, "from 127.0.0.2"))
            .await
            .unwrap();
        mallories.push(mallory);
    }
    let mut parked = Vec::new();
    let mut admitted = Vec::new();
    for mallory in &mallories {
        let mut n = 0;
        while let Ok(ch) = within(mallory.open("bob", "parked", ())).await {
            parked.push(ch);
            n += 1;
            assert!(n <= 64, "the budget never refused an open");
        }
        admitted.push(n);
    }
    // The first connection gets its 4 MiB; the second only what is left of the
    // address's 6 MiB.
    assert_eq!(admitted[0], 63);
    assert!(admitted[1] < 33, "{admitted:?}");
    assert!(s.bob.stats().budgeted <= 6 << 20);
    // alice, from 127.0.0.1, has her own.
    let mut hers = Vec::new();
    for _ in 0..32 {
        hers.push(within(s.alice.open("bob", "parked", ())).await.unwrap());
    }
    good_client_round_trip(&s.alice, 7).await;
}
