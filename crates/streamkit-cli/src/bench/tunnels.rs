//! The tunnel rows: HTTP through `streamkit forward` and `streamkit expose`
//! (real processes: a `serve`, a `forward`, an `expose`) beside the same load
//! sent straight to the web server, and bulk through a tunnel.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{Pair, Row, Sizes, micros, percentile, sk_bulk, sk_echo_to};

/// Bytes of each small response.
const SMALL: usize = 64;

/// A minimal HTTP/1.1 server: `GET /big` answers `big` bytes, anything else 64;
/// keep-alive unless the request says `Connection: close`.
async fn web(big: usize) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?.to_string();
    // Made once: a body allocated (and its pages touched) per connection would
    // cost more than the connection.
    let bodies: std::sync::Arc<(Vec<u8>, Vec<u8>)> =
        std::sync::Arc::new((vec![b'x'; SMALL], vec![b'y'; big]));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let _ = answer(s, &bodies).await;
            });
        }
    });
    Ok(at)
}

async fn answer(s: TcpStream, bodies: &(Vec<u8>, Vec<u8>)) -> anyhow::Result<()> {
    let (r, mut w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let (body_small, body_big) = bodies;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            if h == "\r\n" {
                break;
            }
            close |= h.eq_ignore_ascii_case("connection: close\r\n");
        }
        let body = if line.starts_with("GET /big") {
            body_big
        } else {
            body_small
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(body).await?;
        if close {
            return Ok(());
        }
    }
}

/// Sends `GET path` on `s` and reads the whole response; the body's length.
async fn request(
    s: &mut tokio::io::BufStream<TcpStream>,
    path: &str,
    close: bool,
) -> anyhow::Result<usize> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut length = 0usize;
    let mut status = String::new();
    s.read_line(&mut status).await?;
    if !status.starts_with("HTTP/1.1 200") {
        bail!("bad response {status:?}");
    }
    loop {
        let mut h = String::new();
        if s.read_line(&mut h).await? == 0 {
            bail!("connection closed in the headers");
        }
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse()?;
        }
    }
    let mut left = length;
    const READ: usize = 64 * 1024;
    let mut buf = vec![0u8; READ];
    while left > 0 {
        let n = s.read(&mut buf[..left.min(READ)]).await?;
        if n == 0 {
            bail!("connection closed in the body");
        }
        left -= n;
    }
    Ok(length)
}

/// Requests per second and their latencies: `conns` clients at once, each making
/// `per` requests, on one connection each (keep-alive) or a new one per request.
async fn load(
    at: &str,
    conns: usize,
    per: usize,
    keep_alive: bool,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let at: std::net::SocketAddr = at.parse().context("an address")?;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        set.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut kept = None;
            for _ in 0..per {
                let t = Instant::now();
                let mut s = match kept.take() {
                    Some(s) => s,
                    None => {
                        let c = TcpStream::connect(at).await?;
                        c.set_nodelay(true)?;
                        tokio::io::BufStream::new(c)
                    }
                };
                request(&mut s, "/", !keep_alive).await?;
                lat.push(t.elapsed());
                if keep_alive {
                    kept = Some(s);
                }
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut all = Vec::with_capacity(conns * per);
    while let Some(r) = set.join_next().await {
        all.extend(r??);
    }
    let rate = all.len() as f64 / t.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, all))
}

/// MB/s of one `GET /big` through `at`.
async fn bulk(at: &str) -> anyhow::Result<f64> {
    let c = TcpStream::connect(at).await?;
    c.set_nodelay(true)?;
    let mut s = tokio::io::BufStream::new(c);
    let t = Instant::now();
    let n = request(&mut s, "/big", true).await?;
    Ok(super::mb_per_s(n, t.elapsed().as_secs_f64()))
}

/// A `streamkit` process of ours, ready once it printed a line starting with
/// `ready`; the rest of that line.
async fn start(args: &[&str], ready: &str) -> anyhow::Result<(tokio::process::Child, String)> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting streamkit {}", args[0]))?;
    let err = child.stderr.take().context("no stderr")?;
    let mut lines = tokio::io::BufReader::new(err).lines();
    let rest = loop {
        let Some(line) = lines.next_line().await? else {
            bail!("streamkit {} ended before it was ready", args[0]);
        };
        if let Some(rest) = line.strip_prefix(ready) {
            break rest.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, rest))
}

