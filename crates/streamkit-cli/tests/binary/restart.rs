//! A real `streamkit serve` killed and restarted five times while a library client
//! keeps sending numbered frames: the client is back each time, and every frame is
//! either delivered (echoed back intact) or reported failed, never lost silently or
//! delivered twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::*;
use streamkit::{Event, Identity, Options, Peer, PeerConfig, Reconnect, Trust};

fn serve(k: &Keys, port: u16) -> Server {
    let bind = format!("tcp://127.0.0.1:{port}");
    let (key, ak) = (k.p("server"), k.p("authorized_keys"));
    Server::start(&[
        "--bind",
        &bind,
        "--name",
        "srv",
        "--key",
        &key,
        "--authorized-keys",
        &ak,
        "--service",
        "echo=echo",
    ])
}

#[test]
fn server_restarted_five_times() {
    let k = Keys::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = serve(&k, port);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut reconnect = Reconnect::default();
    reconnect.first_delay = Duration::from_millis(50);
    reconnect.max_delay = Duration::from_millis(500);
    let mut opts = Options::default();
    opts.reconnect = reconnect.clone();
    opts.open_wait = Duration::from_secs(30);
    let trust = Trust::new().with_known_hosts(&format!(
        "[127.0.0.1]:{port} {}",
        std::fs::read_to_string(k.path("server.pub")).unwrap()
    ));
    let config = PeerConfig::new(
        "client",
        Identity::load(k.path("client")).unwrap(),
        trust.unwrap(),
    )
    .with_options(opts);
    let peer = rt.block_on(async { Peer::new(config).unwrap() });
    let mut events = peer.events();
    rt.block_on(peer.connect(&format!("tcp://127.0.0.1:{port}")))
        .unwrap();

    // The sender: one channel per numbered frame, each echoed back.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::channel::<u64>(1024);
    let sender = {
        let peer = peer.clone();
        rt.spawn(async move {
            let (mut delivered, mut failed) = (Vec::new(), Vec::new());
            for n in 0u64.. {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                let attempt = async {
                    let mut ch = peer.open("srv", "echo", ()).await?;
                    ch.write_frame(&n.to_be_bytes()).await?;
                    let back = ch.read_frame().await?.ok_or("no echo")?;
                    assert_eq!(
                        &back[..],
                        &n.to_be_bytes(),
                        "frame {n} came back as another"
                    );
                    ch.close().await?;
                    Ok::<(), Box<dyn std::error::Error>>(())
                };
                match attempt.await {
                    Ok(()) => {
                        delivered.push(n);
                        let _ = progress_tx.try_send(n);
                    }
                    Err(_) => failed.push(n),
                }
            }
            (delivered, failed)
        })
    };

    let wait_delivery = |rx: &mut tokio::sync::mpsc::Receiver<u64>| {
        rt.block_on(async {
            tokio::time::timeout(HANG, rx.recv())
                .await
                .expect("no frame got through")
                .unwrap();
        })
    };
    wait_delivery(&mut progress_rx);
    for restart in 1..=5 {
        server.signal("KILL");
        drop(server);
        rt.block_on(async {
            loop {
                let e = tokio::time::timeout(HANG, events.next())
                    .await
                    .unwrap()
                    .unwrap();
                if matches!(e, Event::Disconnected { .. }) {
                    break;
                }
            }
        });
        server = serve(&k, port);
        let up = Instant::now();
        let delays = rt.block_on(async {
            let mut delays = Vec::new();
            loop {
                let e = tokio::time::timeout(HANG, events.next())
                    .await
                    .unwrap()
                    .unwrap();
                match e {
                    Event::Connected { .. } => return delays,
                    Event::Reconnecting { delay, .. } => delays.push(delay),
                    _ => {}
                }
            }
        });
        eprintln!(
            "restart {restart}: client back {:?} after the server started, after waits of {delays:?}",
            up.elapsed()
        );
        // Re-dialled with backoff, never waiting longer than the cap (plus its jitter).
        assert!(!delays.is_empty());
        assert!(
            delays
                .iter()
                .all(|d| *d <= reconnect.max_delay.mul_f64(1.2)),
            "restart {restart}: {delays:?}"
        );
        while progress_rx.try_recv().is_ok() {}
        wait_delivery(&mut progress_rx);
    }
    stop_tx.send(()).unwrap();
    let (delivered, failed) = rt.block_on(sender).unwrap();
    let d: BTreeSet<u64> = delivered.iter().copied().collect();
    let f: BTreeSet<u64> = failed.iter().copied().collect();
    assert_eq!(d.len(), delivered.len(), "a frame was delivered twice");
    assert!(d.is_disjoint(&f), "a frame both delivered and failed");
    let total = delivered.len() + failed.len();
    eprintln!(
        "{} frames delivered, {} reported failed, none lost or duplicated",
        delivered.len(),
        failed.len()
    );
    assert_eq!(
        d.union(&f).copied().collect::<Vec<_>>(),
        (0..total as u64).collect::<Vec<_>>(),
        "a frame vanished"
    );
    assert!(delivered.len() > 5);
    rt.block_on(peer.shutdown());
}
