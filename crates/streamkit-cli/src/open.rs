//! `streamkit open URL SERVICE`.

use std::future::poll_fn;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::Poll;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use streamkit::{
    ChannelError, Headers, Identity, Options, Peer, PeerConfig, ReadHalf, Services, Trust,
};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The peer to connect to (tcp://HOST:PORT, unix:///PATH); with --via, the
    /// name of the peer to reach through the hub.
    #[arg(value_name = "URL|PEER")]
    target: String,
    /// The service to open.
    service: String,
    /// Reach PEER through the hub at this URL (end to end: PEER's key is checked
    /// against --known-hosts by its name, unless --trust-hub).
    #[arg(long, value_name = "URL")]
    via: Option<String>,
    /// A header, usually K=V; repeatable.
    #[arg(short = 'H', long = "header", value_name = "K=V")]
    headers: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// How a one-shot client identifies itself and checks the server (`open`, `call`).
#[derive(clap::Args)]
pub struct ClientArgs {
    /// Our identity key (default: a new key for this run).
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// A token to present if the server does not trust our key.
    #[command(flatten)]
    token: crate::token::TokenArgs,
    /// Our peer name (default: $USER).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    hosts: HostTrustArgs,
    /// Through a hub: take the hub's word for who the peer is (its key is not
    /// checked, and the session inside the relay is not encrypted; the peer must
    /// trust the hub's word too).
    #[arg(long = "trust-hub")]
    trust_hub: bool,
}

/// How a dialling side checks the host keys of what it reaches (`open`, `call`,
/// `serve --connect`).
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("host-trust").args(["known_hosts", "host_key_fingerprint", "insecure_accept_any_host_key"])))]
pub struct HostTrustArgs {
    /// Trust the server's host key if this known_hosts file lists it (by address,
    /// or by peer name: a peer reached through a hub is looked up by its name).
    #[arg(long = "known-hosts", value_name = "PATH")]
    known_hosts: Option<PathBuf>,
    /// Trust the server's host key if it has this fingerprint.
    #[arg(long = "host-key-fingerprint", value_name = "SHA256:...")]
    host_key_fingerprint: Option<String>,
    /// Accept any host key: the connection can be intercepted.
    #[arg(long = "insecure-accept-any-host-key")]
    insecure_accept_any_host_key: bool,
}

impl HostTrustArgs {
    /// `trust`, also trusting the host keys the flags name; an error if none was given.
    pub fn add_to(&self, trust: Trust) -> anyhow::Result<Trust> {
        Ok(if let Some(path) = &self.known_hosts {
            trust.with_known_hosts_file(path)?
        } else if let Some(fp) = &self.host_key_fingerprint {
            trust.with_fingerprint(fp)?
        } else if self.insecure_accept_any_host_key {
            trust.danger_accept_any_host_key()
        } else {
            bail!(
                "no way to check the server's host key: pass --known-hosts PATH, --host-key-fingerprint SHA256:... \
                 or --insecure-accept-any-host-key"
            );
        })
    }
}

impl ClientArgs {
    /// A peer that serves nothing, connected to `url`; returns the server's name.
    pub async fn connect(&self, url: &str) -> anyhow::Result<(Peer, String)> {
        self.connect_with(url, false).await
    }

    /// [`connect`](Self::connect); with `keep`, the connection is re-dialled
    /// whenever it is lost (and the first dial retried until it succeeds).
    pub async fn connect_with(&self, url: &str, keep: bool) -> anyhow::Result<(Peer, String)> {
        let trust = self.hosts.add_to(Trust::new())?;
        let identity = match &self.key {
            Some(path) => Identity::load(path)?,
            None => Identity::generate(),
        };
        let name = self
            .name
            .clone()
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "streamkit".to_owned());
        let mut options = Options::default();
        options.services = Services::none();
        // A command fails at once rather than waiting for a server that is down.
        if !keep {
            options.reconnect = streamkit::Reconnect::never();
        }
        let mut config = PeerConfig::new(name, identity, trust).with_options(options);
        if let Some(token) = self.token.resolve()? {
            config = config.with_token(token);
        }
        let peer = Peer::new(config)?;
        let remote = peer.connect(url).await?;
        if self.trust_hub {
            let mut options = peer.options();
            options.trusted_hubs = vec![remote.clone()];
            peer.set_options(options)?;
        }
        Ok((peer, remote))
    }
}

