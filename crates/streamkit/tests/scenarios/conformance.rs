//! The channel conformance suite: every channel scenario, run over every transport
//! (TCP, Unix sockets, in-process) from this one place.

use std::time::Duration;

use crate::common::*;
use streamkit::{ChannelError, Headers, OpenErrorKind, OpenRefusal, ResetCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Every scenario also runs through a hub, end to end and taking the hub's word
// (`through_hub::`): two peers whose only connection is to the hub.
over_all_and_hubs! {
    names_are_known_on_both_sides => names_are_known_on_both_sides;
    direction_does_not_matter => direction_does_not_matter;
    headers_survive_any_content => headers_survive_any_content;
    trailers_travel_both_ways => trailers_travel_both_ways;
    half_close_keeps_the_other_direction => half_close_keeps_the_other_direction;
    reset_is_an_error_not_eof => reset_is_an_error_not_eof;
    errors_before_the_end_are_never_missed => errors_before_the_end_are_never_missed;
    unknown_service_keeps_the_connection => unknown_service_keeps_the_connection;
    a_listened_service_has_its_own_queue => a_listened_service_has_its_own_queue;
    oversize_frame_fails_only_that_channel => oversize_frame_fails_only_that_channel;
    writing_to_a_closed_channel_is_an_error => writing_to_a_closed_channel_is_an_error;
    a_stalled_channel_does_not_stall_the_others => a_stalled_channel_does_not_stall_the_others;
    a_thousand_channels_at_once => a_thousand_channels_at_once;
    vanished_peer_fails_reads_and_leaves_peers => vanished_peer_fails_reads_and_leaves_peers;
    close_without_reading_completes => close_without_reading_completes;
    a_close_to_a_dropped_reader_is_not_success => a_close_to_a_dropped_reader_is_not_success;
    an_open_reset_at_once_fails_instead_of_hanging => an_open_reset_at_once_fails_instead_of_hanging;
    error_frames_larger_than_the_window => error_frames_larger_than_the_window;
    // Channels of channels
    children_nest_both_ways_to_any_depth => children_nest_both_ways_to_any_depth;
    closing_a_parent_closes_its_children => closing_a_parent_closes_its_children;
    a_child_of_a_closed_parent_fails_clearly => a_child_of_a_closed_parent_fails_clearly;
    children_closed_before_accept_leave_the_queue => children_closed_before_accept_leave_the_queue;
    a_deep_chain_of_unaccepted_children_closes => a_deep_chain_of_unaccepted_children_closes;
    a_child_finished_before_accept_keeps_its_data => a_child_finished_before_accept_keeps_its_data;
    waiting_children_are_limited_per_connection => waiting_children_are_limited_per_connection;
    // Join, and frames as Stream/Sink
    join_splices_a_socket_both_ways => join_splices_a_socket_both_ways;
    a_joined_socket_that_resets_resets_the_channel => a_joined_socket_that_resets_resets_the_channel;
    frames_as_stream_and_sink => frames_as_stream_and_sink;
}

/// The peers a peer sees, but for the hub it reaches them through.
fn others(p: &streamkit::Peer) -> Vec<String> {
    p.peers().into_iter().filter(|n| n != "hub").collect()
}

async fn names_are_known_on_both_sides(kind: Kind) {
    let p = pair(kind).await;
    // Both names are known as soon as `connect` returns, before any channel.
    assert_eq!(others(&p.alice), ["bob"]);
    assert_eq!(others(&p.bob), ["alice"]);
    serve_echo(&p.bob);
    let ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    assert_eq!(ch.meta().local_peer(), "alice");
    assert_eq!(ch.meta().remote_peer(), "bob");
    assert_eq!(ch.meta().service(), "echo");
}

async fn direction_does_not_matter(kind: Kind) {
    // bob binds; alice dials bob; bob dials carol, who binds too.
    let (a, b, c) = (who("alice"), who("bob"), who("carol"));
    let scratch = Scratch::new();
    let alice = peer(&a, &[&b]);
    let bob = peer(&b, &[&a, &c]);
    let carol = peer(&c, &[&b]);
    let bob_at = bob
        .bind(&scratch.endpoint(kind, "bob"))
        .await
        .unwrap()
        .to_string();
    let carol_at = carol
        .bind(&scratch.endpoint(kind, "carol"))
        .await
        .unwrap()
        .to_string();
    within(alice.connect(&bob_at)).await.unwrap();
    within(bob.connect(&carol_at)).await.unwrap();
    assert_eq!(carol.peers(), ["bob"]);
    let mut names = bob.peers();
    names.sort();
    assert_eq!(names, ["alice", "carol"]);
    for p in [&alice, &bob, &carol] {
        serve_echo(p);
    }
    // Every direction over every connection, whichever side dialled.
    for (from, to) in [
        (&alice, "bob"),
        (&bob, "alice"),
        (&bob, "carol"),
        (&carol, "bob"),
    ] {
        let mut ch = within(from.open(to, "echo", ())).await.unwrap();
        let msg = format!("{} to {}", from.name(), to);
        ch.write_all(msg.as_bytes()).await.unwrap();
        within(ch.close_write()).await.unwrap();
        let mut back = String::new();
        within(ch.read_to_string(&mut back)).await.unwrap();
        assert_eq!(back, msg);
    }
}

fn awkward_headers() -> Vec<String> {
    vec![
        "plain=value".into(),
        "commas=a,b,c".into(),
        "equals=x=y=z".into(),
        "amp&pct=%20&%".into(),
        "newline=one\ntwo\r\nthree".into(),
        "".into(),
        "ünïcødé=✓".into(),
        format!("big={}", "é".repeat(2048)), // 4 KiB of value
        "s4:echoh1:x".into(),
    ]
}

async fn headers_survive_any_content(kind: Kind) {
    let p = pair(kind).await;
    for (opener, acceptor, to) in [(&p.alice, &p.bob, "bob"), (&p.bob, &p.alice, "alice")] {
        let acceptor = acceptor.clone();
        let got = tokio::spawn(async move {
            let (meta, _ch) = acceptor.accept().await.unwrap();
            (meta.service().to_owned(), meta.headers().clone())
        });
        let _ch = within(opener.open(to, "svc with spaces", awkward_headers()))
            .await
            .unwrap();
        let (service, headers) = within(got).await.unwrap();
        assert_eq!(service, "svc with spaces");
        assert_eq!(headers, Headers::from(awkward_headers()));
        assert_eq!(headers.get("equals"), Some("x=y=z"));
    }
}

async fn trailers_travel_both_ways(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (meta, mut ch) = bob.accept().await.unwrap();
        let mut body = Vec::new();
        ch.read_to_end(&mut body).await.unwrap();
        // The client's trailers are complete once its stream ended.
        assert_eq!(
            meta.trailers().unwrap(),
            Headers::from(["client=done", "count=3"])
        );
        go_rx.await.unwrap();
        ch.write_all(b"reply").await.unwrap();
        ch.write_trailers(["exit-status=0", "note=a,b\nc"])
            .await
            .unwrap();
        ch.close().await.unwrap();
        body
    });
    let mut ch = within(p.alice.open("bob", "t", ())).await.unwrap();
    ch.write_all(b"request").await.unwrap();
    ch.write_trailers(["client=done", "count=3"]).await.unwrap();
    within(ch.close_write()).await.unwrap();
    assert_eq!(
        ch.meta().trailers(),
        None,
        "not before the server's end of stream"
    );
    go_tx.send(()).unwrap();
    let mut reply = Vec::new();
    within(ch.read_to_end(&mut reply)).await.unwrap();
    assert_eq!(reply, b"reply");
    assert_eq!(
        ch.meta().trailers().unwrap(),
        Headers::from(["exit-status=0", "note=a,b\nc"])
    );
    assert_eq!(within(server).await.unwrap(), b"request");
}

