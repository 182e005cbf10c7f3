//! The wire as a foreign or hostile client speaks it: a raw SSH client (russh,
//! with none of our channel logic) names parents that do not exist or that belong
//! to another connection (each is refused with "parent channel not found" and the
//! connection stays up), announces other protocol versions, and asks for remote
//! forwards as a standard client (`ssh -R`), up to and past their limit.

use std::sync::Arc;

use crate::common::*;
use streamkit::wire::open::{OpenRequest, ParentRef};
use streamkit::{Identity, OpenRefusal, Trust};

fn request(id: u64, parent: Option<ParentRef>) -> String {
    OpenRequest {
        service: "svc".into(),
        headers: vec![format!("id={id}")],
        id: Some(id),
        parent,
    }
    .encode(16 * 1024)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_opens_naming_unknown_parents_are_refused() {
    let (a, b) = (who("alice"), who("bob"));
    let mallory = Identity::generate();
    let alice = peer(&a, &[&b]);
    let bob = streamkit::Peer::new(streamkit::PeerConfig::new(
        "bob",
        b.id.clone(),
        Trust::new()
            .with_key(a.id.public_key())
            .with_key(mallory.public_key()),
    ))
    .unwrap();
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    within(alice.connect(&url.to_string())).await.unwrap();
    // alice's first channel: id 1 on her connection.
    let _alice_parent = within(alice.open("bob", "parent", ())).await.unwrap();
    let (_, bob_parent) = within(bob.accept()).await.unwrap();

    // mallory speaks SSH directly, announcing herself as a streamkit peer.
    let ident = streamkit::wire::ident::client_ident();
    let (h, ok) = raw_login(&url, &ident, "mallory", &mallory, RawClient).await;
    assert!(ok);

    let refused = |e: russh::Error| match e {
        russh::Error::ChannelOpenFailure(r) => OpenRefusal::from_code(r.code()),
        other => panic!("expected a refusal, got {other}"),
    };
    // A parent "I opened" with id 1: alice's channel has that id, but on another
    // connection. A parent "you opened" with id 1: bob opened nothing here.
    for parent in [
        ParentRef::Local(1),
        ParentRef::Remote(1),
        ParentRef::Local(u64::MAX),
    ] {
        let err = within(h.channel_open_direct_streamlocal(request(1, Some(parent))))
            .await
            .unwrap_err();
        let why = refused(err);
        assert_eq!(why, OpenRefusal::ParentNotFound, "{parent:?}");
        assert_eq!(why.description(), "parent channel not found");
    }
    // The connection is up: a plain open works, and a child of it (named
    // correctly) reaches that channel's accept, not the peer's.
    let _parent = within(h.channel_open_direct_streamlocal(request(7, None)))
        .await
        .unwrap();
    let (meta, mallory_parent) = within(bob.accept()).await.unwrap();
    assert_eq!(meta.remote_peer(), "mallory");
    assert_eq!(meta.headers().get("id"), Some("7"));
    let _child = within(h.channel_open_direct_streamlocal(request(8, Some(ParentRef::Local(7)))))
        .await
        .unwrap();
    let (child_meta, _child) = within(mallory_parent.accept()).await.unwrap();
    assert_eq!(child_meta.headers().get("id"), Some("8"));
    use futures::FutureExt as _;
    assert!(bob.accept().now_or_never().is_none());
    assert!(bob_parent.accept().now_or_never().is_none());
    assert_eq!(bob.peers().len(), 2);
}

/// A raw client that reports how the server ended the session.
struct Told(tokio::sync::mpsc::Sender<String>);

impl russh::client::Handler for Told {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn disconnected(
        &mut self,
        reason: russh::client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        if let russh::client::DisconnectReason::ReceivedDisconnect(info) = reason {
            let _ = self.0.try_send(info.message);
        }
        Ok(())
    }
}

/// A client announcing a protocol version other than 1 is refused with a reason
/// it can show; the peer keeps no connection for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_protocol_version_is_refused() {
    let b = who("bob");
    let mallory = Identity::generate();
    let bob = streamkit::Peer::new(streamkit::PeerConfig::new(
        "bob",
        b.id.clone(),
        Trust::new().with_key(mallory.public_key()),
    ))
    .unwrap();
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    let (tx, mut told) = tokio::sync::mpsc::channel(4);
    let v2 = "SSH-2.0-streamkit_9.0.0 streamkit=2";
    let (_h, _) = raw_login(&url, v2, "mallory", &mallory, Told(tx)).await;
    let why = within(told.recv()).await.expect("the server said why");
    assert_eq!(
        why,
        "unsupported protocol version 2 (this peer speaks streamkit=1)"
    );
    assert!(bob.peers().is_empty());
}