/// What the channel delivers next.
enum Event {
    Data(usize),
    Error(Bytes),
    End,
}

/// Waits for data or an error frame, whichever comes first.
async fn next_event(
    r: &mut ReadHalf,
    buf: &mut [u8],
    errors_done: &mut bool,
) -> Result<Event, ChannelError> {
    poll_fn(|cx| {
        if !*errors_done {
            match r.poll_read_error(cx) {
                Poll::Ready(Ok(Some(e))) => return Poll::Ready(Ok(Event::Error(e))),
                Poll::Ready(Ok(None)) => *errors_done = true,
                Poll::Ready(Err(_)) | Poll::Pending => {}
            }
        }
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Ok(Event::End)),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Event::Data(rb.filled().len()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(channel_error(e))),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn channel_error(e: std::io::Error) -> ChannelError {
    match e.into_inner().map(|inner| inner.downcast::<ChannelError>()) {
        Some(Ok(ce)) => *ce,
        Some(Err(other)) => ChannelError::ConnectionLost(other.to_string().into()),
        None => ChannelError::ConnectionLost("I/O error".into()),
    }
}

/// Reads stdin on a thread of its own, in large reads, and hands the chunks over.
///
/// tokio's `stdin()` makes one trip to its blocking pool per read: bulk input through
/// a pipe ran at a quarter of the channel's speed. A thread that only reads keeps
/// the pipe drained while the channel sends. At most four chunks wait.
pub(crate) fn read_stdin() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    const CHUNK: usize = 256 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // A pipe holds 64 KiB by default: the writer and this reader would wake each
    // other for every 64 KiB. A larger one lets each read take a whole chunk.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = rustix::pipe::fcntl_setpipe_size(std::io::stdin(), 4 * CHUNK);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; CHUNK];
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(buf)).is_err() {
                        return; // the channel is done with input
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

fn print_error_frame(e: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(e);
    if !e.ends_with(b"\n") {
        let _ = err.write_all(b"\n");
    }
}

pub async fn run(args: Args) -> anyhow::Result<u8> {
    let (peer, remote) = match &args.via {
        // The hub says who is reachable through it; `open` waits a moment for that.
        Some(hub) => (args.client.connect(hub).await?.0, args.target.clone()),
        None => args.client.connect(&args.target).await?,
    };
    let ch = peer
        .open(&remote, &args.service, Headers::from(args.headers.clone()))
        .await?;
    let meta = ch.meta().clone();
    let (mut r, mut w) = ch.split();

    // stdin to the channel, then the end of stream. If the service stops reading
    // (it finished), the rest of stdin is dropped: that is not an error.
    let mut chunks = read_stdin();
    let input = tokio::spawn(async move {
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk.context("reading stdin")?;
            // Handed over, not copied: the channel sends from this buffer.
            if w.write_bytes(chunk).await.is_err() {
                return Ok(());
            }
        }
        let _ = w.close_write().await;
        Ok::<_, anyhow::Error>(())
    });

    let mut stdout = tokio::io::stdout();
    let mut buf = vec![0u8; 64 * 1024];
    let mut errors_done = false;
    loop {
        match next_event(&mut r, &mut buf, &mut errors_done).await {
            Ok(Event::Data(n)) => {
                // A pipe tool: bytes go out as they come, not when a line is complete.
                stdout
                    .write_all(&buf[..n])
                    .await
                    .context("writing stdout")?;
                stdout.flush().await.context("writing stdout")?;
            }
            Ok(Event::Error(e)) => print_error_frame(&e),
            Ok(Event::End) => break,
            Err(e) => {
                stdout.flush().await.ok();
                // Error frames that came before the failure are still shown.
                while let Ok(Some(e)) = r.read_error().await {
                    print_error_frame(&e);
                }
                bail!("{}: {e}", args.service);
            }
        }
    }
    stdout.flush().await.context("writing stdout")?;
    while let Some(e) = r.read_error().await? {
        print_error_frame(&e);
    }
    input.abort();
    let code = crate::services::exit_status(meta.trailers().as_ref()).unwrap_or(0);
    Ok(code)
}