async fn half_close_keeps_the_other_direction(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let server = tokio::spawn(async move {
        let (_, mut ch) = bob.accept().await.unwrap();
        let mut got = Vec::new();
        ch.read_to_end(&mut got).await.unwrap();
        // The client has finished sending; this direction keeps flowing.
        for i in 0..100u32 {
            ch.write_frame(&i.to_be_bytes()).await.unwrap();
        }
        ch.close().await.unwrap();
        got
    });
    let mut ch = within(p.alice.open("bob", "half", ())).await.unwrap();
    let data = pattern(300_000, 1);
    ch.write_all(&data).await.unwrap();
    within(ch.close_write()).await.unwrap();
    assert!(
        matches!(ch.write_all(b"late").await, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    );
    for i in 0..100u32 {
        let f = within(ch.read_frame()).await.unwrap().unwrap();
        assert_eq!(&f[..], &i.to_be_bytes());
    }
    assert_eq!(within(ch.read_frame()).await.unwrap(), None);
    assert_eq!(within(server).await.unwrap(), data);
}

async fn reset_is_an_error_not_eof(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let server = tokio::spawn(async move {
        let (_, mut ch) = bob.accept().await.unwrap();
        let mut buf = [0u8; 5];
        ch.read_exact(&mut buf).await.unwrap();
        ch.reset();
        buf
    });
    let mut ch = within(p.alice.open("bob", "r", ())).await.unwrap();
    ch.write_all(b"hello").await.unwrap();
    assert_eq!(&within(server).await.unwrap(), b"hello");
    let err = within(ch.read_frame()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::ResetByPeer {
                code: ResetCode::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    let err = within(ch.write_frame(b"x")).await.unwrap_err();
    assert!(matches!(err, ChannelError::ResetByPeer { .. }), "{err}");
}

async fn errors_before_the_end_are_never_missed(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let served = tokio::spawn(async move {
        let (_, mut ch) = bob.accept().await.unwrap();
        for i in 0..50u32 {
            ch.write_frame(format!("item {i}").as_bytes())
                .await
                .unwrap();
            if i % 10 == 9 {
                ch.write_error(format!("warning {i}").as_bytes())
                    .await
                    .unwrap();
            }
        }
        ch.write_error(b"fatal: out of items").await.unwrap();
        ch.close().await.unwrap();
    });
    let mut ch = within(p.alice.open("bob", "e", ())).await.unwrap();
    let mut items = 0;
    while let Some(f) = within(ch.read_frame()).await.unwrap() {
        assert_eq!(f, format!("item {items}").into_bytes());
        items += 1;
    }
    assert_eq!(items, 50);
    // A reader that checks for errors only at the end sees all of them, in order.
    let mut errors = Vec::new();
    while let Some(e) = within(ch.read_error()).await.unwrap() {
        errors.push(String::from_utf8(e.to_vec()).unwrap());
    }
    assert_eq!(errors.len(), 6);
    assert_eq!(errors[0], "warning 9");
    assert_eq!(errors[5], "fatal: out of items");
    within(ch.close()).await.unwrap();
    within(served).await.unwrap();
}

async fn a_listened_service_has_its_own_queue(kind: Kind) {
    // bob serves only "echo" through accept, and "rpc" through a listener.
    let mut opts = streamkit::Options::default();
    opts.services = streamkit::Services::only(["echo"]);
    let p = pair_with(kind, Default::default(), opts).await;
    let listener = p.bob.listen("rpc").unwrap();
    assert_eq!(
        p.bob.listen("rpc").unwrap_err(),
        streamkit::ListenError::InUse("rpc".into())
    );
    let mut to_rpc = within(p.alice.open("bob", "rpc", ["codec=json"]))
        .await
        .unwrap();
    let mut to_echo = within(p.alice.open("bob", "echo", ())).await.unwrap();
    to_rpc.write_frame(b"for the listener").await.unwrap();
    to_echo.write_frame(b"for accept").await.unwrap();
    let (meta, mut got) = within(listener.accept()).await.unwrap();
    assert_eq!(meta.service(), "rpc");
    assert_eq!(meta.headers().get("codec"), Some("json"));
    assert_eq!(
        &within(got.read_frame()).await.unwrap().unwrap()[..],
        b"for the listener"
    );
    let (meta, mut got) = within(p.bob.accept()).await.unwrap();
    assert_eq!(meta.service(), "echo");
    assert_eq!(
        &within(got.read_frame()).await.unwrap().unwrap()[..],
        b"for accept"
    );
    // Without the listener, "rpc" is not served any more.
    drop(listener);
    let err = within(p.alice.open("bob", "rpc", ())).await.unwrap_err();
    assert_eq!(
        err.kind,
        OpenErrorKind::Refused(OpenRefusal::ServiceNotFound)
    );
    // And it can be taken again.
    let again = p.bob.listen("rpc").unwrap();
    let _ch = within(p.alice.open("bob", "rpc", ())).await.unwrap();
    assert_eq!(within(again.accept()).await.unwrap().0.service(), "rpc");
}

async fn unknown_service_keeps_the_connection(kind: Kind) {
    let mut opts = streamkit::Options::default();
    opts.services = streamkit::Services::only(["echo"]);
    let p = pair_with(kind, Default::default(), opts).await;
    serve_echo(&p.bob);
    let err = within(p.alice.open("bob", "nope", ())).await.unwrap_err();
    assert_eq!(
        err.kind,
        OpenErrorKind::Refused(OpenRefusal::ServiceNotFound)
    );
    assert_eq!(
        err.to_string(),
        r#"open "nope" on peer "bob": service not found"#
    );
    // The same connection still serves.
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    ch.write_frame(b"still up").await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"still up"
    );
    assert_eq!(others(&p.alice), ["bob"]);
    // The option changes on the live peer.
    let mut opts = p.bob.options();
    opts.services = streamkit::Services::only(["echo", "nope"]);
    p.bob.set_options(opts).unwrap();
    within(p.alice.open("bob", "nope", ())).await.unwrap();
}

async fn oversize_frame_fails_only_that_channel(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let server = tokio::spawn(async move {
        let (_, mut bad) = bob.accept().await.unwrap();
        let (_, good) = bob.accept().await.unwrap();
        tokio::spawn(echo(good));
        bad.read_frame().await
    });
    let mut bad = within(p.alice.open("bob", "bad", ())).await.unwrap();
    let mut good = within(p.alice.open("bob", "good", ())).await.unwrap();
    // Announce a 4 GiB frame: the reader must refuse it at the header.
    let mut announce = u32::MAX.to_be_bytes().to_vec();
    announce.extend_from_slice(b"and some bytes");
    bad.write_all(&announce).await.unwrap();
    let err = within(server).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::FrameTooLarge {
                len: 4294967295,
                ..
            }
        ),
        "{err}"
    );
    // The writer learns why; the other channel is untouched.
    let err = within(bad.read_frame()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::ResetByPeer {
                code: ResetCode::FrameTooLarge,
                ..
            }
        ),
        "{err}"
    );
    good.write_frame(b"fine").await.unwrap();
    assert_eq!(
        &within(good.read_frame()).await.unwrap().unwrap()[..],
        b"fine"
    );
}

