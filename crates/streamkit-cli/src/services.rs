//! The service specs of `streamkit serve --service NAME=SPEC`.

use std::process::Stdio;
use std::str::FromStr;

use anyhow::{Context as _, anyhow, bail};
use streamkit::{Channel, ChannelMeta, Headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a service does with each channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// Bytes (and so frames), error frames and trailers back.
    Echo,
    /// Reads everything, answers with the trailer `bytes=N`.
    Sink,
    /// Runs `sh -c COMMAND` per channel.
    Exec(String),
    /// Joins the channel to a new TCP connection.
    Tcp(String),
    /// Sends each frame as a datagram to HOST:PORT, and each reply back as a frame.
    Udp(String),
}

impl FromStr for Spec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Spec> {
        if s == "echo" {
            Ok(Spec::Echo)
        } else if s == "sink" {
            Ok(Spec::Sink)
        } else if let Some(cmd) = s.strip_prefix("exec:") {
            if cmd.trim().is_empty() {
                bail!("exec: needs a command, as in exec:date");
            }
            Ok(Spec::Exec(cmd.to_owned()))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("tcp: needs HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                bail!("tcp: needs HOST:PORT, got {addr:?}");
            }
            Ok(Spec::Tcp(addr.to_owned()))
        } else if let Some(addr) = s.strip_prefix("udp:") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| anyhow!("udp: needs HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                bail!("udp: needs HOST:PORT, got {addr:?}");
            }
            Ok(Spec::Udp(addr.to_owned()))
        } else {
            bail!(
                "unknown service spec {s:?}: use echo, sink, exec:COMMAND, tcp:HOST:PORT or udp:HOST:PORT"
            )
        }
    }
}

/// `NAME=SPEC`.
pub fn parse_service(arg: &str) -> anyhow::Result<(String, Spec)> {
    let (name, spec) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("--service takes NAME=SPEC, got {arg:?}"))?;
    if name.is_empty() {
        bail!("--service {arg:?}: empty service name");
    }
    Ok((
        name.to_owned(),
        spec.parse().with_context(|| format!("--service {arg:?}"))?,
    ))
}

/// Serves one channel; errors are logged, never fatal to the server.
pub async fn serve(spec: Spec, ch: Channel) {
    let meta = ch.meta().clone();
    let res = match spec {
        Spec::Echo => echo(ch).await,
        Spec::Sink => sink(ch).await,
        Spec::Exec(cmd) => exec(&cmd, ch).await,
        Spec::Tcp(addr) => tcp(&addr, ch).await,
        Spec::Udp(addr) => udp(&addr, ch).await,
    };
    if let Err(e) = res {
        tracing::info!(
            service = meta.service(),
            peer = meta.remote_peer(),
            "channel ended: {e:#}"
        );
    }
}

async fn echo(ch: Channel) -> anyhow::Result<()> {
    let meta = ch.meta().clone();
    let (mut r, mut w) = ch.split();
    tokio::io::copy(&mut r, &mut w).await?;
    // Every error frame sent before the end of stream is here now.
    while let Some(e) = r.read_error().await? {
        w.write_error(&e).await?;
    }
    if let Some(t) = meta.trailers().filter(|t| !t.is_empty()) {
        w.write_trailers(t).await?;
    }
    w.close_write().await?;
    Ok(())
}

