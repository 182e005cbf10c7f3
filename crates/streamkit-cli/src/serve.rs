//! `streamkit serve`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use streamkit::{Identity, Options, Peer, PeerConfig, Services, Trust};

use crate::services;

#[derive(clap::Args)]
pub struct Args {
    /// Endpoint to listen on (tcp://HOST:PORT, unix:///PATH); repeatable.
    #[arg(
        long = "bind",
        value_name = "URL",
        required_unless_present = "connects"
    )]
    binds: Vec<String>,
    /// Dial this peer or hub (tcp://HOST:PORT, unix:///PATH) and serve through the
    /// connection too, re-dialling it whenever it is lost; repeatable. From behind
    /// NAT, a hub makes the services reachable by this peer's name.
    #[arg(long = "connect", value_name = "URL")]
    connects: Vec<String>,
    /// How to check the host keys of what --connect dials.
    #[command(flatten)]
    hosts: crate::open::HostTrustArgs,
    /// Let PEER (a name, or *) publish PORTS (a port, or a range like 8000-8999)
    /// with `streamkit expose` or a standard `ssh -R`; repeatable. Nothing is
    /// allowed by default.
    #[arg(long = "allow-expose", value_name = "PEER:PORTS")]
    allow_expose: Vec<crate::expose::Rule>,
    /// The address exposed ports listen on.
    #[arg(long = "expose-bind", value_name = "IP", default_value = "0.0.0.0")]
    expose_bind: String,
    /// A hub (by name) whose word is taken for who is calling through it: its
    /// callers' keys are not checked here (hub-trusting mode); repeatable.
    #[arg(long = "trusted-hub", value_name = "NAME")]
    trusted_hubs: Vec<String>,
    /// Peer name announced to clients (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Host key (OpenSSH ed25519); without it a new key is made for this run.
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// Clients whose keys are listed here may connect.
    #[arg(long = "authorized-keys", value_name = "PATH")]
    authorized_keys: Option<PathBuf>,
    /// Clients presenting this token (as the SSH password) may connect.
    #[command(flatten)]
    token: crate::token::TokenArgs,
    /// A service: NAME=echo | NAME=sink | NAME=exec:COMMAND | NAME=tcp:HOST:PORT; repeatable.
    #[arg(long = "service", value_name = "NAME=SPEC")]
    services: Vec<String>,
    /// Also serve the RPC demo methods: demo.add ({"a":1,"b":2} gives 3),
    /// demo.count ({"n":5} streams 1..5) and demo.echo (gives back its argument).
    #[arg(long = "rpc-demo")]
    rpc_demo: bool,
    /// Accept any client at all. Anyone who can reach an endpoint can use every service.
    #[arg(long = "insecure-open")]
    insecure_open: bool,
}

/// Whom a bound peer (`serve`, `hub`) lets in: the keys of `authorized_keys`
/// and the token; also whether either was given.
pub fn client_trust(
    authorized_keys: Option<&std::path::Path>,
    token: &crate::token::TokenArgs,
) -> anyhow::Result<(Trust, bool)> {
    let mut trust = Trust::new();
    if let Some(path) = authorized_keys {
        trust = trust.with_authorized_keys_file(path)?;
    }
    let token = token.resolve()?;
    let given = authorized_keys.is_some() || token.is_some();
    if let Some(token) = token {
        trust = trust.with_token(token);
    }
    Ok((trust, given))
}