async fn writing_to_a_closed_channel_is_an_error(kind: Kind) {
    let p = pair(kind).await;
    serve_echo(&p.bob);
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    within(ch.close()).await.unwrap();
    assert_eq!(
        within(ch.write_frame(b"x")).await.unwrap_err(),
        ChannelError::Closed
    );
    let mut w = ch.split().1;
    assert!(w.write_all(b"x").await.is_err());
}

async fn a_stalled_channel_does_not_stall_the_others(kind: Kind) {
    let window = 1024 * 1024;
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // The first channel is accepted and never read.
        let (_, stalled) = bob.accept().await.unwrap();
        let _ = stalled_tx.send(stalled);
        let (_, echoing) = bob.accept().await.unwrap();
        echo(echoing).await;
    });
    let mut stalled = within(p.alice.open("bob", "stalled", ())).await.unwrap();
    let stalled_far = within(stalled_rx).await.unwrap();
    // Push 64 MiB at the stalled channel from another task: it gets stuck once the
    // window and the send buffer are full.
    let writer = tokio::spawn(async move {
        let chunk = vec![0xAB; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            if stalled.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    // Meanwhile another channel on the same connection echoes 10,000 frames.
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    for i in 0..10_000u32 {
        ch.write_frame(&i.to_le_bytes()).await.unwrap();
        if i % 100 == 99 {
            for j in i - 99..=i {
                let f = within(ch.read_frame()).await.unwrap().unwrap();
                assert_eq!(&f[..], &j.to_le_bytes());
            }
        }
    }
    assert!(
        !writer.is_finished(),
        "the stalled writer must be held back by flow control"
    );
    let held = stalled_far.buffered();
    assert!(
        held <= window,
        "stalled channel buffers {held} bytes, over its {window}-byte window"
    );
    assert!(held > 0);
    writer.abort();
}

async fn a_thousand_channels_at_once(kind: Kind) {
    let p = pair(kind).await;
    serve_echo(&p.bob);
    let mut tasks = Vec::new();
    for i in 0..1000u64 {
        let alice = p.alice.clone();
        tasks.push(tokio::spawn(async move {
            let ch = alice
                .open("bob", "echo", [format!("n={i}").as_str()])
                .await
                .unwrap();
            let data = pattern(4096 + (i as usize % 7) * 1000, i);
            let (mut r, mut w) = ch.split();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&sent).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            assert!(back == data, "channel {i} echoed different bytes");
        }));
    }
    for t in tasks {
        within(t).await.unwrap();
    }
    // Every channel closes on both sides.
    wait_while(&[&p.alice, &p.bob], || {
        p.alice.channel_count() + p.bob.channel_count() > 0
    })
    .await;
}

async fn vanished_peer_fails_reads_and_leaves_peers(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (_, mut ch) = bob.accept().await.unwrap();
        let mut buf = vec![0u8; 10];
        ch.read_exact(&mut buf).await.unwrap();
        let _ = got_tx.send(ch);
    });
    let mut ch = within(p.alice.open("bob", "v", ())).await.unwrap();
    ch.write_all(b"0123456789").await.unwrap();
    let far = within(got_rx).await.unwrap();
    // Bob disappears without closing anything.
    let Pair { alice, bob, .. } = p;
    drop(bob);
    let err = within(ch.read_frame()).await.unwrap_err();
    assert!(matches!(err, ChannelError::ConnectionLost(_)), "{err}");
    if kind.via_hub() {
        // The hub says so once it noticed.
        wait_while(&[&alice], || !others(&alice).is_empty()).await;
    } else {
        assert!(alice.peers().is_empty());
    }
    drop(far);
}

