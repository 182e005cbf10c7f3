//! `streamkit forward --listen ADDR URL SERVICE`: the shape of `ssh -L`. Every
//! connection to a local address becomes a channel to SERVICE, joined both ways
//! with half-close; every UDP source address gets a channel whose frames are its
//! datagrams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use streamkit::{Channel, Headers, Peer};
use tokio::net::UdpSocket;

#[derive(clap::Args)]
pub struct Args {
    /// Where to listen: tcp://HOST:PORT, unix:///PATH or udp://HOST:PORT; repeatable.
    #[arg(long = "listen", value_name = "ADDR", required = true)]
    listens: Vec<String>,
    /// The peer to connect to (tcp://HOST:PORT, unix:///PATH); with --via, the
    /// name of the peer to reach through the hub.
    #[arg(value_name = "URL|PEER")]
    target: String,
    /// The service each connection opens (on the server, a `tcp:` or `udp:` spec).
    service: String,
    /// Reach PEER through the hub at this URL.
    #[arg(long, value_name = "URL")]
    via: Option<String>,
    /// A UDP source silent this long (both ways) has its channel closed.
    #[arg(long = "udp-idle-timeout", value_name = "S", default_value_t = 60)]
    udp_idle_timeout: u64,
    /// Print nothing but errors (no line per connection).
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    client: crate::open::ClientArgs,
}

/// Where `forward` listens.
enum Listen {
    Tcp(String),
    Unix(PathBuf),
    Udp(String),
}

fn parse_listen(s: &str) -> anyhow::Result<Listen> {
    if let Some(a) = s.strip_prefix("tcp://") {
        Ok(Listen::Tcp(a.to_owned()))
    } else if let Some(p) = s.strip_prefix("unix://") {
        Ok(Listen::Unix(PathBuf::from(p)))
    } else if let Some(a) = s.strip_prefix("udp://") {
        Ok(Listen::Udp(a.to_owned()))
    } else {
        bail!("--listen {s:?}: use tcp://HOST:PORT, unix:///PATH or udp://HOST:PORT")
    }
}

/// What every accepted connection needs.
#[derive(Clone)]
struct Target {
    peer: Peer,
    name: String,
    service: String,
    quiet: bool,
}

impl Target {
    async fn open(&self, from: &str) -> anyhow::Result<Channel> {
        let mut headers = Headers::new();
        headers.insert("forwarded-from", from);
        Ok(self.peer.open(&self.name, &self.service, headers).await?)
    }

    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("streamkit: {line}");
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listens = args
        .listens
        .iter()
        .map(|l| parse_listen(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (peer, name) = match &args.via {
        Some(hub) => (
            args.client.connect_with(hub, true).await?.0,
            args.target.clone(),
        ),
        None => args.client.connect_with(&args.target, true).await?,
    };
    // The connection comes and goes (re-dialled): each change is one line.
    let mut events = peer.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                streamkit::Event::Connected {
                    peer,
                    endpoint,
                    dialed: true,
                } => eprintln!("streamkit: connected to {peer:?} at {endpoint}"),
                streamkit::Event::Disconnected {
                    peer,
                    endpoint,
                    reason,
                } => eprintln!("streamkit: lost {peer:?} at {endpoint} ({reason}), re-dialling"),
                _ => {}
            }
        }
    });
    let target = Target {
        peer: peer.clone(),
        name,
        service: args.service.clone(),
        quiet: args.quiet,
    };
    let idle = Duration::from_secs(args.udp_idle_timeout.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for l in listens {
        match l {
            Listen::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("cannot listen on tcp://{addr}"))?;
                let at = listener.local_addr()?;
                eprintln!("streamkit: forwarding tcp://{at} to {}", target.service);
                let t = target.clone();
                tasks.spawn(async move {
                    loop {
                        let Ok((s, from)) = listener.accept().await else {
                            accept_failed().await;
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        tokio::spawn(forward_stream(t.clone(), s, from.to_string()));
                    }
                });
            }
            Listen::Unix(path) => {
                clear_stale_socket(&path)?;
                let listener = tokio::net::UnixListener::bind(&path)
                    .with_context(|| format!("cannot listen on unix://{}", path.display()))?;
                eprintln!(
                    "streamkit: forwarding unix://{} to {}",
                    path.display(),
                    target.service
                );
                let t = target.clone();
                tasks.spawn(async move {
                    let mut n = 0u64;
                    loop {
                        let Ok((s, _)) = listener.accept().await else {
                            accept_failed().await;
                            continue;
                        };
                        n += 1;
                        let from = format!("unix#{n}");
                        tokio::spawn(forward_stream(t.clone(), s, from));
                    }
                });
            }
            Listen::Udp(addr) => {
                let socket = UdpSocket::bind(&addr)
                    .await
                    .with_context(|| format!("cannot listen on udp://{addr}"))?;
                eprintln!(
                    "streamkit: forwarding udp://{} to {}",
                    socket.local_addr()?,
                    target.service
                );
                tasks.spawn(forward_udp(target.clone(), Arc::new(socket), idle));
            }
        }
    }
    crate::serve::wait_for_signal().await?;
    tasks.abort_all();
    peer.shutdown().await;
    Ok(())
}

