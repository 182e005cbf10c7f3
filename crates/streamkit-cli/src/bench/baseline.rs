//! The baselines, measured in the same run: raw TCP and Unix sockets (the ceiling)
//! and a plain russh channel with the same cipher and tuning as Streamkit's (the
//! floor we must not fall far below).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::server::{Auth, ChannelOpenHandle, Msg as ServerMsg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelMsg, MethodKind, MethodSet, cipher};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::{CHUNK, mb_per_s};

/// A raw byte stream (TCP or Unix) for the ceiling rows.
pub trait Raw: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Raw for T {}

/// A connected pair of raw streams: (client, server).
pub async fn tcp_pair() -> anyhow::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (c, (s, _)) = (c?, s?);
    c.set_nodelay(true)?;
    s.set_nodelay(true)?;
    Ok((c, s))
}

/// A connected pair of Unix streams: (client, server).
pub async fn unix_pair(dir: &std::path::Path) -> anyhow::Result<(UnixStream, UnixStream)> {
    let path = dir.join("raw.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    let (c, s) = tokio::join!(UnixStream::connect(&path), l.accept());
    Ok((c?, s?.0))
}

/// MB/s of `total` bytes written into `c` and read out of `s`.
pub async fn raw_bulk(c: impl Raw, mut s: impl Raw, total: usize) -> anyhow::Result<f64> {
    let sink = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0usize;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok::<_, std::io::Error>(n)
    });
    let buf = vec![0x5au8; CHUNK];
    let mut c = c;
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let k = left.min(CHUNK);
        c.write_all(&buf[..k]).await?;
        left -= k;
    }
    c.shutdown().await?;
    let got = sink.await??;
    let secs = t.elapsed().as_secs_f64();
    if got != total {
        bail!("raw bulk: {got} bytes arrived of {total}");
    }
    Ok(mb_per_s(total, secs))
}

/// Frames per second: `n` length-prefixed frames of `size` bytes one way, written
/// and read through buffers as a careful socket program would.
pub async fn raw_frames(c: impl Raw, s: impl Raw, size: usize, n: usize) -> anyhow::Result<f64> {
    let reader = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(CHUNK, s);
        let mut body = vec![0u8; size];
        let mut count = 0usize;
        loop {
            let len = match r.read_u32().await {
                Ok(l) => l as usize,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            };
            r.read_exact(&mut body[..len]).await?;
            count += 1;
        }
        Ok(count)
    });
    let payload = vec![7u8; size];
    let mut w = BufWriter::with_capacity(CHUNK, c);
    let t = Instant::now();
    for _ in 0..n {
        w.write_u32(size as u32).await?;
        w.write_all(&payload).await?;
    }
    w.shutdown().await?;
    let got = reader.await??;
    let secs = t.elapsed().as_secs_f64();
    if got != n {
        bail!("raw frames: {got} arrived of {n}");
    }
    Ok(n as f64 / secs)
}

/// Round trips of 64 bytes echoed by the other end.
pub async fn raw_echo(c: impl Raw, s: impl Raw, n: usize) -> anyhow::Result<Vec<Duration>> {
    let (mut sr, mut sw) = tokio::io::split(s);
    tokio::spawn(async move {
        let mut b = [0u8; 64];
        while sr.read_exact(&mut b).await.is_ok() {
            if sw.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    let mut c = c;
    let msg = [3u8; 64];
    let mut back = [0u8; 64];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&msg).await?;
        c.read_exact(&mut back).await?;
        rtts.push(t.elapsed());
    }
    Ok(rtts)
}

// ----------------------------------------------------------------------
// Plain russh: a session channel per stream, the server counting or echoing.
// ----------------------------------------------------------------------

/// The same cipher preference and tuning as Streamkit's own connections.
fn preferred() -> russh::Preferred {
    static AES_FIRST: &[cipher::Name] = &[cipher::AES_256_GCM, cipher::CHACHA20_POLY1305];
    static CHACHA_FIRST: &[cipher::Name] = &[cipher::CHACHA20_POLY1305, cipher::AES_256_GCM];
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(not(target_arch = "x86_64"))]
    let aes = false;
    russh::Preferred {
        cipher: Cow::Borrowed(if aes { AES_FIRST } else { CHACHA_FIRST }),
        ..russh::Preferred::default()
    }
}