/// `close()` while the peer is still sending back more than a window: our end of
/// stream must still get through (close discards what it will never read).
async fn close_without_reading_completes(kind: Kind) {
    // A small send buffer on the echo side: once it is full the echo stops reading
    // almost at once, so what we queued stays queued.
    let mut bob_opts = streamkit::Options::default();
    bob_opts.send_buffer = 16 * 1024;
    let p = pair_with(kind, Default::default(), bob_opts).await;
    serve_echo(&p.bob);
    // Our reader never reads, so our window never grows past the initial credit.
    let window = 64 * 1024;
    let send_buffer = p.alice.options().send_buffer;
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    // Write without reading the echo until everything is stuck: the echo has filled
    // our window and stopped reading, and our send buffer waits for credit. Our end
    // of stream now queues behind data that needs the echo to move again.
    let chunk = pattern(64 * 1024, 9);
    within(async {
        while ch.buffered() < window || ch.send_buffered() < send_buffer * 3 / 4 {
            // A write waits for room; while none comes, look at the counts again.
            let _ = tokio::time::timeout(Duration::from_millis(5), ch.write(&chunk)).await;
        }
    })
    .await;
    within(ch.close()).await.unwrap();
}

/// The remote drops its end without reading: more than a window was written, so
/// some of it was thrown away unread, and neither the writes nor `close` may report
/// success (nothing is silently lost), round after round.
async fn a_close_to_a_dropped_reader_is_not_success(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    tokio::spawn(async move {
        while let Ok((_, ch)) = bob.accept().await {
            drop(ch);
        }
    });
    let data = pattern(3 << 20, 5);
    for round in 0..10 {
        let mut ch = within(p.alice.open("bob", "dropped", ())).await.unwrap();
        let wrote = within(ch.write_all(&data)).await;
        let closed = within(ch.close()).await;
        let err = match (wrote, closed) {
            (Ok(()), Ok(())) => panic!("round {round}: writes and close succeeded"),
            (Err(e), _) => e
                .into_inner()
                .and_then(|e| e.downcast::<ChannelError>().ok())
                .map(|e| *e),
            (Ok(()), Err(e)) => Some(e),
        };
        assert_eq!(err, Some(ChannelError::ClosedByPeer), "round {round}");
    }
}

