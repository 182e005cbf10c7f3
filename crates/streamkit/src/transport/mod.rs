//! Transports: SSH over sockets (or any byte stream) via russh, and in-process
//! links. A transport makes connections ([`Conn`]) and feeds them what arrives; it
//! knows nothing of peers: what it needs from one is the [`Host`] trait.
//!
//! This module also holds the socket plumbing under SSH: dialling, listening, a
//! kill switch, and writes that never block the SSH session.

pub(crate) mod inproc;
pub(crate) mod ssh;

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;

use crate::channel::Headers;
use crate::config::Options;
use crate::connection::accept::AcceptSlot;
use crate::connection::driver::lock;
use crate::connection::{Conn, ConnInfo, Limits, Observer, PeerBudget};
use crate::keys::Identity;
use crate::trust::RemoteIdentity;
use crate::trust::Trust;
use crate::wire::reason::OpenRefusal;

/// What a transport needs from the peer it works for.
pub(crate) trait Host: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn identity(&self) -> &Identity;
    /// A token to present (as the SSH password) when our key is not trusted.
    fn token(&self) -> Option<&str>;
    fn options(&self) -> Arc<Options>;
    fn trust(&self) -> Trust;
    fn is_shutting_down(&self) -> bool;
    /// Connections in their handshake, either way.
    fn handshakes(&self) -> &Arc<AtomicUsize>;
    /// Accepted connections being served now, handshakes included.
    fn accepted(&self) -> &Arc<AtomicUsize>;
    /// An accepted socket was refused before its handshake, for a limit.
    fn refused(&self, remote_addr: &str, why: &str);
    /// Counts a connection from `ip`; `false` if that is over the limit (it is
    /// counted anyway: release it with `release_address`).
    fn admit_address(&self, ip: IpAddr) -> bool;
    fn release_address(&self, ip: IpAddr);
    /// Where a new connection reports its channels and its loss.
    fn observer(&self) -> Arc<dyn Observer>;
    /// The peer's memory budget, shared by its connections.
    fn budget(&self) -> Arc<PeerBudget>;
    /// The memory budget shared by the accepted connections from `ip`.
    fn address_budget(&self, ip: IpAddr) -> Arc<PeerBudget>;
    /// Who holds the peer name `name` if not `id`: a live connection of that name
    /// that proved another identity (a description of it, for messages).
    fn name_held_by_other(&self, name: &str, id: &RemoteIdentity) -> Option<String>;
    /// A connection is ready (authenticated): the peer takes it, unless its name
    /// is held by a live connection of another identity (the refusal, for the
    /// remote; the caller ends the connection).
    fn register(&self, conn: Arc<Conn>) -> Result<(), String>;
    /// May the remote of `conn` open `service`? A place in the accept queue if so.
    fn admit(
        &self,
        conn: &ConnInfo,
        service: &str,
        headers: &Headers,
    ) -> Result<AcceptSlot, OpenRefusal>;
    /// A standard client's `direct-tcpip` to `target`: `None` unless this peer is
    /// a hub and `target` a peer it routes to (then whether it will).
    fn forward(&self, conn: &ConnInfo, target: &str) -> Option<Result<AcceptSlot, OpenRefusal>>;
    /// What takes standard clients' remote forwards (`ssh -R`), if anything.
    fn remote_forward(&self) -> Option<Arc<dyn crate::forward::RemoteForward>>;
}

/// A session run inside a relay channel (through a hub): the name the hub vouched
/// for at the other end, and whose word decides who that is.
#[derive(Debug, Clone)]
pub(crate) struct Relayed {
    /// The caller (on the serving side) or the target (on the calling side).
    pub name: String,
    pub mode: crate::wire::relay::RelayMode,
    /// The services the hub lets the caller open (serving side only).
    pub allowed: Option<Arc<crate::wire::relay::Allowed>>,
}

impl Relayed {
    /// The trust the session checks the other end's key with: this peer's own,
    /// end to end; any key when the hub's word is taken (the name must still
    /// agree with it).
    pub(crate) fn trust(&self, own: Trust) -> Trust {
        match self.mode {
            crate::wire::relay::RelayMode::EndToEnd => own,
            crate::wire::relay::RelayMode::TrustHub => Trust::new()
                .danger_accept_any_client()
                .danger_accept_any_host_key(),
        }
    }

