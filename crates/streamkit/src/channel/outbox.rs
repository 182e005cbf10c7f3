//! What a channel's application wrote and the transport has not taken yet: data and
//! error chunks, control records and the end of stream, in order. Both modes of a
//! channel (native and standard SSH client) queue their output here.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::{Step, Wake};
use crate::error::ChannelError;
use crate::wire::frame;

/// Room a new chunk gets for the small writes that follow it, when others wait
/// before it (a burst).
const COALESCE: usize = 64 * 1024;

/// Room a new chunk gets when nothing else waits: most writes to an idle channel
/// are one message, and a peer with many quiet channels (a hub's presence) should
/// not hold a burst's buffer for each.
const FIRST: usize = 4 * 1024;

#[derive(Debug)]
enum Queued {
    /// Data small writes are appended to.
    Data(BytesMut),
    /// Data handed over whole (a large write, or the caller's own buffer): sent
    /// from where it is, never appended to.
    Owned(Bytes),
    Error(BytesMut),
    Control(Bytes),
    Fin,
}

/// The next thing the outbox holds for the transport.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    Data(Bytes),
    Error(Bytes),
    Control(Bytes),
    Fin,
}

/// Queued output, in order.
#[derive(Debug)]
pub(super) struct Outbox {
    queue: VecDeque<Queued>,
    /// Data and error bytes queued.
    bytes: usize,
    /// Bytes a writer may queue before `write` waits.
    capacity: usize,
    /// Anything (data, error frames, trailers) was ever queued: if not, a remote
    /// that stopped reading cannot have lost anything of ours.
    wrote: bool,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            capacity,
            wrote: false,
        }
    }

    /// Data and error bytes queued.
    pub(super) fn len(&self) -> usize {
        self.bytes
    }

    pub(super) fn wrote(&self) -> bool {
        self.wrote
    }

    /// Room for `write` before it waits.
    pub(super) fn room(&self) -> usize {
        self.capacity.saturating_sub(self.bytes)
    }

    /// Whether a frame of `len` payload bytes goes in now: an empty outbox always
    /// takes one, so frames larger than the buffer make progress.
    pub(super) fn takes_frame(&self, len: usize) -> bool {
        self.bytes == 0 || self.bytes + len + frame::HEADER_LEN <= self.capacity
    }

    /// Queues bytes of the data stream (`error_stream = false`) or of the error
    /// stream, framed (a length first) or raw.
    pub(super) fn push(&mut self, error_stream: bool, bytes: &[u8], framed: bool) {
        let len = bytes.len() + if framed { frame::HEADER_LEN } else { 0 };
        if len == 0 {
            // Nothing to send: an empty chunk would only stand in the queue.
            return;
        }
        // Append to the last chunk only while it has room: growing it would copy
        // everything still queued (its front is shared with packets in flight).
        let fits = matches!(
            (self.queue.back(), error_stream),
            (Some(Queued::Data(b)), false) | (Some(Queued::Error(b)), true)
                if b.capacity() - b.len() >= len
        );
        if !fits {
            // Small writes share a chunk, so they leave in large packets; a burst
            // (writes coming faster than they leave) gets a large one.
            let room = if self.queue.is_empty() {
                FIRST
            } else {
                COALESCE
            };
            let b = BytesMut::with_capacity(len.max(room.min(self.capacity)));
            self.queue.push_back(if error_stream {
                Queued::Error(b)
            } else {
                Queued::Data(b)
            });
        }
        if let Some(Queued::Data(tail) | Queued::Error(tail)) = self.queue.back_mut() {
            if framed {
                frame::encode(bytes, tail);
            } else {
                tail.extend_from_slice(bytes);
            }
        }
        self.bytes += len;
        self.wrote = true;
    }

    /// A large write's first step, in either mode: the failure (`failed`, from the
    /// channel), or the room `write_owned` takes now, waiting while there is none.
    pub(super) fn write_room(&self, failed: Option<ChannelError>) -> (Step<usize>, Wake) {
        let step = match (failed, self.room()) {
            (Some(e), _) => Step::Failed(e),
            (None, 0) => Step::Pending,
            (None, n) => Step::Ready(n),
        };
        (step, Wake::default())
    }

    /// A large write's second step: bytes the channel may keep (copied out of the
    /// caller's buffer, or handed over; at most what `write_room` reported)
    /// queued as a chunk of their own.
    pub(super) fn write_owned(
        &mut self,
        failed: Option<ChannelError>,
        bytes: Bytes,
    ) -> (Step<usize>, Wake) {
        if let Some(e) = failed {
            return (Step::Failed(e), Wake::default());
        }
        let n = bytes.len();
        if n > 0 {
            self.bytes += n;
            self.queue.push_back(Queued::Owned(bytes));
            self.wrote = true;
        }
        let wake = Wake {
            transmit: true,
            ..Wake::default()
        };
        (Step::Ready(n), wake)
    }

    /// Queues a control record (trailers) after everything written so far.
    pub(super) fn push_control(&mut self, record: Bytes) {
        self.queue.push_back(Queued::Control(record));
        self.wrote = true;
    }

    /// Records that something was written that leaves no bytes here (a standard
    /// client's exit status).
    pub(super) fn mark_written(&mut self) {
        self.wrote = true;
    }

    /// Queues the end of stream.
    pub(super) fn push_fin(&mut self) {
        self.queue.push_back(Queued::Fin);
    }

    /// Whether the front can go now with `credit` bytes of credit.
    pub(super) fn ready(&self, credit: u64) -> bool {
        match self.queue.front() {
            Some(Queued::Data(b) | Queued::Error(b)) => credit > 0 && !b.is_empty(),
            Some(Queued::Owned(b)) => credit > 0 && !b.is_empty(),
            Some(_) => true,
            None => false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Takes the front: at most `max` bytes of a data or error chunk.
    pub(super) fn pop(&mut self, max: usize) -> Option<Next> {
        let error = match self.queue.front_mut()? {
            Queued::Owned(b) => {
                if max == 0 || b.is_empty() {
                    return None;
                }
                let chunk = b.split_to(b.len().min(max));
                if b.is_empty() {
                    self.queue.pop_front();
                }
                self.bytes -= chunk.len();
                return Some(Next::Data(chunk));
            }
            Queued::Data(_) => false,
            Queued::Error(_) => true,
            Queued::Control(_) | Queued::Fin => {
                return match self.queue.pop_front() {
                    Some(Queued::Control(b)) => Some(Next::Control(b)),
                    _ => Some(Next::Fin),
                };
            }
        };
        let Some(Queued::Data(b) | Queued::Error(b)) = self.queue.front_mut() else {
            return None;
        };
        if max == 0 || b.is_empty() {
            return None;
        }
        let chunk = b.split_to(b.len().min(max)).freeze();
        let emptied = b.is_empty();
        self.bytes -= chunk.len();
        if emptied {
            self.queue.pop_front();
        }
        Some(if error {
            Next::Error(chunk)
        } else {
            Next::Data(chunk)
        })
    }

    /// Drops everything queued (the channel failed).
    pub(super) fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.bytes = 0;
    }
}