async fn an_open_reset_at_once_fails_instead_of_hanging(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    tokio::spawn(async move {
        while let Ok((_, mut ch)) = bob.accept().await {
            ch.reset();
        }
    });
    for _ in 0..50 {
        let mut ch = within(p.alice.open("bob", "x", ())).await.unwrap();
        let err = within(ch.read_frame()).await.unwrap_err();
        assert!(matches!(err, ChannelError::ResetByPeer { .. }), "{err}");
    }
    wait_while(&[&p.alice, &p.bob], || p.alice.channel_count() > 0).await;
}

async fn error_frames_larger_than_the_window(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let big = pattern(3 << 20, 4);
    let sent = big.clone();
    let served = tokio::spawn(async move {
        let (_, mut ch) = bob.accept().await.unwrap();
        ch.write_frame(b"before").await.unwrap();
        ch.write_error(&sent).await.unwrap();
        ch.write_frame(b"after").await.unwrap();
        ch.close().await.unwrap();
    });
    let mut ch = within(p.alice.open("bob", "big-error", ())).await.unwrap();
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"before"
    );
    assert_eq!(
        &within(ch.read_frame()).await.unwrap().unwrap()[..],
        b"after"
    );
    assert_eq!(within(ch.read_frame()).await.unwrap(), None);
    let e = within(ch.read_error()).await.unwrap().unwrap();
    assert!(e[..] == big[..], "the 3 MiB error frame arrived whole");
    within(ch.close()).await.unwrap();
    within(served).await.unwrap();
}

// ---------------------------------------------------------------------------
// Channels of channels
// ---------------------------------------------------------------------------

/// Echoes frames, then error frames, then trailers, then ends the stream; returns
/// the channel (closing it would reset children still in use).
async fn echo_everything(mut ch: streamkit::Channel) -> streamkit::Channel {
    while let Some(f) = ch.read_frame().await.unwrap() {
        ch.write_frame(&f).await.unwrap();
    }
    while let Some(e) = ch.read_error().await.unwrap() {
        ch.write_error(&e).await.unwrap();
    }
    if let Some(t) = ch.meta().trailers().filter(|t| !t.is_empty()) {
        ch.write_trailers(t).await.unwrap();
    }
    ch.close_write().await.unwrap();
    ch
}

/// Sends frames, an error and trailers through `ch` (served by `echo_everything`)
/// and checks they all come back; returns the channel, open.
async fn round_trip_everything(mut ch: streamkit::Channel, tag: &str) -> streamkit::Channel {
    let frames: Vec<Vec<u8>> = (0..20u64)
        .map(|i| pattern(100 + i as usize * 300, i))
        .collect();
    for f in &frames {
        ch.write_frame(f).await.unwrap();
    }
    ch.write_error(format!("error from {tag}").as_bytes())
        .await
        .unwrap();
    ch.write_trailers([format!("tag={tag}")]).await.unwrap();
    within(ch.close_write()).await.unwrap();
    for f in &frames {
        assert_eq!(&within(ch.read_frame()).await.unwrap().unwrap()[..], &f[..]);
    }
    assert_eq!(within(ch.read_frame()).await.unwrap(), None);
    assert_eq!(
        within(ch.read_error()).await.unwrap().unwrap(),
        format!("error from {tag}").as_bytes()
    );
    assert_eq!(
        ch.meta().trailers().unwrap(),
        Headers::from([format!("tag={tag}")])
    );
    ch
}

