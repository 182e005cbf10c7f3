//! Tunnels from the shell: `streamkit forward` (the shape of `ssh -L`) with real
//! HTTP through it (a small HTTP server here, curl as the visitor), many visitors
//! at once, Unix sockets, and UDP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;

use crate::common::*;

/// A small HTTP/1.1 server on loopback: `GET /data` answers 1 MiB of a known
/// pattern, `POST /echo` answers its body back. One request per connection.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = answer(conn);
            });
        }
    });
    addr
}

fn answer(conn: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let body = if line.starts_with("POST /echo") {
        let mut body = vec![0u8; length];
        r.read_exact(&mut body)?;
        body
    } else {
        pattern(1 << 20)
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(&body)?;
    w.flush()
}

/// A `streamkit serve` with the web server as a service, and its known_hosts.
fn server(k: &Keys, web: &str) -> (Server, String) {
    server_at(k, web, "tcp://127.0.0.1:0")
}

fn server_at(k: &Keys, web: &str, bind: &str) -> (Server, String) {
    let spec = format!("web=tcp:{web}");
    let srv = Server::start(&[
        "--bind",
        bind,
        "--name",
        "srv",
        "--key",
        &k.p("server"),
        "--authorized-keys",
        &k.p("authorized_keys"),
        "--service",
        &spec,
    ]);
    let kh = known_hosts(k, &srv.port());
    (srv, kh.display().to_string())
}

/// `streamkit forward` running until dropped; the addresses it listens on.
fn forward(
    k: &Keys,
    kh: &str,
    url: &str,
    service: &str,
    listens: &[&str],
) -> (Server, Vec<String>) {
    let mut c = Command::new(BIN);
    c.arg("forward");
    for l in listens {
        c.args(["--listen", l]);
    }
    c.args([url, service, "--key", &k.p("client"), "--known-hosts", kh]);
    let fwd = Server::from_command(c, "streamkit: forwarding");
    // One line per address: the first was the ready line.
    let mut at = Vec::new();
    for i in 0..listens.len() {
        let line = if i == 0 {
            fwd.ready_line.clone()
        } else {
            fwd.wait_line("streamkit: forwarding")
        };
        let addr = line
            .strip_prefix("streamkit: forwarding ")
            .unwrap()
            .split(" to ")
            .next()
            .unwrap()
            .to_owned();
        at.push(addr);
    }
    (fwd, at)
}

/// Through `public` (http://HOST:PORT): a 1 MiB GET and a 32 MiB POST echoed
/// back, each checked byte for byte.
fn get_and_post(k: &Keys, public: &str) {
    let out = curl(&[&format!("{public}/data")]);
    assert!(out.stdout == pattern(1 << 20));
    let body = pattern(32 << 20);
    let file = k.path("body");
    std::fs::write(&file, &body).unwrap();
    let out = curl(&[
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Expect:",
        &format!("{public}/echo"),
    ]);
    assert!(out.stdout == body, "{} bytes back", out.stdout.len());
}

fn curl(args: &[&str]) -> std::process::Output {
    require_tool("curl", "curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", stderr(&out));
    out
}

#[test]
fn http_through_forward_get_a_32_mib_post_and_200_visitors_at_once() {
    let k = Keys::new();
    let web = http_server();
    let (srv, kh) = server(&k, &web);
    let sock = k.path("web.sock");
    let unix = format!("unix://{}", sock.display());
    let (fwd, at) = forward(&k, &kh, srv.url(), "web", &["tcp://127.0.0.1:0", &unix]);
    let tcp = at[0].trim_start_matches("tcp://").to_owned();

    // GET, and a 32 MiB POST back, byte for byte.
    get_and_post(&k, &format!("http://{tcp}"));
    // The same through the Unix socket.
    let out = curl(&[
        "--unix-socket",
        sock.to_str().unwrap(),
        "http://tunnel/data",
    ]);
    assert!(out.stdout == pattern(1 << 20));

    // 200 visitors at once, each its own connection (so its own channel).
    let want = pattern(1 << 20);
    let visitors: Vec<_> = (0..200)
        .map(|_| {
            let tcp = tcp.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&tcp).unwrap();
                s.write_all(b"GET /data HTTP/1.1\r\nHost: x\r\n\r\n")
                    .unwrap();
                let mut all = Vec::new();
                s.read_to_end(&mut all).unwrap();
                let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                all.split_off(split)
            })
        })
        .collect();
    for v in visitors {
        assert!(v.join().unwrap() == want);
    }

    // The server restarts. A visitor during the outage is refused (its
    // connection closed once the connection has not come back within the open
    // wait), not left hanging; once the server is back, the tunnel works again.
    let url = srv.url().to_owned();
    drop(srv);
    fwd.wait_line("streamkit: lost \"srv\"");
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "60", &format!("http://{tcp}/data")])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "served during the outage?");
    let (_srv, _) = server_at(&k, &web, &url);
    fwd.wait_line("streamkit: connected to \"srv\"");
    let out = curl(&[&format!("http://{tcp}/data")]);
    assert!(out.stdout == pattern(1 << 20));
}

