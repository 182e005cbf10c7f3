//! The hub rows: bulk and echo through a hub beside the direct connection, and a
//! hub process's memory per idle peer and per idle relay, with the time presence
//! takes to reach every peer.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use streamkit::hub::{Hub, HubConfig};
use streamkit::{Event, Identity, Peer, PeerConfig, Services, Trust};

use super::{Pair, Row, Sizes, best_pair, micros, options, percentile, serve, sk_bulk, sk_echo};

/// The peers of the in-process rows: a hub, a server behind it, and a client of
/// each mode behind it too.
struct Through {
    hub: Hub,
    server: Peer,
    end_to_end: Pair,
    trusting: Pair,
}

async fn through_hub() -> anyhow::Result<Through> {
    let (h, sv, c1, c2) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let mut hub_options = options();
    hub_options.services = Services::none();
    let hub = Hub::new(
        PeerConfig::new(
            "hub",
            h.clone(),
            Trust::new()
                .with_key(sv.public_key())
                .with_key(c1.public_key())
                .with_key(c2.public_key()),
        )
        .with_options(hub_options),
        HubConfig::default(),
    )?;
    let url = hub.peer().bind("tcp://127.0.0.1:0").await?.to_string();
    let mut server_options = options();
    server_options.trusted_hubs = vec!["hub".into()];
    let server = Peer::new(
        PeerConfig::new(
            "server",
            sv.clone(),
            Trust::new()
                .with_key(h.public_key())
                .with_key(c1.public_key()),
        )
        .with_options(server_options),
    )?;
    serve(&server);
    server.connect(&url).await?;
    let end_to_end = Peer::new(
        PeerConfig::new(
            "client-e2e",
            c1,
            Trust::new()
                .with_key(h.public_key())
                .with_key(sv.public_key()),
        )
        .with_options(options()),
    )?;
    let mut trusting_options = options();
    trusting_options.trusted_hubs = vec!["hub".into()];
    let trusting = Peer::new(
        PeerConfig::new("client-trust", c2, Trust::new().with_key(h.public_key()))
            .with_options(trusting_options),
    )?;
    end_to_end.connect(&url).await?;
    trusting.connect(&url).await?;
    // Through the hub as soon as presence has arrived (open waits for it).
    Ok(Through {
        hub,
        server: server.clone(),
        end_to_end: Pair {
            client: end_to_end,
            server: server.clone(),
        },
        trusting: Pair {
            client: trusting,
            server,
        },
    })
}

pub(super) async fn rows(
    s: &Sizes,
    runs: usize,
    direct: &Pair,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let t = through_hub().await?;
    let (e2e, direct_bulk) = best_pair(
        runs,
        || sk_bulk(&t.end_to_end, 1, s.bulk),
        || sk_bulk(direct, 1, s.bulk),
    )
    .await?;
    rows.push(Row {
        name: "hub: bulk end to end".into(),
        unit: "MB/s",
        ours: e2e,
        baseline: "streamkit tcp, direct",
        theirs: Some(direct_bulk),
    });
    let (trusting, direct_bulk) = best_pair(
        runs,
        || sk_bulk(&t.trusting, 1, s.bulk),
        || sk_bulk(direct, 1, s.bulk),
    )
    .await?;
    rows.push(Row {
        name: "hub: bulk trusting the hub".into(),
        unit: "MB/s",
        ours: trusting,
        baseline: "streamkit tcp, direct",
        theirs: Some(direct_bulk),
    });
    let mut ours = sk_echo(&t.end_to_end, s.round_trips).await?;
    let mut theirs = sk_echo(direct, s.round_trips).await?;
    ours.sort();
    theirs.sort();
    rows.push(Row {
        name: "hub: echo 64 B p50 end to end".into(),
        unit: "µs",
        ours: micros(percentile(&ours, 0.5)),
        baseline: "streamkit tcp, direct",
        theirs: Some(micros(percentile(&theirs, 0.5))),
    });
    t.end_to_end.client.shutdown().await;
    t.trusting.client.shutdown().await;
    t.server.shutdown().await;
    t.hub.peer().shutdown().await;

    rows.extend(scale(s, dir).await?);
    Ok(rows)
}

/// A `streamkit hub` process, its RSS measured from outside.
struct HubProcess {
    child: tokio::process::Child,
    url: String,
    pid: u32,
}

