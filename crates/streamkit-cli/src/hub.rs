//! `streamkit hub`: a peer that routes channels between the peers connected to it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use streamkit::hub::{Hub, HubConfig, Policy};
use streamkit::{Event, Options, PeerConfig, Services};

#[derive(clap::Args)]
pub struct Args {
    /// Endpoint to listen on (tcp://HOST:PORT, unix:///PATH); repeatable.
    #[arg(long = "bind", value_name = "URL", required = true)]
    binds: Vec<String>,
    /// The hub's peer name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Host key (OpenSSH ed25519); without it a new key is made for this run.
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// Peers whose keys are listed here may connect.
    #[arg(long = "authorized-keys", value_name = "PATH")]
    authorized_keys: Option<PathBuf>,
    /// Peers presenting this token (as the SSH password) may connect.
    #[command(flatten)]
    token: crate::token::TokenArgs,
    /// Who may reach whom: one rule per line, `[allow|deny] FROM -> TO[:SERVICE]`,
    /// first match wins (default: every peer may reach every other).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Relays one peer may have open at once.
    #[arg(long = "max-relays-per-peer", value_name = "N", default_value_t = 1024)]
    max_relays_per_peer: usize,
    /// Reset a relay after this many bytes (both ways). Default: no cap.
    #[arg(long = "max-relay-bytes", value_name = "BYTES")]
    max_relay_bytes: Option<u64>,
    /// Reset a relay after this many seconds. Default: no cap.
    #[arg(long = "max-relay-seconds", value_name = "S")]
    max_relay_seconds: Option<u64>,
    /// Bytes per second a peer may send through its relays. Default: no cap.
    #[arg(long = "max-bandwidth-per-peer", value_name = "BYTES")]
    max_bandwidth_per_peer: Option<u64>,
    /// Connections one IP address may hold (peers behind one NAT share its address).
    #[arg(
        long = "max-connections-per-address",
        value_name = "N",
        default_value_t = 256
    )]
    max_connections_per_address: usize,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (trust, given) = crate::serve::client_trust(args.authorized_keys.as_deref(), &args.token)?;
    if !given {
        bail!(
            "refusing to route for anyone: pass --authorized-keys PATH or --token-file PATH \
             (or STREAMKIT_TOKEN) to say which peers may connect"
        );
    }
    let mut config = HubConfig::default();
    if let Some(path) = &args.policy {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the policy {}", path.display()))?;
        config.policy = Policy::parse(&text).with_context(|| format!("in {}", path.display()))?;
    }
    config.max_relays_per_peer = args.max_relays_per_peer;
    config.max_relay_bytes = args.max_relay_bytes;
    config.max_relay_time = args.max_relay_seconds.map(Duration::from_secs);
    config.max_bandwidth_per_peer = args.max_bandwidth_per_peer;
    let identity = crate::serve::host_identity(args.key.as_deref())?;
    let name = args.name.clone().unwrap_or_else(crate::hostname);
    let mut options = Options::default();
    // The hub routes; it serves nothing of its own.
    options.services = Services::none();
    options.max_connections_per_address = args.max_connections_per_address;
    let hub = Hub::new(
        PeerConfig::new(name.clone(), identity, trust).with_options(options),
        config,
    )?;
    let peer = hub.peer().clone();
    for url in &args.binds {
        let bound = peer
            .bind(url)
            .await
            .with_context(|| format!("cannot listen on {url}"))?;
        eprintln!("streamkit: listening on {bound}");
    }
    eprintln!(
        "streamkit: hub {name:?} routing, host key {}",
        peer.public_key().fingerprint()
    );
    let mut events = peer.events();
    let log = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if args.quiet {
                continue;
            }
            match e {
                Event::Connected { peer, endpoint, .. } => {
                    eprintln!("streamkit: {peer} connected from {endpoint}");
                }
                Event::Disconnected { peer, reason, .. } => {
                    eprintln!("streamkit: {peer} left ({reason})");
                }
                Event::RelayRefused { from, to, reason } => {
                    eprintln!("streamkit: refused {from} -> {to}: {reason}");
                }
                Event::Relayed { from, to } => eprintln!("streamkit: relaying {from} -> {to}"),
                _ => {}
            }
        }
    });
    crate::serve::wait_for_signal().await?;
    eprintln!("streamkit: shutting down");
    peer.shutdown().await;
    log.abort();
    Ok(())
}
