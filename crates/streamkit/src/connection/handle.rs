//! Channels as the application holds them: multiplexed, flow-controlled streams
//! between two peers.
//!
//! A [`Channel`] carries a byte stream (tokio [`AsyncRead`] + [`AsyncWrite`]),
//! length-prefixed message frames inside that stream, error frames on a separate
//! stream, a half-close, trailers, and a reset. Read operations are cancel-safe:
//! dropping a `read_*` future loses no data (a partial frame stays buffered).
//!
//! A handle is a connection and a channel's key; every operation is one step on
//! the connection's state (see [`Conn`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::driver::{Conn, Slot};
use super::join::Frames;
use super::state::{ChannelKey, Meta};
use super::timer::Timer;
use crate::channel::{ChannelState, Headers, Step, Wake};
use crate::error::{ChannelError, OpenError};

/// What a channel is: its service, headers, trailers and the two peers.
#[derive(Clone)]
pub struct ChannelMeta {
    meta: Arc<Meta>,
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

impl ChannelMeta {
    /// The service the channel was opened for.
    pub fn service(&self) -> &str {
        &self.meta.service
    }

    /// The headers sent with the open.
    pub fn headers(&self) -> &Headers {
        &self.meta.headers
    }

    /// The remote's trailers: `None` until its end of stream has arrived, then complete.
    pub fn trailers(&self) -> Option<Headers> {
        self.meta.trailers.get().cloned()
    }

    /// This peer's name.
    pub fn local_peer(&self) -> &str {
        &self.meta.local_peer
    }

    /// The remote peer's name.
    pub fn remote_peer(&self) -> &str {
        &self.meta.remote_peer
    }

    /// What the remote peer proved when it connected: its key's fingerprint, or
    /// the token. Its name is held by that identity while the connection lives.
    pub fn remote_identity(&self) -> &crate::RemoteIdentity {
        &self.meta.remote_identity
    }
}

/// A channel between two peers.
///
/// Dropping a channel closes it gracefully in the background: what was written is
/// still delivered, then the remote sees the end of stream.
#[derive(Debug)]
pub struct Channel {
    pub(super) read: ReadHalf,
    pub(super) write: WriteHalf,
}

/// A share of a channel's connection memory budget, for a layer above that takes
/// data out of the channel and keeps it on the remote's behalf (RPC's queues of
/// inputs and answers): what it holds is charged to the same budget as the
/// channel's own buffers and shows in [`PeerStats::budgeted`](crate::PeerStats).
/// Charges are released with [`release`](Self::release), and all at once when the
/// channel is gone. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BudgetShare {
    conn: Arc<Conn>,
    key: ChannelKey,
}

impl BudgetShare {
    /// Charges `n` more bytes if the budget (the connection's and the peer's) can
    /// hold them; `false`, charging nothing, if not.
    pub fn try_charge(&self, n: usize) -> bool {
        let key = self.key;
        self.conn.step(|s| s.charge_held(key, n as u64, false))
    }

    /// Charges `n` more bytes whatever the budget says (for what is bounded
    /// otherwise, so the count stays true).
    pub fn charge(&self, n: usize) {
        let key = self.key;
        self.conn.step(|s| s.charge_held(key, n as u64, true));
    }

    /// Releases `n` bytes charged before.
    pub fn release(&self, n: usize) {
        let key = self.key;
        self.conn.step(|s| s.release_held(key, n as u64));
    }
}

/// The reading half of a [`Channel`], from [`Channel::split`].
#[derive(Debug)]
pub struct ReadHalf {
    conn: Arc<Conn>,
    key: ChannelKey,
    meta: ChannelMeta,
    timer: Timer,
}

/// The writing half of a [`Channel`], from [`Channel::split`].
///
/// Dropping it ends the stream (like [`close_write`](WriteHalf::close_write), without waiting).
#[derive(Debug)]
pub struct WriteHalf {
    conn: Arc<Conn>,
    key: ChannelKey,
    timer: Timer,
}

