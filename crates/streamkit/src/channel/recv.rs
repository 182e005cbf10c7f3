//! The receiving direction of a native channel: what arrived, what the reader took,
//! and the credit granted back.
//!
//! ```text
//!  Open ──FIN──▶ Finished     reads drain what is buffered, then see the end
//!    ├── RESET, SSH CLOSE without FIN, a reset or a violation here ──▶ Failed
//!    │                        reads fail at once
//!    └── connection lost ──▶ Lost
//!                             reads drain what is buffered, then fail
//! ```

use bytes::Bytes;

use super::inbox::{FrameRead, Inbox};
use crate::error::ChannelError;
use crate::wire::INITIAL_CREDIT;
use crate::wire::frame::{FrameDecoder, FrameTooLarge};

/// Error-stream bytes credited back on arrival, before the application reads them.
///
/// Applications often read only data; credit withheld for unread errors would stall
/// the data too. Up to this many buffered error bytes do not hold credit back.
pub(super) const ERROR_AUTO_CREDIT: usize = 64 * 1024;

/// Where the receiving direction stands (see the module's diagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RecvState {
    Open,
    Finished,
    Failed(ChannelError),
    Lost(ChannelError),
}

/// Whether the application still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reader {
    Reading,
    /// The reading half was dropped or the channel closed: what arrives is counted
    /// and dropped (and credited, so the sender is never stuck behind it).
    Gone {
        discarded: u64,
    },
}

/// The flow-control window of one direction, as its receiver keeps it.
///
/// The sender may send `limit` bytes in all; the receiver raises the limit as the
/// application consumes what arrived, in grants of at least half a window. The
/// window doubles (up to `max`) while the reader keeps up, so a fast stream is not
/// held back by credit round trips; a reader that falls behind keeps its window.
#[derive(Debug)]
pub(super) struct Window {
    limit: u64,
    received: u64,
    consumed: u64,
    size: u32,
    max: u32,
}

impl Window {
    pub(super) fn new(limit: u64, size: u32, max: u32) -> Window {
        Window {
            limit,
            received: 0,
            consumed: 0,
            size,
            max: max.max(size),
        }
    }

    /// `n` bytes arrived; `Err` with how far over the limit they went.
    pub(super) fn take(&mut self, n: usize) -> Result<(), u64> {
        let n = n as u64;
        if self.received + n > self.limit {
            return Err(self.received + n - self.limit);
        }
        self.received += n;
        Ok(())
    }

    pub(super) fn consume(&mut self, n: u64) {
        self.consumed += n;
    }

    /// Grants the whole window now (once the channel is established).
    pub(super) fn open(&mut self) -> u64 {
        let target = self.consumed + u64::from(self.size);
        let grant = target.saturating_sub(self.limit);
        self.limit = self.limit.max(target);
        grant
    }

    /// Credit to grant now, if the application consumed at least half a window;
    /// `unread` is what still waits for it (growth needs a reader that keeps up).
    pub(super) fn grant(&mut self, unread: usize) -> u64 {
        let window = u64::from(self.size);
        let mut target = self.consumed + window;
        let mut grant = target.saturating_sub(self.limit);
        if grant < window / 2 {
            return 0;
        }
        if self.size < self.max && unread as u64 <= window / 4 {
            self.size = self.size.saturating_mul(2).min(self.max);
            target = self.consumed + u64::from(self.size);
            grant = target.saturating_sub(self.limit);
        }
        self.limit = target;
        grant
    }
}

/// Why receiving failed, for the channel to turn into a reset.
#[derive(Debug)]
pub(super) enum Refused {
    /// The remote broke the protocol.
    Violation(String),
    /// An error frame announced a length over the limit.
    FrameTooLarge(FrameTooLarge),
}

/// The receiving direction of a native channel.
#[derive(Debug)]
pub(super) struct Recv {
    pub(super) state: RecvState,
    pub(super) inbox: Inbox,
    pub(super) reader: Reader,
    pub(super) window: Window,
    errors: FrameDecoder,
    /// Error-stream bytes not yet credited back.
    err_held: u64,
    trailers: Vec<String>,
    trailer_bytes: usize,
}

impl Recv {
    pub(super) fn new(window: u32, max_window: u32, max_frame: usize) -> Recv {
        Recv {
            state: RecvState::Open,
            inbox: Inbox::new(max_frame),
            reader: Reader::Reading,
            window: Window::new(u64::from(INITIAL_CREDIT), window, max_window),
            errors: FrameDecoder::new(max_frame),
            err_held: 0,
            trailers: Vec::new(),
            trailer_bytes: 0,
        }
    }

    /// Bytes held for the application.
    pub(super) fn buffered(&self) -> usize {
        self.inbox.len() + self.errors.buffered()
    }

    pub(super) fn trailers(&self) -> Option<&[String]> {
        (self.state == RecvState::Finished).then_some(&self.trailers[..])
    }

    fn take(&mut self, n: usize) -> Result<(), Refused> {
        if self.state == RecvState::Finished {
            return Err(Refused::Violation("data after end of stream".into()));
        }
        self.window.take(n).map_err(|over| {
            Refused::Violation(format!("flow-control window exceeded ({over} bytes over)"))
        })
    }

    /// Counts bytes nobody will read; they are credited at once.
    fn discard(&mut self, n: usize) {
        if let Reader::Gone { discarded } = &mut self.reader {
            *discarded += n as u64;
        }
        self.window.consume(n as u64);
    }

    /// Data arrived; `true` if a reader may want it.
    pub(super) fn on_data(&mut self, data: Bytes) -> Result<bool, Refused> {
        self.take(data.len())?;
        if matches!(self.reader, Reader::Gone { .. }) {
            self.discard(data.len());
            return Ok(false);
        }
        self.inbox.push_data(data);
        Ok(true)
    }