    /// The algorithms of the session: ours, end to end; no cipher and no MAC when
    /// the hub is trusted (its connections are encrypted, and it may read anyway).
    pub(crate) fn preferred(&self) -> russh::Preferred {
        match self.mode {
            crate::wire::relay::RelayMode::EndToEnd => ssh::preferred(),
            crate::wire::relay::RelayMode::TrustHub => russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(&[russh::cipher::NONE]),
                mac: std::borrow::Cow::Borrowed(&[russh::mac::NONE]),
                ..russh::Preferred::default()
            },
        }
    }
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The limits a new connection applies, from the peer's options.
pub(crate) fn limits(
    opts: &Options,
    peer_budget: Arc<PeerBudget>,
    address_budget: Option<Arc<PeerBudget>>,
) -> Limits {
    Limits {
        channel: crate::channel::Config {
            window: opts.channel_window,
            max_window: opts.max_channel_window,
            max_frame: opts.max_frame_size,
            send_buffer: opts.send_buffer,
            max_trailer_bytes: opts.max_header_bytes,
        },
        max_channels: opts.max_channels_per_connection,
        max_pending_accepts: opts.max_pending_accepts,
        accept_children: opts.accept_children,
        max_header_bytes: opts.max_header_bytes,
        open_timeout: opts.open_timeout,
        close_timeout: opts.close_timeout,
        session_timeout: opts.handshake_timeout,
        budget: opts.memory_budget_per_connection as u64,
        peer_budget,
        address_budget,
        read_timeout: opts.read_timeout,
        write_timeout: opts.write_timeout,
    }
}

/// A line of text a server sent before its identification (RFC 4253 §4.2 allows
/// it): Streamkit servers say there why they refuse a connection before the
/// handshake. `None` if the first line is the identification.
pub(crate) fn refusal_line(first: &[u8]) -> Option<String> {
    let line = first.split(|&b| b == b'\n').next()?;
    if line.is_empty() || line.starts_with(b"SSH-") {
        return None;
    }
    let text: String = String::from_utf8_lossy(line)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    (!text.is_empty()).then_some(text)
}

/// Refuses an accepted socket before its handshake: one line saying why (best
/// effort: never waits), then the socket is closed.
pub(crate) fn refuse_socket(socket: Socket, why: &str) {
    let line = format!("{why}\r\n");
    let _ = match &socket {
        Socket::Tcp(s) => s.try_write(line.as_bytes()),
        Socket::Unix(s) => s.try_write(line.as_bytes()),
        Socket::Io(..) => Ok(0),
    };
}

/// What a remote is told when the name it claims is held by a live connection
/// of another identity.
pub(crate) fn name_held_message(name: &str) -> String {
    format!("name {name:?} is held by another key")
}

/// What a token holder is told when the name it claims is bound to a key.
pub(crate) fn name_bound_message(name: &str) -> String {
    format!("name {name:?} is bound to a key: a token cannot claim it")
}

/// A new connection of `host`'s to `remote_name`.
pub(crate) fn new_conn(
    host: &dyn Host,
    remote_name: String,
    remote_addr: String,
    dialed: bool,
    remote_id: RemoteIdentity,
    remote_ip: Option<IpAddr>,
    allowed: Option<Arc<crate::wire::relay::Allowed>>,
) -> Arc<Conn> {
    let info = ConnInfo {
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
        local_name: host.name().to_owned(),
        remote_name,
        remote_addr,
        dialed,
        remote_id,
        allowed,
    };
    Conn::new(
        info,
        limits(
            &host.options(),
            host.budget(),
            remote_ip.map(|ip| host.address_budget(ip)),
        ),
        host.observer(),
    )
}

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream, tcp, unix};
use tokio::sync::Notify;

use crate::endpoint::Endpoint;
use crate::error::BindError;

/// Closes a connection from outside its I/O task: after `kill`, every read and
/// write on the socket fails, so the SSH session ends promptly even when it is
/// waiting on a peer that sends nothing.
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    read: AtomicWaker,
    notify: Notify,
}

impl KillSwitch {
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.read.wake();
        self.notify.notify_waiters();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Completes once the switch is thrown.
    pub(crate) async fn killed(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.is_killed() {
                return;
            }
            n.await;
        }
    }
}

/// The reading half of any byte stream SSH can run over.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of any byte stream SSH can run over.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One unit of a counter for as long as it lives (a connection in its handshake).
pub(crate) struct Counted(Arc<AtomicUsize>);

