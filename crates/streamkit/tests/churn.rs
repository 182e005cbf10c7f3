//! Opening and closing many channels and connections leaves nothing behind. One
//! test in its own binary: memory, tasks and descriptors are process-wide.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

async fn cycle(p: &Pair, n: usize) {
    for i in 0..n {
        // Alternate which side closes first: both must forget the channel.
        let mut ch = p.alice.open("bob", "echo", ()).await.unwrap();
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
async fn churn_leaves_nothing_behind() {
    channels_on_one_connection().await;
    connections().await;
    children_of_one_parent(Kind::Tcp).await;
    children_of_one_parent(Kind::Inproc).await;
}

/// 10,000 children of one parent opened, used and closed, and 5,000 more opened
/// the other way inside the same parent:
/// live channel counts, tasks and memory end where they started.
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
        wait_while(|| {
            parent.child_count() > 0 || p.alice.channel_count() + p.bob.channel_count() > 2
        })
        .await;
    };
    within(run(0, 1000)).await; // warm up
    settled().await;
    let (tasks0, rss0) = (metrics.num_alive_tasks(), rss_kib());
    within(run(1000, 11_000)).await;
    settled().await;
    wait_while(|| metrics.num_alive_tasks() > tasks0).await;
    let grown = rss_kib().saturating_sub(rss0);
    eprintln!(
        "10,000 children opened by alice and 5,000 by bob over {kind:?}: channels left {} + {}, tasks {tasks0} -> {}, RSS +{grown} KiB",
        p.alice.channel_count(),
        p.bob.channel_count(),
        metrics.num_alive_tasks()
    );
    assert_eq!(parent.child_count(), 0);
    assert_eq!(p.alice.channel_count(), 1, "only the parent is left");
    assert!(
        grown < 4 * 1024,
        "resident memory grew by {grown} KiB over 10,000 children"
    );
    let mut done = within(parent.open("done", ())).await.unwrap();
    let _ = within(done.read_frame()).await;
    within(server).await.unwrap();
    let mut parent = parent;
    let _ = within(parent.close()).await;
    wait_while(|| p.alice.channel_count() + p.bob.channel_count() > 0).await;
}

/// 4,000 channels opened, used and closed on one connection: channel counts go back
/// to zero and resident memory stays flat (a leaked russh channel handle would
/// cost ~3.6 KB each: 14 MB here).
async fn channels_on_one_connection() {
    let p = pair(Kind::Tcp).await;
    serve_echo(&p.bob);
    within(cycle(&p, 1000)).await; // warm up allocator pools
    let before = rss_kib();
    within(cycle(&p, 4000)).await;
    wait_while(|| p.alice.channel_count() + p.bob.channel_count() > 0).await;
    let grown = rss_kib().saturating_sub(before);
    eprintln!("4,000 channels on one connection: RSS +{grown} KiB");
    assert!(
        grown < 4 * 1024,
        "resident memory grew by {grown} KiB over 4,000 channels"
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 2,000 connect/open/close/disconnect cycles: tasks, descriptors, channels and
/// memory end where they started.
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
        wait_while(|| !bob.peers().is_empty() || bob.channel_count() + alice.channel_count() > 0)
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
    let (tasks0, fds0, rss0) = (metrics.num_alive_tasks(), open_fds(), rss_kib());
    for i in 1..=2000 {
        within(cycle(i)).await;
    }
    settle().await;
    // Connections end in the background: wait until the counts are back down.
    wait_while(|| metrics.num_alive_tasks() > tasks0 || open_fds() > fds0).await;
    assert_eq!(alice.channel_count() + bob.channel_count(), 0);
    assert!(metrics.num_alive_tasks() <= tasks0);
    assert!(open_fds() <= fds0);
    let grown = rss_kib().saturating_sub(rss0);
    eprintln!(
        "2,000 connections: tasks {tasks0} -> {}, fds {fds0} -> {}, RSS +{grown} KiB",
        metrics.num_alive_tasks(),
        open_fds()
    );
    assert!(
        grown < 8 * 1024,
        "resident memory grew by {grown} KiB over 2,000 connections"
    );
}
