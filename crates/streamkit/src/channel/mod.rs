//! Channels: multiplexed, flow-controlled streams between two peers.
//!
//! A [`Channel`] carries a byte stream (tokio [`AsyncRead`] + [`AsyncWrite`]),
//! length-prefixed message frames inside that stream, error frames on a separate
//! stream, a half-close, trailers, and a reset. Read operations are cancel-safe:
//! dropping a `read_*` future loses no data (a partial frame stays buffered).

pub(crate) mod buffer;
mod headers;
pub(crate) mod shared;
pub(crate) mod state;
mod timer;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use headers::Headers;
use shared::ChannelShared;
use state::{ChannelState, Step, Wake};
use timer::Timer;

use crate::error::ChannelError;

/// What a channel is: its service, headers, trailers and the two peers.
#[derive(Clone)]
pub struct ChannelMeta {
    shared: Arc<ChannelShared>,
}

impl std::fmt::Debug for ChannelMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelMeta")
            .field("service", &self.service())
            .field("headers", self.headers())
            .field("local_peer", &self.local_peer())
            .field("remote_peer", &self.remote_peer())
            .finish()
    }
}

static NO_HEADERS: Headers = Headers::new();

impl ChannelMeta {
    /// The service the channel was opened for.
    pub fn service(&self) -> &str {
        self.shared.info().map_or("", |i| i.service.as_str())
    }

    /// The headers sent with the open.
    pub fn headers(&self) -> &Headers {
        self.shared.info().map_or(&NO_HEADERS, |i| &i.headers)
    }

    /// The remote's trailers: `None` until its end of stream has arrived, then complete.
    pub fn trailers(&self) -> Option<Headers> {
        self.shared
            .peek(|s| s.trailers().map(|t| Headers::from(t.to_vec())))
    }

    /// This peer's name.
    pub fn local_peer(&self) -> &str {
        self.shared.info().map_or("", |i| i.local_peer.as_str())
    }

    /// The remote peer's name.
    pub fn remote_peer(&self) -> &str {
        self.shared.info().map_or("", |i| i.remote_peer.as_str())
    }
}

/// A channel between two peers.
///
/// Dropping a channel closes it gracefully in the background: what was written is
/// still delivered, then the remote sees the end of stream.
#[derive(Debug)]
pub struct Channel {
    read: ReadHalf,
    write: WriteHalf,
}

/// The reading half of a [`Channel`], from [`Channel::split`].
#[derive(Debug)]
pub struct ReadHalf {
    shared: Arc<ChannelShared>,
    meta: ChannelMeta,
    timer: Timer,
}

/// The writing half of a [`Channel`], from [`Channel::split`].
///
/// Dropping it ends the stream (like [`close_write`](WriteHalf::close_write), without waiting).
#[derive(Debug)]
pub struct WriteHalf {
    shared: Arc<ChannelShared>,
    timer: Timer,
}

impl Channel {
    pub(crate) fn new(shared: Arc<ChannelShared>) -> Channel {
        let (read_timeout, write_timeout) = shared.peek(|s| s.timeouts());
        Channel {
            read: ReadHalf {
                meta: ChannelMeta {
                    shared: shared.clone(),
                },
                shared: shared.clone(),
                timer: Timer::new(read_timeout),
            },
            write: WriteHalf {
                shared,
                timer: Timer::new(write_timeout),
            },
        }
    }