pub(super) async fn rows(
    s: &Sizes,
    runs: usize,
    direct: &Pair,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Row>> {
    let big = if s.quick { 32 << 20 } else { 256 << 20 };
    let (conns, per, fresh) = if s.quick {
        (8, 250, 50)
    } else {
        (8, 2_500, 250)
    };
    let web = web(big).await?;
    let (server_id, client_id) = (
        streamkit::Identity::generate(),
        streamkit::Identity::generate(),
    );
    let (sk, ck, ak) = (dir.join("t_server"), dir.join("t_client"), dir.join("t_ak"));
    server_id.save(&sk, "server")?;
    client_id.save(&ck, "client")?;
    std::fs::write(&ak, client_id.public_key().to_openssh() + "\n")?;
    let fp = server_id.public_key().fingerprint();
    let (sk, ck, ak) = (
        sk.display().to_string(),
        ck.display().to_string(),
        ak.display().to_string(),
    );
    let spec = format!("web=tcp:{web}");
    let (_server, url) = start(
        &[
            "serve",
            "--bind",
            "tcp://127.0.0.1:0",
            "--key",
            &sk,
            "--authorized-keys",
            &ak,
            "--name",
            "server",
            "--service",
            &spec,
            "--service",
            "echo=echo",
            "--allow-expose",
            "*:40000-60000",
            "--expose-bind",
            "127.0.0.1",
        ],
        "streamkit: listening on ",
    )
    .await?;
    let (_forward, fwd) = start(
        &[
            "forward",
            "-q",
            "--listen",
            "tcp://127.0.0.1:0",
            &url,
            "web",
            "--key",
            &ck,
            "--host-key-fingerprint",
            &fp,
        ],
        "streamkit: forwarding tcp://",
    )
    .await?;
    let fwd = fwd.split(' ').next().unwrap_or_default().to_owned();
    let to = format!("tcp://{web}");
    let (_expose, exp) = start(
        &[
            "expose",
            "-q",
            &url,
            "web",
            "--to",
            &to,
            "--name",
            "bench",
            "--key",
            &ck,
            "--host-key-fingerprint",
            &fp,
        ],
        "streamkit: web is live at tcp://",
    )
    .await?;

    let mut rows = Vec::new();
    // What the tunnel adds to one request, beside our own round trip to the same
    // server process (from this process, over its own connection).
    let client = streamkit::Peer::new(
        streamkit::PeerConfig::new(
            "bench-echo",
            client_id.clone(),
            streamkit::Trust::new().with_key(server_id.public_key()),
        )
        .with_options(super::options()),
    )?;
    client.connect(&url).await?;
    let mut echo = sk_echo_to(&client, "server", per).await?;
    echo.sort();
    let echo = micros(percentile(&echo, 0.5));
    let (_, direct_one) = load(&web, 1, per, true).await?;
    let direct_one = micros(percentile(&direct_one, 0.5));
    for (label, at) in [("forward", &fwd), ("expose", &exp)] {
        let (_, lat) = load(at, 1, per, true).await?;
        rows.push(Row {
            name: format!("tunnel: p50 added via {label} (one client)"),
            unit: "µs",
            ours: micros(percentile(&lat, 0.5)) - direct_one,
            baseline: "2 × our echo round trip to the server",
            theirs: Some(2.0 * echo),
        });
    }
    client.shutdown().await;
    let (direct_rate, mut direct_lat) = load(&web, conns, per, true).await?;
    direct_lat.sort();
    for (label, at) in [("forward", &fwd), ("expose", &exp)] {
        let (rate, lat) = load(at, conns, per, true).await?;
        rows.push(Row {
            name: format!("tunnel: http keep-alive via {label}"),
            unit: "req/s",
            ours: rate,
            baseline: "straight to the web server",
            theirs: Some(direct_rate),
        });
        for (p, q) in [("p50", 0.5), ("p99", 0.99)] {
            rows.push(Row {
                name: format!("tunnel: http keep-alive via {label}, {p}"),
                unit: "µs",
                ours: micros(percentile(&lat, q)),
                baseline: "straight to the web server",
                theirs: Some(micros(percentile(&direct_lat, q))),
            });
        }
    }
    let (direct_rate, mut direct_lat) = load(&web, conns, fresh, false).await?;
    direct_lat.sort();
    for (label, at) in [("forward", &fwd), ("expose", &exp)] {
        let (rate, lat) = load(at, conns, fresh, false).await?;
        rows.push(Row {
            name: format!("tunnel: http new connection per request via {label}"),
            unit: "req/s",
            ours: rate,
            baseline: "straight to the web server",
            theirs: Some(direct_rate),
        });
        rows.push(Row {
            name: format!("tunnel: http new connection per request via {label}, p50"),
            unit: "µs",
            ours: micros(percentile(&lat, 0.5)),
            baseline: "straight to the web server",
            theirs: Some(micros(percentile(&direct_lat, 0.5))),
        });
    }
    let mut best = 0.0f64;
    let mut one_channel = 0.0f64;
    for _ in 0..runs {
        best = best.max(bulk(&fwd).await?);
        one_channel = one_channel.max(sk_bulk(direct, 1, big).await?);
    }
    rows.push(Row {
        name: "tunnel: bulk GET via forward".into(),
        unit: "MB/s",
        ours: best,
        baseline: "streamkit tcp, 1 channel",
        theirs: Some(one_channel),
    });
    Ok(rows)
}
