//! The two-process rows: bulk between this process (or a client process fed
//! from a pipe) and a serving process, beside OpenSSH (`ssh` to a loopback
//! `sshd`, when installed) and beside a plain russh pair of processes with the
//! same cipher and tuning, in turns.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, bail};
use streamkit::{Identity, Peer, PeerConfig, Trust};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use super::baseline::{self, PlainRussh};
use super::{CHUNK, Row, Sizes, best_pair, mb_per_s};

/// A child process of ours, killed when dropped (held for that).
struct Proc(#[allow(dead_code)] Child);

/// Starts `command`, ready once its stderr has a line starting with `ready`;
/// the rest of that line.
async fn start(mut command: Command, ready: &str) -> anyhow::Result<(Proc, String)> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting a serving process")?;
    let err = child.stderr.take().context("no stderr")?;
    let mut lines = tokio::io::BufReader::new(err).lines();
    let rest = loop {
        let Some(line) = lines.next_line().await? else {
            bail!("the serving process ended before it was ready");
        };
        if let Some(i) = line.find(ready) {
            break line[i + ready.len()..].to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Proc(child), rest))
}

fn ours() -> anyhow::Result<Command> {
    Ok(Command::new(
        std::env::current_exe().context("finding this program")?,
    ))
}

/// MB/s of `total` bytes written into `command`'s stdin, until it exits
/// (successfully: it delivered everything).
async fn from_pipe(mut command: Command, total: usize) -> anyhow::Result<f64> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting a client process")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let buf = vec![0x5au8; CHUNK];
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let k = left.min(CHUNK);
        stdin.write_all(&buf[..k]).await?;
        left -= k;
    }
    drop(stdin);
    let out = child.wait_with_output().await?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "the client process failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(mb_per_s(total, secs))
}

/// OpenSSH on loopback: an `sshd` of our own, and how to reach it.
struct OpenSsh {
    _sshd: Proc,
    port: u16,
    key: std::path::PathBuf,
    user: String,
}

impl OpenSsh {
    /// `None` (with why) when `sshd` or `ssh-keygen` is not installed.
    async fn start(dir: &std::path::Path) -> anyhow::Result<Result<OpenSsh, &'static str>> {
        let Some(sshd) = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
            .into_iter()
            .map(std::path::Path::new)
            .find(|p| p.exists())
        else {
            return Ok(Err("OpenSSH (sshd not installed)"));
        };
        let keygen = |path: &std::path::Path| {
            let _ = std::fs::remove_file(path);
            std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()
        };
        let (host, key) = (dir.join("sshd_host"), dir.join("ssh_client"));
        match (keygen(&host), keygen(&key)) {
            (Ok(a), Ok(b)) if a.success() && b.success() => {}
            _ => return Ok(Err("OpenSSH (ssh-keygen failed)")),
        }
        let ak = dir.join("ssh_authorized_keys");
        std::fs::copy(dir.join("ssh_client.pub"), &ak)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nCiphers aes256-gcm@openssh.com\n",
                host.display(),
                ak.display()
            ),
        )?;
        // Its privilege separation directory, which packages create at boot.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut c = Command::new(sshd);
        c.arg("-D").arg("-e").arg("-f").arg(&config);
        let (sshd, _) = start(c, "Server listening on").await?;
        let user = std::process::Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".to_owned());
        Ok(Ok(OpenSsh {
            _sshd: sshd,
            port,
            key,
            user,
        }))
    }

    /// `ssh ... 'cat > /dev/null'`, AES-256-GCM.
    fn client(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", "-T", "-p", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-c",
                "aes256-gcm@openssh.com",
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg("cat > /dev/null");
        c
    }
}