impl Counted {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Counted {
        counter.fetch_add(1, Ordering::SeqCst);
        Counted(counter.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP or Unix stream, or any other byte stream (a pipe, a channel).
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
    Io(BoxRead, BoxWrite),
}

enum ReadSock {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    Io(BoxRead),
}

enum WriteSock {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    /// Written by the writer task only (it has no non-blocking write).
    Io(tokio::sync::Mutex<BoxWrite>),
}

impl WriteSock {
    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            WriteSock::Tcp(s) => s.try_write(data),
            WriteSock::Unix(s) => s.try_write(data),
            WriteSock::Io(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            WriteSock::Tcp(s) => s.writable().await,
            WriteSock::Unix(s) => s.writable().await,
            WriteSock::Io(_) => Ok(()),
        }
    }
}

/// Outgoing bytes the socket did not take yet.
///
/// russh's session task writes a packet and waits for the write to finish before
/// it reads again. Two such tasks writing to each other at once, with socket
/// buffers full both ways, would wait for each other forever. So writes never
/// wait here: what the socket does not take at once is queued and a separate task
/// drains it. The queue stays bounded because the channel pump stops feeding the
/// session while the backlog is over [`HIGH_WATER`].
pub(crate) struct Outbound {
    sock: WriteSock,
    pending: std::sync::Mutex<OutState>,
    wake_writer: Notify,
    drained: Notify,
    backlog: AtomicUsize,
    switch: Arc<KillSwitch>,
}

#[derive(Default)]
struct OutState {
    buf: BytesMut,
    /// Bytes taken from `buf` and being written (streams without non-blocking writes).
    in_flight: usize,
    error: Option<io::ErrorKind>,
    closing: bool,
}

/// Backlog above which channel senders wait.
pub(crate) const HIGH_WATER: usize = 2 * 1024 * 1024;
/// Backlog under which they resume.
const LOW_WATER: usize = 512 * 1024;
/// Backlog at which the connection is dropped: the remote has stopped reading while
/// making us answer (each of its requests gets a reply the pump does not control).
const HARD_CAP: usize = 64 * 1024 * 1024;
/// Time a closing connection gets to send what it still has queued.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

impl Outbound {
    fn write(&self, data: &[u8]) -> io::Result<usize> {
        let mut st = crate::connection::driver::lock(&self.pending);
        if let Some(kind) = st.error {
            return Err(io::Error::new(kind, "connection write failed"));
        }
        let mut off = 0;
        if st.buf.is_empty() {
            match self.sock.try_write(data) {
                Ok(n) => off = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    st.error = Some(e.kind());
                    return Err(e);
                }
            }
        }
        if off < data.len() {
            if st.buf.len() + st.in_flight + data.len() - off > HARD_CAP {
                st.error = Some(io::ErrorKind::OutOfMemory);
                st.buf = BytesMut::new();
                drop(st);
                tracing::warn!(
                    "dropping a connection whose peer stopped reading ({HARD_CAP} bytes queued)"
                );
                self.switch.kill();
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "peer stopped reading",
                ));
            }
            st.buf.extend_from_slice(&data[off..]);
            self.backlog
                .store(st.buf.len() + st.in_flight, Ordering::Release);
            drop(st);
            self.wake_writer.notify_one();
        }
        Ok(data.len())
    }

    /// Bytes queued and not yet taken by the socket.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Acquire)
    }

    /// Waits until the backlog is low again (or the connection is gone).
    pub(crate) async fn wait_drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.backlog() <= LOW_WATER || self.switch.is_killed() {
                return;
            }
            drained.await;
        }
    }

    fn close(&self) {
        crate::connection::driver::lock(&self.pending).closing = true;
        self.wake_writer.notify_one();
    }

    /// Drains the queue into the socket until the connection closes.
    async fn run(self: Arc<Self>) {
        if let WriteSock::Io(w) = &self.sock {
            let mut w = w.lock().await;
            return self.clone().run_io(&mut w).await;
        }
        let mut linger = None;
        loop {
            let woken = self.wake_writer.notified();
            let (empty, closing) = {
                let st = crate::connection::driver::lock(&self.pending);
                (st.buf.is_empty(), st.closing)
            };
            if self.switch.is_killed() || (empty && closing) {
                break;
            }
            if empty {
                tokio::select! {
                    () = woken => {}
                    () = self.switch.killed() => break,
                }
                continue;
            }
            if closing && linger.is_none() {
                linger = Some(tokio::time::Instant::now() + LINGER);
            }
            let ready = async {
                match linger {
                    Some(deadline) => tokio::time::timeout_at(deadline, self.sock.writable())
                        .await
                        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                    None => self.sock.writable().await,
                }
            };
            let res = tokio::select! {
                r = ready => r,
                () = self.switch.killed() => break,
            };
            let mut st = crate::connection::driver::lock(&self.pending);
            let res = res.and_then(|()| self.sock.try_write(&st.buf));
            match res {
                Ok(n) => {
                    let _ = st.buf.split_to(n);
                    if st.buf.is_empty() {
                        // Give the memory back: idle connections stay small.
                        st.buf = BytesMut::new();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    st.error = Some(e.kind());
                    st.buf = BytesMut::new();
                    drop(st);
                    self.backlog.store(0, Ordering::Release);
                    self.drained.notify_waiters();
                    self.switch.kill();
                    break;
                }
            }
            let left = st.buf.len();
            drop(st);
            self.backlog.store(left, Ordering::Release);
            if left <= LOW_WATER {
                self.drained.notify_waiters();
            }
        }
        // Dropping the last reference to the write half shuts the socket down.
        self.drained.notify_waiters();
    }
}

