//! `streamkit bench`: Streamkit measured side by side with what users would pick
//! instead, in one run on one machine, as ratios.
//!
//! Both ends of every measurement run in this process on loopback, Streamkit and
//! baselines alike, so they share the same cores and the same noise.

mod baseline;
mod hub;
mod procs;
mod rpc;
mod tunnels;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use streamkit::{Channel, Identity, Options, Peer, PeerConfig, Reconnect, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use baseline::PlainRussh;

/// Bytes per write in the bulk rows.
const CHUNK: usize = 256 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Smaller counts, for a smoke check (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Also write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Measure only these groups (comma-separated): memory, latency, rpc, bulk,
    /// frames, opens, processes, hub, tunnels. All of them by default.
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    only: Vec<Group>,
    /// (The two-process rows' plain russh server: WINDOW:PACKET.)
    #[arg(long, hide = true, value_name = "WINDOW:PACKET")]
    russh_server: Option<String>,
    /// (The two-process rows' plain russh client: ADDR/WINDOW:PACKET.)
    #[arg(long, hide = true, value_name = "ADDR/WINDOW:PACKET")]
    russh_client: Option<String>,
}

/// A group of rows in the table.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Group {
    Memory,
    Latency,
    Rpc,
    Bulk,
    Frames,
    Opens,
    Processes,
    Hub,
    Tunnels,
}

/// How much each row does.
struct Sizes {
    quick: bool,
    bulk: usize,
    frames: usize,
    round_trips: usize,
    opens: usize,
    in_flight: usize,
    idle: usize,
    calls: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                quick,
                bulk: 32 << 20,
                frames: 100_000,
                round_trips: 1_000,
                opens: 200,
                in_flight: 200,
                idle: 200,
                calls: 2_048,
            }
        } else {
            Sizes {
                quick,
                bulk: 512 << 20,
                frames: 1_000_000,
                round_trips: 10_000,
                opens: 2_000,
                in_flight: 1_000,
                idle: 1_000,
                calls: 20_480,
            }
        }
    }
}

/// One line of the table.
struct Row {
    name: String,
    unit: &'static str,
    ours: f64,
    baseline: &'static str,
    theirs: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.theirs.filter(|t| *t > 0.0).map(|t| self.ours / t)
    }
}

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Resident memory of this process, in bytes.
fn rss() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib * 1024.0)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(spec) = &args.russh_server {
        return procs::russh_server(spec).await;
    }
    if let Some(spec) = &args.russh_client {
        return procs::russh_client(spec).await;
    }
    let sizes = Sizes::new(args.quick);
    let dir = std::env::temp_dir().join(format!("streamkit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating a scratch directory")?;
    let started = Instant::now();
    let only = args.only.clone();
    let want = move |g: Group| only.is_empty() || only.contains(&g);
    let result = measure(&sizes, &dir, &want).await;
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    print_table(&rows);
    println!(
        "\n{} rows in {:.1} s ({} mode). Ratios above 1 favour Streamkit for rates; for latency and memory, below 1 does.",
        rows.len(),
        started.elapsed().as_secs_f64(),
        if args.quick { "quick" } else { "full" }
    );
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(&rows, args.quick))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("Wrote {}.", path.display());
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<40} {:>12}   {:<30} {:>12} {:>8}",
        "row", "streamkit", "baseline", "baseline", "ratio"
    );
    println!("{}", "-".repeat(108));
    for r in rows {
        let theirs = r.theirs.map_or("-".to_owned(), fmt_num);
        let ratio = r.ratio().map_or("-".to_owned(), |x| format!("{x:.2}x"));
        println!(
            "{:<40} {:>12}   {:<30} {:>12} {:>8}",
            format!("{} ({})", r.name, r.unit),
            fmt_num(r.ours),
            r.baseline,
            theirs,
            ratio
        );
    }
}

fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        let mut s = format!("{:.0}", x);
        let mut i = s.len() as isize - 3;
        while i > 0 {
            s.insert(i as usize, ',');
            i -= 3;
        }
        s
    } else {
        format!("{x:.1}")
    }
}

fn to_json(rows: &[Row], quick: bool) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(
        out,
        "  \"mode\": \"{}\",",
        if quick { "quick" } else { "full" }
    );
    out.push_str("  \"rows\": [\n");
    for (i, r) in rows.iter().enumerate() {
        let num = |x: Option<f64>| x.map_or("null".to_owned(), |v| format!("{v:.3}"));
        let _ = write!(
            out,
            "    {{\"name\": {:?}, \"unit\": {:?}, \"streamkit\": {}, \"baseline\": {:?}, \"baseline_value\": {}, \"ratio\": {}}}",
            r.name,
            r.unit,
            num(Some(r.ours)),
            r.baseline,
            num(r.theirs),
            num(r.ratio())
        );
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]\n}\n");
    out
}