#[test]
fn udp_through_forward_each_source_its_own_channel() {
    let k = Keys::new();
    // A UDP echo server.
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_at = echo.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_536];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let spec = format!("dns=udp:{echo_at}");
    let srv = Server::start(&[
        "--bind",
        "tcp://127.0.0.1:0",
        "--key",
        &k.p("server"),
        "--authorized-keys",
        &k.p("authorized_keys"),
        "--service",
        &spec,
    ]);
    let kh = k.path("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{} {}",
            srv.port(),
            std::fs::read_to_string(k.path("server.pub")).unwrap()
        ),
    )
    .unwrap();
    let (_fwd, at) = forward(
        &k,
        kh.to_str().unwrap(),
        srv.url(),
        "dns",
        &["udp://127.0.0.1:0"],
    );
    let udp = at[0].trim_start_matches("udp://").to_owned();
    // Two sources, several datagrams each, each answered to its own source.
    for who in [b'a', b'b'] {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        for i in 0..5u8 {
            let msg = [who, i, 0xff, 0x00, who];
            s.send_to(&msg, &udp).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = s.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &msg);
        }
    }
}

/// A port free now on loopback (for a server told which ports it may publish).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server that lets "laptop" publish `port` on loopback.
fn expose_server(k: &Keys, bind: &str, port: u16) -> Server {
    let rule = format!("laptop:{port}");
    Server::start(&[
        "--bind",
        bind,
        "--name",
        "srv",
        "--key",
        &k.p("server"),
        "--authorized-keys",
        &k.p("authorized_keys"),
        "--allow-expose",
        &rule,
        "--expose-bind",
        "127.0.0.1",
    ])
}

#[test]
fn http_through_expose_and_the_exposure_comes_back_after_a_restart() {
    let k = Keys::new();
    let web = http_server();
    let port = free_port();
    let srv = expose_server(&k, "tcp://127.0.0.1:0", port);
    let url = srv.url().to_owned();
    let kh = known_hosts(&k, &srv.port());
    let to = format!("tcp://{web}");
    let mut c = Command::new(BIN);
    c.args([
        "expose",
        &url,
        "web",
        "--to",
        &to,
        "--name",
        "laptop",
        "--key",
        &k.p("client"),
        "--known-hosts",
        kh.to_str().unwrap(),
    ]);
    let exp = Server::from_command(c, "streamkit: web is live at");
    assert_eq!(
        exp.ready_line,
        format!("streamkit: web is live at tcp://127.0.0.1:{port}")
    );
    let public = format!("http://127.0.0.1:{port}");
    get_and_post(&k, &public);
    exp.wait_line("streamkit: visitor 127.0.0.1:");

    // A port the rules do not allow is refused, with the reason.
    let out = run(
        &[
            "expose",
            &url,
            "other",
            "--to",
            &to,
            "--port",
            "1",
            "--name",
            "laptop",
            "--key",
            &k.p("client"),
            "--known-hosts",
            kh.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("port 1 is not allowed for laptop"),
        "{}",
        stderr(&out)
    );

    // The server restarts: during the outage the public port is closed (visitors
    // are refused at once); then the exposure comes back by itself.
    drop(srv);
    exp.wait_line("streamkit: web is down");
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "60", &format!("{public}/data")])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let _srv = expose_server(&k, &url, port);
    exp.wait_line("streamkit: web is live at");
    let out = curl(&[&format!("{public}/data")]);
    assert!(out.stdout == pattern(1 << 20));
}

