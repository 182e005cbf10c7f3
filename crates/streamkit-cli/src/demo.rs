//! `streamkit demo`: two peers (and a third) on loopback, a tour of every
//! capability, and a few figures measured on this machine.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use streamkit::{
    ChannelError, Identity, OpenErrorKind, Options, Peer, PeerConfig, Services, Trust,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct Args {
    /// Megabytes pushed through one channel for the throughput figure.
    #[arg(long, default_value_t = 256)]
    bulk_mb: usize,
}

fn step(title: &str) {
    println!("\n== {title}");
}

fn note(line: impl AsRef<str>) {
    println!("   {}", line.as_ref());
}

fn peer(
    name: &str,
    id: &Identity,
    trusted: &[&Identity],
    services: Services,
) -> anyhow::Result<Peer> {
    let mut trust = Trust::new();
    for t in trusted {
        trust = trust.with_key(t.public_key());
    }
    let mut options = Options::default();
    options.services = services;
    // A short wait for absent peers keeps the tour quick (the default is 5 s).
    options.open_wait = Duration::from_millis(200);
    Ok(Peer::new(
        PeerConfig::new(name, id.clone(), trust).with_options(options),
    )?)
}

/// bob's services.
fn serve_bob(bob: &Peer) {
    let bob = bob.clone();
    tokio::spawn(async move {
        while let Ok((meta, mut ch)) = bob.accept().await {
            tokio::spawn(async move {
                match meta.service() {
                    "echo" => {
                        let (mut r, mut w) = ch.split();
                        if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                            let _ = w.close_write().await;
                        }
                    }
                    "upper" => {
                        let mut body = Vec::new();
                        if ch.read_to_end(&mut body).await.is_ok() {
                            let _ = ch.write_all(&body.to_ascii_uppercase()).await;
                            let _ = ch
                                .write_trailers([format!("bytes={}", body.len()).as_str()])
                                .await;
                            let _ = ch.close().await;
                        }
                    }
                    "build" => {
                        for i in 1..=3 {
                            let _ = ch.write_frame(format!("step {i} done").as_bytes()).await;
                        }
                        let _ = ch.write_error(b"warning: disk 91% full").await;
                        let _ = ch.write_trailers(["exit-status=2"]).await;
                        let _ = ch.close().await;
                    }
                    "abort" => {
                        let mut b = [0u8; 4];
                        let _ = ch.read_exact(&mut b).await;
                        ch.reset();
                    }
                    "hold" => {
                        // Accepted, never read (until the opener resets it): the
                        // stalled channel of the isolation demo.
                        let _ = ch.read_error().await;
                    }
                    "frames" => {
                        while let Ok(Some(f)) = ch.read_frame().await {
                            if ch.write_frame(&f).await.is_err() {
                                break;
                            }
                        }
                    }
                    "tunnel" => {
                        // Children alice opens inside are echoed upper-case; bob
                        // also opens one of his own inside it, towards alice.
                        let ch = std::sync::Arc::new(ch);
                        if let Ok(mut hello) = ch.open("hello-from-bob", ["depth=1"]).await {
                            let _ = hello.write_all(b"bob was here").await;
                            let _ = hello.close().await;
                        }
                        while let Ok((_, child)) = ch.accept().await {
                            tokio::spawn(async move {
                                let (mut r, mut w) = child.split();
                                let mut body = Vec::new();
                                if r.read_to_end(&mut body).await.is_ok() {
                                    let _ = w.write_all(&body.to_ascii_uppercase()).await;
                                    let _ = w.close_write().await;
                                }
                            });
                        }
                    }
                    "sink" => {
                        let mut buf = vec![0u8; 256 * 1024];
                        let mut n = 0u64;
                        while let Ok(k) = ch.read(&mut buf).await {
                            if k == 0 {
                                break;
                            }
                            n += k as u64;
                        }
                        let _ = ch.write_trailers([format!("bytes={n}").as_str()]).await;
                        let _ = ch.close().await;
                    }
                    _ => {}
                }
            });
        }
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("streamkit-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating a scratch directory")?;
    let result = tour(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!(
        "\nThe whole tour took {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn tour(args: &Args, dir: &std::path::Path) -> anyhow::Result<()> {
    step("1. Identities: three ed25519 keys, made just now");
    let (a, b, c) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    for (name, id) in [("alice", &a), ("bob", &b), ("carol", &c)] {
        note(format!("{name:5} {}", id.public_key().fingerprint()));
    }
    let services = Services::only([
        "echo", "upper", "build", "abort", "hold", "frames", "sink", "tunnel",
    ]);
    let bob = peer("bob", &b, &[&a, &c], services)?;
    let alice = peer("alice", &a, &[&b], Services::only(["echo"]))?;
    let carol = peer("carol", &c, &[&b], Services::only(["echo"]))?;
    serve_bob(&bob);
    for p in [&alice, &carol] {
        let p2 = p.clone();
        tokio::spawn(async move {
            while let Ok((_, ch)) = p2.accept().await {
                let (mut r, mut w) = ch.split();
                tokio::spawn(async move {
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.close_write().await;
                    }
                });
            }
        });
    }

    step("2. Bind and connect: bob listens on TCP and a Unix socket");
    let tcp = bob.bind("tcp://127.0.0.1:0").await?;
    let unix = bob
        .bind(&format!("unix://{}", dir.join("bob.sock").display()))
        .await?;
    note(format!("bob listens on {tcp} and {unix}"));
    let who = alice.connect(&tcp.to_string()).await?;
    note(format!(
        "alice connected over TCP to {who:?} (the name arrives with the SSH handshake)"
    ));
    carol.connect(&unix.to_string()).await?;
    note(format!(
        "carol connected over the Unix socket; bob now sees peers {:?}",
        bob.peers()
    ));

    step("3. A channel with a service name and headers (one round trip)");
    let headers = ["lang=en", "filter=a,b&c=d", "multi=line one\nline two"];
    let mut ch = alice.open("bob", "upper", headers).await?;
    ch.write_all(b"hello, streamkit").await?;
    ch.close_write().await?;
    let mut out = String::new();
    ch.read_to_string(&mut out).await?;
    note(format!(
        "alice -> bob \"upper\" with {} headers: {out:?}",
        headers.len()
    ));
    note(format!(
        "trailers at end of stream: {:?}",
        ch.meta().trailers().unwrap_or_default().as_slice()
    ));

    step("4. Frames, error frames and trailers");
    let mut ch = alice.open("bob", "build", ()).await?;
    while let Some(f) = ch.read_frame().await? {
        note(format!("frame: {}", String::from_utf8_lossy(&f)));
    }
    while let Some(e) = ch.read_error().await? {
        note(format!(
            "error frame (read after the end of stream, none missed): {}",
            String::from_utf8_lossy(&e)
        ));
    }
    note(format!(
        "trailers: {:?}",
        ch.meta().trailers().unwrap_or_default().as_slice()
    ));

    step("5. Half-close: alice finishes sending, bob still answers");
    let mut ch = alice.open("bob", "echo", ()).await?;
    ch.write_all(b"ping").await?;
    ch.close_write().await?;
    note("alice: close_write() returned once bob confirmed he had everything");
    let mut back = Vec::new();
    ch.read_to_end(&mut back).await?;
    note(format!(
        "alice still reads bob's answer: {:?}",
        String::from_utf8_lossy(&back)
    ));

    step("6. Reset: an abort the other side sees as an error, not as end of stream");
    let mut ch = alice.open("bob", "abort", ()).await?;
    ch.write_all(b"data").await?;
    match ch.read_frame().await {
        Err(e @ ChannelError::ResetByPeer { .. }) => note(format!("alice: {e}")),
        other => bail!("expected a reset, got {other:?}"),
    }

    step("7. Bad requests get clear errors; the connection stays up");
    match alice.open("bob", "no-such-service", ()).await {
        Err(e) if matches!(e.kind, OpenErrorKind::Refused(_)) => note(format!("alice: {e}")),
        other => bail!("expected a refusal, got {other:?}"),
    }
    match alice.open("dave", "echo", ()).await {
        Err(e) => note(format!("alice: {e}")),
        Ok(_) => bail!("dave is not connected"),
    }
    let mut ch = alice.open("bob", "frames", ()).await?;
    ch.write_all(&u32::MAX.to_be_bytes()).await?;
    match ch.read_frame().await {
        Err(e) => note(format!(
            "a frame announced at 4 GiB, refused before any allocation: alice sees \"{e}\""
        )),
        Ok(f) => bail!("expected the oversize frame to be refused, got {f:?}"),
    }
    let mut ch = alice.open("bob", "frames", ()).await?;
    ch.write_frame(b"still fine").await?;
    ensure!(
        ch.read_frame().await?.as_deref() == Some(&b"still fine"[..]),
        "echo after bad requests"
    );
    ch.close().await?;
    note("the next channel on the same connection works as before");

    step("8. Either side opens channels, whoever dialled");
    for to in ["alice", "carol"] {
        let mut ch = bob.open(to, "echo", ()).await?;
        ch.write_all(format!("hi {to}").as_bytes()).await?;
        ch.close_write().await?;
        let mut s = String::new();
        ch.read_to_string(&mut s).await?;
        note(format!("bob -> {to} (who dialled bob): echoed {s:?}"));
    }
    let order: Vec<_> = (0..4).filter_map(|_| bob.next_peer()).collect();
    note(format!("bob.next_peer() round-robin: {order:?}"));

    step("9. Flow control isolates channels");
    let opts = alice.options();
    let mut stalled = alice.open("bob", "hold", ()).await?;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pusher = tokio::spawn(async move {
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        loop {
            tokio::select! {
                r = stalled.write_all(&chunk) => match r {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => break,
                },
                _ = &mut stop_rx => break,
            }
        }
        stalled.reset();
        sent
    });
    let mut ch = alice.open("bob", "frames", ()).await?;
    let t0 = Instant::now();
    for i in 0..2000u32 {
        ch.write_frame(&i.to_be_bytes()).await?;
        ensure!(
            ch.read_frame().await?.as_deref() == Some(&i.to_be_bytes()[..]),
            "frame {i}"
        );
    }
    let elapsed = t0.elapsed();
    ch.close().await?;
    let _ = stop_tx.send(());
    let sent = pusher.await?;
    note(format!(
        "bob never reads channel A: alice got {} KiB into it, then flow control held her \
         (window {} KiB + send buffer {} KiB)",
        sent / 1024,
        opts.channel_window / 1024,
        opts.send_buffer / 1024
    ));
    note(format!(
        "meanwhile channel B on the same connection echoed 2,000 frames in {:.0} ms",
        elapsed.as_secs_f64() * 1000.0
    ));

    step("10. Channels inside channels");
    let tunnel = alice.open("bob", "tunnel", ()).await?;
    let (meta, mut hello) = tunnel.accept().await?;
    let mut said = String::new();
    hello.read_to_string(&mut said).await?;
    note(format!(
        "bob opened {:?} inside alice's tunnel; it said {said:?} (peer-level accept never saw it)",
        meta.service()
    ));
    let mut replies = Vec::new();
    for word in ["one", "two", "three"] {
        let mut child = tunnel.open("shout", [format!("word={word}")]).await?;
        child.write_all(word.as_bytes()).await?;
        child.close_write().await?;
        let mut back = String::new();
        child.read_to_string(&mut back).await?;
        replies.push(back);
        child.close().await?;
    }
    note(format!(
        "three children of the tunnel, echoed by bob: {replies:?}"
    ));
    let mut open_child = tunnel.open("shout", ()).await?;
    note(format!(
        "one child left open; the tunnel has {} open child(ren)",
        tunnel.child_count()
    ));
    let mut tunnel = tunnel;
    tunnel.reset();
    let Err(err) = open_child.read_frame().await else {
        bail!("a child of a reset tunnel still reads");
    };
    note(format!(
        "alice reset the tunnel: its open child now fails with {err:?} ({err})"
    ));

    step("11. In-process peers: inproc://, same semantics, no SSH");
    let d = Identity::generate();
    bob.set_trust(
        Trust::new()
            .with_key(a.public_key())
            .with_key(c.public_key())
            .with_key(d.public_key()),
    );
    let name = format!("inproc://demo-bob-{}", std::process::id());
    bob.bind(&name).await?;
    let dave = peer("dave", &d, &[&b], Services::none())?;
    dave.connect(&name).await?;
    let mut ch = dave.open("bob", "upper", ["via=inproc"]).await?;
    ch.write_all(b"no sockets, no ssh").await?;
    ch.close_write().await?;
    let mut s = String::new();
    ch.read_to_string(&mut s).await?;
    note(format!(
        "dave (a plugin in this process) connected to {name}: {s:?}, trailers {:?}",
        ch.meta().trailers().unwrap_or_default()
    ));
    note(format!(
        "bob serves {:?} on tcp, unix and inproc at once",
        bob.peers()
    ));

    step("12. Measured here (one run; `streamkit bench` later does this properly)");
    let mut ch = alice.open("bob", "frames", ()).await?;
    let mut rtts = Vec::with_capacity(5000);
    let payload = [7u8; 64];
    for _ in 0..5000 {
        let t = Instant::now();
        ch.write_frame(&payload).await?;
        ch.read_frame().await?;
        rtts.push(t.elapsed());
    }
    ch.close().await?;
    rtts.sort();
    note(format!(
        "64-byte echo round trip over TCP: p50 {} µs, p99 {} µs (5,000 round trips)",
        percentile(&rtts, 0.5).as_micros(),
        percentile(&rtts, 0.99).as_micros()
    ));
    for (label, p) in [("TCP", &alice), ("Unix socket", &carol), ("inproc", &dave)] {
        let total = args.bulk_mb << 20;
        let mut ch = p.open("bob", "sink", ()).await?;
        let chunk = vec![0x5Au8; 256 * 1024];
        let t = Instant::now();
        let mut sent = 0;
        while sent < total {
            ch.write_all(&chunk).await?;
            sent += chunk.len();
        }
        ch.close_write().await?;
        let secs = t.elapsed().as_secs_f64();
        let _ = ch.read_frame().await;
        note(format!(
            "bulk through one channel over {label}: {:.0} MB/s ({} MiB, received: {:?})",
            sent as f64 / secs / 1e6,
            args.bulk_mb,
            ch.meta()
                .trailers()
                .and_then(|t| t.get("bytes").map(str::to_owned))
                .unwrap_or_default()
        ));
    }
    let t = Instant::now();
    for _ in 0..500 {
        let mut ch = alice.open("bob", "echo", ()).await?;
        ch.write_all(b"x").await?;
        let mut one = [0u8; 1];
        ch.read_exact(&mut one).await?;
        ch.close().await?;
    }
    note(format!(
        "channel open + first byte back + close, one after another: {:.0} per second",
        500.0 / t.elapsed().as_secs_f64()
    ));

    step("13. Graceful shutdown");
    let reset = bob.shutdown().await;
    note(format!(
        "bob shut down ({reset} channel(s) reset after the close timeout); alice now sees peers {:?}",
        {
            // The loss reaches alice as her connection ends.
            for _ in 0..100 {
                if alice.peers().is_empty() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            alice.peers()
        }
    ));
    Ok(())
}
