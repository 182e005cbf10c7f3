//! A channel with a standard SSH client (OpenSSH `ssh`, paramiko, ...): no control
//! records and no credit of ours. SSH's own window is the flow control (opened by
//! hand as the application reads), SSH EOF is the end of stream, error frames are
//! raw stderr bytes, and the `exit-status` trailer becomes the SSH `exit-status`
//! request.
//!
//! ```text
//!  sending:   Open ──close_write──▶ EofQueued ──EOF sent──▶ Done
//!               └───── reset / SSH CLOSE / connection lost ───▶ Failed
//!  receiving: Open ──SSH EOF──▶ Finished;  Open ── SSH CLOSE / lost / reset ──▶ Failed
//!  channel:   Open ──close() or both ends done──▶ CLOSE sent ──▶ Closed
//!               └── reset ──▶ CLOSE sent (no EOF: a reset is not an end) ──▶ Closed
//! ```
//!
//! SSH has no acknowledgement: an end of stream handed to the SSH layer is as far
//! as this side can know.

use bytes::Bytes;

use super::inbox::{FrameRead, Inbox};
use super::outbox::{Next, Outbox};
use super::recv::{ERROR_AUTO_CREDIT, Window};
use super::{Config, Step, Transmit, Wake};
use crate::error::ChannelError;
use crate::wire::EXT_ERROR;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sending {
    Open,
    EofQueued,
    Done,
    Failed(ChannelError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Receiving {
    Open,
    Finished,
    Failed(ChannelError),
    Lost(ChannelError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Life {
    Open,
    Closing,
    /// Reset here: the SSH channel closes without EOF.
    Resetting,
    Closed,
}

/// A standard SSH client's channel.
#[derive(Debug)]
pub(crate) struct Compat {
    cfg: Config,
    sending: Sending,
    receiving: Receiving,
    life: Life,
    local_failure: Option<ChannelError>,
    inbox: Inbox,
    outbox: Outbox,
    window: Window,
    reading: bool,
    /// SSH window to open, not yet sent.
    out_window: u64,
    /// A `session` channel (exec/subsystem) reports an exit status.
    session: bool,
    exit_status: Option<u32>,
    has_children: bool,
    /// The application called `close()`: reads and writes fail "closed" from then on.
    app_closed: bool,
    /// The most the channel may hold and have granted (see `Native::charge`).
    allowance: u64,
}

impl Compat {
    /// `initial_window` is the SSH window this side advertised when the channel opened.
    pub(crate) fn new(cfg: Config, initial_window: u32, session: bool) -> Compat {
        Compat {
            inbox: Inbox::new(cfg.max_frame),
            outbox: Outbox::new(cfg.send_buffer),
            window: Window::new(u64::from(initial_window), cfg.window, cfg.max_window),
            sending: Sending::Open,
            receiving: Receiving::Open,
            life: Life::Open,
            local_failure: None,
            reading: true,
            out_window: 0,
            session,
            exit_status: None,
            has_children: false,
            app_closed: false,
            allowance: u64::MAX,
            cfg,
        }
    }

    // ---- observers ----

    pub(crate) fn buffered(&self) -> usize {
        self.inbox.len()
    }

    pub(crate) fn send_buffered(&self) -> usize {
        self.outbox.len()
    }

    pub(crate) fn trailers(&self) -> Option<&[String]> {
        (self.receiving == Receiving::Finished).then_some(&[][..])
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    pub(crate) fn accepts_children(&self) -> bool {
        false
    }

    pub(crate) fn has_failed(&self) -> bool {
        matches!(self.receiving, Receiving::Failed(_))
    }

    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.receiving, Receiving::Failed(_) | Receiving::Lost(_))
    }

    pub(crate) fn send_failure(&self) -> Option<ChannelError> {
        match &self.sending {
            Sending::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    /// What the channel costs the connection's memory budget: SSH window granted
    /// and not used plus bytes held (never less than the initial credit while the
    /// client may send; only what is held once it cannot).
    pub(crate) fn charge(&self) -> u64 {
        let held = self.inbox.len() as u64;
        if self.receiving != Receiving::Open || !self.reading || self.ignores_input() {
            return held;
        }
        (self.window.outstanding() + held).max(u64::from(crate::wire::INITIAL_CREDIT))
    }

    /// Standard clients' stderr chunks are frames of their own: nothing assembles.
    pub(crate) fn assembling(&self) -> bool {
        false
    }

    pub(crate) fn set_allowance(&mut self, bytes: u64) {
        self.allowance = bytes;
    }

    fn cap(&self) -> u64 {
        if !self.reading {
            return u64::MAX;
        }
        self.window
            .limit_base()
            .saturating_add(self.allowance)
            .saturating_sub(self.inbox.len() as u64)
    }

    /// Whether a grant was cut short by the budget.
    pub(crate) fn held_back(&self) -> bool {
        self.receiving == Receiving::Open && !self.ignores_input() && self.window.held_back()
    }

    /// Grants what the budget now allows, after a grant was cut short.
    pub(crate) fn regrant(&mut self) -> Wake {
        self.grant()
    }

    /// Grants what our window has beyond the SSH window advertised at the open:
    /// called once the application has the channel.
    pub(crate) fn open_window(&mut self) -> Wake {
        if self.receiving != Receiving::Open || self.ignores_input() {
            return Wake::default();
        }
        self.window.open();
        let cap = self.cap();
        let grant = self.window.grant(self.inbox.len(), cap);
        self.out_window += grant;
        Wake {
            transmit: grant > 0,
            ..Wake::default()
        }
    }

    pub(crate) fn set_has_children(&mut self, has: bool) -> Wake {
        self.has_children = has;
        Wake::default()
    }

    // ---- failures ----

    fn fail_locally(&mut self, e: ChannelError) -> Wake {
        if self.local_failure.is_some() || self.life == Life::Closed {
            return Wake::default();
        }
        self.local_failure = Some(e.clone());
        if !matches!(self.sending, Sending::Done) {
            self.sending = Sending::Failed(e.clone());
        }
        self.receiving = Receiving::Failed(e);
        self.outbox.clear();
        self.inbox.clear();
        self.life = Life::Resetting;
        Wake::all()
    }

    pub(crate) fn reset(&mut self) -> Wake {
        self.fail_locally(ChannelError::ResetLocally)
    }

    pub(crate) fn on_parent_closed(&mut self) -> Wake {
        self.fail_locally(ChannelError::ParentClosed)
    }

    pub(crate) fn on_shutdown(&mut self) -> Wake {
        self.fail_locally(ChannelError::Shutdown)
    }

    pub(crate) fn on_close_timeout(&mut self, after: std::time::Duration) -> Wake {
        self.fail_locally(ChannelError::CloseTimedOut(after))
    }

    // ---- from the network ----

    fn ignores_input(&self) -> bool {
        self.local_failure.is_some() || self.life == Life::Closed
    }

    fn take(&mut self, n: usize) -> Result<(), Wake> {
        let over = if self.receiving == Receiving::Finished {
            Some("data after end of stream".to_owned())
        } else {
            self.window
                .take(n)
                .err()
                .map(|over| format!("SSH window exceeded ({over} bytes over)"))
        };
        match over {
            None => Ok(()),
            Some(why) => Err(self.fail_locally(ChannelError::Protocol(why.into()))),
        }
    }

    pub(crate) fn on_data(&mut self, data: Bytes) -> Wake {
        if self.ignores_input() {
            return Wake::default();
        }
        if let Err(w) = self.take(data.len()) {
            return w;
        }
        if !self.reading {
            self.window.consume(data.len() as u64);
            return self.grant();
        }
        self.inbox.push_data(data);
        Wake {
            read: true,
            ..Wake::default()
        }
    }

    /// Each chunk of stderr is one error frame.
    pub(crate) fn on_extended(&mut self, ext: u32, data: &[u8]) -> Wake {
        if self.ignores_input() || ext != EXT_ERROR {
            return Wake::default();
        }
        if let Err(w) = self.take(data.len()) {
            return w;
        }
        self.window.consume(data.len() as u64);
        if !self.reading || self.inbox.error_bytes() > ERROR_AUTO_CREDIT {
            // Nobody reads them, or too many wait: drop rather than hold the window.
            return self.grant();
        }
        self.inbox.push_error(Bytes::copy_from_slice(data));
        self.grant().or(Wake {
            read: true,
            ..Wake::default()
        })
    }

    /// SSH EOF: the client's end of stream.
    pub(crate) fn on_eof(&mut self) -> Wake {
        if self.receiving != Receiving::Open {
            return Wake::default();
        }
        self.receiving = Receiving::Finished;
        Wake {
            read: true,
            transmit: true,
            ..Wake::default()
        }
    }

    pub(crate) fn on_close(&mut self) -> Wake {
        if self.life == Life::Closed {
            return Wake::default();
        }
        if self.local_failure.is_none() {
            if self.receiving == Receiving::Open {
                self.receiving = Receiving::Failed(ChannelError::ResetByPeer {
                    code: crate::wire::reason::ResetCode::Cancelled,
                    reason: "channel closed without end of stream".into(),
                });
            }
            if !matches!(self.sending, Sending::Done | Sending::Failed(_)) {
                self.sending = Sending::Failed(ChannelError::ClosedByPeer);
            }
        }
        self.outbox.clear();
        self.life = Life::Closed;
        Wake::all()
    }

    pub(crate) fn on_connection_lost(&mut self, e: &ChannelError) -> Wake {
        if self.life == Life::Closed {
            return Wake::default();
        }
        if !matches!(self.sending, Sending::Done | Sending::Failed(_)) {
            self.sending = Sending::Failed(e.clone());
        }
        if self.receiving == Receiving::Open {
            self.receiving = Receiving::Lost(e.clone());
        }
        self.outbox.clear();
        self.life = Life::Closed;
        Wake::all()
    }

    // ---- reading ----

    fn grant(&mut self) -> Wake {
        if self.receiving != Receiving::Open || self.ignores_input() {
            return Wake::default();
        }
        let cap = self.cap();
        let n = self.window.grant(self.inbox.len(), cap);
        if n == 0 {
            return Wake::default();
        }
        self.out_window += n;
        Wake {
            transmit: true,
            ..Wake::default()
        }
    }

    fn read_failure(&self) -> Option<ChannelError> {
        if self.app_closed {
            return Some(ChannelError::Closed);
        }
        match &self.receiving {
            Receiving::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    fn end(&self) -> Result<bool, ChannelError> {
        match &self.receiving {
            Receiving::Open => Ok(false),
            Receiving::Finished => Ok(true),
            Receiving::Failed(e) | Receiving::Lost(e) => Err(e.clone()),
        }
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> (Step<usize>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let n = self.inbox.read(buf);
        if n > 0 {
            self.window.consume(n as u64);
            return (Step::Ready(n), self.grant());
        }
        match self.end() {
            Ok(true) => (Step::Ready(0), Wake::default()),
            Ok(false) => (Step::Pending, Wake::default()),
            Err(e) => (Step::Failed(e), Wake::default()),
        }
    }

    pub(crate) fn read_owned(&mut self, max: usize) -> (Step<Bytes>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let b = self.inbox.take_front(max);
        if !b.is_empty() {
            self.window.consume(b.len() as u64);
            return (Step::Ready(b), self.grant());
        }
        match self.end() {
            Ok(true) => (Step::Ready(Bytes::new()), Wake::default()),
            Ok(false) => (Step::Pending, Wake::default()),
            Err(e) => (Step::Failed(e), Wake::default()),
        }
    }

    pub(crate) fn read_frame(&mut self) -> (Step<Option<Bytes>>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let r = self.inbox.read_frame();
        if let FrameRead::Frame(_, n) | FrameRead::Partial { consumed: n } = &r {
            self.window.consume(*n as u64);
        }
        let step = match r {
            FrameRead::Frame(f, _) => Step::Ready(Some(f)),
            FrameRead::TooLarge(len) => {
                let e = ChannelError::FrameTooLarge {
                    len,
                    max: self.cfg.max_frame,
                };
                let w = self.fail_locally(e.clone());
                return (Step::Failed(e), w);
            }
            FrameRead::Empty => match self.end() {
                Ok(true) if self.inbox.has_data() => Step::Failed(ChannelError::TruncatedFrame),
                Ok(true) => Step::Ready(None),
                Ok(false) => Step::Pending,
                Err(e) => Step::Failed(e),
            },
            FrameRead::Partial { .. } => match self.end() {
                Ok(true) => Step::Failed(ChannelError::TruncatedFrame),
                Ok(false) => Step::Pending,
                Err(e) => Step::Failed(e),
            },
        };
        (step, self.grant())
    }

    pub(crate) fn read_error(&mut self) -> (Step<Option<Bytes>>, Wake) {
        if let Some(f) = self.inbox.pop_error() {
            return (Step::Ready(Some(f)), Wake::default());
        }
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        match self.end() {
            Ok(true) => (Step::Ready(None), Wake::default()),
            Ok(false) => (Step::Pending, Wake::default()),
            Err(e) => (Step::Failed(e), Wake::default()),
        }
    }

    pub(crate) fn reader_dropped(&mut self) -> Wake {
        if !self.reading {
            return Wake::default();
        }
        self.reading = false;
        let n = self.inbox.clear();
        self.window.consume(n as u64);
        self.grant()
    }

    // ---- writing ----

    fn write_check(&self) -> Option<ChannelError> {
        if self.app_closed {
            return Some(ChannelError::Closed);
        }
        match &self.sending {
            Sending::Open => None,
            Sending::Failed(e) => Some(e.clone()),
            Sending::EofQueued | Sending::Done => Some(ChannelError::WriteClosed),
        }
    }

    pub(crate) fn write_room(&mut self) -> (Step<usize>, Wake) {
        self.outbox.write_room(self.write_check())
    }

    pub(crate) fn write_owned(&mut self, data: Bytes) -> (Step<usize>, Wake) {
        let failed = self.write_check();
        self.outbox.write_owned(failed, data)
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> (Step<usize>, Wake) {
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        if data.is_empty() {
            return (Step::Ready(0), Wake::default());
        }
        let room = self.outbox.room();
        if room == 0 {
            return (Step::Pending, Wake::default());
        }
        let n = room.min(data.len());
        self.outbox.push(false, &data[..n], false);
        (
            Step::Ready(n),
            Wake {
                transmit: true,
                ..Wake::default()
            },
        )
    }

    /// A frame on the data stream; an error frame goes as plain stderr bytes.
    pub(crate) fn write_frame(&mut self, payload: &[u8], error_stream: bool) -> (Step<()>, Wake) {
        if payload.len() > self.cfg.max_frame {
            let e = ChannelError::FrameTooLarge {
                len: payload.len() as u64,
                max: self.cfg.max_frame,
            };
            return (Step::Failed(e), Wake::default());
        }
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        if !self.outbox.takes_frame(payload.len()) {
            return (Step::Pending, Wake::default());
        }
        // Empty stderr chunks are nothing in SSH: they are not sent.
        if !(error_stream && payload.is_empty()) {
            self.outbox.push(error_stream, payload, !error_stream);
        }
        (
            Step::Ready(()),
            Wake {
                transmit: true,
                ..Wake::default()
            },
        )
    }

    /// SSH has no trailers: `exit-status=N` becomes the exit status, the rest is dropped.
    pub(crate) fn write_trailers(&mut self, trailers: Vec<String>) -> (Step<()>, Wake) {
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        for t in &trailers {
            if let Some(code) = t
                .strip_prefix("exit-status=")
                .and_then(|v| v.parse::<i64>().ok())
            {
                self.exit_status = Some((code & 0xff) as u32);
            }
        }
        self.outbox.mark_written();
        (Step::Ready(()), Wake::default())
    }

    fn eof_sent(&self) -> Step<()> {
        match &self.sending {
            Sending::Done => Step::Ready(()),
            Sending::Failed(ChannelError::ClosedByPeer) if !self.outbox.wrote() => Step::Ready(()),
            Sending::Failed(e) => Step::Failed(e.clone()),
            Sending::EofQueued => Step::Pending,
            Sending::Open => Step::Failed(ChannelError::WriteClosed),
        }
    }

    pub(crate) fn close_write(&mut self) -> (Step<()>, Wake) {
        let mut wake = Wake::default();
        if self.life != Life::Closing && self.sending == Sending::Open {
            self.sending = Sending::EofQueued;
            self.outbox.push_fin();
            wake.transmit = true;
        }
        (self.eof_sent(), wake)
    }

    pub(crate) fn close(&mut self) -> (Step<()>, Wake) {
        let (_, mut wake) = self.close_write();
        wake = wake.or(self.reader_dropped());
        self.app_closed = true;
        if self.life == Life::Open {
            self.life = Life::Closing;
            wake.transmit = true;
        }
        if self.local_failure == Some(ChannelError::ResetLocally) {
            return (Step::Ready(()), wake);
        }
        (self.eof_sent(), wake)
    }

    pub(crate) fn released(&mut self) -> Wake {
        let w = self.reader_dropped();
        let (_, w2) = self.close();
        w.or(w2)
    }

    // ---- to the network ----

    fn ready_to_close(&self) -> bool {
        self.sending == Sending::Done
            && (self.life == Life::Closing
                || (self.receiving == Receiving::Finished && !self.has_children))
    }

    pub(crate) fn wants_transmit(&self) -> bool {
        match self.life {
            Life::Closed => false,
            Life::Resetting => true,
            Life::Open | Life::Closing => {
                self.out_window > 0
                    || self.outbox.ready(u64::MAX)
                    || (self.outbox.is_empty() && self.ready_to_close())
            }
        }
    }

    pub(crate) fn poll_transmit(&mut self, max: usize) -> (Option<Transmit>, Wake) {
        match self.life {
            Life::Closed => return (None, Wake::default()),
            // A standard client has no reset: the channel just closes, and must not
            // see an end of stream.
            Life::Resetting => {
                self.life = Life::Closed;
                return (Some(Transmit::Close { eof: false }), Wake::all());
            }
            Life::Open | Life::Closing => {}
        }
        if self.out_window > 0 {
            let n = u32::try_from(self.out_window).unwrap_or(u32::MAX);
            self.out_window -= u64::from(n);
            return (Some(Transmit::WindowAdjust(n)), Wake::default());
        }
        if let Some(next) = self.outbox.pop(max) {
            let t = match next {
                Next::Data(b) => Transmit::Data(b),
                Next::Error(b) => Transmit::Error(b),
                Next::Control(b) => Transmit::Control(b),
                Next::Fin => {
                    // No acknowledgement exists: handing it over is as far as we know.
                    self.sending = Sending::Done;
                    let exit_status = self.session.then(|| self.exit_status.unwrap_or(0));
                    Transmit::Eof { exit_status }
                }
            };
            return (
                Some(t),
                Wake {
                    write: true,
                    ..Wake::default()
                },
            );
        }
        if self.outbox.is_empty() && self.ready_to_close() {
            self.life = Life::Closed;
            return (Some(Transmit::Close { eof: false }), Wake::all());
        }
        (None, Wake::default())
    }
}
