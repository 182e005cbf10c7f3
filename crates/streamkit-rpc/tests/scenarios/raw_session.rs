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

/// A unary method takes its one input with "last": an input without it fails the
/// call with code 3 at once, so no second input can come after an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_input_must_be_the_last() {
    let (_rpc, _client, mut ch) = session().await;
    send(&mut ch, call(1, "add", Some("[2,3]"), false)).await;
    match recv(&mut ch).await {
        Some(Message::Error { id: 1, code, .. }) => assert_eq!(Code(code), Code::BAD_ARGUMENTS),
        other => panic!("expected code 3 for call 1, got {other:?}"),
    }
    // A later input for it is ignored (the call is over); the session serves on.
    send(&mut ch, item(1, "[4,5]", true)).await;
    // The input as an ITEM of its own, with "last": the answer.
    send(&mut ch, call(2, "add", None, false)).await;
    send(&mut ch, item(2, "[2,3]", true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(2, "5", true)));
    // Without "last": code 3.
    send(&mut ch, call(3, "add", None, false)).await;
    send(&mut ch, item(3, "[2,3]", false)).await;
    match recv(&mut ch).await {
        Some(Message::Error { id: 3, code, .. }) => assert_eq!(Code(code), Code::BAD_ARGUMENTS),
        other => panic!("expected code 3 for call 3, got {other:?}"),
    }
}

/// A caller that floods calls and never reads the answers: the callee holds at
/// most its queue of answers (1 MiB) and its concurrent calls, then cuts that
/// session off (reset); another caller on the same connection keeps working
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_floods_calls_and_never_reads_is_cut_off() {
    let (rpc, client, mut ch) = session().await;
    rpc.unary("big", |_ctx, n: usize| async move { Ok("x".repeat(n)) });
    let good = Rpc::new(&client).unwrap();
    let flood = async {
        // 20,000 calls, each answered with 4 KiB, and not one answer read.
        for id in 1..=20_000u64 {
            let m = Message::Call {
                id,
                method: "big".into(),
                budget_us: 0,
                input: Some(Bytes::from_static(b"4096")),
                last: true,
            };
            if ch.write_frame(&m.encode()).await.is_err() {
                break;
            }
        }
    };
    let work = async {
        for i in 0..200i64 {
            let sum: i64 = good.call("add", &(i, 1)).await.unwrap();
            assert_eq!(sum, i + 1);
        }
    };
    within(async { tokio::join!(flood, work) }).await;
    // The callee cut the session off: the channel is reset (what it had queued
    // for us is dropped), without waiting for us to read.
    let mut answers = 0usize;
    let end = loop {
        match within(ch.read_frame()).await {
            Ok(Some(f)) => answers += f.len(),
            other => break other,
        }
    };
    assert!(
        matches!(end, Err(streamkit::ChannelError::ResetByPeer { .. })),
        "{end:?} after {answers} bytes of answers"
    );
    let stats = rpc.peer().stats();
    assert!(stats.send_buffered < 1 << 20, "{stats:?}");
    let sum: i64 = within(good.call("add", &(40, 2))).await.unwrap();
    assert_eq!(sum, 42);
}

/// A callback argument must name a callback: a method name there is refused as
/// bad arguments, so a caller cannot make our handler call one of its ordinary
/// methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_argument_must_name_a_callback() {
    let (rpc, _client, mut ch) = session().await;
    rpc.unary(
        "notify",
        |_ctx, cb: streamkit_rpc::Callback<String, String>| async move {
            let _ = cb;
            Ok(())
        },
    );
    send(
        &mut ch,
        call(1, "notify", Some(r#"{"$callback":"admin.reset"}"#), true),
    )
    .await;
    // (The new method's catalogue comes first.)
    let mut answer = recv(&mut ch).await;
    while let Some(Message::Methods { .. }) = answer {
        answer = recv(&mut ch).await;
    }
    match answer {
        Some(Message::Error {
            id: 1,
            code,
            message,
            ..
        }) => {
            assert_eq!(Code(code), Code::BAD_ARGUMENTS);
            assert!(message.contains("is not a callback"), "{message}");
        }
        other => panic!("expected code 3, got {other:?}"),
    }
    let ok = format!(r#"{{"$callback":"$cb.{}"}}"#, "ab".repeat(16));
    send(
        &mut ch,
        Message::Call {
            id: 2,
            method: "notify".into(),
            budget_us: 0,
            input: Some(Bytes::from(ok)),
            last: true,
        },
    )
    .await;
    assert_eq!(recv(&mut ch).await, Some(item(2, "null", true)));
}

/// One peer's sessions share one budget and are limited in number: a caller
/// cannot multiply what it may make the callee hold by opening more sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_one_peer_are_limited() {
    let (_rpc, client, first) = session().await;
    let mut open = vec![first];
    for _ in 1..16 {
        let mut ch = within(client.open("server", "rpc", ["codec=json"]))
            .await
            .unwrap();
        assert!(matches!(recv(&mut ch).await, Some(Message::Methods { .. })));
        open.push(ch);
    }
    let mut over = within(client.open("server", "rpc", ["codec=json"]))
        .await
        .unwrap();
    match recv(&mut over).await {
        Some(Message::Error {
            id: 0,
            code,
            message,
            ..
        }) => {
            assert_eq!(Code(code), Code::RESOURCE_EXHAUSTED);
            assert!(message.contains("too many rpc sessions"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // One goes: another may come.
    drop(open.pop());
    let again = async {
        loop {
            let mut ch = client.open("server", "rpc", ["codec=json"]).await.unwrap();
            if let Some(Message::Methods { .. }) = recv(&mut ch).await {
                return ch;
            }
        }
    };
    let mut ch = within(again).await;
    send(&mut ch, call(1, "add", Some("[2,2]"), true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(1, "4", true)));
}

/// Inputs waiting for a handler are charged to the connection's memory budget
/// (they are the remote's bytes, taken out of the channel), and released when the
/// call goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_waiting_for_a_handler_count_in_the_connection_budget() {
    let (rpc, _client, mut ch) = session().await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    rpc.client_stream("hold", move |_ctx, _ins: Inputs<String>| {
        if let Some(tx) = started_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        async move {
            std::future::pending::<()>().await;
            Ok(0i64)
        }
    });
    // The catalogue changed with the new method.
    assert!(matches!(recv(&mut ch).await, Some(Message::Methods { .. })));
    let before = rpc.peer().stats().budgeted;
    send(&mut ch, call(1, "hold", None, false)).await;
    within(started_rx).await.unwrap();
    // 200 KiB of inputs (within the call's credit), never read by the handler.
    let input = Bytes::from(format!("\"{}\"", "i".repeat(100 * 1024)));
    for _ in 0..2 {
        let m = Message::Item {
            id: 1,
            payload: input.clone(),
            last: false,
        };
        within(ch.write_frame(&m.encode())).await.unwrap();
    }
    // A round trip on another call: the inputs were taken in before its answer.
    send(&mut ch, call(2, "add", Some("[1,1]"), true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(2, "2", true)));
    let held = rpc.peer().stats().budgeted;
    // Cancelled: the handler goes, and its inputs with it.
    send(&mut ch, Message::Cancel { id: 1 }).await;
    send(&mut ch, call(3, "add", Some("[2,2]"), true)).await;
    assert_eq!(recv(&mut ch).await, Some(item(3, "4", true)));
    // (The session channel's own window grew as its reader read: it stays.)
    let after = rpc.peer().stats().budgeted;
    assert!(
        held >= after + 200 * 1024,
        "before {before}, holding {held}, after {after}"
    );
}
