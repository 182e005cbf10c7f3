//! `streamkit expose URL NAME --to ADDR` (the shape of `ssh -R`) and the serving
//! side's `--allow-expose`: a client, possibly behind NAT, asks a server to
//! publish a local service on a public port; every visitor becomes a channel to
//! the client, joined to the local address.
//!
//! On the wire: the client opens `$expose` (headers `name`, and `port` if it
//! asks for one); the server answers with one frame, `tcp://HOST:PORT` once it
//! listens, or an error frame and the end of the channel. The channel stays open
//! as long as the exposure: when it ends, the server stops listening. Each
//! visitor is a channel the server opens to the client, service `$visit`,
//! headers `name` and `visitor=IP:PORT` (and `public=IP:PORT`, the address it
//! came to).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use streamkit::{Channel, Event, Headers, Peer};
use tokio::io::AsyncWriteExt as _;

/// The service a client opens to ask for an exposure.
pub const EXPOSE_SERVICE: &str = "$expose";
/// The service of a visitor's channel, opened by the server to the client.
pub const VISIT_SERVICE: &str = "$visit";

#[derive(clap::Args)]
pub struct Args {
    /// The server (tcp://HOST:PORT, unix:///PATH); with --via, its peer name.
    #[arg(value_name = "URL|PEER")]
    target: String,
    /// The name of the exposure (for messages and the server's log).
    #[arg(value_name = "NAME")]
    exposure: String,
    /// The local service visitors reach: tcp://HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// The public port to ask for (default: one the server chooses in what it allows).
    #[arg(long)]
    port: Option<u16>,
    /// Send a PROXY protocol v2 header to the local service first, so it sees the
    /// visitor's address.
    #[arg(long = "proxy-protocol")]
    proxy_protocol: bool,
    /// Reach the server through the hub at this URL.
    #[arg(long, value_name = "URL")]
    via: Option<String>,
    /// Print nothing but errors (no line per visitor).
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    client: crate::open::ClientArgs,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let to = args
        .to
        .strip_prefix("tcp://")
        .ok_or_else(|| anyhow!("--to takes tcp://HOST:PORT, got {:?}", args.to))?
        .to_owned();
    let (peer, server) = match &args.via {
        Some(hub) => (
            args.client.connect_with(hub, true).await?.0,
            args.target.clone(),
        ),
        None => args.client.connect_with(&args.target, true).await?,
    };
    let visits = peer
        .listen(VISIT_SERVICE)
        .context("taking visitors' channels")?;
    let (quiet, proxy) = (args.quiet, args.proxy_protocol);
    let to2 = to.clone();
    tokio::spawn(async move {
        while let Ok((meta, ch)) = visits.accept().await {
            tokio::spawn(visit(meta.headers().clone(), ch, to2.clone(), proxy, quiet));
        }
    });
    let mut events = peer.events();
    let published = async {
        loop {
            let mut headers = Headers::new();
            headers.insert("name", &args.exposure);
            if let Some(p) = args.port {
                headers.insert("port", &p.to_string());
            }
            match publish(&peer, &server, headers).await {
                Ok(mut ch) => {
                    let at = match ch.read_frame().await {
                        Ok(Some(at)) => String::from_utf8_lossy(&at).into_owned(),
                        _ => {
                            let why = ch.read_error().await.ok().flatten().map_or_else(
                                || "the server closed the request".to_owned(),
                                |w| String::from_utf8_lossy(&w).into_owned(),
                            );
                            // A rule says no: retrying will not change it.
                            bail!("cannot expose {:?}: {why}", args.exposure);
                        }
                    };
                    eprintln!("streamkit: {} is live at {at}", args.exposure);
                    // Held while the exposure lasts: it ends with the connection.
                    while let Ok(Some(_)) = ch.read_frame().await {}
                    eprintln!(
                        "streamkit: {} is down (connection lost), re-exposing",
                        args.exposure
                    );
                }
                Err(e) => eprintln!("streamkit: cannot reach the server yet: {e}"),
            }
            // Wait for the connection to come back before asking again.
            loop {
                match events.next().await {
                    Some(Event::Connected { dialed: true, .. }) => break,
                    None => return Ok(()),
                    _ => {}
                }
            }
        }
    };
    tokio::select! {
        r = published => r?,
        r = crate::serve::wait_for_signal() => r?,
    }
    peer.shutdown().await;
    Ok(())
}

async fn publish(peer: &Peer, server: &str, headers: Headers) -> anyhow::Result<Channel> {
    Ok(peer.open(server, EXPOSE_SERVICE, headers).await?)
}