async fn children_nest_both_ways_to_any_depth(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    // bob accepts the parent and serves what alice opens inside it; he also
    // opens children of his own inside it, towards alice.
    let bob_side = tokio::spawn(async move {
        let (meta, parent) = bob.accept().await.unwrap();
        assert_eq!(meta.service(), "parent");
        let parent = std::sync::Arc::new(parent);
        // Depth 1, opened by bob (the side that accepted the parent).
        let from_bob = parent.open("from-bob", ["depth=1", "a=b,c"]).await.unwrap();
        // Depth 1 and 2, opened by alice: served here.
        let (m1, child) = parent.accept().await.unwrap();
        assert_eq!(m1.service(), "from-alice");
        assert_eq!(m1.headers().get("depth"), Some("1"));
        let (m2, grandchild) = child.accept().await.unwrap();
        assert_eq!(m2.service(), "deeper");
        assert_eq!(m2.remote_peer(), "alice");
        // Depth 3, opened by bob inside alice's grandchild.
        let great = grandchild.open("deepest", ["depth=3"]).await.unwrap();
        let served = tokio::spawn(echo_everything(grandchild));
        let great = round_trip_everything(great, "bob@3").await;
        let from_bob = round_trip_everything(from_bob, "bob@1").await;
        let grandchild = within(served).await.unwrap();
        // Innermost first: closing a parent would reset its open children.
        for mut ch in [great, grandchild, from_bob] {
            within(ch.close()).await.unwrap();
        }
        (parent, child)
    });
    let parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    let child = within(parent.open("from-alice", ["depth=1"]))
        .await
        .unwrap();
    let grandchild = within(child.open("deeper", ["depth=2"])).await.unwrap();
    // bob's depth-3 child arrives at alice's grandchild, and his depth-1 child at
    // alice's parent: never at the peer-level accept.
    let (m3, great) = within(grandchild.accept()).await.unwrap();
    assert_eq!(m3.service(), "deepest");
    assert_eq!(m3.headers().get("depth"), Some("3"));
    let (m1, from_bob) = within(parent.accept()).await.unwrap();
    assert_eq!(m1.service(), "from-bob");
    assert_eq!(m1.headers(), &Headers::from(["depth=1", "a=b,c"]));
    assert_eq!(m1.local_peer(), "alice");
    use futures::FutureExt as _;
    assert!(p.alice.accept().now_or_never().is_none());
    let a = tokio::spawn(echo_everything(great));
    let b = tokio::spawn(echo_everything(from_bob));
    let g = tokio::spawn(round_trip_everything(grandchild, "alice@2"));
    let mut great = within(a).await.unwrap();
    let mut from_bob = within(b).await.unwrap();
    let mut grandchild = within(g).await.unwrap();
    let (_bob_parent, _bob_child) = within(bob_side).await.unwrap();
    // bob closed his ends of these first: ours close cleanly.
    for ch in [&mut great, &mut from_bob, &mut grandchild] {
        within(ch.close()).await.unwrap();
    }
    assert!(p.bob.accept().now_or_never().is_none());
    // Closed children are forgotten by their parents.
    wait_while(&[&p.alice, &p.bob], || {
        parent.child_count() > 1 || child.child_count() > 0
    })
    .await;
}

async fn closing_a_parent_closes_its_children(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let bob_side = tokio::spawn(async move {
        let (_, mut parent) = bob.accept().await.unwrap();
        let (_, mut theirs) = parent.accept().await.unwrap();
        let mut mine = parent.open("mine", ()).await.unwrap();
        mine.write_all(b"hello").await.unwrap();
        ready_tx.send(()).unwrap();
        // alice closes the parent: both children fail here, not EOF.
        let mut buf = Vec::new();
        let e1 = theirs.read_to_end(&mut buf).await.unwrap_err();
        let e2 = mine.read_frame().await.unwrap_err();
        assert!(parent.read_frame().await.unwrap().is_none());
        parent.close().await.unwrap();
        (e1.to_string(), e2)
    });
    let mut parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    let mut theirs = within(parent.open("theirs", ())).await.unwrap();
    within(ready_rx).await.unwrap();
    let (_, mut mine) = within(parent.accept()).await.unwrap();
    let mut hello = [0u8; 5];
    within(mine.read_exact(&mut hello)).await.unwrap();
    assert_eq!(parent.child_count(), 2);
    let before = p.alice.channel_count();
    assert_eq!(before, 3);
    within(parent.close()).await.unwrap();
    // Locally, the children fail with a clear error.
    assert_eq!(
        within(theirs.read_frame()).await.unwrap_err(),
        ChannelError::ParentClosed
    );
    assert_eq!(
        within(mine.write_frame(b"x")).await.unwrap_err(),
        ChannelError::ParentClosed
    );
    // And remotely too, whichever news arrives first.
    let (e1, e2) = within(bob_side).await.unwrap();
    assert!(e1.contains("parent channel closed"), "{e1}");
    assert_eq!(e2, ChannelError::ParentClosed);
    // Nothing is left open on either side; the parent's accept says it is closed.
    assert_eq!(
        within(parent.accept()).await.unwrap_err(),
        ChannelError::Closed
    );
    wait_while(&[&p.alice, &p.bob], || {
        p.alice.channel_count() + p.bob.channel_count() > 0
    })
    .await;
    assert_eq!(parent.child_count(), 0);
}

async fn a_child_of_a_closed_parent_fails_clearly(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (_, mut parent) = bob.accept().await.unwrap();
        // bob closes his end without waiting for alice to finish.
        let _ = parent.close().await;
        closed_tx.send(()).unwrap();
        // Then serves the next channel.
        let (_, ch) = bob.accept().await.unwrap();
        echo(ch).await;
    });
    let mut parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    within(closed_rx).await.unwrap();
    // bob has closed the parent: the child is refused (or, once alice's end has
    // seen the close, refused here before anything is sent).
    let err = within(parent.open("child", ())).await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            OpenErrorKind::Refused(OpenRefusal::ParentNotFound) | OpenErrorKind::ParentClosed
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("parent channel"),
        "unclear error: {err}"
    );
    // After alice's end is closed too, the refusal is local, and accepting on it
    // (never done before) says it is closed instead of waiting forever.
    let _ = within(parent.close()).await;
    let err = within(parent.open("child", ())).await.unwrap_err();
    assert_eq!(err.kind, OpenErrorKind::ParentClosed);
    assert_eq!(
        within(parent.accept()).await.unwrap_err(),
        ChannelError::Closed
    );
    // The connection is fine.
    let mut ch = within(p.alice.open("bob", "echo", ())).await.unwrap();
    ch.write_all(b"still up").await.unwrap();
    within(ch.close_write()).await.unwrap();
    let mut back = Vec::new();
    within(ch.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"still up");
}