impl Outbound {
    /// [`run`](Self::run) for a stream without non-blocking writes: the queue is
    /// taken whole and written with `write_all`.
    async fn run_io(self: Arc<Self>, w: &mut BoxWrite) {
        use tokio::io::AsyncWriteExt as _;
        let mut linger = None;
        loop {
            let woken = self.wake_writer.notified();
            let (chunk, closing) = {
                let mut st = crate::connection::driver::lock(&self.pending);
                let chunk = st.buf.split().freeze();
                st.in_flight = chunk.len();
                (chunk, st.closing)
            };
            if self.switch.is_killed() || (chunk.is_empty() && closing) {
                break;
            }
            if chunk.is_empty() {
                tokio::select! {
                    () = woken => {}
                    () = self.switch.killed() => break,
                }
                continue;
            }
            if closing && linger.is_none() {
                linger = Some(tokio::time::Instant::now() + LINGER);
            }
            let write = async {
                w.write_all(&chunk).await?;
                w.flush().await
            };
            let res = tokio::select! {
                r = write => r,
                () = self.switch.killed() => break,
                () = async {
                    match linger {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => Err(io::ErrorKind::TimedOut.into()),
            };
            if let Err(e) = res {
                crate::connection::driver::lock(&self.pending).error = Some(e.kind());
                self.backlog.store(0, Ordering::Release);
                self.drained.notify_waiters();
                self.switch.kill();
                break;
            }
            let left = {
                let mut st = crate::connection::driver::lock(&self.pending);
                st.in_flight = 0;
                st.buf.len()
            };
            self.backlog.store(left, Ordering::Release);
            if left <= LOW_WATER {
                self.drained.notify_waiters();
            }
        }
        let _ = w.shutdown().await;
        self.drained.notify_waiters();
    }
}

/// A socket as the SSH session sees it: reads go straight to the socket, writes
/// never block (see [`Outbound`]), and a [`KillSwitch`] can end both.
pub(crate) struct SshStream {
    read: ReadSock,
    out: Arc<Outbound>,
    switch: Arc<KillSwitch>,
    /// The first bytes received, kept for a client: a server that refuses before
    /// the handshake says why in a line of text, which SSH would skip.
    first: Option<Arc<std::sync::Mutex<Vec<u8>>>>,
}

/// How much of what a server sends first a client keeps (see [`SshStream::first_bytes`]).
const FIRST_BYTES: usize = 512;

impl SshStream {
    /// Keeps the first bytes the remote sends (up to 512), for [`refusal_line`].
    pub(crate) fn first_bytes(&mut self) -> Arc<std::sync::Mutex<Vec<u8>>> {
        self.first
            .get_or_insert_with(|| Arc::new(std::sync::Mutex::new(Vec::new())))
            .clone()
    }

    /// Wraps a socket; returns the stream, its kill switch and its outbound queue.
    pub(crate) fn new(socket: Socket) -> (SshStream, Arc<KillSwitch>, Arc<Outbound>) {
        let switch = Arc::new(KillSwitch::default());
        let (read, write) = match socket {
            Socket::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadSock::Tcp(r), WriteSock::Tcp(w))
            }
            Socket::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadSock::Unix(r), WriteSock::Unix(w))
            }
            Socket::Io(r, w) => (ReadSock::Io(r), WriteSock::Io(tokio::sync::Mutex::new(w))),
        };
        let out = Arc::new(Outbound {
            sock: write,
            pending: std::sync::Mutex::new(OutState::default()),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            backlog: AtomicUsize::new(0),
            switch: switch.clone(),
        });
        tokio::spawn(out.clone().run());
        (
            SshStream {
                read,
                out: out.clone(),
                switch: switch.clone(),
                first: None,
            },
            switch,
            out,
        )
    }
}