    /// Makes reads that wait longer than `timeout` fail with
    /// [`ChannelError::TimedOut`] (the channel stays usable); `None` waits forever.
    pub fn set_read_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.read.set_timeout(timeout);
    }

    /// The same for writes (waiting for buffer space, or for `close_write`'s
    /// acknowledgement).
    pub fn set_write_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.write.set_timeout(timeout);
    }

    /// The channel's description.
    pub fn meta(&self) -> &ChannelMeta {
        &self.read.meta
    }

    /// Reads one frame (see [`ReadHalf::read_frame`]).
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ChannelError> {
        self.read.read_frame().await
    }

    /// Reads one error frame (see [`ReadHalf::read_error`]).
    pub async fn read_error(&mut self) -> Result<Option<Bytes>, ChannelError> {
        self.read.read_error().await
    }

    /// Writes one frame (see [`WriteHalf::write_frame`]).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        self.write.write_frame(frame).await
    }

    /// Writes one error frame (see [`WriteHalf::write_error`]).
    pub async fn write_error(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        self.write.write_error(frame).await
    }

    /// Sends trailers (see [`WriteHalf::write_trailers`]).
    pub async fn write_trailers(
        &mut self,
        trailers: impl Into<Headers>,
    ) -> Result<(), ChannelError> {
        self.write.write_trailers(trailers).await
    }

    /// Ends the stream in this direction (see [`WriteHalf::close_write`]).
    pub async fn close_write(&mut self) -> Result<(), ChannelError> {
        self.write.close_write().await
    }

    /// Closes the channel in an orderly way.
    ///
    /// Ends the stream in this direction if that was not done yet and waits until the
    /// remote confirmed it received everything. If the remote has not finished
    /// sending, it is told to stop: its further writes fail with
    /// [`ChannelError::ClosedByPeer`]. Reads after `close` fail.
    ///
    /// When the remote closed first, `close` still succeeds if this side never wrote
    /// anything (nothing can have been lost); otherwise it fails with
    /// [`ChannelError::ClosedByPeer`], since what was written may not have been read.
    pub async fn close(&mut self) -> Result<(), ChannelError> {
        self.write.op(|s| s.close()).await
    }

    /// Aborts the channel: unsent data is dropped and the remote's reads and writes
    /// fail with [`ChannelError::ResetByPeer`].
    pub fn reset(&mut self) {
        self.write.reset();
    }

    /// Bytes received and waiting to be read (data, error frames, partial frames).
    ///
    /// Bounded by the channel window (see [`Options::channel_window`](crate::Options)),
    /// plus, while `read_frame` assembles a frame larger than what has arrived, that
    /// frame (at most the frame-size limit).
    pub fn buffered(&self) -> usize {
        self.read.buffered()
    }

    /// Bytes written and not yet handed to the connection.
    pub fn send_buffered(&self) -> usize {
        self.write.send_buffered()
    }

    /// Splits the channel into halves that can move to different tasks.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }

    /// Splices the channel to `io` (a TCP or Unix stream, a child's stdio, ...) in
    /// both directions until both are done.
    ///
    /// The end of the channel's stream shuts down `io`'s write side; the end of
    /// `io`'s stream ends the channel's ([`close_write`](Self::close_write)). If
    /// either side fails, the channel is reset and the error returned.
    pub async fn join<T>(self, io: T) -> Result<JoinStats, JoinError>
    where
        T: AsyncRead + AsyncWrite,
    {
        use tokio::io::AsyncWriteExt as _;
        let (mut r, mut w) = self.split();
        let (mut io_r, mut io_w) = tokio::io::split(io);
        let to_io = async {
            let n = tokio::io::copy(&mut r, &mut io_w)
                .await
                .map_err(JoinError::Channel)?;
            io_w.shutdown().await.map_err(JoinError::Io)?;
            Ok::<u64, JoinError>(n)
        };
        let from_io = async {
            let mut n = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let k = tokio::io::AsyncReadExt::read(&mut io_r, &mut buf)
                    .await
                    .map_err(JoinError::Io)?;
                if k == 0 {
                    break;
                }
                w.write_all(&buf[..k]).await.map_err(JoinError::Channel)?;
                n += k as u64;
            }
            w.close_write()
                .await
                .map_err(|e| JoinError::Channel(e.into()))?;
            Ok::<u64, JoinError>(n)
        };
        let res = futures::future::try_join(to_io, from_io).await;
        match res {
            Ok((to_io, from_io)) => Ok(JoinStats { to_io, from_io }),
            Err(e) => {
                w.reset();
                Err(e)
            }
        }
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

