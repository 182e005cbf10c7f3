//! Bad input on a listening port: what the server holds for bad clients is
//! counted (handshakes, connections, tasks, descriptors) and goes back to where it
//! was, while a good client keeps working.

use std::time::Duration;

use crate::common::*;
use streamkit::{ChannelError, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 1,000 connections of random bytes, truncated handshakes and silent clients while
/// a good client keeps a channel busy: the good client sees no error, and once the
/// bad ones are gone the server holds no handshake, no extra connection, task or
/// descriptor for them.
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
    let metrics = tokio::runtime::Handle::current().metrics();
    let (tasks0, fds0) = (metrics.num_alive_tasks(), open_fds());
    let mut peak = 0;
    for batch in 0..5 {
        let (_, ()) = tokio::join!(
            async {
                // The server's count of handshakes in progress, while they run.
                for _ in 0..20 {
                    peak = peak.max(p.bob.stats().handshakes);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            within(attack(batch))
        );
    }
    assert!(
        !busy.is_finished(),
        "the good client failed: {:?}",
        busy.await
    );
    // Every bad connection is gone from the server's books; the good one stays.
    wait_while(&[&p.bob], || {
        p.bob.stats().handshakes > 0 || metrics.num_alive_tasks() > tasks0 || open_fds() > fds0
    })
    .await;
    eprintln!("1,000 bad connections: at most {peak} handshakes at once seen");
    assert!(peak > 0, "the attack was seen in progress");
    let stats = p.bob.stats();
    assert_eq!((stats.connections, stats.handshakes), (1, 0), "{stats:?}");
    assert_eq!(p.bob.peers(), ["alice"]);
    busy.abort();
}