impl HubProcess {
    async fn start(
        dir: &std::path::Path,
        key: &Identity,
        clients: &Identity,
    ) -> anyhow::Result<HubProcess> {
        use tokio::io::AsyncBufReadExt as _;
        let key_path = dir.join("hub_key");
        key.save(&key_path, "hub")?;
        let ak = dir.join("hub_authorized_keys");
        std::fs::write(&ak, clients.public_key().to_openssh() + "\n")?;
        let exe = std::env::current_exe().context("finding this program")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["hub", "--bind", "tcp://127.0.0.1:0", "--name", "hub", "-q"])
            .args(["--max-connections-per-address", "100000", "--key"])
            .arg(&key_path)
            .arg("--authorized-keys")
            .arg(&ak)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a hub process")?;
        let pid = child.id().context("the hub process has no pid")?;
        let err = child.stderr.take().context("no stderr")?;
        let mut lines = tokio::io::BufReader::new(err).lines();
        let url = loop {
            let Some(line) = lines.next_line().await? else {
                bail!("the hub process ended before it listened");
            };
            if let Some(url) = line.strip_prefix("streamkit: listening on ") {
                break url.to_owned();
            }
        };
        // Keep draining its stderr so that it never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(HubProcess { child, url, pid })
    }

    fn rss(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS for the hub process")?;
        Ok(kib * 1024.0)
    }
}

/// One hub process with `s.idle` idle peers: its memory per peer and per idle
/// relay, and how long one peer's arrival takes to reach all of them.
async fn scale(s: &Sizes, dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let n = s.idle;
    let hub_key = Identity::generate();
    // One key for every client (each with a name of its own): the hub's
    // authorized_keys stays one line.
    let key = Identity::generate();
    let mut hub = HubProcess::start(dir, &hub_key, &key).await?;
    let trust = Trust::new()
        .with_key(hub_key.public_key())
        .with_key(key.public_key());
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        peers.push(Peer::new(
            PeerConfig::new(format!("p{i}"), key.clone(), trust.clone()).with_options(options()),
        )?);
    }
    // Settled before the first figure: the process, its listener, its tasks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = hub.rss()?;
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in peers.iter().enumerate() {
        let (p, url) = (p.clone(), hub.url.clone());
        set.spawn(async move { p.connect(&url).await.with_context(|| format!("peer p{i}")) });
        if set.len() >= 64 {
            set.join_next().await.context("join")???;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    // Everyone has heard of everyone: presence has settled.
    let settled = Instant::now();
    for p in &peers {
        while p.peers().len() < n {
            let mut e = p.events();
            let _ = tokio::time::timeout(Duration::from_millis(20), e.next()).await;
        }
    }
    let settle = settled.elapsed();
    let per_peer = (hub.rss()? - before).max(0.0) / n as f64;
    // One more peer: the time until all of them have heard of it.
    let mut events: Vec<_> = peers.iter().map(Peer::events).collect();
    let late =
        Peer::new(PeerConfig::new("late", key.clone(), trust.clone()).with_options(options()))?;
    let t = Instant::now();
    late.connect(&hub.url).await?;
    for e in &mut events {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), e.next()).await {
                Ok(Some(Event::Reachable { peer, .. })) if peer == "late" => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => bail!("presence of a new peer never arrived"),
            }
        }
    }
    let join = t.elapsed();
    // Idle relays: half the peers each reach another (a session through the hub).
    let before = hub.rss()?;
    let relays = n / 2;
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in peers.iter().take(relays).enumerate() {
        let (p, to) = (p.clone(), format!("p{}", i + relays));
        set.spawn(async move {
            // The open inside is refused (nobody serves), the session stays.
            let _ = p.open(&to, "nothing", ()).await;
            anyhow::ensure!(
                p.routes().iter().any(|r| r.peer == to && r.via.is_none()),
                "no session to {to}"
            );
            Ok(())
        });
        if set.len() >= 32 {
            set.join_next().await.context("join")???;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let per_relay = (hub.rss()? - before).max(0.0) / relays as f64;
    for p in peers {
        p.shutdown().await;
    }
    late.shutdown().await;
    let _ = hub.child.kill().await;
    Ok(vec![
        Row {
            name: format!("hub: memory per idle peer, {n}"),
            unit: "KiB",
            ours: per_peer / 1024.0,
            baseline: "target",
            theirs: Some(64.0),
        },
        Row {
            name: format!("hub: memory per idle relay, {relays}"),
            unit: "KiB",
            ours: per_relay / 1024.0,
            baseline: "target",
            theirs: Some(16.0),
        },
        Row {
            name: format!("hub: presence settles, {n} peers"),
            unit: "ms",
            ours: settle.as_secs_f64() * 1e3,
            baseline: "-",
            theirs: None,
        },
        Row {
            name: format!("hub: presence of one more reaches {n}"),
            unit: "ms",
            ours: join.as_secs_f64() * 1e3,
            baseline: "-",
            theirs: None,
        },
    ])
}