/// One visitor: its channel joined to the local service.
async fn visit(headers: Headers, ch: Channel, to: String, proxy: bool, quiet: bool) {
    let visitor = headers.get("visitor").unwrap_or("?").to_owned();
    let mut local = match tokio::net::TcpStream::connect(&to).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("streamkit: visitor {visitor}: cannot connect to {to}: {e}");
            let mut ch = ch;
            ch.reset();
            return;
        }
    };
    let _ = local.set_nodelay(true);
    if proxy {
        let addrs = (
            visitor.parse::<SocketAddr>().ok(),
            headers
                .get("public")
                .and_then(|p| p.parse::<SocketAddr>().ok()),
        );
        if let (Some(src), Some(dst)) = addrs
            && local.write_all(&proxy_v2(src, dst)).await.is_err()
        {
            return;
        }
    }
    if !quiet {
        eprintln!("streamkit: visitor {visitor} connected");
    }
    match ch.join(local).await {
        Ok(s) if !quiet => eprintln!(
            "streamkit: visitor {visitor} left ({} bytes in, {} out)",
            s.to_io, s.from_io
        ),
        Err(e) if !quiet => eprintln!("streamkit: visitor {visitor} failed: {e}"),
        _ => {}
    }
}

/// A PROXY protocol v2 header (PROXY command, TCP) for a connection from `src`
/// to `dst`.
pub fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x21); // version 2, PROXY
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

/// `--allow-expose PEER:PORTS`: which peer may publish which ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: any peer.
    peer: Option<String>,
    ports: std::ops::RangeInclusive<u16>,
}

impl std::str::FromStr for Rule {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Rule> {
        let (peer, ports) = s
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("--allow-expose takes PEER:PORTS, got {s:?}"))?;
        if peer.is_empty() {
            bail!("--allow-expose {s:?}: no peer (use * for any)");
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| anyhow!("--allow-expose {s:?}: {p:?} is not a port"))
        };
        let ports = match ports.split_once('-') {
            Some((a, b)) => port(a)?..=port(b)?,
            None => port(ports)?..=port(ports)?,
        };
        if ports.is_empty() {
            bail!("--allow-expose {s:?}: an empty range");
        }
        Ok(Rule {
            peer: (peer != "*").then(|| peer.to_owned()),
            ports,
        })
    }
}

/// The serving side's rules and where exposed ports listen: shared by
/// `streamkit expose` requests and standard clients' `ssh -R`.
#[derive(Debug)]
pub struct Exposures {
    rules: Vec<Rule>,
    /// The IP address exposed ports listen on.
    bind: String,
}

impl Exposures {
    pub fn new(rules: Vec<Rule>, bind: String) -> Arc<Exposures> {
        Arc::new(Exposures { rules, bind })
    }

    /// Listens for `who`, on `asked` if given, else on the first free port the
    /// rules allow it; or why not.
    fn listen(&self, who: &str, asked: Option<u16>) -> Result<tokio::net::TcpListener, String> {
        let allowed: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| r.peer.as_deref().is_none_or(|p| p == who))
            .collect();
        let candidates: Vec<u16> = match asked {
            Some(p) if allowed.iter().any(|r| r.ports.contains(&p)) => vec![p],
            Some(p) => return Err(format!("port {p} is not allowed for {who}")),
            None if allowed.is_empty() => {
                return Err(format!("{who} may not expose anything here"));
            }
            None => allowed.iter().flat_map(|r| r.ports.clone()).collect(),
        };
        for p in candidates {
            let bound = std::net::TcpListener::bind((self.bind.as_str(), p))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(tokio::net::TcpListener::from_std);
            if let Ok(l) = bound {
                return Ok(l);
            }
        }
        Err("no allowed port is free".into())
    }
}

/// The serving side: takes `$expose` requests under `exposures`' rules, listening
/// for each allowed one.
pub fn serve(peer: &Peer, exposures: Arc<Exposures>) -> anyhow::Result<()> {
    let requests = peer.listen(EXPOSE_SERVICE)?;
    let peer = peer.clone();
    tokio::spawn(async move {
        while let Ok((meta, ch)) = requests.accept().await {
            let (peer, exposures) = (peer.clone(), exposures.clone());
            tokio::spawn(async move {
                let who = meta.remote_peer().to_owned();
                let name = meta.headers().get("name").unwrap_or("").to_owned();
                if let Err(e) = exposure(&peer, &exposures, &meta, ch).await {
                    eprintln!("streamkit: refused to expose {name:?} for {who}: {e:#}");
                }
            });
        }
    });
    Ok(())
}

