//! Bad input on a listening port, alone in its binary so that the memory it
//! measures is its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use streamkit::{ChannelError, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// 1,000 connections of random bytes, truncated handshakes and silent clients while
/// a good client keeps a channel busy: the good client sees no error and the
/// server's memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_clients_do_not_disturb_a_good_one() {
    let mut bob_opts = Options::default();
    bob_opts.handshake_timeout = Duration::from_millis(300);
    bob_opts.max_connections_per_address = 10_000;
    let p = pair_with(Kind::Tcp, Options::default(), bob_opts).await;
    serve_echo(&p.bob);
    let addr = p.url.trim_start_matches("tcp://").to_string();
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    let busy = tokio::spawn(async move {
        let mut i = 0u32;
        loop {
            ch.write_frame(&i.to_be_bytes()).await?;
            let f = ch.read_frame().await?.expect("echo");
            assert_eq!(&f[..], &i.to_be_bytes());
            i += 1;
            if i.is_multiple_of(64) {
                tokio::task::yield_now().await;
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), ChannelError>(())
    });
    let attack = |batch: u64| {
        let addr = addr.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..200u64 {
                let addr = addr.clone();
                set.spawn(async move {
                    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                        return;
                    };
                    match i % 3 {
                        0 => {
                            let _ = s.write_all(&pattern(2000, batch * 1000 + i)).await;
                        }
                        1 => {
                            let _ = s.write_all(b"SSH-2.0-half\r\n\0\0\0\x14").await;
                        }
                        _ => {}
                    }
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink).await; // the server hangs up on us
                });
            }
            while set.join_next().await.is_some() {}
        }
    };
    within(attack(0)).await;
    let before = rss_kib();
    for batch in 1..5 {
        within(attack(batch)).await;
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!("800 bad connections after warm-up: server RSS +{grown} KiB");
    assert!(
        !busy.is_finished(),
        "the good client failed: {:?}",
        busy.await
    );
    busy.abort();
    assert_eq!(p.bob.peers(), ["alice"]);
    assert!(
        grown < 8 * 1024,
        "server memory grew by {grown} KiB over 800 bad connections"
    );
}