/// After a failed accept (out of descriptors and the like): a pause rather than
/// a spin.
pub async fn accept_failed() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Removes a socket file left by a dead process; anything else at `path` (a
/// file, a live listener) is an error, never deleted.
fn clear_stale_socket(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket", path.display());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!("{} is in use by a live listener", path.display());
    }
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
}

/// Most UDP sources with a channel at once; datagrams from others are dropped
/// (and said so) until one goes idle.
const MAX_UDP_FLOWS: usize = 1024;

/// One local connection: a channel, joined both ways until both ends are done.
async fn forward_stream<S>(t: Target, s: S, from: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let ch = match t.open(&from).await {
        Ok(ch) => ch,
        Err(e) => {
            // The visitor's connection is closed at once: a refusal, not a hang.
            eprintln!("streamkit: {from}: {e:#}");
            return;
        }
    };
    t.say(format_args!("{from} connected"));
    match ch.join(s).await {
        Ok(stats) => t.say(format_args!(
            "{from} closed ({} bytes out, {} back)",
            stats.from_io, stats.to_io
        )),
        Err(e) => t.say(format_args!("{from} failed: {e}")),
    }
}

/// A UDP source's channel: datagrams from it go out as frames; a task sends the
/// frames that come back to it.
struct Flow {
    ch: streamkit::WriteHalf,
    last: Arc<std::sync::atomic::AtomicU64>,
}

/// Datagrams to channels, a channel per source address, each closed after
/// `idle` without a datagram either way.
async fn forward_udp(t: Target, socket: Arc<UdpSocket>, idle: Duration) {
    let started = tokio::time::Instant::now();
    let now = move || started.elapsed().as_millis() as u64;
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut sweep = tokio::time::interval(idle / 2);
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(_) => continue,
            },
            _ = sweep.tick() => {
                let limit = idle.as_millis() as u64;
                flows.retain(|_, f| now().saturating_sub(f.last.load(std::sync::atomic::Ordering::Relaxed)) < limit);
                continue;
            }
        };
        if !flows.contains_key(&from) && flows.len() >= MAX_UDP_FLOWS {
            tracing::warn!(%from, "udp: {MAX_UDP_FLOWS} sources already have a channel; datagram dropped");
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = flows.entry(from) {
            let ch = match t.open(&from.to_string()).await {
                Ok(ch) => ch,
                Err(e) => {
                    eprintln!("streamkit: udp {from}: {e:#}");
                    continue;
                }
            };
            t.say(format_args!("udp {from} connected"));
            let (mut r, w) = ch.split();
            let last = Arc::new(std::sync::atomic::AtomicU64::new(now()));
            let (socket, seen, t2) = (socket.clone(), last.clone(), t.clone());
            tokio::spawn(async move {
                while let Ok(Some(frame)) = r.read_frame().await {
                    seen.store(now(), std::sync::atomic::Ordering::Relaxed);
                    let _ = socket.send_to(&frame, from).await;
                }
                t2.say(format_args!("udp {from} closed"));
            });
            slot.insert(Flow { ch: w, last });
        }
        let Some(flow) = flows.get_mut(&from) else {
            continue;
        };
        flow.last.store(now(), std::sync::atomic::Ordering::Relaxed);
        if flow.ch.write_frame(&buf[..n]).await.is_err() {
            flows.remove(&from);
        }
    }
}