impl Drop for SshStream {
    fn drop(&mut self) {
        self.out.close();
    }
}

fn killed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed locally",
    )
}

impl AsyncRead for SshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.switch.read.register(cx.waker());
        if this.switch.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        let before = buf.filled().len();
        let r = match &mut this.read {
            ReadSock::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadSock::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ReadSock::Io(s) => Pin::new(s).poll_read(cx, buf),
        };
        let full = this.first.as_ref().is_some_and(|first| {
            let mut kept = lock(first);
            let new = &buf.filled()[before..];
            let room = FIRST_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&new[..new.len().min(room)]);
            kept.len() >= FIRST_BYTES
        });
        if full {
            // Kept what a refusal line can be: reads no longer look.
            this.first = None;
        }
        r
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.switch.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        Poll::Ready(self.out.write(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Everything written is with the socket or queued for it.
        if self.switch.is_killed() {
            return Poll::Ready(Err(killed()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.out.close();
        Poll::Ready(Ok(()))
    }
}

/// Connects `host` to `ep` (any transport) and returns the registered connection.
pub(crate) async fn connect(
    host: &Arc<dyn Host>,
    ep: &Endpoint,
) -> Result<Arc<Conn>, crate::error::ConnectError> {
    match ep {
        Endpoint::Inproc(name) => inproc::dial(host, name),
        _ => ssh::client::dial(host, ep).await,
    }
}

/// Dials a TCP or Unix endpoint.
pub(crate) async fn dial(ep: &Endpoint) -> io::Result<Socket> {
    match ep {
        Endpoint::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port)).await?;
            // Request/response traffic must not wait for delayed ACKs.
            s.set_nodelay(true)?;
            Ok(Socket::Tcp(s))
        }
        Endpoint::Unix(path) => Ok(Socket::Unix(UnixStream::connect(path).await?)),
        Endpoint::Inproc(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "inproc endpoints have no socket",
        )),
    }
}

/// A bound socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    /// An `inproc://` name: connections are made by the dialling side.
    Inproc(String, std::sync::Weak<dyn Host>),
}

impl Listener {
    /// Binds `ep`; returns the listener and the endpoint as actually bound (port 0 resolved).
    pub(crate) async fn bind(ep: &Endpoint) -> Result<(Listener, Endpoint), BindError> {
        let io_err = |source| BindError::Io {
            endpoint: ep.to_string(),
            source,
        };
        match ep {
            Endpoint::Tcp { host, port } => {
                let l = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(io_err)?;
                let local = l.local_addr().map_err(io_err)?;
                let bound = Endpoint::Tcp {
                    host: local.ip().to_string(),
                    port: local.port(),
                };
                Ok((Listener::Tcp(l), bound))
            }
            Endpoint::Unix(path) => {
                clear_stale_socket(path, ep).await?;
                let l = UnixListener::bind(path).map_err(io_err)?;
                Ok((Listener::Unix(l, path.clone()), ep.clone()))
            }
            Endpoint::Inproc(_) => Err(io_err(io::Error::new(
                io::ErrorKind::Unsupported,
                "not a socket endpoint",
            ))),
        }
    }

    /// The next connection, where it came from, and its IP address for TCP.
    pub(crate) async fn accept(&self) -> io::Result<(Socket, String, Option<std::net::IpAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Socket::Tcp(s), format!("tcp://{addr}"), Some(addr.ip())))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept().await?;
                Ok((Socket::Unix(s), format!("unix://{}", path.display()), None))
            }
            Listener::Inproc(..) => std::future::pending().await,
        }
    }

    /// Removes the socket file of a Unix listener.
    pub(crate) fn cleanup(&self) {
        match self {
            Listener::Unix(_, path) => {
                let _ = std::fs::remove_file(path);
            }
            Listener::Inproc(name, host) => inproc::unbind(host, name),
            Listener::Tcp(_) => {}
        }
    }
}

/// A socket file left by a dead process is removed; one a live process listens on is an error.
async fn clear_stale_socket(path: &Path, ep: &Endpoint) -> Result<(), BindError> {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::Io {
            endpoint: ep.to_string(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ),
        });
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(BindError::InUse(ep.to_string())),
        Err(e)
            if e.kind() == io::ErrorKind::ConnectionRefused
                || e.kind() == io::ErrorKind::NotFound =>
        {
            std::fs::remove_file(path).map_err(|source| BindError::Io {
                endpoint: ep.to_string(),
                source,
            })
        }
        Err(source) => Err(BindError::Io {
            endpoint: ep.to_string(),
            source,
        }),
    }
}