/// Why [`Channel::join`] ended early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The channel failed (reset, lost connection, ...).
    #[error("channel: {0}")]
    Channel(#[source] io::Error),
    /// The joined stream failed; the channel was reset.
    #[error("joined stream: {0}")]
    Io(#[source] io::Error),
}

impl ReadHalf {
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        let r = self.shared.poll_read_op(cx, f);
        self.timer.check(cx, r)
    }

    async fn op<T>(
        &mut self,
        mut f: impl FnMut(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Result<T, ChannelError> {
        self.timer.restart();
        poll_fn(|cx| self.poll_op(cx, &mut f)).await
    }

    /// See [`Channel::set_read_timeout`].
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.timer.set(timeout);
    }

    /// The channel's description.
    pub fn meta(&self) -> &ChannelMeta {
        &self.meta
    }

    /// Reads one frame: a `u32` big-endian length then the payload.
    ///
    /// `Ok(None)` is a clean end of stream between frames. A frame announced over
    /// the frame-size limit fails the channel with [`ChannelError::FrameTooLarge`]
    /// (and resets it) without allocating its length. Cancel-safe: a partly read
    /// frame stays buffered. Do not mix with byte reads in the middle of a frame.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ChannelError> {
        self.op(|s| s.read_frame()).await
    }

    /// Reads one error frame, waiting for one if none is buffered.
    ///
    /// `Ok(None)` once the remote ended its stream and no error frame is left: every
    /// error frame written before the end of stream is returned first. Error frames
    /// received before a reset or a lost connection are returned before that error.
    pub async fn read_error(&mut self) -> Result<Option<Bytes>, ChannelError> {
        self.op(|s| s.read_error()).await
    }

    /// Polls for one frame; the poll form of [`read_frame`](Self::read_frame).
    pub fn poll_read_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, ChannelError>> {
        self.poll_op(cx, |s| s.read_frame())
    }

    /// Polls for one error frame; the poll form of [`read_error`](Self::read_error).
    ///
    /// Polling this and [`AsyncRead::poll_read`] from one task shows error frames and
    /// data roughly in the order they were sent.
    pub fn poll_read_error(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, ChannelError>> {
        self.poll_op(cx, |s| s.read_error())
    }

    /// See [`Channel::buffered`].
    pub fn buffered(&self) -> usize {
        self.shared.peek(|s| s.buffered())
    }
}

impl WriteHalf {
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        let r = self.shared.poll_write_op(cx, f);
        self.timer.check(cx, r)
    }

    async fn op<T>(
        &mut self,
        mut f: impl FnMut(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Result<T, ChannelError> {
        self.timer.restart();
        poll_fn(|cx| self.poll_op(cx, &mut f)).await
    }

    /// See [`Channel::set_write_timeout`].
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.timer.set(timeout);
    }

    /// Writes one frame: a `u32` big-endian length then the payload.
    ///
    /// Returns once the frame is queued for sending; waits while the send buffer is
    /// full. A frame over the frame-size limit is refused with
    /// [`ChannelError::FrameTooLarge`] and nothing is sent.
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        self.op(|s| s.write_frame(frame, false)).await
    }

    /// Writes one error frame on the error stream (SSH extended data, type 1).
    pub async fn write_error(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        self.op(|s| s.write_frame(frame, true)).await
    }

    /// Sends trailers after everything written so far; the remote sees them
    /// ([`ChannelMeta::trailers`]) once this side's stream ends. May be called more
    /// than once; the lists are concatenated.
    pub async fn write_trailers(
        &mut self,
        trailers: impl Into<Headers>,
    ) -> Result<(), ChannelError> {
        let mut list = Some(Vec::<String>::from(trailers.into()));
        self.op(|s| s.write_trailers(list.take().unwrap_or_default()))
            .await
    }

    /// Ends the stream in this direction; the other direction keeps working.
    ///
    /// Returns once the remote confirmed it received everything written before:
    /// `Ok` means nothing was lost. An error means the data may not have arrived.
    pub async fn close_write(&mut self) -> Result<(), ChannelError> {
        self.op(|s| s.close_write()).await
    }

    /// Aborts the channel (see [`Channel::reset`]).
    pub fn reset(&mut self) {
        self.shared.update(|s| ((), s.reset()));
    }

    /// See [`Channel::send_buffered`].
    pub fn send_buffered(&self) -> usize {
        self.shared.peek(|s| s.send_buffered())
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        self.shared.reader_dropped();
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        self.shared.writer_dropped();
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match self.poll_op(cx, |s| s.read(dst)) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_op(cx, |s| s.write(data)).map_err(Into::into)
    }

    /// Waits until everything written has been handed to the connection.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_op(cx, |s| {
            let step = match (s.send_failure(), s.send_buffered()) {
                (Some(e), _) => Step::Failed(e),
                (None, 0) => Step::Ready(()),
                (None, _) => Step::Pending,
            };
            (step, Default::default())
        })
        .map_err(Into::into)
    }

    /// Ends the stream: [`close_write`](WriteHalf::close_write).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_op(cx, |s| s.close_write()).map_err(Into::into)
    }
}

impl AsyncRead for Channel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Channel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