/// A server of another protocol version: the client refuses it after the key
/// exchange, with an error that names both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_another_protocol_version_is_refused() {
    struct Quiet;
    impl russh::server::Handler for Quiet {
        type Error = russh::Error;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_key =
        russh::keys::PrivateKey::from_openssh(Identity::generate().to_openssh()).unwrap();
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-streamkit_9.0.0 streamkit=2 name=bob".into()),
        keys: vec![server_key],
        ..Default::default()
    });
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        if let Ok(session) = russh::server::run_stream(config, socket, Quiet).await {
            let _ = session.await;
        }
    });
    let a = who("alice");
    let alice = streamkit::Peer::new(streamkit::PeerConfig::new(
        "alice",
        a.id.clone(),
        Trust::new().danger_accept_any_host_key(),
    ))
    .unwrap();
    let err = within(alice.connect(&format!("tcp://{addr}")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            streamkit::ConnectError::UnsupportedVersion { version: 2, .. }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("unsupported protocol version 2 (this peer speaks streamkit=1)"),
        "{err}"
    );
}

/// A standard SSH client (no `streamkit=` in its identification) is sent error
/// frames as stderr: an empty one is nothing to send, and must not wedge the
/// channel; the stream, the stderr text and the end all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_error_frame_to_a_standard_client_does_not_wedge_the_channel() {
    let b = who("bob");
    let client = Identity::generate();
    let bob = streamkit::Peer::new(streamkit::PeerConfig::new(
        "bob",
        b.id.clone(),
        Trust::new().with_key(client.public_key()),
    ))
    .unwrap();
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    let server = {
        let bob = bob.clone();
        tokio::spawn(async move {
            let (meta, mut ch) = bob.accept().await.unwrap();
            assert_eq!(meta.service(), "report");
            ch.write_error(b"").await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut ch, b"out")
                .await
                .unwrap();
            ch.write_error(b"warn").await.unwrap();
            ch.write_error(b"").await.unwrap();
            within(ch.close_write()).await.unwrap();
            within(ch.close()).await.unwrap();
        })
    };
    let (h, ok) = raw_login(&url, OPENSSH, "carol", &client, RawClient).await;
    assert!(ok);
    let mut ch = within(h.channel_open_session()).await.unwrap();
    within(ch.exec(true, "report")).await.unwrap();
    let (mut out, mut err, mut eof) = (Vec::new(), Vec::new(), false);
    while let Some(msg) = within(ch.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
            russh::ChannelMsg::Eof => eof = true,
            _ => {}
        }
    }
    assert_eq!(out, b"out");
    assert_eq!(err, b"warn");
    assert!(eof, "the stream ended");
    within(server).await.unwrap();
}

/// A standard client's `session` that never names its service (`exec`) is closed
/// after the handshake timeout: it cannot hold a channel and its window forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_exec_is_closed_after_the_handshake_timeout() {
    let b = who("bob");
    let client = Identity::generate();
    let mut opts = streamkit::Options::default();
    opts.handshake_timeout = std::time::Duration::from_millis(300);
    let bob = streamkit::Peer::new(
        streamkit::PeerConfig::new(
            "bob",
            b.id.clone(),
            Trust::new().with_key(client.public_key()),
        )
        .with_options(opts),
    )
    .unwrap();
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    let (h, ok) = raw_login(&url, OPENSSH, "carol", &client, RawClient).await;
    assert!(ok);
    // Taken before the open, so before the server's deadline starts.
    let started = std::time::Instant::now();
    let mut idle = within(h.channel_open_session()).await.unwrap();
    let mut closed = false;
    while let Some(msg) = within(idle.wait()).await {
        closed |= matches!(msg, russh::ChannelMsg::Close);
    }
    assert!(closed, "the server closed the idle session");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    // The connection is still up: another session opens.
    let _next = within(h.channel_open_session()).await.unwrap();
    wait_while(&[&bob], || bob.stats().channels > 1).await;
}

/// A library peer's remote-forward hook: listens on a free loopback port per
/// request and joins each visitor to a channel the forwarder opens; reports each
/// forward's end.
struct Listens {
    ended: tokio::sync::mpsc::Sender<u16>,
}

