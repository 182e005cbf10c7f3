//! [`Channel::join`]: a channel spliced to any byte stream, both ways, and
//! [`Frames`]: its frames as a `Stream` and a `Sink`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::handle::{Channel, ChannelMeta, flushed};
use crate::error::ChannelError;

impl Channel {
    /// Splices the channel to `io` (a TCP or Unix stream, a child's stdio, ...) in
    /// both directions until both are done, and reports how many bytes went each
    /// way.
    ///
    /// The end of the channel's stream shuts down `io`'s write side; the end of
    /// `io`'s stream ends the channel's ([`close_write`](Self::close_write)), so a
    /// half-close travels each way. If either side fails, the channel is reset and
    /// the error returned, with the bytes moved until then.
    pub async fn join<T>(self, io: T) -> Result<JoinStats, JoinError>
    where
        T: AsyncRead + AsyncWrite,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::AsyncWriteExt as _;
        let (mut r, mut w) = self.split();
        let (mut io_r, mut io_w) = tokio::io::split(io);
        let (to_io, from_io) = (AtomicU64::new(0), AtomicU64::new(0));
        let to_io_side = async {
            // Chunks as they arrived, written out from where they are.
            loop {
                let chunk = r
                    .read_chunk(COPY_CHUNK)
                    .await
                    .map_err(|e| (true, e.into()))?;
                if chunk.is_empty() {
                    break;
                }
                io_w.write_all(&chunk).await.map_err(|e| (false, e))?;
                to_io.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            io_w.shutdown().await.map_err(|e| (false, e))
        };
        let from_io_side = async {
            // Read into spare room (not zeroed first) and handed over, not copied.
            use tokio::io::AsyncReadExt as _;
            let mut buf = bytes::BytesMut::new();
            loop {
                buf.reserve(COPY_CHUNK);
                let k = io_r.read_buf(&mut buf).await.map_err(|e| (false, e))?;
                if k == 0 {
                    break;
                }
                w.write_bytes(buf.split().freeze())
                    .await
                    .map_err(|e| (true, e.into()))?;
                from_io.fetch_add(k as u64, Ordering::Relaxed);
            }
            w.close_write().await.map_err(|e| (true, e.into()))
        };
        let res = futures::future::try_join(to_io_side, from_io_side).await;
        let stats = JoinStats {
            to_io: to_io.load(Ordering::Relaxed),
            from_io: from_io.load(Ordering::Relaxed),
        };
        match res {
            Ok(_) => Ok(stats),
            Err((on_channel, error)) => {
                w.reset();
                Err(if on_channel {
                    JoinError::Channel { error, stats }
                } else {
                    JoinError::Io { error, stats }
                })
            }
        }
    }
}

/// Bytes per read in [`Channel::join`].
const COPY_CHUNK: usize = 64 * 1024;

/// A channel's frames as a [`Stream`](futures::Stream) and a [`Sink`](futures::Sink):
/// see [`Channel::into_frames`].
#[derive(Debug)]
pub struct Frames {
    ch: Channel,
    pending: Option<Bytes>,
}

impl Frames {
    pub(super) fn new(ch: Channel) -> Frames {
        Frames { ch, pending: None }
    }

    /// The channel back (a frame given to the sink and not yet flushed is dropped).
    pub fn into_inner(self) -> Channel {
        self.ch
    }

    /// The channel's description.
    pub fn meta(&self) -> &ChannelMeta {
        self.ch.meta()
    }

    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        let Some(frame) = &self.pending else {
            return Poll::Ready(Ok(()));
        };
        match self.ch.write.poll_op(cx, |s| s.write_frame(frame, false)) {
            Poll::Ready(Ok(())) => {
                self.pending = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.pending = None;
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::Stream for Frames {
    type Item = Result<Bytes, ChannelError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().ch.read.poll_read_frame(cx) {
            Poll::Ready(Ok(Some(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::Sink<Bytes> for Frames {
    type Error = ChannelError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        self.get_mut().poll_send_pending(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Bytes) -> Result<(), ChannelError> {
        let this = self.get_mut();
        // The Sink contract: `poll_ready` first. Losing a frame silently would be worse.
        assert!(this.pending.is_none(), "start_send without poll_ready");
        this.pending = Some(frame);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_pending(cx))?;
        this.ch.write.poll_op(cx, flushed)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_pending(cx))?;
        this.ch.write.poll_op(cx, |s| s.close_write())
    }
}

/// Bytes moved by [`Channel::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoinStats {
    /// Bytes from the channel to the joined stream.
    pub to_io: u64,
    /// Bytes from the joined stream to the channel.
    pub from_io: u64,
}

/// Why [`Channel::join`] ended early, and what it moved until then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The channel failed (reset, lost connection, ...).
    #[error("channel: {error}")]
    Channel {
        /// The channel's error.
        #[source]
        error: io::Error,
        /// Bytes moved before it.
        stats: JoinStats,
    },
    /// The joined stream failed; the channel was reset.
    #[error("joined stream: {error}")]
    Io {
        /// The stream's error.
        #[source]
        error: io::Error,
        /// Bytes moved before it.
        stats: JoinStats,
    },
}

impl JoinError {
    /// Bytes moved each way before the failure.
    pub fn stats(&self) -> JoinStats {
        match self {
            JoinError::Channel { stats, .. } | JoinError::Io { stats, .. } => *stats,
        }
    }
}
