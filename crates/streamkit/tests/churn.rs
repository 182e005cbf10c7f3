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
    within(async {
        while p.alice.channel_count() + p.bob.channel_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
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
        within(async {
            while !bob.peers().is_empty() || bob.channel_count() + alice.channel_count() > 0 {
                tokio::task::yield_now().await;
            }
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
    let (tasks0, fds0, rss0) = (metrics.num_alive_tasks(), open_fds(), rss_kib());
    for i in 1..=2000 {
        within(cycle(i)).await;
    }
    settle().await;
    // Connections end in the background: wait until the counts are back down.
    within(async {
        while metrics.num_alive_tasks() > tasks0 || open_fds() > fds0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
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