impl streamkit::forward::RemoteForward for Listens {
    fn listen(&self, request: streamkit::forward::ForwardRequest) -> Result<u16, String> {
        assert!(request.peer.starts_with("carol"), "{}", request.peer);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (forwarder, ended) = (request.forwarder, self.ended.clone());
        tokio::spawn(async move {
            let serve = async {
                while let Ok((visitor, from)) = listener.accept().await {
                    let forwarder = forwarder.clone();
                    tokio::spawn(async move {
                        if let Ok(ch) = forwarder.open(from).await {
                            let _ = ch.join(visitor).await;
                        }
                    });
                }
            };
            tokio::select! {
                () = serve => {}
                () = forwarder.closed() => {}
            }
            drop(listener);
            let _ = ended.send(port).await;
        });
        Ok(port)
    }
}

/// A raw client that hands over the `forwarded-tcpip` channels the server opens.
struct Visited(
    tokio::sync::mpsc::Sender<(String, u32, String, russh::Channel<russh::client::Msg>)>,
);

impl russh::client::Handler for Visited {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let _ = self
            .0
            .send((
                connected_address.to_owned(),
                connected_port,
                originator_address.to_owned(),
                channel,
            ))
            .await;
        Ok(())
    }
}

/// A standard client's remote forward (`ssh -R`) through the library's hook: the
/// port it is given, a visitor's bytes both ways with half-close, the end of the
/// forward when it cancels; and the per-connection limit on forwards, which a
/// greedy client hits while another client still forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_clients_remote_forward_and_its_limit() {
    use streamkit::forward::MAX_REMOTE_FORWARDS_PER_CONNECTION as MAX;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let b = who("bob");
    let client = Identity::generate();
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel(64);
    let bob = streamkit::Peer::new(
        streamkit::PeerConfig::new(
            "bob",
            b.id.clone(),
            Trust::new().with_key(client.public_key()),
        )
        .with_remote_forward(Listens { ended: ended_tx }),
    )
    .unwrap();
    let url = bob.bind("tcp://127.0.0.1:0").await.unwrap();
    let (visits_tx, mut visits) = tokio::sync::mpsc::channel(64);
    let (h, ok) = raw_login(&url, OPENSSH, "carol", &client, Visited(visits_tx)).await;
    assert!(ok);
    let port = within(h.tcpip_forward("localhost", 0)).await.unwrap();
    assert_ne!(port, 0);

    // A visitor: its bytes reach the client, the client's come back, each end
    // half-closes.
    let mut visitor = within(tokio::net::TcpStream::connect(("127.0.0.1", port as u16)))
        .await
        .unwrap();
    visitor.write_all(b"hello from a visitor").await.unwrap();
    visitor.shutdown().await.unwrap();
    let (address, connected, origin, mut ch) = within(visits.recv()).await.unwrap();
    assert_eq!(
        (address.as_str(), connected, origin.as_str()),
        ("localhost", port, "127.0.0.1")
    );
    let mut got = Vec::new();
    while let Some(msg) = within(ch.wait()).await {
        match msg {
            russh::ChannelMsg::Data { data } => got.extend_from_slice(&data),
            russh::ChannelMsg::Eof => break,
            _ => {}
        }
    }
    assert_eq!(got, b"hello from a visitor");
    within(ch.data(&b"hello back"[..])).await.unwrap();
    within(ch.eof()).await.unwrap();
    let mut back = Vec::new();
    within(visitor.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"hello back");

    // Up to the limit per connection, then refused; the connection stays up.
    for _ in 1..MAX {
        within(h.tcpip_forward("localhost", 0)).await.unwrap();
    }
    assert!(within(h.tcpip_forward("localhost", 0)).await.is_err());
    // Another client forwards all the same.
    let (h2, ok) = raw_login(&url, OPENSSH, "carol2", &client, RawClient).await;
    assert!(ok);
    assert!(within(h2.tcpip_forward("localhost", 0)).await.is_ok());

    // Cancelled: the hook hears the end and stops listening; the place is free.
    within(h.cancel_tcpip_forward("localhost", port))
        .await
        .unwrap();
    assert_eq!(within(ended.recv()).await, Some(port as u16));
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
            .await
            .is_err()
    );
    within(h.tcpip_forward("localhost", 0)).await.unwrap();

    // The client goes: every forward it held ends.
    drop(h);
    for _ in 0..MAX {
        within(ended.recv()).await.unwrap();
    }
}