// ---------------------------------------------------------------------------
// Join, and frames as Stream/Sink
// ---------------------------------------------------------------------------

/// A TCP server that answers each connection with its input reversed in 1 KiB
/// blocks, after the client's half-close, then closes: a half-close must travel
/// through a join for this to work.
async fn reversing_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                let reply: Vec<u8> = got.iter().rev().copied().collect();
                s.write_all(&reply).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
    (addr, task)
}

async fn join_splices_a_socket_both_ways(kind: Kind) {
    let p = pair(kind).await;
    let (addr, _server) = reversing_server().await;
    let bob = p.bob.clone();
    let joined = tokio::spawn(async move {
        let (_, ch) = bob.accept().await.unwrap();
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        ch.join(sock).await
    });
    let ch = within(p.alice.open("bob", "reverse", ())).await.unwrap();
    let data = pattern(3 * 1024 * 1024 + 17, 9);
    let (mut r, mut w) = ch.split();
    let writer = tokio::spawn({
        let data = data.clone();
        async move {
            w.write_all(&data).await.unwrap();
            w.close_write().await.unwrap();
            w
        }
    });
    let mut back = Vec::new();
    within(r.read_to_end(&mut back)).await.unwrap();
    let _w = within(writer).await.unwrap();
    let expected: Vec<u8> = data.iter().rev().copied().collect();
    assert!(back == expected, "reply differs");
    let stats = within(joined).await.unwrap().unwrap();
    assert_eq!(stats.to_io, data.len() as u64);
    assert_eq!(stats.from_io, data.len() as u64);
}

async fn a_joined_socket_that_resets_resets_the_channel(kind: Kind) {
    let p = pair(kind).await;
    // A server that reads a little, then aborts the connection (RST).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        // Linger 0: closing sends a reset, not a FIN.
        socket2_free_reset(s);
    });
    let bob = p.bob.clone();
    let joined = tokio::spawn(async move {
        let (_, ch) = bob.accept().await.unwrap();
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        ch.join(sock).await
    });
    let mut ch = within(p.alice.open("bob", "rst", ())).await.unwrap();
    ch.write_all(b"ping").await.unwrap();
    let err = within(joined).await.unwrap().unwrap_err();
    assert!(matches!(err, streamkit::JoinError::Io { .. }), "{err}");
    assert_eq!(err.stats().from_io, 0);
    let e = within(ch.read_frame()).await.unwrap_err();
    assert!(matches!(e, ChannelError::ResetByPeer { .. }), "{e}");
}

async fn frames_as_stream_and_sink(kind: Kind) {
    use futures::{SinkExt as _, StreamExt as _};
    let p = pair(kind).await;
    let bob = p.bob.clone();
    // bob doubles every frame back, through the Stream/Sink view.
    tokio::spawn(async move {
        let (_, ch) = bob.accept().await.unwrap();
        let (mut sink, mut stream) = ch.into_frames().split();
        while let Some(f) = stream.next().await {
            let f = f.unwrap();
            let doubled: Vec<u8> = f.iter().chain(f.iter()).copied().collect();
            sink.feed(streamkit::Bytes::from(doubled)).await.unwrap();
        }
        sink.close().await.unwrap();
    });
    let ch = within(p.alice.open("bob", "double", ())).await.unwrap();
    let frames = ch.into_frames();
    let sent: Vec<Vec<u8>> = (0..1000u64).map(|i| pattern(i as usize % 700, i)).collect();
    let mut items = futures::stream::iter(
        sent.iter()
            .map(|f| Ok(streamkit::Bytes::from(f.clone())))
            .collect::<Vec<_>>(),
    );
    let (mut sink, stream) = frames.split();
    let send = async {
        sink.send_all(&mut items).await.unwrap();
        sink.close().await.unwrap();
    };
    let recv = stream.collect::<Vec<_>>();
    let ((), got) = within(futures::future::join(send, recv)).await;
    assert_eq!(got.len(), sent.len());
    for (g, s) in got.into_iter().zip(&sent) {
        let g = g.unwrap();
        assert_eq!(&g[..s.len()], &s[..]);
        assert_eq!(&g[s.len()..], &s[..]);
    }
}

/// Drops a TCP stream with a reset (RST) instead of an orderly close.
fn socket2_free_reset(s: tokio::net::TcpStream) {
    let std = s.into_std().unwrap();
    #[allow(deprecated)]
    {
        let s = tokio::net::TcpStream::from_std(std).unwrap();
        s.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(s);
    }
}

