//! RPC scenarios: real peers over real TCP connections (and in-process, where the
//! transport matters), every call shape, every codec, bad input.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamkit::{Identity, Options, Peer, PeerConfig, Trust};
use streamkit_rpc::{
    Callback, Code, Codec, Context, Inputs, Outputs, Proto, Rpc, RpcError, RpcOptions,
};
use tokio::sync::mpsc;

/// Fails the test if `f` hangs; it times nothing.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("operation hung for 60 s")
}

struct Net {
    ids: Vec<(String, Identity)>,
}

impl Net {
    fn new(names: &[&str]) -> Net {
        Net {
            ids: names
                .iter()
                .map(|n| (n.to_string(), Identity::generate()))
                .collect(),
        }
    }

    /// A peer trusting every other peer of the net.
    fn peer(&self, name: &str) -> Peer {
        let mut trust = Trust::new();
        for (_, id) in &self.ids {
            trust = trust.with_key(id.public_key());
        }
        let id = &self.ids.iter().find(|(n, _)| n == name).unwrap().1;
        Peer::new(PeerConfig::new(name, id.clone(), trust).with_options(Options::default()))
            .unwrap()
    }
}

/// A server peer bound on loopback TCP and a client peer connected to it.
async fn two(transport: &str) -> (Rpc, Rpc) {
    two_with(transport, RpcOptions::default()).await
}

async fn two_with(transport: &str, client_opts: RpcOptions) -> (Rpc, Rpc) {
    let net = Net::new(&["server", "client"]);
    let s = net.peer("server");
    let c = net.peer("client");
    let url = match transport {
        "tcp" => "tcp://127.0.0.1:0".to_string(),
        _ => format!("inproc://rpc-{}", unique()),
    };
    let at = s.bind(&url).await.unwrap().to_string();
    within(c.connect(&at)).await.unwrap();
    let server = Rpc::new(&s).unwrap();
    arith(&server);
    (server, Rpc::with_options(&c, client_opts).unwrap())
}

