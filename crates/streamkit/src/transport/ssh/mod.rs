//! Streamkit over SSH-2, via russh.
//!
//! The connecting peer is the SSH client, the bound peer the SSH server; after the
//! handshake both open channels the same way. Incoming channel traffic is taken
//! from russh's handler callbacks, on the session's own task, straight into each
//! channel's state; russh's per-channel queues are never used for it, so a channel
//! nobody reads can never stall the session (see `docs/PROTOCOL.md`, flow control).

pub(crate) mod client;
pub(crate) mod server;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::{ChannelWriteHalf, cipher};
use tokio::sync::Notify;

use crate::channel::state::Transmit;
use crate::config::Options;
use crate::peer::connection::Connection;
use crate::transport::inproc::{InprocLink, InprocOpenFailed, InprocWriter};
use crate::wire::{EXT_CONTROL, EXT_ERROR};

/// SSH-level window per channel. Between Streamkit peers our own credit (at most
/// `max_channel_window`) bounds buffering and russh re-opens this window as packets
/// arrive, so it only needs to exceed the credit: twice the ceiling, so that the SSH
/// window never limits a channel whose credit has grown. For standard SSH clients it is the
/// flow control (granted by hand as the application reads), starting at this size.
pub(crate) fn ssh_window(opts: &Options) -> u32 {
    opts.max_channel_window
        .max(opts.channel_window)
        .saturating_mul(2)
}

/// Cipher preference: AES-GCM first where the CPU has AES instructions.
pub(crate) fn preferred() -> russh::Preferred {
    static AES_FIRST: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
    ];
    static CHACHA_FIRST: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
        cipher::AES_256_CTR,
    ];
    let cipher = if has_aes_instructions() {
        AES_FIRST
    } else {
        CHACHA_FIRST
    };
    russh::Preferred {
        cipher: Cow::Borrowed(cipher),
        ..russh::Preferred::default()
    }
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// How a channel sends: russh's write half for its side of the connection.
pub(crate) enum Writer {
    Client(ChannelWriteHalf<russh::client::Msg>),
    Server(ChannelWriteHalf<russh::server::Msg>),
    /// No SSH at all: see [`inproc`](crate::transport::inproc).
    Inproc(InprocWriter),
}

/// The session is gone; nothing more can be sent.
#[derive(Debug)]
pub(crate) struct SendFailed;

impl Writer {
    /// Bytes of data this channel may send now: the remote's SSH window, at most one
    /// packet. Zero means waiting for the remote to open its window.
    pub(crate) async fn room(&self) -> usize {
        match self {
            Writer::Client(w) => w.writable_packet_size().await,
            Writer::Server(w) => w.writable_packet_size().await,
            // Our own credit is the only window.
            Writer::Inproc(_) => usize::MAX,
        }
    }

    pub(crate) async fn send(&self, t: Transmit) -> Result<(), SendFailed> {
        macro_rules! go {
            ($w:expr) => {
                match t {
                    Transmit::Data(b) => $w.data_bytes(b).await,
                    Transmit::Error(b) => $w.extended_data_bytes(EXT_ERROR, b).await,
                    Transmit::Control(b) => $w.extended_data_bytes(EXT_CONTROL, b).await,
                    Transmit::Close { eof } => match if eof { $w.eof().await } else { Ok(()) } {
                        Ok(()) => $w.close().await,
                        Err(e) => Err(e),
                    },
                    Transmit::Eof { exit_status } => match exit_status {
                        Some(code) => match $w.exit_status(code).await {
                            Ok(()) => $w.eof().await,
                            Err(e) => Err(e),
                        },
                        None => $w.eof().await,
                    },
                    Transmit::WindowAdjust(n) => $w.adjust_window(n).await,
                }
            };
        }
        let r = match self {
            Writer::Client(w) => go!(w),
            Writer::Server(w) => go!(w),
            Writer::Inproc(w) => return w.send(t).map_err(|()| SendFailed),
        };
        r.map_err(|_| SendFailed)
    }
}

/// The session a connection runs on.
pub(crate) enum Link {
    Client(russh::client::Handle<client::ClientHandler>),
    Server(russh::server::Handle),
    /// No SSH at all: see [`inproc`](crate::transport::inproc).
    Inproc(Arc<InprocLink>),
}

/// Why an outgoing open failed at the SSH level.
pub(crate) enum OpenFailed {
    Refused(u32),
    Gone,
}

impl Link {
    /// Opens a `direct-streamlocal@openssh.com` channel carrying `path`.
    pub(crate) async fn open_streamlocal(&self, path: String) -> Result<(u32, Writer), OpenFailed> {
        let map = |e: russh::Error| match e {
            russh::Error::ChannelOpenFailure(r) => OpenFailed::Refused(r.code()),
            _ => OpenFailed::Gone,
        };
        match self {
            Link::Client(h) => {
                let ch = h.channel_open_direct_streamlocal(path).await.map_err(map)?;
                let id = ch.id().number();
                // The read half is dropped: incoming traffic comes through the handler.
                let (_read, write) = ch.split();
                Ok((id, Writer::Client(write)))
            }
            Link::Server(h) => {
                let ch = h.channel_open_direct_streamlocal(path).await.map_err(map)?;
                let id = ch.id().number();
                let (_read, write) = ch.split();
                Ok((id, Writer::Server(write)))
            }
            Link::Inproc(l) => match l.open(&path).await {
                Ok((id, w)) => Ok((id, Writer::Inproc(w))),
                Err(InprocOpenFailed::Refused(code)) => Err(OpenFailed::Refused(code)),
                Err(InprocOpenFailed::Gone) => Err(OpenFailed::Gone),
            },
        }
    }

    /// Sends SSH_MSG_DISCONNECT (best effort).
    pub(crate) async fn disconnect(&self, why: &str) {
        match self {
            Link::Client(h) => {
                let _ = h
                    .disconnect(russh::Disconnect::ByApplication, why, "en")
                    .await;
            }
            Link::Server(h) => {
                let _ = h
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        why.to_owned(),
                        "en".to_owned(),
                    )
                    .await;
            }
            Link::Inproc(l) => l.disconnect(why),
        }
    }
}

/// Where a handler finds its connection once it exists.
#[derive(Default)]
pub(crate) struct ConnSlot {
    conn: OnceLock<Arc<Connection>>,
    ready: Notify,
    ended: std::sync::atomic::AtomicBool,
}

impl ConnSlot {
    /// Hands the connection to the handler; `false` if the session already ended
    /// (the caller must then treat the connection as lost).
    pub(crate) fn set(&self, conn: Arc<Connection>) -> bool {
        let _ = self.conn.set(conn);
        self.ready.notify_waiters();
        !self.ended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The session ended; returns the connection, if it was set.
    pub(crate) fn end(&self) -> Option<&Arc<Connection>> {
        self.ended.store(true, std::sync::atomic::Ordering::SeqCst);
        self.conn.get()
    }

    pub(crate) fn get(&self) -> Option<&Arc<Connection>> {
        self.conn.get()
    }

    /// Waits (briefly) for the connection: a server may open a channel the moment
    /// authentication succeeds, a little before the dialling task has registered it.
    pub(crate) async fn wait(&self) -> Option<Arc<Connection>> {
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.conn.get() {
                return Some(c.clone());
            }
            tokio::select! {
                () = notified => {}
                () = &mut deadline => return None,
            }
        }
    }
}
