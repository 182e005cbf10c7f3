//! A simulated link: two peers joined over in-memory pipes instead of a socket,
//! with real SSH on top, so that tests can run on tokio's paused clock (virtual
//! time: keepalives, timeouts and backoff take no real time and cannot flake on a
//! slow machine) and inject faults: a stall, bytes dropped one way, a cut.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;

/// What the link does with the bytes it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Delivers everything, both ways.
    None = 0,
    /// Delivers nothing and refuses nothing: bytes wait, as in a stalled network.
    Stall = 1,
    /// Drops what the dialling side sends; the other way still works.
    DropUpstream = 2,
    /// Both ends see the stream end.
    Cut = 3,
}

/// The switch of a simulated link.
#[derive(Clone, Default)]
pub struct Link {
    state: Arc<(AtomicU8, Notify)>,
}

impl Link {
    pub fn set(&self, f: Fault) {
        self.state.0.store(f as u8, Ordering::SeqCst);
        self.state.1.notify_waiters();
    }

    fn get(&self) -> Fault {
        match self.state.0.load(Ordering::SeqCst) {
            0 => Fault::None,
            1 => Fault::Stall,
            2 => Fault::DropUpstream,
            _ => Fault::Cut,
        }
    }

    /// Waits until the fault is not a stall; returns it.
    async fn unstalled(&self) -> Fault {
        loop {
            let changed = self.state.1.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let f = self.get();
            if f != Fault::Stall {
                return f;
            }
            changed.await;
        }
    }

    /// Two stream ends joined through this link: (the dialling side's, the other's).
    pub fn ends(&self) -> (DuplexStream, DuplexStream) {
        let (a, a_mid) = tokio::io::duplex(256 * 1024);
        let (b_mid, b) = tokio::io::duplex(256 * 1024);
        let (a_r, a_w) = tokio::io::split(a_mid);
        let (b_r, b_w) = tokio::io::split(b_mid);
        tokio::spawn(self.clone().forward(a_r, b_w, true));
        tokio::spawn(self.clone().forward(b_r, a_w, false));
        (a, b)
    }

    async fn forward(
        self,
        mut from: tokio::io::ReadHalf<DuplexStream>,
        mut to: tokio::io::WriteHalf<DuplexStream>,
        upstream: bool,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.unstalled().await == Fault::Cut {
                return;
            }
            let n = tokio::select! {
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                // A cut while waiting for bytes ends both ways at once.
                () = self.cut() => return,
            };
            match self.unstalled().await {
                Fault::Cut => return,
                Fault::DropUpstream if upstream => continue,
                _ => {}
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    async fn cut(&self) {
        loop {
            let changed = self.state.1.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.get() == Fault::Cut {
                return;
            }
            changed.await;
        }
    }
}