fn unique() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::process::id() as u64 * 1000 + N.fetch_add(1, Ordering::SeqCst) as u64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pair {
    a: i64,
    b: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DivByZero {
    dividend: i64,
}

/// The arithmetic service of the original Duplex RPC, plus streams.
fn arith(rpc: &Rpc) {
    rpc.unary("arith.add", |_ctx, p: Pair| async move { Ok(p.a + p.b) });
    rpc.unary(
        "arith.multiply",
        |_ctx, p: Pair| async move { Ok(p.a * p.b) },
    );
    rpc.unary("arith.divide", |_ctx, p: Pair| async move {
        if p.b == 0 {
            return Err(
                RpcError::new(Code(1000), "divide by zero").with_data(DivByZero { dividend: p.a })
            );
        }
        Ok(p.a / p.b)
    });
    rpc.server_stream(
        "arith.count",
        |_ctx, n: u32, mut out: Outputs<u32>| async move {
            for i in 1..=n {
                out.send(&i).await?;
            }
            Ok(())
        },
    );
    rpc.client_stream("arith.sum", |_ctx, mut ins: Inputs<i64>| async move {
        let mut sum = 0;
        while let Some(x) = ins.next().await {
            sum += x?;
        }
        Ok(sum)
    });
    rpc.bidi(
        "arith.echo",
        |_ctx, mut ins: Inputs<String>, mut out: Outputs<String>| async move {
            while let Some(x) = ins.next().await {
                out.send(&x?).await?;
            }
            Ok(())
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arithmetic_suite() {
    for transport in ["tcp", "inproc"] {
        let (_server, client) = two(transport).await;
        let sum: i64 = within(client.call("arith.add", &Pair { a: 1, b: 2 }))
            .await
            .unwrap();
        assert_eq!(sum, 3);
        let product: i64 = within(client.call("arith.multiply", &Pair { a: 6, b: 7 }))
            .await
            .unwrap();
        assert_eq!(product, 42);
        let err = within(client.call::<_, i64>("arith.divide", &Pair { a: 9, b: 0 }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code(1000));
        assert_eq!(err.message(), "divide by zero");
        assert!(err.is_remote());
        assert_eq!(
            err.data::<DivByZero>().unwrap().unwrap(),
            DivByZero { dividend: 9 }
        );
        let err = within(client.call::<_, i64>("arith.nope", &Pair { a: 1, b: 1 }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::METHOD_NOT_FOUND);
        assert_eq!(
            err.to_string(),
            r#"remote error (method not found): method "arith.nope" not found on peer "server""#
        );
        // Named, the server itself answers.
        let err = within(
            client
                .caller()
                .peer("server")
                .call::<_, i64>("arith.nope", &1),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::METHOD_NOT_FOUND);
        assert!(err.is_remote());
        // Bad arguments: the server says why, and keeps serving.
        let err = within(client.call::<_, i64>("arith.add", &"not a pair".to_string()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::BAD_ARGUMENTS);
        assert!(
            err.message()
                .starts_with("bad arguments: json: invalid type"),
            "{err}"
        );
        let sum: i64 = within(client.call("arith.add", &Pair { a: 2, b: 2 }))
            .await
            .unwrap();
        assert_eq!(sum, 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_in_every_direction() {
    let (_server, client) = two("tcp").await;
    // Streaming output: 5 items.
    let items: Vec<u32> = within(
        client
            .call_stream("arith.count", &5u32)
            .await
            .unwrap()
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(items, [1, 2, 3, 4, 5]);
    // Streaming input: the sum of 5.
    let mut call = within(client.open_call::<i64, i64>("arith.sum"))
        .await
        .unwrap();
    for x in [1, 2, 3, 4, 5] {
        call.send(&x).await.unwrap();
    }
    assert_eq!(within(call.finish()).await.unwrap(), 15);
    // Full duplex: each line comes back before the next is sent.
    let mut call = within(client.open_call::<String, String>("arith.echo"))
        .await
        .unwrap();
    for i in 0..50 {
        let line = format!("line {i}, with \"quotes\" and ünïcödé");
        call.send(&line).await.unwrap();
        assert_eq!(within(call.next()).await.unwrap().unwrap(), line);
    }
    call.close_send().await.unwrap();
    assert!(within(call.next()).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_mid_stream_and_before_any_item() {
    let (server, client) = two("tcp").await;
    server.server_stream(
        "fail.after",
        |_ctx, n: u32, mut out: Outputs<u32>| async move {
            for i in 0..n {
                out.send(&i).await?;
            }
            Err(RpcError::new(Code(77), format!("failed after {n}")))
        },
    );
    let mut s = within(client.call_stream::<_, u32>("fail.after", &30u32))
        .await
        .unwrap();
    for i in 0..30 {
        assert_eq!(within(s.next()).await.unwrap().unwrap(), i);
    }
    let err = within(s.next()).await.unwrap().unwrap_err();
    assert_eq!((err.code(), err.message()), (Code(77), "failed after 30"));
    assert!(within(s.next()).await.is_none());
    let err = within(
        client
            .call_stream::<_, u32>("fail.after", &0u32)
            .await
            .unwrap()
            .collect(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.message(), "failed after 0");
    // The connection works afterwards.
    let sum: i64 = within(client.call("arith.add", &Pair { a: 20, b: 22 }))
        .await
        .unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_cancels_the_handler() {
    let (server, client) = two("tcp").await;
    let (tx, mut rx) = mpsc::channel::<&'static str>(4);
    server.server_stream(
        "forever",
        move |ctx: Context, _: (), mut out: Outputs<u64>| {
            let tx = tx.clone();
            async move {
                // Reports cancellation from a task of its own: the handler's future is dropped.
                let watch = ctx.clone();
                let tx2 = tx.clone();
                tokio::spawn(async move {
                    watch.cancelled().await;
                    let _ = tx2.send("cancelled").await;
                });
                for i in 0.. {
                    out.send(&i).await?;
                }
                Ok(())
            }
        },
    );
    let mut s = within(client.call_stream::<_, u64>("forever", &()))
        .await
        .unwrap();
    for i in 0..100 {
        assert_eq!(within(s.next()).await.unwrap().unwrap(), i);
    }
    drop(s);
    assert_eq!(within(rx.recv()).await, Some("cancelled"));
    // A fresh call succeeds.
    let sum: i64 = within(client.call("arith.add", &Pair { a: 1, b: 1 }))
        .await
        .unwrap();
    assert_eq!(sum, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_complete_out_of_order() {
    let (server, client) = two("tcp").await;
    // Each call waits for its own release: released in reverse order.
    let gates: Arc<Vec<tokio::sync::Notify>> =
        Arc::new((0..10).map(|_| tokio::sync::Notify::new()).collect());
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    {
        let (gates, started) = (gates.clone(), started.clone());
        server.unary("wait", move |_ctx, i: usize| {
            let (gates, started) = (gates.clone(), started.clone());
            async move {
                let released = gates[i].notified();
                started.add_permits(1);
                released.await;
                Ok(i * 10)
            }
        });
    }
    let (done_tx, mut done_rx) = mpsc::channel(10);
    for i in 0..10usize {
        let (client, done_tx) = (client.clone(), done_tx.clone());
        tokio::spawn(async move {
            let r: usize = client.call("wait", &i).await.unwrap();
            done_tx.send((i, r)).await.unwrap();
        });
    }
    within(started.acquire_many(10)).await.unwrap().forget();
    let mut order = Vec::new();
    for i in (0..10).rev() {
        gates[i].notify_one();
        let (got, r) = within(done_rx.recv()).await.unwrap();
        assert_eq!(r, got * 10);
        order.push(got);
    }
    assert_eq!(order, (0..10).rev().collect::<Vec<_>>());
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoPair {
    #[prost(int64, tag = "1")]
    a: i64,
    #[prost(int64, tag = "2")]
    b: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_on_every_call_shape() {
    let (server, client) = two("tcp").await;
    server.unary("proto.add", |_ctx, p: Proto<ProtoPair>| async move {
        Ok(Proto(ProtoPair {
            a: p.0.a + p.0.b,
            b: 0,
        }))
    });
    for codec in Codec::ALL {
        let c = client.caller().codec(codec);
        let sum: i64 = within(c.call("arith.add", &Pair { a: 40, b: 2 }))
            .await
            .unwrap();
        assert_eq!(sum, 42, "{codec}");
        let items: Vec<u32> = within(c.call_stream("arith.count", &5u32).await.unwrap().collect())
            .await
            .unwrap();
        assert_eq!(items, [1, 2, 3, 4, 5], "{codec}");
        let mut call = within(c.open_call::<i64, i64>("arith.sum")).await.unwrap();
        for x in 1..=5 {
            call.send(&x).await.unwrap();
        }
        assert_eq!(within(call.finish()).await.unwrap(), 15, "{codec}");
        let mut call = within(c.open_call::<String, String>("arith.echo"))
            .await
            .unwrap();
        call.send(&"héllo".to_string()).await.unwrap();
        assert_eq!(
            within(call.next()).await.unwrap().unwrap(),
            "héllo",
            "{codec}"
        );
        let out = within(call.into_outputs()).await.unwrap();
        assert!(within(out.collect()).await.unwrap().is_empty());
        // prost messages, natively in protobuf and as bytes in the others.
        let r: Proto<ProtoPair> = within(c.call("proto.add", &Proto(ProtoPair { a: 5, b: 6 })))
            .await
            .unwrap();
        assert_eq!(r.0.a, 11, "{codec}");
        // Remote error data in the call's codec.
        let err = within(c.call::<_, i64>("arith.divide", &Pair { a: 3, b: 0 }))
            .await
            .unwrap_err();
        assert_eq!(
            err.data::<DivByZero>().unwrap().unwrap(),
            DivByZero { dividend: 3 },
            "{codec}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_codec_is_refused_clearly() {
    // A foreign client names a codec we do not have: the session says why.
    let net = Net::new(&["server", "foreign"]);
    let (server_peer, client_peer) = (net.peer("server"), net.peer("foreign"));
    let at = server_peer
        .bind("tcp://127.0.0.1:0")
        .await
        .unwrap()
        .to_string();
    within(client_peer.connect(&at)).await.unwrap();
    let server = Rpc::new(&server_peer).unwrap();
    arith(&server);
    let mut ch = within(client_peer.open("server", "rpc", ["codec=yaml"]))
        .await
        .unwrap();
    let frame = within(ch.read_frame()).await.unwrap().unwrap();
    match streamkit_rpc::wire::Message::decode(&frame).unwrap() {
        streamkit_rpc::wire::Message::Error {
            id, code, message, ..
        } => {
            assert_eq!((id, Code(code)), (0, Code::UNKNOWN_CODEC));
            assert_eq!(
                message,
                r#"unknown codec "yaml" (known: json, msgpack, cbor, protobuf)"#
            );
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(within(ch.read_frame()).await.unwrap(), None);
    // The connection still serves the known codecs.
    let sum: i64 = within(
        Rpc::new(&client_peer)
            .unwrap()
            .call("arith.add", &Pair { a: 1, b: 2 }),
    )
    .await
    .unwrap();
    assert_eq!(sum, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_across_servers_behind_a_hub_with_callbacks() {
    // The client and both servers are connected only to the hub: calls reach
    // the servers by name through it, end to end.
    let net = Net::new(&["hub", "client", "s1", "s2"]);
    let hub = streamkit::hub::Hub::new(
        PeerConfig::new("hub", net.ids[0].1.clone(), {
            let mut t = Trust::new();
            for (_, id) in &net.ids {
                t = t.with_key(id.public_key());
            }
            t
        })
        .with_options({
            // The hub routes and serves nothing of its own.
            let mut o = Options::default();
            o.services = streamkit::Services::none();
            o
        }),
        streamkit::hub::HubConfig::default(),
    )
    .unwrap();
    let at = hub
        .peer()
        .bind("tcp://127.0.0.1:0")
        .await
        .unwrap()
        .to_string();
    let mut servers = Vec::new();
    for name in ["s1", "s2"] {
        let p = net.peer(name);
        within(p.connect(&at)).await.unwrap();
        let rpc = Rpc::new(&p).unwrap();
        rpc.unary("who", |ctx: Context, (): ()| {
            let me = ctx.rpc().peer().name().to_owned();
            async move { Ok(me) }
        });
        // A callback from the caller, called back through the same session.
        rpc.unary(
            "shout",
            |ctx: Context, cb: Callback<String, String>| async move {
                let loud: String = cb.call(&ctx, &"hello".to_owned()).await?;
                Ok(loud)
            },
        );
        servers.push(rpc);
    }
    let client = net.peer("client");
    within(client.connect(&at)).await.unwrap();
    let sees = |n: &str| client.peers().iter().any(|p| p == n);
    within(async {
        while !(sees("s1") && sees("s2")) {
            let mut events = client.events();
            let _ = tokio::time::timeout(Duration::from_millis(50), events.next()).await;
        }
    })
    .await;
    let rpc = Rpc::new(&client).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let who: String = within(rpc.call("who", &())).await.unwrap();
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [("s1".into(), 5), ("s2".into(), 5)]
    );
    let cb = rpc.callback(|_ctx: Context, s: String| async move { Ok(s.to_uppercase()) });
    let loud: String = within(rpc.caller().peer("s2").call("shout", &cb))
        .await
        .unwrap();
    assert_eq!(loud, "HELLO");
    assert!(hub.stats().relayed >= 2);
}

#[tokio::test]
async fn round_robin_across_three_servers() {
    let net = Net::new(&["client", "s1", "s2", "s3"]);
    let client = net.peer("client");
    let mut servers = Vec::new();
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..3).map(|_| AtomicUsize::new(0)).collect());
    for (i, name) in ["s1", "s2", "s3"].into_iter().enumerate() {
        let p = net.peer(name);
        let at = p.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        within(client.connect(&at)).await.unwrap();
        let rpc = Rpc::new(&p).unwrap();
        let counts = counts.clone();
        rpc.unary("who", move |ctx: Context, (): ()| {
            counts[i].fetch_add(1, Ordering::SeqCst);
            let me = ctx.rpc().peer().name().to_owned();
            async move { Ok(me) }
        });
        servers.push(rpc);
    }
    // A fourth peer that does not serve the method gets no calls.
    let idle = net.peer("client");
    drop(idle);
    let rpc = Rpc::new(&client).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let who: String = within(rpc.call("who", &())).await.unwrap();
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [("s1".into(), 10), ("s2".into(), 10), ("s3".into(), 10)]
    );
    for c in counts.iter() {
        assert_eq!(c.load(Ordering::SeqCst), 10);
    }
}

#[derive(Serialize, Deserialize)]
struct Subscribe {
    topic: String,
    on_event: Callback<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_both_ways() {
    let (server, client) = two("tcp").await;
    // The server calls back a function the client passed as an argument, while
    // the call is open.
    server.unary(
        "events.subscribe",
        |ctx: Context, sub: Subscribe| async move {
            let mut total = 0;
            for i in 0..3 {
                total += sub
                    .on_event
                    .call(&ctx, &format!("{}#{i}", sub.topic))
                    .await?;
            }
            Ok(total)
        },
    );
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let on_event = {
        let got = got.clone();
        client.callback(move |ctx: Context, ev: String| {
            assert_eq!(ctx.caller(), "server");
            got.lock().unwrap().push(ev.clone());
            async move { Ok(ev.len()) }
        })
    };
    let total: usize = within(client.call(
        "events.subscribe",
        &Subscribe {
            topic: "news".into(),
            on_event: on_event.clone(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(total, 3 * "news#0".len());
    assert_eq!(*got.lock().unwrap(), ["news#0", "news#1", "news#2"]);
    // A handler calls back the caller by name: the host asks its plugin.
    client.unary("plugin.describe", |_ctx, (): ()| async move {
        Ok("plugin v1".to_string())
    });
    server.unary("host.register", |ctx: Context, (): ()| async move {
        let d: String = ctx.call_back().call("plugin.describe", &()).await?;
        Ok(format!("registered {d} from {}", ctx.caller()))
    });
    let r: String = within(client.call("host.register", &())).await.unwrap();
    assert_eq!(r, "registered plugin v1 from client");
    // And the other way: the server hands the client a callback of its own in a
    // streamed output, and keeps it while the call is open.
    server.bidi(
        "events.counter",
        |ctx: Context, mut ins: Inputs<String>, mut out: Outputs<Callback<u32, u32>>| async move {
            let total = Arc::new(AtomicUsize::new(0));
            let t = total.clone();
            let add = ctx.rpc().callback(move |_ctx, n: u32| {
                let now = t.fetch_add(n as usize, Ordering::SeqCst) + n as usize;
                async move { Ok(now as u32) }
            });
            out.send(&add).await?;
            // Held until the client says it is done.
            while let Some(x) = ins.next().await {
                x?;
            }
            assert_eq!(total.load(Ordering::SeqCst), 1 + 2 + 3);
            Ok(())
        },
    );
    let mut call = within(client.open_call::<String, Callback<u32, u32>>("events.counter"))
        .await
        .unwrap();
    let add = within(call.next()).await.unwrap().unwrap();
    let mut last = 0;
    for n in 1..=3 {
        last = within(add.call_on(&client, "server", &n)).await.unwrap();
    }
    assert_eq!(last, 6);
    call.send(&"done".to_string()).await.unwrap();
    let rest = within(within(call.into_outputs()).await.unwrap().collect())
        .await
        .unwrap();
    assert!(rest.is_empty());
    // Once the call is over, the server's callback is gone.
    let err = within(add.call_on(&client, "server", &1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::METHOD_NOT_FOUND);
    // Once dropped, the callback is gone.
    let stale: Callback<String, usize> =
        serde_json::from_value(serde_json::to_value(&on_event).unwrap()).unwrap();
    drop(on_event);
    let err = within(stale.call_on(&server, "client", &"late".to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::METHOD_NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_propagate_through_two_hops() {
    // a calls b, b calls c, c waits forever: everyone gives up at a's deadline.
    let net = Net::new(&["a", "b", "c"]);
    let (a, b, c) = (net.peer("a"), net.peer("b"), net.peer("c"));
    let b_at = b.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    let c_at = c.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    within(a.connect(&b_at)).await.unwrap();
    within(b.connect(&c_at)).await.unwrap();
    let (ra, rb, rc) = (
        Rpc::new(&a).unwrap(),
        Rpc::new(&b).unwrap(),
        Rpc::new(&c).unwrap(),
    );
    let (tx, mut rx) = mpsc::channel::<(Duration, bool)>(2);
    rc.unary("c.wait", move |ctx: Context, (): ()| {
        let tx = tx.clone();
        async move {
            let budget = ctx
                .deadline()
                .unwrap()
                .saturating_duration_since(tokio::time::Instant::now());
            let watch = ctx.clone();
            tokio::spawn(async move {
                watch.cancelled().await;
                let _ = tx.send((budget, watch.is_cancelled())).await;
            });
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    rb.unary("b.relay", |ctx: Context, (): ()| async move {
        assert!(ctx.deadline().is_some());
        ctx.caller_options()
            .peer("c")
            .call::<_, ()>("c.wait", &())
            .await
    });
    let t0 = std::time::Instant::now();
    let err = within(
        ra.caller()
            .peer("b")
            .timeout(Duration::from_millis(300))
            .call::<_, ()>("b.relay", &()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let (budget, cancelled) = within(rx.recv()).await.unwrap();
    assert!(cancelled);
    assert!(
        budget <= Duration::from_millis(300) && budget > Duration::ZERO,
        "{budget:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_only_its_call() {
    let (server, client) = two("tcp").await;
    server.unary("boom", |_ctx, (): ()| async move {
        if true {
            panic!("kaboom");
        }
        Ok(())
    });
    let err = within(client.call::<_, ()>("boom", &())).await.unwrap_err();
    assert_eq!(err.code(), Code::INTERNAL);
    assert_eq!(err.message(), "handler panicked: kaboom");
    let sum: i64 = within(client.call("arith.add", &Pair { a: 1, b: 2 }))
        .await
        .unwrap();
    assert_eq!(sum, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_per_call() {
    let (_server, client) = two("tcp").await;
    // Inputs forever to a unary method: refused after the first object.
    let mut call = within(client.caller().call_raw("arith.add", None, false))
        .await
        .unwrap();
    let one = bytes::Bytes::from(serde_json::to_vec(&Pair { a: 1, b: 1 }).unwrap());
    let mut refused = None;
    for _ in 0..10_000 {
        if let Err(e) = call.send_raw(one.clone()).await {
            refused = Some(e);
            break;
        }
    }
    let err = match refused {
        Some(e) => e,
        None => within(call.next_raw()).await.unwrap().unwrap_err(),
    };
    assert_eq!(err.code(), Code::BAD_ARGUMENTS, "{err}");
    // An input that does not decode under the codec: that call fails.
    let mut call = within(client.caller().codec(Codec::Cbor).call_raw(
        "arith.add",
        Some(bytes::Bytes::from_static(b"\xff\xff")),
        true,
    ))
    .await
    .unwrap();
    let err = within(call.next_raw()).await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::BAD_ARGUMENTS);
    assert!(err.message().starts_with("bad arguments: cbor:"), "{err}");
    // An oversize object: refused before it is sent.
    let big = "x".repeat(5 << 20);
    let err = within(client.call::<_, String>("arith.echo", &big))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED);
    assert!(!err.is_remote());
    // Everything still works.
    let sum: i64 = within(client.call("arith.add", &Pair { a: 1, b: 2 }))
        .await
        .unwrap();
    assert_eq!(sum, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_object_fails_only_its_call() {
    // A client whose own limit is higher than the server's sends 5 MiB objects.
    let mut lax = RpcOptions::default();
    lax.max_message_size = 8 << 20;
    let (_server, client) = two_with("tcp", lax).await;
    let big = "x".repeat(5 << 20);
    let (slow, fast) = tokio::join!(
        client.call::<_, String>("arith.echo", &big),
        client.call::<_, i64>("arith.add", &Pair { a: 1, b: 2 })
    );
    let err = slow.unwrap_err();
    assert_eq!(err.code(), Code::RESOURCE_EXHAUSTED);
    assert!(err.is_remote());
    assert_eq!(
        err.message(),
        "object of 5242882 bytes exceeds the limit of 4194304 bytes"
    );
    assert_eq!(fast.unwrap(), 3);
    let mut call = within(client.open_call::<String, String>("arith.echo"))
        .await
        .unwrap();
    call.send(&"small".to_string()).await.unwrap();
    assert_eq!(within(call.next()).await.unwrap().unwrap(), "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls() {
    let (_server, client) = two("tcp").await;
    let calls = (0..10_000i64).map(|i| {
        let client = client.clone();
        async move {
            let r: i64 = client
                .call("arith.multiply", &Pair { a: i, b: 3 })
                .await
                .unwrap();
            assert_eq!(r, i * 3);
        }
    });
    within(futures::future::join_all(calls)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gives_its_service_back_when_dropped() {
    let (server, _client) = two("inproc").await;
    let peer = server.peer().clone();
    assert!(Rpc::new(&peer).is_err(), "one node per peer");
    drop(server);
    let again = Rpc::new(&peer).unwrap();
    assert_eq!(again.methods(), Vec::<String>::new());
}