/// Two Streamkit peers, `client` connected to `server` over `url`'s transport.
struct Pair {
    client: Peer,
    server: Peer,
}

/// Reads stdin in large chunks on a thread of its own (`streamkit open`'s way).
fn read_stdin() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    crate::open::read_stdin()
}

fn options() -> Options {
    let mut o = Options::default();
    o.reconnect = Reconnect::never();
    o.max_connections_per_address = 100_000;
    o.max_channels_per_connection = 100_000;
    o.max_pending_accepts = 100_000;
    o
}

async fn pair(url: &str) -> anyhow::Result<Pair> {
    let (a, b) = (Identity::generate(), Identity::generate());
    let server = Peer::new(
        PeerConfig::new("server", b.clone(), Trust::new().with_key(a.public_key()))
            .with_options(options()),
    )?;
    let client = Peer::new(
        PeerConfig::new("client", a, Trust::new().with_key(b.public_key())).with_options(options()),
    )?;
    let bound = server.bind(url).await?;
    serve(&server);
    client.connect(&bound.to_string()).await?;
    Ok(Pair { client, server })
}

/// The server's services: `sink` (reads to the end, then closes), `frames`
/// (counts frames to the end), `echo` (bytes back), `hold` (idle until closed).
fn serve(server: &Peer) {
    let server = server.clone();
    tokio::spawn(async move {
        while let Ok((meta, ch)) = server.accept().await {
            tokio::spawn(async move {
                let _ = serve_one(meta.service(), ch).await;
            });
        }
    });
}

async fn serve_one(service: &str, mut ch: Channel) -> anyhow::Result<()> {
    match service {
        "sink" => {
            // Dropped as they come, as the plain russh server's sink does.
            while !ch.read_chunk(usize::MAX).await?.is_empty() {}
            ch.close().await?;
        }
        "frames" => {
            let mut n = 0u64;
            while ch.read_frame().await?.is_some() {
                n += 1;
            }
            ch.write_trailers([format!("frames={n}").as_str()]).await?;
            ch.close().await?;
        }
        "echo" => {
            let (mut r, mut w) = ch.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.close_write().await?;
        }
        "hold" => {
            let mut b = [0u8; 1];
            let _ = ch.read(&mut b).await;
        }
        _ => {}
    }
    Ok(())
}

/// MB/s through `streams` channels at once, `total` bytes in all.
async fn sk_bulk(p: &Pair, streams: usize, total: usize) -> anyhow::Result<f64> {
    sk_bulk_to(&p.client, "server", streams, total).await
}

