//! The RPC wire spoken by hand, as a foreign client would: what the server does
//! with messages our own client never sends.

use std::time::Duration;

use bytes::Bytes;
use streamkit::{Channel, Identity, Peer, PeerConfig, Trust};
use streamkit_rpc::wire::Message;
use streamkit_rpc::{Code, Inputs, Rpc};

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("operation hung for 60 s")
}

/// A served node and a raw session channel to it (catalogue already read).
async fn session() -> (Rpc, Peer, Channel) {
    let (a, b) = (Identity::generate(), Identity::generate());
    let server = Peer::new(PeerConfig::new(
        "server",
        a.clone(),
        Trust::new().with_key(b.public_key()),
    ))
    .unwrap();
    let client = Peer::new(PeerConfig::new(
        "client",
        b,
        Trust::new().with_key(a.public_key()),
    ))
    .unwrap();
    let at = server.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
    within(client.connect(&at)).await.unwrap();
    let rpc = Rpc::new(&server).unwrap();
    rpc.unary("add", |_ctx, (a, b): (i64, i64)| async move { Ok(a + b) });
    rpc.client_stream("sum", |_ctx, mut ins: Inputs<i64>| async move {
        let mut s = 0;
        while let Some(x) = ins.next().await {
            s += x?;
        }
        Ok(s)
    });
    let mut ch = within(client.open("server", "rpc", ["codec=json"]))
        .await
        .unwrap();
    match recv(&mut ch).await {
        Some(Message::Methods { names }) => assert_eq!(names, ["add", "sum"]),
        other => panic!("expected the catalogue, got {other:?}"),
    }
    (rpc, client, ch)
}

async fn send(ch: &mut Channel, m: Message) {
    within(ch.write_frame(&m.encode())).await.unwrap();
}

async fn recv(ch: &mut Channel) -> Option<Message> {
    let f = within(ch.read_frame()).await.unwrap()?;
    Some(Message::decode(&f).unwrap())
}

fn call(id: u64, method: &str, input: Option<&'static str>, last: bool) -> Message {
    Message::Call {
        id,
        method: method.into(),
        budget_us: 0,
        input: input.map(|s| Bytes::from_static(s.as_bytes())),
        last,
    }
}

fn item(id: u64, json: &'static str, last: bool) -> Message {
    Message::Item {
        id,
        payload: Bytes::from_static(json.as_bytes()),
        last,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_is_one_frame_each_way() {
    let (_rpc, _client, mut ch) = session().await;
    send(&mut ch, call(1, "add", Some("[2,3]"), true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(1, "5", true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_overtakes_its_call_stops_it() {
    let (_rpc, _client, mut ch) = session().await;
    // Cancelled before it started: it never runs, and never answers.
    send(&mut ch, Message::Cancel { id: 5 }).await;
    send(&mut ch, call(5, "sum", None, false)).await;
    send(&mut ch, call(6, "add", Some("[1,1]"), true)).await;
    assert_eq!(recv(&mut ch).await.unwrap().id(), 6);
    // Inputs for the cancelled call are dropped; the session still serves.
    send(&mut ch, item(5, "1", true)).await;
    // Had call 5 run, its input would have completed it: two more round trips give
    // its answer time to show up ahead of theirs.
    send(&mut ch, call(7, "add", Some("[2,2]"), true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(7, "4", true)));
    send(&mut ch, call(8, "add", Some("[3,3]"), true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(8, "6", true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_call_id_ends_the_session() {
    let (_rpc, client, mut ch) = session().await;
    send(&mut ch, call(1, "sum", None, false)).await;
    send(&mut ch, call(1, "sum", None, false)).await;
    match recv(&mut ch).await {
        Some(Message::Error {
            id: 0,
            code,
            message,
            ..
        }) => {
            assert_eq!(Code(code), Code::INTERNAL);
            assert_eq!(message, "call id 1 is already in use");
        }
        other => panic!("expected a session error, got {other:?}"),
    }
    assert_eq!(within(ch.read_frame()).await.unwrap(), None);
    // The connection is fine: a fresh session works.
    let sum: i64 = within(Rpc::new(&client).unwrap().call("add", &(40, 2)))
        .await
        .unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_ends_only_the_session() {
    let (_rpc, client, mut ch) = session().await;
    within(ch.write_frame(b"\x09garbage")).await.unwrap();
    match recv(&mut ch).await {
        Some(Message::Error { id: 0, message, .. }) => {
            assert_eq!(message, "malformed message: unknown rpc message kind 9");
        }
        other => panic!("expected a session error, got {other:?}"),
    }
    let sum: i64 = within(Rpc::new(&client).unwrap().call("add", &(1, 2)))
        .await
        .unwrap();
    assert_eq!(sum, 3);
}
