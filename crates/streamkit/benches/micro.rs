//! Micro-benchmarks: the frame codec, the channel state machine with no I/O, and a
//! 64-byte echo round trip between two peers over `inproc://` and over SSH on
//! loopback TCP.
//!
//! `cargo bench -p streamkit` (whole-system figures beside the baselines:
//! `streamkit bench`).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamkit::wire::frame::{self, FrameDecoder};
use streamkit::{Channel, Identity, Peer, PeerConfig, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frames(c: &mut Criterion) {
    const BATCH: usize = 256;
    for size in [64usize, 4096] {
        let payload = vec![7u8; size];
        let mut encoded = BytesMut::new();
        for _ in 0..BATCH {
            frame::encode(&payload, &mut encoded);
        }
        let mut g = c.benchmark_group(format!("frame/{size}B"));
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut out = BytesMut::with_capacity(encoded.len());
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..BATCH {
                    frame::encode(black_box(&payload), &mut out);
                }
            })
        });
        g.bench_function("decode", |b| {
            b.iter(|| {
                let mut d = FrameDecoder::new(1 << 20);
                let mut n = 0;
                d.push(black_box(&encoded), |_| n += 1).expect("frames fit");
                assert_eq!(n, BATCH);
            })
        });
        // Write, packetise, receive and read, both state machines in this thread.
        g.bench_function("through channel states", |b| {
            b.iter(|| streamkit::fuzzing::frames_through_states(BATCH, size))
        });
        g.finish();
    }
}

/// Two peers on `url`'s transport, bob echoing every channel, and one channel open.
async fn echo_channel(url: &str) -> (Peer, Peer, Channel) {
    let (a, b) = (Identity::generate(), Identity::generate());
    let bob = Peer::new(PeerConfig::new(
        "bob",
        b.clone(),
        Trust::new().with_key(a.public_key()),
    ))
    .expect("bob");
    let alice = Peer::new(PeerConfig::new(
        "alice",
        a,
        Trust::new().with_key(b.public_key()),
    ))
    .expect("alice");
    let at = bob.bind(url).await.expect("bind");
    alice.connect(&at.to_string()).await.expect("connect");
    let server = bob.clone();
    tokio::spawn(async move {
        while let Ok((_, ch)) = server.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = ch.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let ch = alice.open("bob", "echo", ()).await.expect("open");
    (alice, bob, ch)
}

fn echo(c: &mut Criterion) {
    // One thread runs both peers and the benchmark: no cross-thread wake-ups, so the
    // figure is the work of a round trip, not the scheduler's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut g = c.benchmark_group("echo 64B round trip");
    g.throughput(Throughput::Elements(1));
    for url in ["inproc://micro-echo", "tcp://127.0.0.1:0"] {
        let (_alice, _bob, mut ch) = rt.block_on(echo_channel(url));
        let msg = [3u8; 64];
        let mut back = [0u8; 64];
        let name = url.split(':').next().unwrap_or(url);
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    ch.write_all(&msg).await.expect("write");
                    ch.read_exact(&mut back).await.expect("read");
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frames, echo);
criterion_main!(benches);
