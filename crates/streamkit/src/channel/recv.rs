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

/// How far a window may grow.
#[derive(Debug, Clone, Copy)]
enum Growth {
    /// The application does not have the channel yet: the window stays at the
    /// initial credit.
    Held { start: u32, max: u32 },
    /// The window grows while the reader keeps up: first to `start`, then
    /// doubling up to `max`.
    Free { start: u32, max: u32 },
}

/// The flow-control window of one direction, as its receiver keeps it.
///
/// The sender may send `limit` bytes in all; the receiver raises the limit as the
/// application consumes what arrived, in grants of at least half a window. The
/// window starts at the initial credit and stays there until the application has
/// the channel ([`open`](Self::open)); from then on each grant made while the
/// reader keeps up grows it, first to the configured size and then doubling up
/// to the maximum, so a fast stream is not held back by credit round trips while
/// a channel that moves little never holds more than the initial credit. A reader
/// that falls behind keeps its window. Every grant stays within a cap the
/// connection's memory budget sets.
#[derive(Debug)]
pub(super) struct Window {
    limit: u64,
    received: u64,
    consumed: u64,
    /// The window now.
    size: u32,
    growth: Growth,
    /// The last grant was cut short by the budget.
    held_back: bool,
}

impl Window {
    /// A window whose sender may send `limit` bytes before the first grant, which
    /// grows to `start` and then up to `max` once open.
    pub(super) fn new(limit: u64, start: u32, max: u32) -> Window {
        let size = u32::try_from(limit).unwrap_or(u32::MAX);
        Window {
            limit,
            received: 0,
            consumed: 0,
            size,
            growth: Growth::Held {
                start: start.max(size),
                max: max.max(start).max(size),
            },
            held_back: false,
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

    /// Credit granted and not used yet: what the sender may still send.
    pub(super) fn outstanding(&self) -> u64 {
        self.limit - self.received
    }

    /// Bytes received: the base a cap on the limit is counted from.
    pub(super) fn limit_base(&self) -> u64 {
        self.received
    }

    /// The application has the channel: the window may grow from now on.
    pub(super) fn open(&mut self) {
        if let Growth::Held { start, max } = self.growth {
            self.growth = Growth::Free { start, max };
        }
    }

    /// The size the window grows to next, if it may.
    fn next_size(&self) -> Option<u32> {
        match self.growth {
            Growth::Held { .. } => None,
            Growth::Free { start, .. } if self.size < start => Some(start),
            Growth::Free { max, .. } if self.size < max => {
                Some(self.size.saturating_mul(2).min(max))
            }
            Growth::Free { .. } => None,
        }
    }

    /// Credit to grant now, if the application consumed at least half a window;
    /// `unread` is what still waits for it (growth needs a reader that keeps up).
    /// The limit never goes past `cap`, the budget's say; a grant it cuts short is
    /// remembered ([`held_back`](Self::held_back)) so the connection can grant the
    /// rest once the budget has room.
    pub(super) fn grant(&mut self, unread: usize, cap: u64) -> u64 {
        let window = u64::from(self.size);
        let mut target = self.consumed + window;
        if target.saturating_sub(self.limit) < window / 2 {
            self.held_back = false;
            return 0;
        }
        if unread as u64 <= window / 4
            && let Some(next) = self.next_size()
            && self.consumed + u64::from(next) <= cap
        {
            self.size = next;
            target = self.consumed + u64::from(next);
        }
        let capped = target.min(cap);
        self.held_back = capped < target;
        let grant = capped.saturating_sub(self.limit);
        // Cut short, a grant is still worth sending once it is half of what the
        // budget lets this window be (small windows must not stall).
        let usable = capped.saturating_sub(self.consumed);
        if grant == 0 || grant < usable.min(window) / 2 {
            return 0;
        }
        self.limit = capped;
        grant
    }

    /// Whether the last grant was cut short by the budget.
    pub(super) fn held_back(&self) -> bool {
        self.held_back
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
    /// The most this direction may hold and have granted (its charge against the
    /// connection's budget), as the connection set it last.
    allowance: u64,
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
            allowance: u64::MAX,
        }
    }

    /// What this direction costs the connection's budget: credit granted and not
    /// used plus bytes held, never less than the initial credit while the remote
    /// may still send (that much is always its own); only what is held once it
    /// cannot.
    pub(super) fn charge(&self) -> u64 {
        let held = self.buffered() as u64;
        if self.state != RecvState::Open || matches!(self.reader, Reader::Gone { .. }) {
            return held;
        }
        (self.window.outstanding() + held).max(u64::from(INITIAL_CREDIT))
    }

    /// Whether a frame (data, for a frame reader; or error) is part way in.
    pub(super) fn assembling(&self) -> bool {
        !self.errors.is_idle() || self.inbox.assembling()
    }

    pub(super) fn set_allowance(&mut self, bytes: u64) {
        self.allowance = bytes;
    }

    /// The highest the window's limit may go within the allowance (no cap once
    /// nothing is kept: what arrives is dropped).
    fn cap(&self) -> u64 {
        if matches!(self.reader, Reader::Gone { .. }) {
            return u64::MAX;
        }
        self.window
            .limit_base()
            .saturating_add(self.allowance)
            .saturating_sub(self.buffered() as u64)
    }

    /// The application has the channel: its window may grow, within the budget
    /// (and grants at once what the application already consumed, if enough).
    pub(super) fn open(&mut self) -> u64 {
        self.window.open();
        self.grant()
    }

    /// Whether a grant was cut short by the budget.
    pub(super) fn held_back(&self) -> bool {
        self.state == RecvState::Open && self.window.held_back()
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
        // Error frames nobody reads count as unread: they must not grow the window.
        let unread = self.inbox.data_len() + self.inbox.error_bytes();
        let cap = self.cap();
        self.window.grant(unread, cap)
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
