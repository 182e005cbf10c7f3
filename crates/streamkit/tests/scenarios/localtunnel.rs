//! The localtunnel pattern, end to end: a client peer named after a virtual host
//! opens a `tunnel` channel to a server peer; for every TCP connection on the
//! server's public port the server opens a child channel inside that tunnel; the
//! client accepts each child, dials a local HTTP server (Python's `http.server`)
//! and joins them. Twenty pages are fetched at once through the public port and
//! checked byte for byte. Runs over every transport between the two peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::*;
use streamkit::Channel;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{Sender, channel};

over_all! {
    twenty_pages_through_a_tunnel => twenty_pages_through_a_tunnel;
}

const PAGES: usize = 20;

fn page(i: usize) -> Vec<u8> {
    // From 1 KB to about 1 MB: several SSH packets and window grants each.
    pattern(1000 + i * 52_000, i as u64)
}

/// Python's HTTP server on a loopback port, serving `dir`; killed on drop.
struct HttpServer {
    child: tokio::process::Child,
    port: u16,
}

impl HttpServer {
    async fn start(dir: &std::path::Path) -> HttpServer {
        let mut child = tokio::process::Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 not found: run scripts/dev-setup");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        within(out.read_line(&mut line)).await.unwrap();
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected http.server banner {line:?}"));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Reads an HTTP request head (up to the blank line), at most 16 KiB.
async fn read_head(sock: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "request head too long");
        if sock.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    head
}

fn host_of(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("host")
            .then(|| v.trim().split(':').next().unwrap_or("").to_owned())
    })
}

/// The tunnel server: tunnels by virtual host, and a public HTTP port that
/// routes each connection into the tunnel its `Host` header names.
/// Each virtual host is sent on `registered` once its tunnel is up.
fn tunnel_server(
    peer: streamkit::Peer,
    public: TcpListener,
    registered: Sender<String>,
) -> tokio::task::JoinHandle<()> {
    let tunnels: Arc<Mutex<HashMap<String, Arc<Channel>>>> = Arc::default();
    let registry = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((meta, ch)) = peer.accept().await {
            assert_eq!(meta.service(), "tunnel");
            let host = meta.remote_peer().to_owned();
            registry.lock().unwrap().insert(host.clone(), Arc::new(ch));
            registered.send(host).await.unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut sock, addr) = public.accept().await.unwrap();
            let tunnels = tunnels.clone();
            tokio::spawn(async move {
                let head = read_head(&mut sock).await;
                let host = host_of(&head).unwrap();
                let tunnel = tunnels.lock().unwrap().get(&host).cloned();
                let Some(tunnel) = tunnel else {
                    let _ = sock.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n").await;
                    return;
                };
                let mut child = tunnel
                    .open("http", [format!("remote={addr}")])
                    .await
                    .unwrap();
                child.write_all(&head).await.unwrap();
                child.join(sock).await.unwrap();
            });
        }
    })
}

/// The tunnel client: every child of the tunnel is joined to a new connection
/// to the local HTTP server.
fn tunnel_client(
    tunnel: Channel,
    local_port: u16,
    joined: Sender<streamkit::JoinStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((meta, child)) = tunnel.accept().await {
            assert_eq!(meta.service(), "http");
            assert!(meta.headers().get("remote").is_some());
            let joined = joined.clone();
            tokio::spawn(async move {
                let local = TcpStream::connect(("127.0.0.1", local_port)).await.unwrap();
                let stats = child.join(local).await.unwrap();
                joined.send(stats).await.unwrap();
            });
        }
    })
}

/// A plain HTTP/1.0 GET through the public port; returns the body.
async fn fetch(public: std::net::SocketAddr, host: &str, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(public).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    let body = resp[split + 4..].to_vec();
    assert_eq!(body.len(), len, "{path}: body length");
    body
}

async fn twenty_pages_through_a_tunnel(kind: Kind) {
    let scratch = Scratch::new();
    let site = scratch.dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    for i in 0..PAGES {
        std::fs::write(site.join(format!("page-{i}.bin")), page(i)).unwrap();
    }
    let http = HttpServer::start(&site).await;

    let (server_id, client_id) = (who("tunnel.example"), who("myapp.localhost"));
    let server = peer(&server_id, &[&client_id]);
    let client = peer(&client_id, &[&server_id]);
    let url = server
        .bind(&scratch.endpoint(kind, "tunnel"))
        .await
        .unwrap()
        .to_string();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_addr = public.local_addr().unwrap();
    let (registered_tx, mut registered) = channel(4);
    let _server = tunnel_server(server.clone(), public, registered_tx);

    within(client.connect(&url)).await.unwrap();
    let tunnel = within(client.open("tunnel.example", "tunnel", ()))
        .await
        .unwrap();
    let (joined_tx, mut joined) = channel(PAGES * 2);
    let _client = tunnel_client(tunnel, http.port, joined_tx);
    // The server routes by the client's peer name, once it has taken the tunnel.
    assert_eq!(
        within(registered.recv()).await.as_deref(),
        Some("myapp.localhost")
    );

    let fetches = (0..PAGES).map(|i| {
        tokio::spawn(async move {
            let body = fetch(public_addr, "myapp.localhost", &format!("/page-{i}.bin")).await;
            (i, body)
        })
    });
    let results = within(futures::future::join_all(fetches)).await;
    let mut total = 0;
    for r in results {
        let (i, body) = r.unwrap();
        assert!(body == page(i), "page {i} differs");
        total += body.len();
    }
    // Every join on the client ended cleanly and carried its whole page (plus
    // the HTTP head) from the local server into the tunnel.
    let mut moved = 0;
    for _ in 0..PAGES {
        moved += within(joined.recv()).await.unwrap().from_io;
    }
    assert!(
        moved as usize > total,
        "joins moved {moved} bytes for {total}"
    );
    eprintln!("localtunnel over {kind:?}: {PAGES} pages, {total} body bytes, all byte for byte");
    // An unknown virtual host is answered by the server itself.
    let mut s = TcpStream::connect(public_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: nobody.localhost\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    within(s.read_to_end(&mut resp)).await.unwrap();
    assert!(resp.starts_with(b"HTTP/1.0 404"));
}
