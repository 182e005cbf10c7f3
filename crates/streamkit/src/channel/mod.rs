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

use crate::error::{ChannelError, OpenError, OpenErrorKind};

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
    ///
    /// Channels opened inside this one are reset when `close` returns.
    pub async fn close(&mut self) -> Result<(), ChannelError> {
        let res = self.write.op(|s| s.close()).await;
        self.read.shared.close_children();
        res
    }

    /// Aborts the channel: unsent data is dropped and the remote's reads and writes
    /// fail with [`ChannelError::ResetByPeer`]. Channels opened inside it are reset.
    pub fn reset(&mut self) {
        self.write.reset();
    }

    /// Bytes received and waiting to be read (data, error frames, partial frames).
    ///
    /// Bounded by the channel's window (at most
    /// [`Options::max_channel_window`](crate::Options)),
    /// plus, while `read_frame` assembles a frame larger than what has arrived, that
    /// frame (at most the frame-size limit).
    pub fn buffered(&self) -> usize {
        self.read.buffered()
    }

    /// Bytes written and not yet handed to the connection.
    pub fn send_buffered(&self) -> usize {
        self.write.send_buffered()
    }

    /// Opens a channel inside this one: a new channel on the same connection that
    /// the remote receives from [`accept`](Self::accept) on its end of this
    /// channel, never from [`Peer::accept`](crate::Peer::accept).
    ///
    /// Children nest to any depth, work in both directions, carry their own
    /// headers, frames, errors and trailers, and are reset
    /// ([`ChannelError::ParentClosed`]) when this channel closes. Fails with
    /// [`OpenErrorKind::ParentClosed`] if this channel is closed or closing here,
    /// and with "parent channel not found" if the remote closed it already.
    pub async fn open(
        &self,
        service: &str,
        headers: impl Into<Headers>,
    ) -> Result<Channel, OpenError> {
        let shared = &self.read.shared;
        let err = |kind| OpenError::new(self.meta().remote_peer(), service, kind);
        let conn = shared.nest.conn.upgrade().ok_or_else(|| {
            err(OpenErrorKind::ConnectionLost(Arc::from(
                "connection closed",
            )))
        })?;
        let opts = conn
            .options()
            .ok_or_else(|| err(OpenErrorKind::ShuttingDown))?;
        conn.open(service, headers.into(), Some(shared.clone()), &opts)
            .await
            .map_err(err)
    }

    /// Waits for the next channel the remote opened inside this one.
    ///
    /// Cancel-safe. Fails with [`ChannelError::Closed`] once this channel is closed
    /// (no child can arrive any more); children still waiting then are reset.
    pub async fn accept(&self) -> Result<(ChannelMeta, Channel), ChannelError> {
        let ch = self
            .read
            .shared
            .nest
            .accept_queue()
            .pop()
            .await
            .ok_or(ChannelError::Closed)?;
        Ok((ch.meta().clone(), ch))
    }

    pub(crate) fn is_shared(&self, shared: &Arc<ChannelShared>) -> bool {
        Arc::ptr_eq(&self.read.shared, shared)
    }

    /// Channels opened inside this one (either way) and not yet closed.
    pub fn child_count(&self) -> usize {
        self.read.shared.nest.child_count()
    }

    /// Frames as a [`Stream`](futures::Stream) of received frames and a
    /// [`Sink`](futures::Sink) of frames to send, for composing with `StreamExt`
    /// and `SinkExt`. Closing the sink ends the stream in this direction
    /// ([`close_write`](Self::close_write)).
    pub fn into_frames(self) -> Frames {
        Frames {
            ch: self,
            pending: None,
        }
    }

    /// Splits the channel into halves that can move to different tasks.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }

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
            copy_counted(&mut r, &mut io_w, &to_io, true).await?;
            io_w.shutdown().await.map_err(|e| (false, e))
        };
        let from_io_side = async {
            copy_counted(&mut io_r, &mut w, &from_io, false).await?;
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

/// Copies `r` to `w` until `r` ends, counting in `n`. An error says which side
/// failed: `true` for the channel (`r` if `from_channel`, else `w`).
async fn copy_counted<R, W>(
    r: &mut R,
    w: &mut W,
    n: &std::sync::atomic::AtomicU64,
    from_channel: bool,
) -> Result<(), (bool, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = r.read(&mut buf).await.map_err(|e| (from_channel, e))?;
        if k == 0 {
            return Ok(());
        }
        w.write_all(&buf[..k])
            .await
            .map_err(|e| (!from_channel, e))?;
        n.fetch_add(k as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Ready once everything written has been handed to the connection.
fn flushed(s: &mut ChannelState) -> (Step<()>, Wake) {
    let step = match (s.send_failure(), s.send_buffered()) {
        (Some(e), _) => Step::Failed(e),
        (None, 0) => Step::Ready(()),
        (None, _) => Step::Pending,
    };
    (step, Wake::default())
}

/// A channel's frames as a [`Stream`](futures::Stream) and a [`Sink`](futures::Sink):
/// see [`Channel::into_frames`].
#[derive(Debug)]
pub struct Frames {
    ch: Channel,
    pending: Option<Bytes>,
}

impl Frames {
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
        self.shared.close_children();
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
        self.poll_op(cx, flushed).map_err(Into::into)
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