impl Channel {
    pub(crate) fn new(conn: Arc<Conn>, key: ChannelKey) -> Channel {
        let (meta, read_timeout, write_timeout) = conn.step(|s| {
            let limits = s.limits();
            (s.meta(key), limits.read_timeout, limits.write_timeout)
        });
        let meta = meta.unwrap_or_else(|| {
            Arc::new(Meta {
                service: String::new(),
                headers: Headers::new(),
                local_peer: conn.info.local_name.clone(),
                remote_peer: conn.info.remote_name.clone(),
                remote_identity: Arc::new(conn.info.remote_id.clone()),
                trailers: std::sync::OnceLock::new(),
            })
        });
        Channel {
            read: ReadHalf {
                conn: conn.clone(),
                key,
                meta: ChannelMeta { meta },
                timer: Timer::new(read_timeout),
            },
            write: WriteHalf {
                conn,
                key,
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

    /// Reads bytes of the stream without copying them (see [`ReadHalf::read_chunk`]).
    pub async fn read_chunk(&mut self, max: usize) -> Result<Bytes, ChannelError> {
        self.read.read_chunk(max).await
    }

    /// Writes one frame (see [`WriteHalf::write_frame`]).
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        self.write.write_frame(frame).await
    }

    /// Writes bytes of the stream without copying them (see [`WriteHalf::write_bytes`]).
    pub async fn write_bytes(&mut self, data: impl Into<Bytes>) -> Result<(), ChannelError> {
        self.write.write_bytes(data).await
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
        let key = self.write.key;
        self.write.timer.restart();
        let now = tokio::time::Instant::now().into_std();
        poll_fn(|cx| {
            let r = self.write.conn.poll_op(key, Slot::Write, cx, |s| {
                s.close(key, now)
                    .unwrap_or(Step::Failed(ChannelError::Closed))
            });
            self.write.timer.check(cx, r)
        })
        .await
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
    /// [`OpenErrorKind::ParentClosed`](crate::OpenErrorKind::ParentClosed) if this channel is closed or closing here,
    /// and with "parent channel not found" if the remote closed it already.
    pub async fn open(
        &self,
        service: &str,
        headers: impl Into<Headers>,
    ) -> Result<Channel, OpenError> {
        let err = |kind| OpenError::new(self.meta().remote_peer(), service, kind);
        self.read
            .conn
            .open(service, headers.into(), Some(self.read.key))
            .await
            .map_err(err)
    }

    /// Waits for the next channel the remote opened inside this one.
    ///
    /// Cancel-safe. Fails with [`ChannelError::Closed`] once this channel is closed
    /// (no child can arrive any more); children still waiting then are reset.
    pub async fn accept(&self) -> Result<(ChannelMeta, Channel), ChannelError> {
        let (conn, key) = (&self.read.conn, self.read.key);
        let child = poll_fn(|cx| {
            conn.poll_op(key, Slot::Accept, cx, |s| match s.poll_accept_child(key) {
                Ok(Some(child)) => Step::Ready(child),
                Ok(None) => Step::Pending,
                Err(e) => Step::Failed(e),
            })
        })
        .await?;
        let ch = Channel::new(conn.clone(), child);
        Ok((ch.meta().clone(), ch))
    }

    /// Takes no channels the remote opens inside this one from now on: each is
    /// refused with "parent does not accept channels", and those waiting for
    /// [`accept`](Self::accept) are reset (their openers see the channel fail).
    /// For a channel whose protocol never nests, so a remote cannot park channels
    /// on it; `accept` then fails with [`ChannelError::Closed`].
    pub fn refuse_children(&self) {
        let key = self.read.key;
        self.read.conn.step(|s| s.refuse_children(key));
    }

    /// A share of this channel's connection memory budget, for data taken out of
    /// the channel and kept on the remote's behalf (see [`BudgetShare`]).
    pub fn budget_share(&self) -> BudgetShare {
        BudgetShare {
            conn: self.read.conn.clone(),
            key: self.read.key,
        }
    }

    /// Channels opened inside this one (either way) and not yet closed.
    pub fn child_count(&self) -> usize {
        let key = self.read.key;
        self.read.conn.step(|s| s.child_count(key))
    }

    /// This channel's key on its connection.
    pub(crate) fn key(&self) -> ChannelKey {
        self.read.key
    }

    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.read.conn
    }

    /// Frames as a [`Stream`](futures::Stream) of received frames and a
    /// [`Sink`](futures::Sink) of frames to send, for composing with `StreamExt`
    /// and `SinkExt`. Closing the sink ends the stream in this direction
    /// ([`close_write`](Self::close_write)).
    pub fn into_frames(self) -> Frames {
        Frames::new(self)
    }

    /// Splits the channel into halves that can move to different tasks.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }
}

/// Ready once everything written has been handed to the connection.
pub(super) fn flushed(s: &mut ChannelState) -> (Step<()>, Wake) {
    let step = match (s.send_failure(), s.send_buffered()) {
        (Some(e), _) => Step::Failed(e),
        (None, 0) => Step::Ready(()),
        (None, _) => Step::Pending,
    };
    (step, Wake::default())
}

impl ReadHalf {
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        let r = self.conn.channel_op(self.key, Slot::Read, cx, f);
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

    /// Reads up to `max` bytes of the byte stream as they arrived, without copying
    /// them and without a buffer of the caller's while it waits (a relay or a
    /// proxy holds nothing for an idle channel). Empty at the end of stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Bytes, ChannelError> {
        let max = max.max(1);
        self.op(|s| s.read_owned(max)).await
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
        self.conn
            .peek(self.key, ChannelState::buffered)
            .unwrap_or(0)
    }
}

impl WriteHalf {
    pub(super) fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(&mut ChannelState) -> (Step<T>, Wake),
    ) -> Poll<Result<T, ChannelError>> {
        let r = self.conn.channel_op(self.key, Slot::Write, cx, f);
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

    /// Writes `data` to the byte stream, as `write_all` would, but without
    /// copying it (a `Vec<u8>` or a `Bytes`, shared or not): the channel keeps a
    /// handle to the buffer until it is sent. Returns once all of it is queued;
    /// waits while the send buffer is full.
    pub async fn write_bytes(&mut self, data: impl Into<Bytes>) -> Result<(), ChannelError> {
        let mut data: Bytes = data.into();
        self.timer.restart();
        while !data.is_empty() {
            let room = poll_fn(|cx| self.poll_op(cx, |s| s.write_room())).await?;
            let mut chunk = Some(data.split_to(room.min(data.len())));
            poll_fn(|cx| self.poll_op(cx, |s| s.write_owned(chunk.take().unwrap_or_default())))
                .await?;
        }
        Ok(())
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
        let key = self.key;
        self.conn.step(|s| s.reset(key));
    }

    /// See [`Channel::send_buffered`].
    pub fn send_buffered(&self) -> usize {
        self.conn
            .peek(self.key, ChannelState::send_buffered)
            .unwrap_or(0)
    }
}

impl Drop for ReadHalf {
    fn drop(&mut self) {
        self.conn.drop_half(self.key, true);
    }
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        self.conn.drop_half(self.key, false);
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() >= LARGE_WRITE {
            // Taken under the connection's lock without a copy, copied after it.
            let max = buf.remaining();
            return match self.poll_op(cx, |s| s.read_owned(max)) {
                Poll::Ready(Ok(b)) => {
                    buf.put_slice(&b);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            };
        }
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

/// Writes at least this large are copied before the connection's lock is taken;
/// smaller ones are appended to the send queue's last chunk under it (they share
/// packets). Reads into a buffer at least this large copy after it.
const LARGE_WRITE: usize = 16 * 1024;

impl AsyncWrite for WriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.len() < LARGE_WRITE {
            return self.poll_op(cx, |s| s.write(data)).map_err(Into::into);
        }
        // A large write is copied outside the connection's lock, so that the
        // channels of one connection copy in parallel: ask for room, copy, queue.
        let room = match self.poll_op(cx, |s| s.write_room()) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
            Poll::Pending => return Poll::Pending,
        };
        let owned = Bytes::copy_from_slice(&data[..room.min(data.len())]);
        self.poll_op(cx, |s| s.write_owned(owned))
            .map_err(Into::into)
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