/// No install on the client: OpenSSH's own `ssh -R` against `serve --allow-expose`,
/// under the same rules as `streamkit expose`.
#[test]
fn openssh_remote_forward_exposes_a_port_under_the_rules() {
    let k = Keys::new();
    let web = http_server();
    let port = free_port();
    let srv = expose_server(&k, "tcp://127.0.0.1:0", port);
    let sp = srv.port();
    let remote = |listen: &str| {
        let mut c = ssh(&k, &sp);
        c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{listen}:{web}"))
            .arg("laptop@127.0.0.1");
        c
    };

    // Port 0: the server picks the port the rules allow, and ssh is told it.
    let exp = Server::from_command(remote("0"), "Allocated port");
    assert!(
        exp.ready_line
            .starts_with(&format!("Allocated port {port} ")),
        "{}",
        exp.ready_line
    );
    srv.wait_line(&format!(
        "streamkit: exposing ssh -R 0 for laptop at tcp://127.0.0.1:{port}"
    ));
    let public = format!("http://127.0.0.1:{port}");
    get_and_post(&k, &public);
    // Visitors at once, each its own forwarded channel.
    let visitors: Vec<_> = (0..20)
        .map(|_| {
            let url = format!("{public}/data");
            std::thread::spawn(move || curl(&[&url]).stdout)
        })
        .collect();
    for v in visitors {
        assert!(v.join().unwrap() == pattern(1 << 20));
    }

    // The port is taken: a second forward of it is refused, and ssh says so.
    let out = run_command(remote(&port.to_string()), b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );

    // ssh goes: the port closes with it.
    drop(exp);
    srv.wait_line(&format!(
        "streamkit: ssh -R 0 for laptop at tcp://127.0.0.1:{port} is down"
    ));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // A port the rules do not allow is refused, with the reason in the server's log.
    let out = run_command(remote("1"), b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );
    srv.wait_line("streamkit: refused ssh -R 1 for laptop: port 1 is not allowed for laptop");

    // The port asked for by number, once free again.
    let mut c = remote(&port.to_string());
    c.arg("-v");
    let _exp = Server::from_command(c, "debug1: remote forward success");
    let out = curl(&[&format!("{public}/data")]);
    assert!(out.stdout == pattern(1 << 20));
}

/// `forward --via` reaches a service of a peer behind a hub, and `expose --via`
/// publishes on its port, end to end.
#[test]
fn forward_and_expose_through_a_hub_to_a_peer_behind_it() {
    let k = Keys::new();
    let web = http_server();
    for name in ["hub", "carol"] {
        let out = run(&["keygen", "-f", k.p(name).as_str()], b"");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let public = |n: &str| std::fs::read_to_string(k.path(&format!("{n}.pub"))).unwrap();
    std::fs::write(k.path("hub_peers"), public("client") + &public("carol")).unwrap();
    let hub = Server::hub(&[
        "--bind",
        "tcp://127.0.0.1:0",
        "--name",
        "hub",
        "--key",
        &k.p("hub"),
        "--authorized-keys",
        &k.p("hub_peers"),
    ]);
    let kh = k.path("kh");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{} {}carol {}",
            hub.port(),
            public("hub"),
            public("carol")
        ),
    )
    .unwrap();
    let kh = kh.display().to_string();
    let spec = format!("web=tcp:{web}");
    let port = free_port();
    let rule = format!("laptop:{port}");
    let carol = Server::start(&[
        "--connect",
        hub.url(),
        "--known-hosts",
        &kh,
        "--name",
        "carol",
        "--key",
        &k.p("carol"),
        "--authorized-keys",
        &k.p("authorized_keys"),
        "--service",
        &spec,
        "--allow-expose",
        &rule,
        "--expose-bind",
        "127.0.0.1",
    ]);
    carol.wait_line("streamkit: connected to \"hub\"");
    let mut c = Command::new(BIN);
    c.args([
        "forward",
        "--listen",
        "tcp://127.0.0.1:0",
        "--via",
        hub.url(),
        "carol",
        "web",
        "--key",
        &k.p("client"),
        "--name",
        "alice",
        "--known-hosts",
        &kh,
    ]);
    let fwd = Server::from_command(c, "streamkit: forwarding");
    let at = fwd
        .ready_line
        .strip_prefix("streamkit: forwarding tcp://")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let out = curl(&[&format!("http://{at}/data")]);
    assert!(out.stdout == pattern(1 << 20));

    // A laptop behind the hub too publishes its web server on carol's port.
    let to = format!("tcp://{web}");
    let mut c = Command::new(BIN);
    c.args([
        "expose",
        "--via",
        hub.url(),
        "carol",
        "web",
        "--to",
        &to,
        "--name",
        "laptop",
        "--key",
        &k.p("client"),
        "--known-hosts",
        &kh,
    ]);
    let exp = Server::from_command(c, "streamkit: web is live at");
    assert_eq!(
        exp.ready_line,
        format!("streamkit: web is live at tcp://127.0.0.1:{port}")
    );
    let out = curl(&[&format!("http://127.0.0.1:{port}/data")]);
    assert!(out.stdout == pattern(1 << 20));
}