    /// Error-stream bytes arrived; `true` if a whole error frame is now waiting.
    pub(super) fn on_error_bytes(&mut self, data: &[u8]) -> Result<bool, Refused> {
        self.take(data.len())?;
        if matches!(self.reader, Reader::Gone { .. }) {
            self.discard(data.len());
            return Ok(false);
        }
        let inbox = &mut self.inbox;
        let mut complete = false;
        self.errors
            .push(data, |f| {
                inbox.push_error(f);
                complete = true;
            })
            .map_err(Refused::FrameTooLarge)?;
        // Bytes of a frame still arriving are always credited (a frame may be larger
        // than the window); complete frames nobody reads hold credit back past the cap.
        if self.inbox.error_bytes() <= ERROR_AUTO_CREDIT {
            self.window.consume(data.len() as u64);
        } else {
            self.err_held += data.len() as u64;
        }
        Ok(complete)
    }

    pub(super) fn on_trailers(&mut self, list: Vec<String>, max: usize) -> Result<(), Refused> {
        if self.state == RecvState::Finished {
            return Err(Refused::Violation("trailers after end of stream".into()));
        }
        self.trailer_bytes += list.iter().map(|t| t.len() + 4).sum::<usize>();
        if self.trailer_bytes > max {
            return Err(Refused::Violation(format!(
                "trailers of {} bytes are over the limit of {max}",
                self.trailer_bytes
            )));
        }
        self.trailers.extend(list);
        Ok(())
    }

    /// The remote's end of stream arrived.
    pub(super) fn on_fin(&mut self) -> Result<(), Refused> {
        if self.state == RecvState::Finished {
            return Err(Refused::Violation("duplicate end of stream".into()));
        }
        if self.reader == Reader::Reading && !self.errors.is_idle() {
            return Err(Refused::Violation(
                "end of stream inside an error frame".into(),
            ));
        }
        self.state = RecvState::Finished;
        Ok(())
    }

    /// Trailers over the limit: the size, for the error.
    pub(super) fn trailer_bytes(&self) -> usize {
        self.trailer_bytes
    }

    /// Bytes of the data stream the application let go unread.
    pub(super) fn discarded(&self) -> u64 {
        match self.reader {
            Reader::Gone { discarded } => discarded,
            Reader::Reading => 0,
        }
    }

    /// The application will read no more: drop what is buffered (counted as
    /// discarded, credited back) and everything that arrives from now on.
    pub(super) fn stop_reading(&mut self) {
        if let Reader::Gone { .. } = self.reader {
            return;
        }
        let data = self.inbox.data_len() as u64;
        // Bytes already credited (a frame being assembled, error bytes credited on
        // arrival) are not credited again.
        let uncredited = self.inbox.clear() as u64 + self.err_held;
        self.errors = FrameDecoder::new(usize::MAX);
        self.err_held = 0;
        self.reader = Reader::Gone { discarded: data };
        self.window.consume(uncredited);
    }

    /// Drops what is buffered after a failure.
    pub(super) fn drop_data(&mut self) {
        let uncredited = self.inbox.clear() as u64 + self.err_held;
        self.err_held = 0;
        self.window.consume(uncredited);
    }

    /// Credit to grant back, if enough was consumed (never after the end).
    pub(super) fn grant(&mut self) -> u64 {
        if self.state != RecvState::Open {
            return 0;
        }
        let unread = self.inbox.data_len();
        self.window.grant(unread)
    }

    /// Reads bytes of the data stream; `Ok(None)` while nothing is there.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.inbox.read(buf);
        self.window.consume(n as u64);
        n
    }

    pub(super) fn take_front(&mut self, max: usize) -> Bytes {
        let b = self.inbox.take_front(max);
        self.window.consume(b.len() as u64);
        b
    }

    pub(super) fn read_frame(&mut self) -> FrameRead {
        let r = self.inbox.read_frame();
        match &r {
            FrameRead::Frame(_, consumed) | FrameRead::Partial { consumed } => {
                self.window.consume(*consumed as u64);
            }
            FrameRead::Empty | FrameRead::TooLarge(_) => {}
        }
        r
    }

    pub(super) fn pop_error(&mut self) -> Option<Bytes> {
        let f = self.inbox.pop_error()?;
        let n = (f.len() + crate::wire::frame::HEADER_LEN) as u64;
        let mut release = self.err_held.min(n);
        if !self.inbox.has_errors() && self.errors.is_idle() {
            release = self.err_held;
        }
        self.err_held -= release;
        self.window.consume(release);
        Some(f)
    }

    /// What ends reading once the buffer is empty: `Ok(true)` the end of stream,
    /// `Ok(false)` nothing yet, `Err` a failure.
    pub(super) fn end(&self) -> Result<bool, ChannelError> {
        match &self.state {
            RecvState::Open => Ok(false),
            RecvState::Finished => Ok(true),
            RecvState::Failed(e) | RecvState::Lost(e) => Err(e.clone()),
        }
    }

    /// A failure that comes before any buffered data.
    pub(super) fn failure(&self) -> Option<ChannelError> {
        match &self.state {
            RecvState::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    pub(super) fn fail(&mut self, e: ChannelError) {
        if !matches!(self.state, RecvState::Failed(_)) {
            self.state = RecvState::Failed(e);
        }
    }

    /// The remote aborted: reads fail, unless its stream had already ended.
    pub(super) fn reset_by_remote(&mut self, e: ChannelError) {
        if self.state == RecvState::Open {
            self.state = RecvState::Failed(e);
        }
    }

    pub(super) fn lose(&mut self, e: ChannelError) {
        if self.state == RecvState::Open {
            self.state = RecvState::Lost(e);
        }
    }
}