pub struct PlainServer;

impl russh::server::Handler for PlainServer {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _key: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<ServerMsg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(serve_plain(channel));
        Ok(())
    }
}

/// Echoes what arrives, or (after `exec sink`) counts it and answers `ok` at EOF.
/// `exec hold` keeps the channel open and silent (the memory rows).
async fn serve_plain(mut ch: Channel<ServerMsg>) {
    let mut sink = false;
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Exec { command, .. } => match &command[..] {
                b"sink" => sink = true,
                b"hold" => {
                    // Idle until the client goes away.
                    while ch.wait().await.is_some() {}
                    return;
                }
                _ => {}
            },
            ChannelMsg::Data { data } if !sink => {
                let echoed = ch.data_bytes(data).await;
                if echoed.is_err() {
                    return;
                }
            }
            ChannelMsg::Eof => {
                let _ = ch.data_bytes(&b"ok"[..]).await;
                let _ = ch.eof().await;
                let _ = ch.close().await;
            }
            _ => {}
        }
    }
}

pub struct PlainClient;

impl russh::client::Handler for PlainClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A plain russh server on a loopback port, with the given window and packet size.
pub struct PlainRussh {
    addr: std::net::SocketAddr,
    key: Arc<russh::keys::PrivateKey>,
    window: u32,
    packet: u32,
}

/// A plain russh client connection.
pub type PlainConn = russh::client::Handle<PlainClient>;

impl PlainRussh {
    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// A client of a plain russh server at `addr` (in another process), which
    /// takes any key.
    pub fn client_for(addr: std::net::SocketAddr, window: u32, packet: u32) -> PlainRussh {
        let id = streamkit::Identity::generate();
        let key = russh::keys::decode_secret_key(&id.to_openssh(), None)
            .expect("a key we just made decodes");
        PlainRussh {
            addr,
            key: Arc::new(key),
            window,
            packet,
        }
    }

    pub async fn start(window: u32, packet: u32) -> anyhow::Result<PlainRussh> {
        let id = streamkit::Identity::generate();
        let key = Arc::new(russh::keys::decode_secret_key(&id.to_openssh(), None)?);
        let config = Arc::new(russh::server::Config {
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            keys: vec![(*key).clone()],
            window_size: window,
            maximum_packet_size: packet,
            inactivity_timeout: None,
            nodelay: true,
            preferred: preferred(),
            ..Default::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                // `run_stream` does not apply the config's `nodelay` itself.
                let _ = socket.set_nodelay(true);
                let config = config.clone();
                tokio::spawn(async move {
                    if let Ok(session) =
                        russh::server::run_stream(config, socket, PlainServer).await
                    {
                        let _ = session.await;
                    }
                });
            }
        });
        Ok(PlainRussh {
            addr,
            key,
            window,
            packet,
        })
    }

    pub async fn connect(&self) -> anyhow::Result<PlainConn> {
        let config = Arc::new(russh::client::Config {
            window_size: self.window,
            maximum_packet_size: self.packet,
            inactivity_timeout: None,
            nodelay: true,
            preferred: preferred(),
            ..Default::default()
        });
        let socket = TcpStream::connect(self.addr).await?;
        socket.set_nodelay(true)?;
        let mut h = russh::client::connect_stream(config, socket, PlainClient)
            .await
            .context("plain russh handshake")?;
        let auth = h
            .authenticate_publickey("bench", PrivateKeyWithHashAlg::new(self.key.clone(), None))
            .await?;
        if !auth.success() {
            bail!("plain russh: authentication refused");
        }
        Ok(h)
    }
}

