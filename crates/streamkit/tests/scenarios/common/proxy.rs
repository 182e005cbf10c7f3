//! A TCP fault proxy between two peers: forwards, stalls, cuts, drops one way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const FORWARD: u8 = 0;
const STALL: u8 = 1;
const DROP_UPSTREAM: u8 = 2;

struct Control {
    mode: AtomicU8,
    changed: Notify,
    cut: Notify,
}

/// A proxy listening on `url`, forwarding to an upstream address.
pub struct Proxy {
    pub url: String,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding `tcp://127.0.0.1:PORT` connections to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap());
        let control = Arc::new(Control {
            mode: AtomicU8::new(FORWARD),
            changed: Notify::new(),
            cut: Notify::new(),
        });
        let upstream = upstream.to_owned();
        let c = control.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((down, _)) = accepted else { continue };
                        let Ok(up) = TcpStream::connect(&upstream).await else { continue };
                        conns.spawn(relay(down, up, c.clone()));
                    }
                    () = c.cut.notified() => {
                        // Cut: every current connection is dropped at once.
                        conns.abort_all();
                    }
                }
            }
        });
        Proxy { url, control, task }
    }

    fn set(&self, mode: u8) {
        self.control.mode.store(mode, Ordering::SeqCst);
        self.control.changed.notify_waiters();
    }

    /// Forwards normally.
    pub fn forward(&self) {
        self.set(FORWARD);
    }

    /// Stops forwarding in both directions; connections stay open, silent.
    pub fn stall(&self) {
        self.set(STALL);
    }

    /// Discards everything from the client to the server.
    pub fn drop_upstream(&self) {
        self.set(DROP_UPSTREAM);
    }

    /// Drops every current connection (new ones are still accepted).
    pub fn cut(&self) {
        self.control.cut.notify_waiters();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(down: TcpStream, up: TcpStream, c: Arc<Control>) {
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    tokio::select! {
        () = pipe(dr, uw, c.clone(), true) => {}
        () = pipe(ur, dw, c, false) => {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    c: Arc<Control>,
    upstream: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While stalled, nothing is read (so nothing is acknowledged either).
        loop {
            let changed = c.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if c.mode.load(Ordering::SeqCst) != STALL {
                break;
            }
            changed.await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match c.mode.load(Ordering::SeqCst) {
            DROP_UPSTREAM if upstream => continue,
            STALL => {
                // Stalled while reading: hold the bytes until forwarding resumes.
                loop {
                    let changed = c.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if c.mode.load(Ordering::SeqCst) != STALL {
                        break;
                    }
                    changed.await;
                }
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