async fn sink(mut ch: Channel) -> anyhow::Result<()> {
    let mut total = 0u64;
    loop {
        // Taken as the channel holds it, and dropped: no copy.
        let n = ch.read_chunk(usize::MAX).await?.len();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    ch.write_trailers([format!("bytes={total}").as_str()])
        .await?;
    ch.close().await?;
    Ok(())
}

/// Whether a header key can be an environment variable name.
fn env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The environment an `exec:` command gets from the channel: who and what, every
/// `KEY=VALUE` header as `STREAMKIT_H_KEY`, and the locale and time zone headers
/// (`LANG`, `LC_*`, `TZ`) as themselves, as OpenSSH's default `AcceptEnv` does.
pub fn exec_env(meta: &ChannelMeta) -> Vec<(String, String)> {
    let mut env = vec![
        ("STREAMKIT_PEER".to_owned(), meta.remote_peer().to_owned()),
        ("STREAMKIT_SERVICE".to_owned(), meta.service().to_owned()),
    ];
    for h in meta.headers() {
        let Some((k, v)) = h.split_once('=') else {
            continue;
        };
        if !env_name(k) || v.contains('\0') {
            continue;
        }
        env.push((format!("STREAMKIT_H_{k}"), v.to_owned()));
        if k == "LANG" || k == "TZ" || k.starts_with("LC_") {
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    env
}

async fn exec(command: &str, ch: Channel) -> anyhow::Result<()> {
    let meta = ch.meta().clone();
    // Words after the service name (`ssh host SERVICE a b`, or a header `args=a b`)
    // become the positional parameters of the command: `exec:grep "$@"`.
    let args: Vec<&str> = meta
        .headers()
        .get("args")
        .map(|a| a.split_whitespace().collect())
        .unwrap_or_default();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .arg("sh")
        .args(args)
        .envs(exec_env(&meta))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        bail!("child process has no stdio");
    };
    let (mut r, w) = ch.split();
    let w = tokio::sync::Mutex::new(w);

    let feed = async {
        // The channel's bytes to stdin; a command that stops reading is not an error.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if stdin.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        drop(stdin);
    };
    let out = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), anyhow::Error>(());
            }
            w.lock().await.write_all(&buf[..n]).await?;
        }
    };
    let err = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stderr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), anyhow::Error>(());
            }
            // Each chunk of stderr becomes one error frame.
            w.lock().await.write_error(&buf[..n]).await?;
        }
    };
    // The command is done when it exited and its output is drained; input it did
    // not read is not waited for (the client is told to stop sending on close).
    let done = async {
        let (out, err) = tokio::join!(out, err);
        out?;
        err?;
        Ok::<_, anyhow::Error>(child.wait().await?)
    };
    let status = {
        tokio::pin!(feed, done);
        let mut fed = false;
        loop {
            tokio::select! {
                status = &mut done => break status?,
                () = &mut feed, if !fed => fed = true,
            }
        }
    };
    drop(r);
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt as _;
        128 + status.signal().unwrap_or(0)
    });
    let mut w = w.into_inner();
    w.write_trailers([format!("exit-status={code}").as_str()])
        .await?;
    w.close_write().await?;
    Ok(())
}

async fn tcp(addr: &str, mut ch: Channel) -> anyhow::Result<()> {
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            // Reported like a failing command: an error frame and a non-zero exit status.
            let msg = format!("connect {addr}: {e}");
            let _ = ch.write_error(msg.as_bytes()).await;
            let _ = ch.write_trailers(["exit-status=1"]).await;
            let _ = ch.close().await;
            bail!(msg);
        }
    };
    let _ = stream.set_nodelay(true);
    ch.join(stream).await?;
    Ok(())
}

/// Each frame as a datagram to `addr` from a socket of this channel's own, each
/// datagram back as a frame, until the channel ends.
async fn udp(addr: &str, ch: Channel) -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind(if addr.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .await?;
    socket
        .connect(addr)
        .await
        .with_context(|| format!("udp {addr}"))?;
    let (mut r, mut w) = ch.split();
    let to = async {
        while let Some(frame) = r.read_frame().await? {
            // A datagram the network drops is lost, as UDP is.
            let _ = socket.send(&frame).await;
        }
        Ok::<_, anyhow::Error>(())
    };
    let back = async {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok(n) = socket.recv(&mut buf).await else {
                continue; // ICMP unreachable and the like: the next datagram may pass
            };
            w.write_frame(&buf[..n]).await?;
        }
        #[allow(unreachable_code)]
        Ok::<_, anyhow::Error>(())
    };
    tokio::select! {
        r = to => r?,
        r = back => r?,
    }
    Ok(())
}

/// Trailers as a header list, for messages.
pub fn exit_status(trailers: Option<&Headers>) -> Option<u8> {
    trailers?
        .get("exit-status")?
        .parse::<i64>()
        .ok()
        .map(|c| (c & 0xff) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_service("e=echo").unwrap(), ("e".into(), Spec::Echo));
        assert_eq!(parse_service("s=sink").unwrap().1, Spec::Sink);
        assert_eq!(
            parse_service("d=exec:date -u").unwrap().1,
            Spec::Exec("date -u".into())
        );
        assert_eq!(
            parse_service("w=tcp:127.0.0.1:80").unwrap().1,
            Spec::Tcp("127.0.0.1:80".into())
        );
        for bad in [
            "echo",
            "=echo",
            "x=ech",
            "x=exec:",
            "x=tcp:host",
            "x=tcp::80",
            "x=tcp:h:99999",
        ] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names() {
        assert!(env_name("LANG") && env_name("_x1"));
        assert!(!env_name("1x") && !env_name("a-b") && !env_name(""));
    }
}