/// Standard clients' `ssh -R` under the same rules: the port asked for (or, for
/// port 0, the first free one allowed), on `--expose-bind` whatever address the
/// client named.
impl streamkit::forward::RemoteForward for Exposures {
    fn listen(&self, request: streamkit::forward::ForwardRequest) -> Result<u16, String> {
        let who = request.peer.clone();
        let asked = (request.port != 0).then_some(request.port);
        let listener = Exposures::listen(self, &who, asked).inspect_err(|why| {
            eprintln!(
                "streamkit: refused ssh -R {} for {who}: {why}",
                request.port
            );
        })?;
        let at = listener.local_addr().map_err(|e| e.to_string())?;
        eprintln!(
            "streamkit: exposing ssh -R {} for {who} at tcp://{at}",
            request.port
        );
        let forwarder = request.forwarder;
        tokio::spawn(async move {
            let open = |from| {
                let forwarder = forwarder.clone();
                async move { forwarder.open(from).await }
            };
            tokio::select! {
                () = visitors(listener, at, open) => {}
                () = forwarder.closed() => {}
            }
            eprintln!(
                "streamkit: ssh -R {} for {who} at tcp://{at} is down",
                request.port
            );
        });
        Ok(at.port())
    }
}

/// Tells the requester why not, in an error frame, and ends the request.
async fn refuse(mut ch: Channel, why: String) -> anyhow::Result<()> {
    let _ = ch.write_error(why.as_bytes()).await;
    let _ = ch.close().await;
    Err(anyhow!(why))
}

/// One exposure: a listener while the request's channel lives.
async fn exposure(
    peer: &Peer,
    exposures: &Exposures,
    meta: &streamkit::ChannelMeta,
    mut ch: Channel,
) -> anyhow::Result<()> {
    let who = meta.remote_peer().to_owned();
    let name = meta.headers().get("name").unwrap_or("").to_owned();
    let asked = meta
        .headers()
        .get("port")
        .and_then(|p| p.parse::<u16>().ok());
    let listener = match exposures.listen(&who, asked) {
        Ok(l) => l,
        Err(why) => return refuse(ch, why).await,
    };
    let at = listener.local_addr()?;
    ch.write_frame(format!("tcp://{at}").as_bytes()).await?;
    eprintln!("streamkit: exposing {name:?} for {who} at tcp://{at}");
    let open = |from: SocketAddr| {
        let mut headers = Headers::new();
        headers.insert("name", &name);
        headers.insert("visitor", &from.to_string());
        headers.insert("public", &at.to_string());
        let (peer, who) = (peer.clone(), who.clone());
        async move { peer.open(&who, VISIT_SERVICE, headers).await }
    };
    // The exposure lasts as long as the request's channel.
    let held = async { while let Ok(Some(_)) = ch.read_frame().await {} };
    tokio::select! {
        () = visitors(listener, at, open) => {}
        () = held => {}
    }
    eprintln!("streamkit: {name:?} for {who} at tcp://{at} is down");
    Ok(())
}

/// Accepts visitors on `listener` (listening at `at`), each joined to a channel
/// that `open` opens to the exposing client. Runs until dropped.
async fn visitors<F, Fut>(listener: tokio::net::TcpListener, at: SocketAddr, open: F)
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<Channel, streamkit::OpenError>> + Send + 'static,
{
    loop {
        let Ok((visitor, from)) = listener.accept().await else {
            crate::forward::accept_failed().await;
            continue;
        };
        let _ = visitor.set_nodelay(true);
        let opening = open(from);
        tokio::spawn(async move {
            match opening.await {
                Ok(ch) => {
                    let _ = ch.join(visitor).await;
                }
                // The visitor's connection closes: a refusal, not a hang.
                Err(e) => tracing::info!("visitor {from} at {at}: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        let r: Rule = "laptop:8000-8999".parse().unwrap();
        assert_eq!(r.peer.as_deref(), Some("laptop"));
        assert!(r.ports.contains(&8500) && !r.ports.contains(&9000));
        let any: Rule = "*:3000".parse().unwrap();
        assert_eq!((any.peer, any.ports), (None, 3000..=3000));
        for bad in ["laptop", ":80", "x:0", "x:9-1", "x:http"] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_v2_header_for_ipv4() {
        let h = proxy_v2(
            "192.0.2.1:5555".parse().unwrap(),
            "198.51.100.2:80".parse().unwrap(),
        );
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(&h[14..16], &[0, 12]);
        assert_eq!(&h[16..20], &[192, 0, 2, 1]);
        assert_eq!(&h[24..26], &5555u16.to_be_bytes());
        assert_eq!(&h[26..28], &80u16.to_be_bytes());
        assert_eq!(h.len(), 28);
    }
}
