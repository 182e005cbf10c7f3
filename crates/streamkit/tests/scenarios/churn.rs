//! Opening and closing many channels and connections leaves nothing behind:
//! what each peer holds (`Peer::stats`: connections, handshakes, channels, bytes),
//! the runtime's live tasks and the process's open descriptors all end where they
//! started, and so do russh's channel handles (`russh::live_channel_refs`: a
//! session that forgot to drop them leaked ~3.6 KB per channel). (nextest runs each
//! test in a process of its own, so these counts are this test's.)

use crate::common::*;
use streamkit::PeerStats;

/// russh's channel handles go back to `refs0`: its sessions drop them as they
/// process the closes, a moment after the channels left our books.
async fn russh_handles_back_to(refs0: usize) {
    let back = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        wait_while(&[], || russh::live_channel_refs() > refs0),
    )
    .await;
    assert!(
        back.is_ok(),
        "russh holds {} channel handles for closed channels",
        russh::live_channel_refs() - refs0
    );
}

/// Nothing held: no connection, channel or byte.
fn empty() -> PeerStats {
    PeerStats::default()
}

async fn cycle(p: &Pair, n: usize) {
    for i in 0..n {
        // Alternate which side closes first: both must forget the channel.
        let mut ch = match tokio::time::timeout(
            std::time::Duration::from_secs(3),
            p.alice.open("bob", "echo", ()),
        )
        .await
        {
            Ok(r) => r.unwrap(),
            Err(_) => panic!(
                "DEBUG open {i} hung; alice {:?} bob {:?}",
                p.alice.stats(),
                p.bob.stats()
            ),
        };
        ch.write_frame(&i.to_be_bytes()).await.unwrap();
        assert_eq!(
            &ch.read_frame().await.unwrap().unwrap()[..],
            &i.to_be_bytes()
        );
        if i % 2 == 0 {
            ch.close().await.unwrap();
        } else {
            ch.close_write().await.unwrap();
            assert_eq!(ch.read_frame().await.unwrap(), None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_channels_on_one_connection() {
    channels_on_one_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections() {
    connections().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_thousand_children_of_one_parent_tcp() {
    children_of_one_parent(Kind::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_thousand_children_of_one_parent_inproc() {
    children_of_one_parent(Kind::Inproc).await;
}

/// 10,000 children of one parent opened, used and closed, and 5,000 more opened
/// the other way inside the same parent:
/// live channel counts, buffered bytes and tasks end where they started.
async fn children_of_one_parent(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let metrics = tokio::runtime::Handle::current().metrics();
    // bob accepts the parent, echoes the children alice opens in it and opens
    // children of his own, one at a time, on request.
    let server = tokio::spawn(async move {
        let (_, mut parent) = bob.accept().await.unwrap();
        loop {
            let Ok((meta, mut child)) = parent.accept().await else {
                break;
            };
            if meta.service() == "done" {
                drop(child);
                break;
            }
            let f = child.read_frame().await.unwrap().unwrap();
            assert_eq!(child.read_frame().await.unwrap(), None);
            child.write_frame(&f).await.unwrap();
            if meta.service() == "call-back" {
                // And one child the other way, inside the same parent.
                let mut back = parent.open("back", ()).await.unwrap();
                back.write_frame(&f).await.unwrap();
                back.close().await.unwrap();
            }
            child.close().await.unwrap();
        }
        parent.close().await.unwrap();
    });
    let parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    let run = |from: u64, to: u64| {
        let parent = &parent;
        async move {
            for i in from..to {
                let service = if i % 2 == 0 { "echo" } else { "call-back" };
                let mut child = parent.open(service, ()).await.unwrap();
                child.write_frame(&i.to_be_bytes()).await.unwrap();
                child.close_write().await.unwrap();
                assert_eq!(
                    &child.read_frame().await.unwrap().unwrap()[..],
                    &i.to_be_bytes()
                );
                assert_eq!(child.read_frame().await.unwrap(), None);
                if i % 2 == 1 {
                    let (_, mut back) = parent.accept().await.unwrap();
                    assert_eq!(
                        &back.read_frame().await.unwrap().unwrap()[..],
                        &i.to_be_bytes()
                    );
                    back.close().await.unwrap();
                }
                child.close().await.unwrap();
            }
        }
    };
    let settled = || async {
        wait_while(&[&p.alice, &p.bob], || {
            parent.child_count() > 0 || p.alice.channel_count() + p.bob.channel_count() > 2
        })
        .await;
    };
    within(run(0, 1000)).await; // warm up
    settled().await;
    let (tasks0, refs0) = (metrics.num_alive_tasks(), russh::live_channel_refs());
    within(run(1000, 11_000)).await;
    settled().await;
    wait_while(&[], || metrics.num_alive_tasks() > tasks0).await;
    russh_handles_back_to(refs0).await;
    assert_eq!(parent.child_count(), 0);
    assert_eq!(p.alice.channel_count(), 1, "only the parent is left");
    assert_eq!(p.bob.channel_count(), 1, "only the parent is left");
    for peer in [&p.alice, &p.bob] {
        let stats = peer.stats();
        assert_eq!((stats.buffered, stats.send_buffered), (0, 0), "{stats:?}");
    }
    let mut done = within(parent.open("done", ())).await.unwrap();
    let _ = within(done.read_frame()).await;
    within(server).await.unwrap();
    let mut parent = parent;
    let _ = within(parent.close()).await;
    wait_while(&[&p.alice, &p.bob], || {
        p.alice.channel_count() + p.bob.channel_count() > 0
    })
    .await;
}

/// 5,000 channels opened, used and closed on one connection: both peers end
/// holding the connection and nothing else, and the runtime's tasks are back
/// where they started.
async fn channels_on_one_connection() {
    let p = pair(Kind::Tcp).await;
    serve_echo(&p.bob);
    let metrics = tokio::runtime::Handle::current().metrics();
    within(cycle(&p, 10)).await;
    let peers = [&p.alice, &p.bob];
    let settle = || {
        wait_while(&peers, || {
            p.alice.channel_count() + p.bob.channel_count() > 0
        })
    };
    settle().await;
    let (tasks0, refs0) = (metrics.num_alive_tasks(), russh::live_channel_refs());
    within(cycle(&p, 5000)).await;
    settle().await;
    wait_while(&[], || metrics.num_alive_tasks() > tasks0).await;
    russh_handles_back_to(refs0).await;
    // A channel's budget goes with its entry, which may outlive its SSH channel
    // by a step; a leak would hang here (and fail), not pass.
    wait_while(&peers, || {
        p.alice.stats().budgeted + p.bob.stats().budgeted > 0
    })
    .await;
    for peer in [&p.alice, &p.bob] {
        let stats = peer.stats();
        assert_eq!(stats.connections, 1, "{stats:?}");
        let mut rest = stats.clone();
        rest.connections = 0;
        assert_eq!(rest, empty(), "{stats:?}");
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 2,000 connect/open/close/disconnect cycles: tasks, descriptors, connections,
/// handshakes and channels end where they started.
async fn connections() {
    let (a, b) = (who("alice"), who("bob"));
    let mut opts = no_retry();
    opts.keepalive_interval = None;
    let alice = peer_with(&a, &[&b], opts.clone());
    let bob = peer_with(&b, &[&a], opts);
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    serve_echo(&bob);
    let metrics = tokio::runtime::Handle::current().metrics();
    let settle = || async {
        wait_while(&[&alice, &bob], || {
            !bob.peers().is_empty() || bob.channel_count() + alice.channel_count() > 0
        })
        .await;
    };
    // One cycle first, so that lazily created things exist at the baseline.
    let cycle = |i: u64| {
        let (alice, url) = (alice.clone(), url.clone());
        async move {
            alice.connect(&url).await.unwrap();
            let mut ch = alice.open("bob", "echo", ()).await.unwrap();
            ch.write_frame(&i.to_be_bytes()).await.unwrap();
            assert_eq!(
                &ch.read_frame().await.unwrap().unwrap()[..],
                &i.to_be_bytes()
            );
            ch.close().await.unwrap();
            alice.disconnect(&url).await.unwrap();
        }
    };
    within(cycle(0)).await;
    settle().await;
    let (tasks0, fds0, refs0) = (
        metrics.num_alive_tasks(),
        open_fds(),
        russh::live_channel_refs(),
    );
    for i in 1..=2000 {
        within(cycle(i)).await;
    }
    settle().await;
    // Connections end in the background: wait until the counts are back down.
    wait_while(&[], || {
        metrics.num_alive_tasks() > tasks0 || open_fds() > fds0
    })
    .await;
    russh_handles_back_to(refs0).await;
    assert_eq!(alice.stats(), empty());
    assert_eq!(bob.stats(), empty());
}