/// The host key at `path`, or a new one for this run (said on stderr).
pub fn host_identity(path: Option<&std::path::Path>) -> anyhow::Result<Identity> {
    Ok(match path {
        Some(path) => Identity::load(path)?,
        None => {
            let id = Identity::generate();
            eprintln!(
                "streamkit: no --key given, using a new host key for this run: {}",
                id.public_key().fingerprint()
            );
            id
        }
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (mut trust, given) = client_trust(args.authorized_keys.as_deref(), &args.token)?;
    if args.insecure_open {
        trust = trust.danger_accept_any_client();
    } else if !given {
        bail!(
            "refusing to serve without client authentication: pass --authorized-keys PATH, \
             --token-file PATH (or STREAMKIT_TOKEN) or --token TOKEN (or --insecure-open to accept anyone)"
        );
    }
    let mut specs = HashMap::new();
    for s in &args.services {
        let (name, spec) = services::parse_service(s)?;
        if specs.insert(name.clone(), spec).is_some() {
            bail!("--service {name:?} given twice");
        }
    }
    if specs.is_empty() && !args.rpc_demo && args.allow_expose.is_empty() {
        bail!(
            "no services: pass --service NAME=SPEC (echo, sink, exec:COMMAND, tcp:HOST:PORT, \
             udp:HOST:PORT), --rpc-demo or --allow-expose PEER:PORTS"
        );
    }
    let identity = host_identity(args.key.as_deref())?;
    if !args.connects.is_empty() {
        trust = args.hosts.add_to(trust)?;
    }
    let name = args.name.clone().unwrap_or_else(crate::hostname);
    let mut options = Options::default();
    options.services = Services::only(specs.keys().cloned());
    options.trusted_hubs = args.trusted_hubs.clone();
    let mut config = PeerConfig::new(name.clone(), identity, trust).with_options(options);
    let exposures = (!args.allow_expose.is_empty()).then(|| {
        crate::expose::Exposures::new(args.allow_expose.clone(), args.expose_bind.clone())
    });
    if let Some(e) = &exposures {
        // Standard clients' `ssh -R`, under the same rules as `streamkit expose`.
        config.remote_forward = Some(e.clone());
    }
    let peer = Peer::new(config)?;
    for url in &args.binds {
        let bound = peer
            .bind(url)
            .await
            .with_context(|| format!("cannot listen on {url}"))?;
        eprintln!("streamkit: listening on {bound}");
    }
    eprintln!(
        "streamkit: serving as {name:?}, host key {}",
        peer.public_key().fingerprint()
    );
    // Each dialled endpoint is kept up in the background; a failure that retrying
    // cannot fix (the remote's key, our credentials) ends the server.
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    let mut events = peer.events();
    let dialled: std::collections::HashSet<String> = args
        .connects
        .iter()
        .filter_map(|u| streamkit::Endpoint::parse(u).ok())
        .map(|e| e.to_string())
        .collect();
    let watch = tokio::spawn(async move {
        // What was dialled comes and goes: each change is one line.
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
                } if dialled.contains(&endpoint) => {
                    eprintln!("streamkit: lost {peer:?} at {endpoint} ({reason})");
                }
                _ => {}
            }
        }
    });
    for url in &args.connects {
        let (peer, url, failed_tx) = (peer.clone(), url.clone(), failed_tx.clone());
        tokio::spawn(async move {
            match peer.connect(&url).await {
                Ok(_) => {}
                Err(e) => {
                    let _ = failed_tx
                        .send(anyhow::Error::new(e).context(format!("cannot connect to {url}")))
                        .await;
                }
            }
        });
    }
    drop(failed_tx);

    if let Some(e) = exposures {
        crate::expose::serve(&peer, e)?;
    }
    let _rpc = if args.rpc_demo {
        let rpc = streamkit_rpc::Rpc::new(&peer)?;
        rpc_demo(&rpc);
        eprintln!(
            "streamkit: serving rpc methods {}",
            rpc.methods().join(", ")
        );
        Some(rpc)
    } else {
        None
    };
    let specs = Arc::new(specs);
    let acceptor = {
        let peer = peer.clone();
        tokio::spawn(async move {
            while let Ok((meta, ch)) = peer.accept().await {
                let Some(spec) = specs.get(meta.service()).cloned() else {
                    continue;
                };
                tracing::info!(
                    service = meta.service(),
                    peer = meta.remote_peer(),
                    "channel opened"
                );
                tokio::spawn(services::serve(spec, ch));
            }
        })
    };

    let failure = tokio::select! {
        r = wait_for_signal() => { r?; None }
        Some(e) = failed.recv() => Some(e),
    };
    eprintln!("streamkit: shutting down");
    let reset = peer.shutdown().await;
    if reset > 0 {
        eprintln!("streamkit: {reset} channel(s) did not finish in time and were reset");
    }
    acceptor.abort();
    watch.abort();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CountArgs {
    n: u64,
}

/// The methods of `--rpc-demo`.
pub fn rpc_demo(rpc: &streamkit_rpc::Rpc) {
    use streamkit_rpc::{Code, Outputs, RpcError};
    rpc.unary("demo.add", |_ctx, x: AddArgs| async move {
        x.a.checked_add(x.b)
            .ok_or_else(|| RpcError::new(Code::BAD_ARGUMENTS, "the sum overflows"))
    });
    rpc.server_stream(
        "demo.count",
        |_ctx, x: CountArgs, mut out: Outputs<u64>| async move {
            for i in 1..=x.n {
                out.send(&i).await?;
            }
            Ok(())
        },
    );
    rpc.unary(
        "demo.echo",
        |_ctx, v: serde_json::Value| async move { Ok(v) },
    );
}

pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