/// MB/s through one plain russh channel per `streams`, `total` bytes in all.
pub async fn plain_bulk(conn: &PlainConn, streams: usize, total: usize) -> anyhow::Result<f64> {
    let mut chans = Vec::new();
    for _ in 0..streams {
        let ch = conn.channel_open_session().await?;
        ch.exec(false, "sink").await?;
        chans.push(ch);
    }
    let per = total / streams;
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut ch in chans {
        set.spawn(async move {
            let buf = bytes::Bytes::from(vec![0x5au8; CHUNK]);
            let mut left = per;
            while left > 0 {
                let k = left.min(CHUNK);
                ch.data_bytes(buf.slice(..k)).await?;
                left -= k;
            }
            ch.eof().await?;
            while let Some(msg) = ch.wait().await {
                if let ChannelMsg::Data { data } = msg
                    && &data[..] == b"ok"
                {
                    return Ok(());
                }
            }
            bail!("plain russh: the channel closed before the sink answered")
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(mb_per_s(per * streams, t.elapsed().as_secs_f64()))
}

/// One plain russh open + first byte echoed + close.
pub async fn plain_open_once(conn: &PlainConn) -> anyhow::Result<()> {
    let mut ch = conn.channel_open_session().await?;
    ch.data_bytes(&b"x"[..]).await?;
    loop {
        match ch.wait().await {
            Some(ChannelMsg::Data { .. }) => break,
            Some(_) => {}
            None => bail!("plain russh: channel closed before its echo"),
        }
    }
    ch.close().await?;
    while ch.wait().await.is_some() {}
    Ok(())
}

/// Round trips of 64 bytes through a plain russh channel echoed by the server.
pub async fn plain_echo(conn: &PlainConn, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut ch = conn.channel_open_session().await?;
    let msg = bytes::Bytes::from_static(&[3u8; 64]);
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ch.data_bytes(msg.clone()).await?;
        let mut got = 0;
        while got < msg.len() {
            match ch.wait().await {
                Some(ChannelMsg::Data { data }) => got += data.len(),
                Some(_) => {}
                None => bail!("plain russh: channel closed during the echo"),
            }
        }
        rtts.push(t.elapsed());
    }
    ch.close().await?;
    Ok(rtts)
}

/// Opens `n` idle plain russh channels and keeps them.
pub async fn plain_idle_channels(
    conn: &PlainConn,
    n: usize,
) -> anyhow::Result<Vec<Channel<russh::client::Msg>>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let ch = conn.channel_open_session().await?;
        ch.exec(false, "hold").await?;
        v.push(ch);
    }
    Ok(v)
}

/// In-process bulk through a tokio mpsc channel of byte chunks, handed over and
/// dropped without a copy, as the `inproc://` rows hand theirs.
pub async fn mpsc_bulk(total: usize) -> anyhow::Result<f64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        while let Some(chunk) = rx.recv().await {
            got += chunk.len();
        }
        got
    });
    let data = bytes::Bytes::from(vec![0x5au8; CHUNK]);
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let k = left.min(CHUNK);
        tx.send(data.slice(..k)).await?;
        left -= k;
    }
    drop(tx);
    let got = reader.await?;
    let secs = t.elapsed().as_secs_f64();
    if got != total {
        bail!("mpsc bulk: {got} bytes arrived of {total}");
    }
    Ok(total as f64 / secs / 1e6)
}

/// In-process frames through a tokio mpsc channel, one message per frame.
pub async fn mpsc_frames(size: usize, n: usize) -> anyhow::Result<f64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1024);
    let reader = tokio::spawn(async move {
        let mut count = 0usize;
        while rx.recv().await.is_some() {
            count += 1;
        }
        count
    });
    let payload = vec![7u8; size];
    let t = Instant::now();
    for _ in 0..n {
        tx.send(bytes::Bytes::copy_from_slice(&payload)).await?;
    }
    drop(tx);
    let got = reader.await?;
    let secs = t.elapsed().as_secs_f64();
    if got != n {
        bail!("mpsc frames: {got} arrived of {n}");
    }
    Ok(n as f64 / secs)
}
