//! Micro-benchmarks of the RPC layer's pure parts: each codec encoding and decoding
//! a typical object, and the wire messages that carry them.
//!
//! `cargo bench -p streamkit-rpc` (whole-system figures beside tonic: `streamkit bench`).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use streamkit_rpc::wire::Message as Wire;
use streamkit_rpc::{Codec, Message};

/// A small, typical RPC argument.
#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    items: Vec<Item>,
    express: bool,
}

#[derive(Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    price_cents: u64,
}

fn order() -> Order {
    Order {
        id: 4_2017,
        customer: "ada@example.com".into(),
        items: (0..4)
            .map(|i| Item {
                sku: format!("SKU-{i:05}"),
                quantity: i + 1,
                price_cents: 1999 * u64::from(i + 1),
            })
            .collect(),
        express: true,
    }
}

fn codecs(c: &mut Criterion) {
    let value = order();
    for codec in [Codec::Json, Codec::MsgPack, Codec::Cbor, Codec::Protobuf] {
        let encoded = value.encode(codec).expect("encodes");
        let mut g = c.benchmark_group(format!("codec/{}", codec.name()));
        g.throughput(Throughput::Elements(1));
        g.bench_function("encode", |b| {
            b.iter(|| black_box(&value).encode(codec).expect("encodes"))
        });
        g.bench_function("decode", |b| {
            b.iter(|| Order::decode(codec, black_box(&encoded)).expect("decodes"))
        });
        g.finish();
    }
}

fn wire(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; 100]);
    let call = Wire::Call {
        id: 1_000_001,
        method: "orders.place".into(),
        budget_us: 5_000_000,
        input: Some(payload.clone()),
        last: true,
    };
    let item = Wire::Item {
        id: 1_000_001,
        payload,
        last: false,
    };
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    for (name, msg) in [("call", &call), ("item", &item)] {
        let encoded = msg.encode();
        g.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| black_box(msg).encode())
        });
        g.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| Wire::decode(black_box(&encoded)).expect("decodes"))
        });
    }
    g.finish();
}

criterion_group!(benches, codecs, wire);
criterion_main!(benches);