async fn children_closed_before_accept_leave_the_queue(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let held = tokio::spawn(async move { bob.accept().await.unwrap().1 });
    let parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    let bob_parent = within(held).await.unwrap();
    // 200 children, each sends 64 KiB and is reset before bob accepts any.
    let chunk = pattern(64 * 1024, 5);
    for _ in 0..200 {
        let mut child = within(parent.open("gone", ())).await.unwrap();
        child.write_all(&chunk).await.unwrap();
        child.reset();
    }
    // bob forgets them, queue included: only the parents are left.
    wait_while(&[&p.alice, &p.bob], || {
        p.bob.channel_count() > 1 || p.alice.channel_count() > 1
    })
    .await;
    use futures::FutureExt as _;
    let mut next = std::pin::pin!(bob_parent.accept());
    assert!(
        (&mut next).now_or_never().is_none(),
        "a dead child was queued"
    );
    // A live one still comes through.
    let mut child = within(parent.open("alive", ())).await.unwrap();
    child.write_all(b"hi").await.unwrap();
    let (meta, mut got) = within(next).await.unwrap();
    assert_eq!(meta.service(), "alive");
    let mut hi = [0u8; 2];
    within(got.read_exact(&mut hi)).await.unwrap();
    assert_eq!(&hi, b"hi");
}

async fn a_deep_chain_of_unaccepted_children_closes(kind: Kind) {
    // Children waiting to be accepted are limited per connection: allow 2,000
    // (each reserves its initial credit of the memory budget: 125 MiB in all).
    let mut opts = streamkit::Options::default();
    opts.max_pending_accepts = 4096;
    opts.memory_budget_per_connection = 256 << 20;
    opts.memory_budget_per_address = 256 << 20;
    opts.memory_budget = 256 << 20;
    let p = pair_with(kind, Default::default(), opts).await;
    let bob = p.bob.clone();
    let held = tokio::spawn(async move { bob.accept().await.unwrap().1 });
    let parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    let mut bob_parent = within(held).await.unwrap();
    // Each child inside the previous one; bob accepts none of them.
    let mut chain = Vec::new();
    for depth in 1..=2000 {
        let inside = chain.last().unwrap_or(&parent);
        let child = within(inside.open("deeper", [format!("depth={depth}")]))
            .await
            .unwrap();
        chain.push(child);
    }
    assert_eq!(p.bob.channel_count(), 2001);
    // bob resets the parent: the whole chain goes, without exhausting a stack.
    bob_parent.reset();
    let mut deepest = chain.pop().unwrap();
    let err = within(deepest.read_frame()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::ParentClosed | ChannelError::ResetByPeer { .. }
        ),
        "{err}"
    );
    wait_while(&[&p.alice, &p.bob], || {
        p.bob.channel_count() + p.alice.channel_count() > 0
    })
    .await;
}

async fn a_child_finished_before_accept_keeps_its_data(kind: Kind) {
    let p = pair(kind).await;
    let bob = p.bob.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (_, parent) = bob.accept().await.unwrap();
        // A whole child life before alice accepts it: data (as much as a channel
        // not yet accepted takes: its initial credit), trailers, close.
        let mut child = parent.open("report", ()).await.unwrap();
        child.write_all(&pattern(60_000, 3)).await.unwrap();
        child.write_trailers(["rows=3"]).await.unwrap();
        child.close().await.unwrap();
        done_tx.send(()).unwrap();
        let _keep = parent;
        std::future::pending::<()>().await;
    });
    let parent = within(p.alice.open("bob", "parent", ())).await.unwrap();
    within(done_rx).await.unwrap();
    let (meta, mut child) = within(parent.accept()).await.unwrap();
    let mut body = Vec::new();
    within(child.read_to_end(&mut body)).await.unwrap();
    assert!(body == pattern(60_000, 3));
    assert_eq!(meta.trailers().unwrap(), Headers::from(["rows=3"]));
}

async fn waiting_children_are_limited_per_connection(kind: Kind) {
    let mut opts = streamkit::Options::default();
    opts.max_pending_accepts = 4;
    let p = pair_with(kind, Default::default(), opts).await;
    let bob = p.bob.clone();
    let held = tokio::spawn(async move {
        let a = bob.accept().await.unwrap().1;
        let b = bob.accept().await.unwrap().1;
        (a, b)
    });
    let one = within(p.alice.open("bob", "one", ())).await.unwrap();
    let two = within(p.alice.open("bob", "two", ())).await.unwrap();
    let (bob_one, _bob_two) = within(held).await.unwrap();
    // bob accepts no children: 4 may wait, across both parents, then refusals.
    let mut waiting = Vec::new();
    for parent in [&one, &two, &one, &two] {
        waiting.push(within(parent.open("child", ())).await.unwrap());
    }
    for parent in [&one, &two] {
        let err = within(parent.open("child", ())).await.unwrap_err();
        assert_eq!(
            err.kind,
            OpenErrorKind::Refused(OpenRefusal::AcceptQueueFull),
            "{err}"
        );
    }
    // Accepting one makes room for one more.
    let _taken = within(bob_one.accept()).await.unwrap();
    waiting.push(within(two.open("child", ())).await.unwrap());
}
