//! Pushes bytes through one channel between two peers in this process and prints
//! the rate: `cargo run --release --example bulk -- [tcp|unix] [MiB] [channels]`.
//!
//! `SK_PACKET`, `SK_WINDOW` and `SK_MAX_WINDOW` set `max_packet_size`,
//! `channel_window` and `max_channel_window`.

use std::time::Instant;

use streamkit::{Identity, Peer, PeerConfig, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "tcp".into());
    let mib: usize = args.next().map_or(Ok(512), |s| s.parse())?;
    let channels: usize = args.next().map_or(Ok(1), |s| s.parse())?;
    let (a, b) = (Identity::generate(), Identity::generate());
    let mut opts = streamkit::Options::default();
    if let Ok(p) = std::env::var("SK_PACKET") {
        opts.max_packet_size = p.parse()?;
    }
    if let Ok(w) = std::env::var("SK_WINDOW") {
        opts.channel_window = w.parse()?;
    }
    if let Ok(w) = std::env::var("SK_MAX_WINDOW") {
        opts.max_channel_window = w.parse()?;
    }
    let bob = Peer::new(
        PeerConfig::new("bob", b.clone(), Trust::new().with_key(a.public_key()))
            .with_options(opts.clone()),
    )?;
    let alice = Peer::new(
        PeerConfig::new("alice", a, Trust::new().with_key(b.public_key())).with_options(opts),
    )?;
    let dir = std::env::temp_dir().join(format!("sk-bulk-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = match kind.as_str() {
        "unix" => format!("unix://{}", dir.join("b.sock").display()),
        _ => "tcp://127.0.0.1:0".to_owned(),
    };
    let at = bob.bind(&url).await?;
    alice.connect(&at.to_string()).await?;
    // Bob reads every channel to its end and counts the bytes.
    let sink = tokio::spawn(async move {
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..channels {
            let (_, mut ch) = bob.accept().await.expect("a channel");
            readers.spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0usize;
                loop {
                    let k = ch.read(&mut buf).await.expect("read");
                    if k == 0 {
                        return n;
                    }
                    n += k;
                }
            });
        }
        let mut n = 0usize;
        while let Some(r) = readers.join_next().await {
            n += r.expect("a reader");
        }
        // Keep bob (and so the connection) until alice has her acknowledgement:
        // dropping the last handle of a peer drops its connections at once.
        (n, bob)
    });
    let mut chans = Vec::new();
    for _ in 0..channels {
        chans.push(alice.open("bob", "sink", ()).await?);
    }
    let t = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for mut ch in chans {
        writers.spawn(async move {
            let chunk = vec![0x5Au8; 256 * 1024];
            for _ in 0..(mib * 4 / channels) {
                ch.write_all(&chunk).await?;
            }
            ch.close_write().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(r) = writers.join_next().await {
        r?.map_err(|e| e.to_string())?;
    }
    let (got, _bob) = sink.await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{kind}, {channels} channel(s): {} MiB in {secs:.2} s = {:.0} MB/s",
        got >> 20,
        got as f64 / secs / 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