/// MB/s through `streams` channels to `target`'s `sink` at once, `total` bytes in all.
async fn sk_bulk_to(
    client: &Peer,
    target: &str,
    streams: usize,
    total: usize,
) -> anyhow::Result<f64> {
    let mut chans = Vec::new();
    for _ in 0..streams {
        chans.push(client.open(target, "sink", ()).await?);
    }
    let per = total / streams;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut ch in chans {
        set.spawn(async move {
            // Handed over without a copy, as the plain russh rows hand theirs.
            let buf = bytes::Bytes::from(vec![0x5au8; CHUNK]);
            let mut left = per;
            while left > 0 {
                let k = left.min(CHUNK);
                ch.write_bytes(buf.slice(..k)).await?;
                left -= k;
            }
            // Returns once the server confirmed it received everything.
            ch.close().await?;
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(mb_per_s(per * streams, t.elapsed().as_secs_f64()))
}

async fn sk_frames(p: &Pair, size: usize, n: usize) -> anyhow::Result<f64> {
    let mut ch = p.client.open("server", "frames", ()).await?;
    let payload = vec![7u8; size];
    let t = Instant::now();
    for _ in 0..n {
        ch.write_frame(&payload).await?;
    }
    ch.close_write().await?;
    let secs = t.elapsed().as_secs_f64();
    while ch.read_frame().await?.is_some() {}
    let want = format!("frames={n}");
    let trailers = ch.meta().trailers().unwrap_or_default();
    if !trailers.iter().any(|t| *t == want) {
        bail!("frames: the server did not count {n} frames ({trailers:?})");
    }
    Ok(n as f64 / secs)
}

async fn sk_echo(p: &Pair, n: usize) -> anyhow::Result<Vec<Duration>> {
    sk_echo_to(&p.client, "server", n).await
}

/// Round trips of 64 bytes through `target`'s `echo` service.
async fn sk_echo_to(client: &Peer, target: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut ch = client.open(target, "echo", ()).await?;
    let msg = [3u8; 64];
    let mut back = [0u8; 64];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ch.write_all(&msg).await?;
        ch.read_exact(&mut back).await?;
        rtts.push(t.elapsed());
    }
    ch.close().await?;
    Ok(rtts)
}

async fn sk_open_once(p: &Peer) -> anyhow::Result<()> {
    let mut ch = p.open("server", "echo", ()).await?;
    ch.write_all(b"x").await?;
    let mut b = [0u8; 1];
    ch.read_exact(&mut b).await?;
    ch.close().await?;
    Ok(())
}

/// Opens per second, one after another.
async fn opens_sequential<F, Fut>(n: usize, once: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    once().await?; // warm-up
    let t = Instant::now();
    for _ in 0..n {
        once().await?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Opens per second with `n` in flight at once.
async fn opens_parallel<F, Fut>(n: usize, once: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(once());
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The best of `runs` of each of two measurements, taken in turns so that a
/// noisy spell on a shared machine slows both alike.
async fn best_pair<F, Fut, G, Gut>(runs: usize, ours: F, theirs: G) -> anyhow::Result<(f64, f64)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
    G: Fn() -> Gut,
    Gut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..runs {
        a = a.max(ours().await?);
        b = b.max(theirs().await?);
    }
    Ok((a, b))
}

/// The best of `runs`: noise on a shared machine only ever slows a run down.
async fn best<F, Fut>(runs: usize, f: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut top = 0.0f64;
    for _ in 0..runs {
        top = top.max(f().await?);
    }
    Ok(top)
}

async fn measure(
    s: &Sizes,
    dir: &std::path::Path,
    want: &dyn Fn(Group) -> bool,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let runs = if s.quick { 2 } else { 5 };
    let opts = Options::default();
    // The same SSH window as ours (twice the credit window's ceiling).
    let window = opts
        .max_channel_window
        .max(opts.channel_window)
        .saturating_mul(2);
    let plain = PlainRussh::start(window, opts.max_packet_size).await?;
    let plain_conn = plain.connect().await?;
    let tcp = pair("tcp://127.0.0.1:0").await?;
    let unix = pair(&format!("unix://{}", dir.join("sk.sock").display())).await?;
    let inproc = pair(&format!("inproc://bench-{}", std::process::id())).await?;
    eprintln!(
        "measuring ({} MiB per bulk run, best of {runs})...",
        s.bulk >> 20
    );

    if want(Group::Memory) {
        // Memory first, while the heap is fresh: freed bulk buffers would be reused.
        // ---- memory (both ends live in this process: per end is half the growth)
        let per_end =
            |before: f64, after: f64, n: usize| (after - before).max(0.0) / n as f64 / 2.0;
        let before = rss()?;
        let mut held = Vec::with_capacity(s.idle);
        for _ in 0..s.idle {
            held.push(tcp.client.open("server", "hold", ()).await?);
        }
        let ours = per_end(before, rss()?, s.idle);
        let before = rss()?;
        let held_plain = baseline::plain_idle_channels(&plain_conn, s.idle).await?;
        let theirs = per_end(before, rss()?, s.idle);
        rows.push(Row {
            name: format!("memory per idle channel, {}", s.idle),
            unit: "bytes/end",
            ours,
            baseline: "plain russh channel",
            theirs: Some(theirs),
        });
        drop(held);
        drop(held_plain);

        // Connections: the peers exist before the first measurement, so only the
        // connections themselves are counted.
        let ids: Vec<Identity> = (0..s.idle).map(|_| Identity::generate()).collect();
        let server_id = Identity::generate();
        let mut trust = Trust::new();
        for id in &ids {
            trust = trust.with_key(id.public_key());
        }
        let server =
            Peer::new(PeerConfig::new("server", server_id.clone(), trust).with_options(options()))?;
        let server_addr = server.bind("tcp://127.0.0.1:0").await?.to_string();
        let mut clients = Vec::with_capacity(s.idle);
        for (i, id) in ids.into_iter().enumerate() {
            clients.push(Peer::new(
                PeerConfig::new(
                    format!("c{i}"),
                    id,
                    Trust::new().with_key(server_id.public_key()),
                )
                .with_options(options()),
            )?);
        }
        let before = rss()?;
        for c in &clients {
            c.connect(&server_addr).await?;
        }
        let ours = per_end(before, rss()?, s.idle);
        let before = rss()?;
        let mut conns = Vec::with_capacity(s.idle);
        for _ in 0..s.idle {
            conns.push(plain.connect().await?);
        }
        let theirs = per_end(before, rss()?, s.idle);
        rows.push(Row {
            name: format!("memory per idle connection, {}", s.idle),
            unit: "bytes/end",
            ours,
            baseline: "plain russh connection",
            theirs: Some(theirs),
        });
        drop(conns);
        for c in clients {
            c.shutdown().await;
        }
        server.shutdown().await;
    }
    if want(Group::Latency) {
        // ---- latency
        let mut ours = sk_echo(&tcp, s.round_trips).await?;
        let (c, sv) = baseline::tcp_pair().await?;
        let mut theirs = baseline::raw_echo(c, sv, s.round_trips).await?;
        let mut plain_rtts = baseline::plain_echo(&plain_conn, s.round_trips).await?;
        ours.sort();
        theirs.sort();
        plain_rtts.sort();
        for (label, p) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
            rows.push(Row {
                name: format!("echo 64 B round trip {label}"),
                unit: "µs",
                ours: micros(percentile(&ours, p)),
                baseline: "raw TCP socket",
                theirs: Some(micros(percentile(&theirs, p))),
            });
        }
        rows.push(Row {
            name: "echo 64 B round trip p50".into(),
            unit: "µs",
            ours: micros(percentile(&ours, 0.5)),
            baseline: "plain russh channel",
            theirs: Some(micros(percentile(&plain_rtts, 0.5))),
        });
    }
    if want(Group::Rpc) {
        // ---- rpc: unary calls, 100-byte payload, protobuf both sides
        let levels = [1, 64];
        let ours = rpc::streamkit(&tcp.server, &tcp.client, s.calls, &levels).await?;
        let theirs = rpc::tonic(s.calls, &levels).await?;
        for ((n, o), t) in levels.iter().zip(&ours).zip(&theirs) {
            rows.push(Row {
                name: format!("rpc unary 100 B, {n} in flight"),
                unit: "calls/s",
                ours: o.per_sec,
                baseline: "tonic (gRPC)",
                theirs: Some(t.per_sec),
            });
            for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
                rows.push(Row {
                    name: format!("rpc unary 100 B, {n} in flight, {label}"),
                    unit: "µs",
                    ours: micros(percentile(&o.latencies, p)),
                    baseline: "tonic (gRPC)",
                    theirs: Some(micros(percentile(&t.latencies, p))),
                });
            }
        }
    }
    if want(Group::Bulk) {
        // ---- bulk
        let (ours, theirs) = best_pair(
            runs,
            || sk_bulk(&tcp, 1, s.bulk),
            || baseline::plain_bulk(&plain_conn, 1, s.bulk),
        )
        .await?;
        rows.push(Row {
            name: "bulk tcp, 1 channel".into(),
            unit: "MB/s",
            ours,
            baseline: "plain russh channel",
            theirs: Some(theirs),
        });
        let raw_tcp = best(runs, || async {
            let (c, sv) = baseline::tcp_pair().await?;
            baseline::raw_bulk(c, sv, s.bulk).await
        })
        .await?;
        rows.push(Row {
            name: "bulk tcp, 1 channel".into(),
            unit: "MB/s",
            ours,
            baseline: "raw TCP socket",
            theirs: Some(raw_tcp),
        });
        let (ours16, theirs16) = best_pair(
            runs,
            || sk_bulk(&tcp, 16, s.bulk),
            || baseline::plain_bulk(&plain_conn, 16, s.bulk),
        )
        .await?;
        rows.push(Row {
            name: "bulk tcp, 16 channels".into(),
            unit: "MB/s",
            ours: ours16,
            baseline: "streamkit, 1 channel",
            theirs: Some(ours),
        });
        rows.push(Row {
            name: "bulk tcp, 16 channels".into(),
            unit: "MB/s",
            ours: ours16,
            baseline: "plain russh, 16 channels",
            theirs: Some(theirs16),
        });
        let (ours_unix, raw_unix) = best_pair(
            runs,
            || sk_bulk(&unix, 1, s.bulk),
            || async {
                let (c, sv) = baseline::unix_pair(dir).await?;
                baseline::raw_bulk(c, sv, s.bulk).await
            },
        )
        .await?;
        rows.push(Row {
            name: "bulk unix, 1 channel".into(),
            unit: "MB/s",
            ours: ours_unix,
            baseline: "raw Unix socket",
            theirs: Some(raw_unix),
        });
        let ours_unix16 = best(runs, || sk_bulk(&unix, 16, s.bulk)).await?;
        rows.push(Row {
            name: "bulk unix, 16 channels".into(),
            unit: "MB/s",
            ours: ours_unix16,
            baseline: "streamkit, 1 channel",
            theirs: Some(ours_unix),
        });

        let (ours_inproc, mpsc) = best_pair(
            runs,
            || sk_bulk(&inproc, 1, s.bulk),
            || baseline::mpsc_bulk(s.bulk),
        )
        .await?;
        rows.push(Row {
            name: "bulk inproc, 1 channel".into(),
            unit: "MB/s",
            ours: ours_inproc,
            baseline: "streamkit tcp, 1 channel",
            theirs: Some(ours),
        });
        rows.push(Row {
            name: "bulk inproc, 1 channel".into(),
            unit: "MB/s",
            ours: ours_inproc,
            baseline: "tokio mpsc of chunks",
            theirs: Some(mpsc),
        });
        let ours_inproc16 = best(runs, || sk_bulk(&inproc, 16, s.bulk)).await?;
        rows.push(Row {
            name: "bulk inproc, 16 channels".into(),
            unit: "MB/s",
            ours: ours_inproc16,
            baseline: "streamkit, 1 channel",
            theirs: Some(ours_inproc),
        });
    }
    if want(Group::Frames) {
        // ---- frames
        for size in [64usize, 4096] {
            let n = if size == 64 { s.frames } else { s.frames / 4 };
            let (ours, theirs) = best_pair(
                runs,
                || sk_frames(&inproc, size, n),
                || baseline::mpsc_frames(size, n),
            )
            .await?;
            rows.push(Row {
                name: format!("frames inproc, {size} B one way"),
                unit: "frames/s",
                ours,
                baseline: "tokio mpsc, one per frame",
                theirs: Some(theirs),
            });
        }
        for size in [64usize, 4096] {
            let n = if size == 64 { s.frames } else { s.frames / 4 };
            let (ours, theirs) = best_pair(
                runs,
                || sk_frames(&tcp, size, n),
                || async {
                    let (c, sv) = baseline::tcp_pair().await?;
                    baseline::raw_frames(c, sv, size, n).await
                },
            )
            .await?;
            rows.push(Row {
                name: format!("frames tcp, {size} B one way"),
                unit: "frames/s",
                ours,
                baseline: "raw TCP, length-prefixed",
                theirs: Some(theirs),
            });
        }
    }
    if want(Group::Opens) {
        // ---- opens
        let client = tcp.client.clone();
        let (ours, theirs) = best_pair(
            runs,
            || opens_sequential(s.opens, || sk_open_once(&client)),
            || opens_sequential(s.opens, || baseline::plain_open_once(&plain_conn)),
        )
        .await?;
        rows.push(Row {
            name: "opens, sequential".into(),
            unit: "opens/s",
            ours,
            baseline: "plain russh channel",
            theirs: Some(theirs),
        });
        let plain_conn = std::sync::Arc::new(plain_conn);
        let (ours, theirs) = best_pair(
            runs,
            || {
                opens_parallel(s.in_flight, || {
                    let c = client.clone();
                    async move { sk_open_once(&c).await }
                })
            },
            || {
                opens_parallel(s.in_flight, || {
                    let c = plain_conn.clone();
                    async move { baseline::plain_open_once(&c).await }
                })
            },
        )
        .await?;
        rows.push(Row {
            name: format!("opens, {} in flight", s.in_flight),
            unit: "opens/s",
            ours,
            baseline: "plain russh channel",
            theirs: Some(theirs),
        });
    }
    if want(Group::Processes) {
        // ---- two processes: ours, plain russh and OpenSSH, in turns
        rows.extend(procs::rows(s, runs, dir, window, opts.max_packet_size).await?);
    }
    if want(Group::Hub) {
        // ---- through a hub, and a hub's scale
        rows.extend(hub::rows(s, runs, &tcp, dir).await?);
    }
    if want(Group::Tunnels) {
        // ---- HTTP through forward and expose (processes of our own)
        rows.extend(tunnels::rows(s, runs, &tcp, dir).await?);
    }
    tcp.client.shutdown().await;
    tcp.server.shutdown().await;
    unix.client.shutdown().await;
    unix.server.shutdown().await;
    inproc.client.shutdown().await;
    inproc.server.shutdown().await;
    Ok(rows)
}