pub(super) async fn rows(
    s: &Sizes,
    runs: usize,
    dir: &std::path::Path,
    plain_window: u32,
    plain_packet: u32,
) -> anyhow::Result<Vec<Row>> {
    let total = if s.quick { 64 << 20 } else { 1 << 30 };
    let mut rows = Vec::new();

    // Ours: `streamkit serve` with a sink.
    let (server_id, client_id) = (Identity::generate(), Identity::generate());
    let (sk, ck, ak) = (dir.join("p_server"), dir.join("p_client"), dir.join("p_ak"));
    server_id.save(&sk, "server")?;
    client_id.save(&ck, "client")?;
    std::fs::write(&ak, client_id.public_key().to_openssh() + "\n")?;
    let fp = server_id.public_key().fingerprint();
    let mut c = ours()?;
    c.args([
        "serve",
        "--bind",
        "tcp://127.0.0.1:0",
        "--name",
        "server",
        "--key",
    ])
    .arg(&sk)
    .arg("--authorized-keys")
    .arg(&ak)
    .args(["--service", "sink=sink"]);
    let (_serve, url) = start(c, "streamkit: listening on ").await?;
    let open = || -> anyhow::Result<Command> {
        let mut c = ours()?;
        c.args(["open", &url, "sink", "--key"])
            .arg(&ck)
            .args(["--host-key-fingerprint", &fp]);
        Ok(c)
    };

    // Plain russh: a serving process of its own, and a client process.
    let mut c = ours()?;
    c.args([
        "bench",
        "--russh-server",
        &format!("{plain_window}:{plain_packet}"),
    ]);
    let (_plain_server, plain_addr) = start(c, "plain russh listening on ").await?;
    let plain_addr: std::net::SocketAddr = plain_addr.trim().parse()?;
    let plain_client = || -> anyhow::Result<Command> {
        let mut c = ours()?;
        c.args([
            "bench",
            "--russh-client",
            &format!("{plain_addr}/{plain_window}:{plain_packet}"),
        ]);
        Ok(c)
    };

    let (sk_pipe, plain_pipe) = best_pair(
        runs,
        || async { from_pipe(open()?, total).await },
        || async { from_pipe(plain_client()?, total).await },
    )
    .await?;
    match OpenSsh::start(dir).await? {
        Ok(openssh) => {
            let (sk_pipe2, ssh) = best_pair(
                runs,
                || async { from_pipe(open()?, total).await },
                || from_pipe(openssh.client(), total),
            )
            .await?;
            rows.push(Row {
                name: "2 processes, 1 channel from a pipe".into(),
                unit: "MB/s",
                ours: sk_pipe.max(sk_pipe2),
                baseline: "OpenSSH, aes256-gcm",
                theirs: Some(ssh),
            });
        }
        Err(why) => rows.push(Row {
            name: "2 processes, 1 channel from a pipe".into(),
            unit: "MB/s",
            ours: sk_pipe,
            baseline: why,
            theirs: None,
        }),
    }
    rows.push(Row {
        name: "2 processes, 1 channel from a pipe".into(),
        unit: "MB/s",
        ours: sk_pipe,
        baseline: "plain russh, 2 processes",
        theirs: Some(plain_pipe),
    });

    // This process as the client: the library without the command's pipe.
    let client = Peer::new(
        PeerConfig::new(
            "bench",
            client_id,
            Trust::new().with_key(server_id.public_key()),
        )
        .with_options(super::options()),
    )?;
    client.connect(&url).await?;
    let plain = PlainRussh::client_for(plain_addr, plain_window, plain_packet);
    let plain_conn = plain.connect().await?;
    for streams in [1, 16] {
        let (ours, theirs) = best_pair(
            runs,
            || super::sk_bulk_to(&client, "server", streams, total),
            || baseline::plain_bulk(&plain_conn, streams, total),
        )
        .await?;
        rows.push(Row {
            name: format!(
                "2 processes, {streams} channel{}",
                if streams == 1 { "" } else { "s" }
            ),
            unit: "MB/s",
            ours,
            baseline: "plain russh, 2 processes",
            theirs: Some(theirs),
        });
    }
    client.shutdown().await;
    Ok(rows)
}

/// `bench --russh-server WINDOW:PACKET`: a plain russh server, until killed.
pub async fn russh_server(spec: &str) -> anyhow::Result<()> {
    let (window, packet) = window_packet(spec)?;
    let plain = PlainRussh::start(window, packet).await?;
    eprintln!("plain russh listening on {}", plain.addr());
    std::future::pending::<()>().await;
    Ok(())
}

/// `bench --russh-client ADDR/WINDOW:PACKET`: stdin through one plain russh
/// channel to the server's sink; exits once the sink has it all.
pub async fn russh_client(spec: &str) -> anyhow::Result<()> {
    let (addr, tuning) = spec
        .split_once('/')
        .context("--russh-client takes ADDR/WINDOW:PACKET")?;
    let (window, packet) = window_packet(tuning)?;
    let plain = PlainRussh::client_for(addr.parse()?, window, packet);
    let conn = plain.connect().await?;
    let mut ch = conn.channel_open_session().await?;
    ch.exec(false, "sink").await?;
    let mut stdin = super::read_stdin();
    while let Some(chunk) = stdin.recv().await {
        ch.data_bytes(bytes::Bytes::from(chunk?)).await?;
    }
    ch.eof().await?;
    while let Some(msg) = ch.wait().await {
        if let russh::ChannelMsg::Data { data } = msg
            && &data[..] == b"ok"
        {
            return Ok(());
        }
    }
    bail!("plain russh: the channel closed before the sink answered")
}

fn window_packet(spec: &str) -> anyhow::Result<(u32, u32)> {
    let (w, p) = spec.split_once(':').context("WINDOW:PACKET")?;
    Ok((w.parse()?, p.parse()?))
}
