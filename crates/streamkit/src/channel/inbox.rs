//! What a channel received and its application has not read yet: the byte stream
//! (with a frame being assembled by `read_frame`) and the error frames. Both modes
//! of a channel (native and standard SSH client) keep their input here.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::buffer::ByteQueue;
use crate::wire::frame;

/// A frame whose header was read and whose body is still arriving.
#[derive(Debug)]
struct Assembly {
    body: BytesMut,
    remaining: usize,
}

/// What `Inbox::read_frame` found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FrameRead {
    /// A whole frame, and how many buffered bytes it consumed.
    Frame(Bytes, usize),
    /// Not all of it yet; `consumed` bytes moved into the assembly buffer.
    Partial { consumed: usize },
    /// Nothing is buffered between frames.
    Empty,
    /// The announced length is over the limit.
    TooLarge(u64),
}

/// Received bytes and error frames, in arrival order.
#[derive(Debug)]
pub(super) struct Inbox {
    data: ByteQueue,
    frame: Option<Assembly>,
    errors: VecDeque<Bytes>,
    /// Bytes the queued error frames take (with their headers).
    error_bytes: usize,
    max_frame: usize,
}

impl Inbox {
    pub(super) fn new(max_frame: usize) -> Inbox {
        Inbox {
            data: ByteQueue::default(),
            frame: None,
            errors: VecDeque::new(),
            error_bytes: 0,
            max_frame,
        }
    }

    /// Bytes held: data, the frame being assembled, error frames.
    pub(super) fn len(&self) -> usize {
        self.data.len() + self.frame.as_ref().map_or(0, |a| a.body.len()) + self.error_bytes
    }

    /// Bytes of the data stream held (a frame being assembled included).
    pub(super) fn data_len(&self) -> usize {
        self.data.len() + self.frame.as_ref().map_or(0, |a| a.body.len())
    }

    pub(super) fn error_bytes(&self) -> usize {
        self.error_bytes
    }

    pub(super) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(super) fn push_data(&mut self, data: Bytes) {
        self.data.push_bytes(data);
    }

    pub(super) fn push_error(&mut self, frame: Bytes) {
        self.error_bytes += frame.len() + frame::HEADER_LEN;
        self.errors.push_back(frame);
    }

    /// Drops everything; returns how many bytes of the data stream were dropped.
    pub(super) fn clear(&mut self) -> usize {
        let dropped = self.data.len();
        self.data.clear();
        self.frame = None;
        self.errors = VecDeque::new();
        self.error_bytes = 0;
        dropped
    }

    /// Copies bytes of the data stream out; returns how many.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> usize {
        self.data.copy_out(buf)
    }

    /// Takes up to `max` bytes of data without copying them.
    pub(super) fn take_front(&mut self, max: usize) -> Bytes {
        self.data.take_front(max)
    }

    pub(super) fn pop_error(&mut self) -> Option<Bytes> {
        let f = self.errors.pop_front()?;
        self.error_bytes -= f.len() + frame::HEADER_LEN;
        if self.errors.is_empty() {
            self.errors = VecDeque::new();
        }
        Some(f)
    }

    /// Reads one frame, or as much of it as has arrived.
    ///
    /// A frame larger than what is buffered moves into an assembly buffer as it
    /// arrives, so that the window reopens even for frames larger than it.
    pub(super) fn read_frame(&mut self) -> FrameRead {
        let mut consumed = 0;
        if self.frame.is_none() {
            let Some(len) = self.data.peek_u32() else {
                return FrameRead::Empty;
            };
            let len = len as usize;
            if len > self.max_frame {
                return FrameRead::TooLarge(len as u64);
            }
            if self.data.len() >= frame::HEADER_LEN + len {
                self.data.take(frame::HEADER_LEN);
                let f = self.data.take(len);
                return FrameRead::Frame(f, frame::HEADER_LEN + len);
            }
            self.data.take(frame::HEADER_LEN);
            consumed += frame::HEADER_LEN;
            self.frame = Some(Assembly {
                body: BytesMut::with_capacity(len.min(64 * 1024)),
                remaining: len,
            });
        }
        let Some(asm) = self.frame.as_mut() else {
            return FrameRead::Partial { consumed };
        };
        let moved = self.data.move_into(&mut asm.body, asm.remaining);
        asm.remaining -= moved;
        consumed += moved;
        if asm.remaining > 0 {
            return FrameRead::Partial { consumed };
        }
        let body = self
            .frame
            .take()
            .map(|a| a.body.freeze())
            .unwrap_or_default();
        FrameRead::Frame(body, consumed)
    }

    /// Whether a frame is part way assembled.
    pub(super) fn assembling(&self) -> bool {
        self.frame.is_some()
    }

    /// Whether bytes of the data stream wait (not counting a frame in assembly).
    pub(super) fn has_data(&self) -> bool {
        !self.data.is_empty()
    }
}
