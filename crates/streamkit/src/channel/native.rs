//! A channel between two Streamkit peers: our credit, control records and
//! acknowledged end of stream on top of an SSH channel.
//!
//! The two directions are [`Send`] and [`Recv`]; the SSH channel under them lives
//! through these states:
//!
//! ```text
//!  Open ──close()──▶ Closing ──our FIN acknowledged, and the remote's FIN──────────┐
//!    │                  │      (or, if the remote still sends: RESET "closed")     │
//!    │                  ▼                                                           ▼
//!    ├── reset / violation ──▶ Resetting ──RESET sent──▶ SSH CLOSE sent ──▶ Closed
//!    ├── both streams ended, both acknowledged, no children ──────────────────────┘
//!    ├── RESET received ──▶ SSH CLOSE sent ──▶ Closed
//!    └── SSH CLOSE received, or the connection lost ──▶ Closed
//! ```
//!
//! Once `Closed` the channel sends nothing more and the connection forgets it.
//!
//! The remote's end of stream is acknowledged (`FIN_ACK`) when it arrives, unless
//! the application had already given up reading and data was dropped unread: then
//! it is answered, once our own sending is finished, with `RESET` "closed", so that
//! the writer's `close` reports [`ChannelError::ClosedByPeer`] instead of success.

use bytes::{Bytes, BytesMut};

use super::inbox::FrameRead;
use super::outbox::Next;
use super::recv::{Reader, Recv, RecvState, Refused};
use super::send::{Send, SendState};
use super::{Config, Step, Transmit, Wake};
use crate::error::ChannelError;
use crate::wire::control::{Control, ControlDecoder};
use crate::wire::reason::ResetCode;
use crate::wire::{EXT_CONTROL, EXT_ERROR};

/// The SSH channel under the two directions (see the module's diagram).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Life {
    Open,
    /// The application closed the channel: it reads no more.
    Closing,
    /// A RESET is to be sent: this side aborted, or the remote broke the protocol.
    Resetting {
        code: ResetCode,
        reason: String,
    },
    /// A RESET went out or came in: the SSH close is next.
    Reset,
    /// SSH CLOSE sent or received: nothing more is sent; the connection forgets it.
    Closed,
}

/// How we answer the remote's end of stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinReply {
    /// No end of stream yet.
    NotYet,
    /// `FIN_ACK` is to be sent.
    AckDue,
    /// `FIN_ACK` went out.
    Acked,
    /// Data was dropped unread: `RESET` "closed" instead, once we are done sending.
    Refused { discarded: u64 },
}

/// A native channel's state.
#[derive(Debug)]
pub(crate) struct Native {
    cfg: Config,
    send: Send,
    recv: Recv,
    life: Life,
    /// Why this side failed the channel (reset, violation, shutdown, parent closed):
    /// both directions report it.
    local_failure: Option<ChannelError>,
    control: ControlDecoder,
    /// Credit to grant, not yet sent.
    out_credit: u64,
    fin_reply: FinReply,
    /// Channels opened inside this one are open: see `ready_to_close`.
    has_children: bool,
    /// The application called `close()` (a fact that outlives the `Closing` state:
    /// reads and writes after it fail with "closed").
    app_closed: bool,
}

impl Native {
    pub(crate) fn new(cfg: Config) -> Native {
        let ctl_max = cfg.max_trailer_bytes + 1024;
        Native {
            send: Send::new(cfg.send_buffer),
            recv: Recv::new(cfg.window, cfg.max_window, cfg.max_frame),
            life: Life::Open,
            local_failure: None,
            control: ControlDecoder::new(ctl_max),
            out_credit: 0,
            fin_reply: FinReply::NotYet,
            has_children: false,
            app_closed: false,
            cfg,
        }
    }

    fn transmit() -> Wake {
        Wake {
            transmit: true,
            ..Wake::default()
        }
    }

    // ---- observers ----

    pub(crate) fn buffered(&self) -> usize {
        self.recv.buffered()
    }

    pub(crate) fn send_buffered(&self) -> usize {
        self.send.outbox.len()
    }

    /// What the channel costs the connection's memory budget (see `Recv::charge`).
    pub(crate) fn charge(&self) -> u64 {
        if self.ignores_input() {
            return self.recv.buffered() as u64;
        }
        self.recv.charge()
    }

    pub(crate) fn assembling(&self) -> bool {
        !self.ignores_input() && self.recv.assembling()
    }

    pub(crate) fn set_allowance(&mut self, bytes: u64) {
        self.recv.set_allowance(bytes);
    }

    /// Whether a grant was cut short by the budget (worth retrying once it has room).
    pub(crate) fn held_back(&self) -> bool {
        !self.ignores_input() && self.recv.held_back()
    }

    /// Grants what the budget now allows, after a grant was cut short.
    pub(crate) fn regrant(&mut self) -> Wake {
        self.grant()
    }

    pub(crate) fn trailers(&self) -> Option<&[String]> {
        self.recv.trailers()
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.life, Life::Closed)
    }

    pub(crate) fn accepts_children(&self) -> bool {
        self.life == Life::Open && !matches!(self.send.state, SendState::Failed(_))
    }

    /// Whether the channel was reset (either way): nothing is left to read. A
    /// channel the remote merely closed (it reads no more) still has its data.
    pub(crate) fn has_failed(&self) -> bool {
        self.recv
            .failure()
            .is_some_and(|e| e != ChannelError::ClosedByPeer)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.has_failed() || matches!(self.recv.state, RecvState::Lost(_))
    }

    pub(crate) fn send_failure(&self) -> Option<ChannelError> {
        match &self.send.state {
            SendState::Failed(e) => Some(e.clone()),
            _ => None,
        }
    }

    // ---- establishing ----

    /// Grants the rest of the window: called once the application has the channel.
    pub(crate) fn open_window(&mut self) -> Wake {
        if self.ignores_input() {
            return Wake::default();
        }
        let grant = self.recv.open();
        self.out_credit += grant;
        if grant > 0 {
            Self::transmit()
        } else {
            Wake::default()
        }
    }

    pub(crate) fn set_has_children(&mut self, has: bool) -> Wake {
        self.has_children = has;
        Wake {
            transmit: !has,
            ..Wake::default()
        }
    }

    // ---- failures ----

    fn fail_locally(&mut self, e: ChannelError, code: ResetCode) -> Wake {
        if self.local_failure.is_some() || matches!(self.life, Life::Reset | Life::Closed) {
            return Wake::default();
        }
        // The remote is told why, except for an application's own reset.
        let reason = if e == ChannelError::ResetLocally {
            String::new()
        } else {
            e.to_string()
        };
        self.local_failure = Some(e.clone());
        self.send.fail(e.clone());
        self.recv.fail(e);
        self.recv.drop_data();
        self.life = Life::Resetting { code, reason };
        Wake::all()
    }

    fn violation(&mut self, why: Refused) -> Wake {
        match why {
            Refused::Violation(why) => {
                tracing::debug!(error = %why, "resetting a channel after a protocol violation");
                self.fail_locally(ChannelError::Protocol(why.into()), ResetCode::ProtocolError)
            }
            Refused::FrameTooLarge(e) => self.fail_locally(
                ChannelError::FrameTooLarge {
                    len: e.len,
                    max: e.max,
                },
                ResetCode::FrameTooLarge,
            ),
        }
    }

    /// The parent closed: this channel is reset.
    pub(crate) fn on_parent_closed(&mut self) -> Wake {
        self.fail_locally(ChannelError::ParentClosed, ResetCode::ParentClosed)
    }

    /// The local peer shut down and the channel did not finish in time.
    pub(crate) fn on_shutdown(&mut self) -> Wake {
        self.fail_locally(ChannelError::Shutdown, ResetCode::Shutdown)
    }

    pub(crate) fn on_close_timeout(&mut self, after: std::time::Duration) -> Wake {
        self.fail_locally(ChannelError::CloseTimedOut(after), ResetCode::Closed)
    }

    /// Aborts the channel: queued data is dropped, the peer sees an error.
    pub(crate) fn reset(&mut self) -> Wake {
        self.fail_locally(ChannelError::ResetLocally, ResetCode::Cancelled)
    }

    // ---- from the network ----

    fn ignores_input(&self) -> bool {
        self.local_failure.is_some() || matches!(self.life, Life::Reset | Life::Closed)
    }

    pub(crate) fn on_data(&mut self, data: Bytes) -> Wake {
        if self.ignores_input() {
            return Wake::default();
        }
        match self.recv.on_data(data) {
            Ok(true) => Wake {
                read: true,
                ..Wake::default()
            },
            Ok(false) => self.grant(),
            Err(why) => self.violation(why),
        }
    }

    pub(crate) fn on_extended(&mut self, ext: u32, data: &[u8]) -> Wake {
        if self.ignores_input() {
            return Wake::default();
        }
        match ext {
            EXT_ERROR => match self.recv.on_error_bytes(data) {
                Ok(complete) => self.grant().or(Wake {
                    read: complete,
                    ..Wake::default()
                }),
                Err(why) => self.violation(why),
            },
            EXT_CONTROL => self.on_control_bytes(data),
            _ => Wake::default(), // unknown streams are ignored, as RFC 4254 allows
        }
    }

    fn on_control_bytes(&mut self, data: &[u8]) -> Wake {
        let mut records = Vec::new();
        if let Err(e) = self.control.push(data, &mut records) {
            return self.violation(Refused::Violation(e.to_string()));
        }
        let mut wake = Wake::default();
        for rec in records {
            wake = wake.or(self.on_control(rec));
            if self.ignores_input() {
                break;
            }
        }
        wake
    }

    fn on_control(&mut self, rec: Control) -> Wake {
        #[cfg(feature = "fuzzing")]
        crate::fuzzing::reached(&rec);
        match rec {
            Control::Credit(n) => {
                self.send.add_credit(n);
                Self::transmit()
            }
            Control::Trailers(list) => {
                match self.recv.on_trailers(list, self.cfg.max_trailer_bytes) {
                    Ok(()) => Wake::default(),
                    Err(Refused::Violation(why)) if why.starts_with("trailers of") => self
                        .fail_locally(
                            ChannelError::TrailersTooLarge {
                                len: self.recv.trailer_bytes(),
                                max: self.cfg.max_trailer_bytes,
                            },
                            ResetCode::LimitExceeded,
                        ),
                    Err(why) => self.violation(why),
                }
            }
            Control::Fin => {
                if let Err(why) = self.recv.on_fin() {
                    return self.violation(why);
                }
                let discarded = self.recv.discarded();
                if discarded == 0 {
                    self.fin_reply = FinReply::AckDue;
                    return Wake {
                        read: true,
                        transmit: true,
                        ..Wake::default()
                    };
                }
                // Data arrived that the application will never read: its sender
                // must not take an acknowledgement for delivery.
                self.fin_reply = FinReply::Refused { discarded };
                if matches!(self.send.state, SendState::FinQueued | SendState::FinSent) {
                    // Our own end waits for the remote's answer, which may be a
                    // refusal too: waiting for each other would never end. The remote
                    // closed, what we sent may not have been read: say so now.
                    return self.refuse_now(discarded);
                }
                // Answered once our own sending is finished (see `poll_transmit`).
                Self::transmit()
            }
            Control::FinAck => {
                if !self.send.on_fin_ack() {
                    return self.violation(Refused::Violation("unexpected FIN_ACK".into()));
                }
                Wake {
                    write: true,
                    transmit: true,
                    ..Wake::default()
                }
            }
            Control::Reset { code, reason } => {
                let code = ResetCode::from_code(code);
                let e = match code {
                    ResetCode::Closed => ChannelError::ClosedByPeer,
                    ResetCode::ParentClosed => ChannelError::ParentClosed,
                    _ => ChannelError::ResetByPeer { code, reason },
                };
                self.send.fail(e.clone());
                self.recv.reset_by_remote(e);
                if !matches!(self.life, Life::Closed) {
                    self.life = Life::Reset;
                }
                Wake::all()
            }
            Control::Unknown(_) => Wake::default(),
        }
    }

    /// Answers the remote's end of stream with `RESET` "closed" now: the channel
    /// ends, and our own end of stream (unconfirmed) fails.
    fn refuse_now(&mut self, discarded: u64) -> Wake {
        self.local_failure.get_or_insert(ChannelError::Closed);
        self.send.fail(ChannelError::ClosedByPeer);
        self.recv.fail(ChannelError::Closed);
        self.life = Life::Resetting {
            code: ResetCode::Closed,
            reason: format!("the peer closed the channel with {discarded} bytes unread"),
        };
        Wake::all()
    }

    /// SSH EOF: a native peer sends it only right before closing (its end of stream
    /// is the FIN record), so it means nothing here.
    pub(crate) fn on_eof(&mut self) -> Wake {
        Wake::default()
    }

    /// The remote closed the SSH channel (the SSH layer has answered with its own close).
    pub(crate) fn on_close(&mut self) -> Wake {
        if matches!(self.life, Life::Closed) {
            return Wake::default();
        }
        if self.local_failure.is_none() && !matches!(self.send.state, SendState::Failed(_)) {
            if self.recv.state == RecvState::Open {
                let e = ChannelError::ResetByPeer {
                    code: ResetCode::Cancelled,
                    reason: "channel closed without end of stream".into(),
                };
                self.recv.reset_by_remote(e.clone());
                self.send.fail(e);
            } else {
                self.send.fail(ChannelError::ClosedByPeer);
            }
        }
        self.send.outbox.clear();
        self.close_life();
        Wake::all()
    }

    fn close_life(&mut self) {
        self.life = Life::Closed;
    }

    /// Whether the application closed the channel (reads and writes fail "closed").
    fn closed_by_app(&self) -> bool {
        self.app_closed
    }

    /// The connection is gone.
    pub(crate) fn on_connection_lost(&mut self, e: &ChannelError) -> Wake {
        if matches!(self.life, Life::Closed) {
            return Wake::default();
        }
        self.send.fail(e.clone());
        self.recv.lose(e.clone());
        self.close_life();
        Wake::all()
    }

    // ---- reading ----

    fn grant(&mut self) -> Wake {
        if self.ignores_input() {
            return Wake::default();
        }
        let n = self.recv.grant();
        if n == 0 {
            return Wake::default();
        }
        self.out_credit += n;
        Self::transmit()
    }

    /// Why reading fails before any buffered data.
    fn read_failure(&self) -> Option<ChannelError> {
        if self.closed_by_app() {
            return Some(ChannelError::Closed);
        }
        self.recv.failure()
    }

    pub(crate) fn read(&mut self, buf: &mut [u8]) -> (Step<usize>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let n = self.recv.read(buf);
        if n > 0 {
            return (Step::Ready(n), self.grant());
        }
        match self.recv.end() {
            Ok(true) => (Step::Ready(0), Wake::default()),
            Ok(false) => (Step::Pending, Wake::default()),
            Err(e) => (Step::Failed(e), Wake::default()),
        }
    }

    pub(crate) fn read_owned(&mut self, max: usize) -> (Step<Bytes>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let b = self.recv.take_front(max);
        if !b.is_empty() {
            return (Step::Ready(b), self.grant());
        }
        match self.recv.end() {
            Ok(true) => (Step::Ready(Bytes::new()), Wake::default()),
            Ok(false) => (Step::Pending, Wake::default()),
            Err(e) => (Step::Failed(e), Wake::default()),
        }
    }

    pub(crate) fn read_frame(&mut self) -> (Step<Option<Bytes>>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let step = match self.recv.read_frame() {
            FrameRead::Frame(f, _) => Step::Ready(Some(f)),
            FrameRead::TooLarge(len) => {
                let e = ChannelError::FrameTooLarge {
                    len,
                    max: self.cfg.max_frame,
                };
                let w = self.fail_locally(e.clone(), ResetCode::FrameTooLarge);
                return (Step::Failed(e), w);
            }
            FrameRead::Empty => match self.recv.end() {
                Ok(true) if self.recv.inbox.has_data() => {
                    Step::Failed(ChannelError::TruncatedFrame)
                }
                Ok(true) => Step::Ready(None),
                Ok(false) => Step::Pending,
                Err(e) => Step::Failed(e),
            },
            FrameRead::Partial { .. } => match self.recv.end() {
                Ok(true) => Step::Failed(ChannelError::TruncatedFrame),
                Ok(false) => Step::Pending,
                Err(e) => Step::Failed(e),
            },
        };
        (step, self.grant())
    }

    pub(crate) fn read_error(&mut self) -> (Step<Option<Bytes>>, Wake) {
        if let Some(f) = self.recv.pop_error() {
            return (Step::Ready(Some(f)), self.grant());
        }
        if let Some(e) = &self.local_failure {
            return (Step::Failed(e.clone()), Wake::default());
        }
        match self.recv.end() {
            Ok(true) => (Step::Ready(None), Wake::default()),
            Ok(false) if self.closed_by_app() => {
                (Step::Failed(ChannelError::Closed), Wake::default())
            }
            Ok(false) => (Step::Pending, Wake::default()),
            Err(e) => (Step::Failed(e), Wake::default()),
        }
    }

    /// The application dropped its reading half: discard what arrives, keep crediting.
    pub(crate) fn reader_dropped(&mut self) -> Wake {
        if self.recv.reader != Reader::Reading {
            return Wake::default();
        }
        self.recv.stop_reading();
        self.grant()
    }

    // ---- writing ----

    fn write_check(&self) -> Option<ChannelError> {
        if self.closed_by_app() {
            return Some(ChannelError::Closed);
        }
        self.send.write_check()
    }

    pub(crate) fn write_room(&mut self) -> (Step<usize>, Wake) {
        self.send.outbox.write_room(self.write_check())
    }

    pub(crate) fn write_owned(&mut self, data: Bytes) -> (Step<usize>, Wake) {
        let failed = self.write_check();
        self.send.outbox.write_owned(failed, data)
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> (Step<usize>, Wake) {
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        if data.is_empty() {
            return (Step::Ready(0), Wake::default());
        }
        let room = self.send.outbox.room();
        if room == 0 {
            return (Step::Pending, Wake::default());
        }
        let n = room.min(data.len());
        self.send.outbox.push(false, &data[..n], false);
        (Step::Ready(n), Self::transmit())
    }

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
        if !self.send.outbox.takes_frame(payload.len()) {
            return (Step::Pending, Wake::default());
        }
        self.send.outbox.push(error_stream, payload, true);
        (Step::Ready(()), Self::transmit())
    }

    pub(crate) fn write_trailers(&mut self, trailers: Vec<String>) -> (Step<()>, Wake) {
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        let max = self.cfg.max_trailer_bytes;
        if let Err(len) = self.send.count_trailers(&trailers, max) {
            return (
                Step::Failed(ChannelError::TrailersTooLarge { len, max }),
                Wake::default(),
            );
        }
        let mut buf = BytesMut::new();
        Control::Trailers(trailers).encode(&mut buf);
        self.send.outbox.push_control(buf.freeze());
        (Step::Ready(()), Self::transmit())
    }

    fn fin_acked(&self) -> Step<()> {
        match self.send.fin_acked() {
            Ok(true) => Step::Ready(()),
            Ok(false) => Step::Pending,
            Err(e) => Step::Failed(e),
        }
    }

    /// Queues the end of stream (once) and reports whether the peer has confirmed it.
    pub(crate) fn close_write(&mut self) -> (Step<()>, Wake) {
        let wake = if self.life != Life::Closing && self.send.queue_fin() {
            Self::transmit()
        } else {
            Wake::default()
        };
        (self.fin_acked(), wake)
    }

    /// Starts an orderly close: end of stream, then once it is confirmed, stop the
    /// peer's sending (if it has not finished) and close the SSH channel. Ready once
    /// our end of stream was confirmed.
    pub(crate) fn close(&mut self) -> (Step<()>, Wake) {
        let (_, mut wake) = self.close_write();
        // Nothing will be read any more: discard and keep crediting, so the peer can
        // always send what stands between us and our FIN's acknowledgement.
        wake = wake.or(self.reader_dropped());
        self.app_closed = true;
        if self.life == Life::Open {
            self.life = Life::Closing;
            wake = wake.or(Self::transmit());
        }
        if self.local_failure == Some(ChannelError::ResetLocally) {
            return (Step::Ready(()), wake);
        }
        (self.fin_acked(), wake)
    }

    /// Every handle was dropped: finish gracefully in the background.
    pub(crate) fn released(&mut self) -> Wake {
        let w = self.reader_dropped();
        let (_, w2) = self.close();
        w.or(w2)
    }

    // ---- to the network ----

    /// Both directions are finished (or the application closed): the SSH channel
    /// can close. A channel whose streams merely ended stays open while channels
    /// opened inside it are open, since closing it would reset them.
    fn ready_to_close(&self) -> bool {
        self.send.state == SendState::Acked
            && (self.life == Life::Closing
                || (self.recv.state == RecvState::Finished && !self.has_children))
    }

    pub(crate) fn wants_transmit(&self) -> bool {
        match &self.life {
            Life::Closed => false,
            Life::Resetting { .. } | Life::Reset => true,
            Life::Open | Life::Closing => {
                self.fin_reply == FinReply::AckDue
                    || self.out_credit > 0
                    || self.send.wants_transmit()
                    || (self.send.outbox.is_empty() && self.ready_to_close())
            }
        }
    }

    /// The next thing to send, if any. `max` bounds data and error chunks.
    pub(crate) fn poll_transmit(&mut self, max: usize) -> (Option<Transmit>, Wake) {
        // Control that jumps the queue: a reset, then acknowledgements and credit.
        let mut ctl = BytesMut::new();
        match std::mem::replace(&mut self.life, Life::Closed) {
            Life::Closed => return (None, Wake::default()),
            Life::Resetting { code, reason } => {
                Control::Reset {
                    code: code.code(),
                    reason,
                }
                .encode(&mut ctl);
                self.life = Life::Reset;
                return (Some(Transmit::Control(ctl.freeze())), Wake::default());
            }
            Life::Reset => {
                // Closed stays: nothing more is sent.
                return (Some(Transmit::Close { eof: true }), Wake::all());
            }
            life @ (Life::Open | Life::Closing) => self.life = life,
        }
        if self.fin_reply == FinReply::AckDue {
            self.fin_reply = FinReply::Acked;
            Control::FinAck.encode(&mut ctl);
        }
        if self.out_credit > 0 {
            let n = u32::try_from(self.out_credit).unwrap_or(u32::MAX);
            self.out_credit -= u64::from(n);
            Control::Credit(n).encode(&mut ctl);
        }
        if !ctl.is_empty() {
            return (Some(Transmit::Control(ctl.freeze())), Wake::default());
        }
        if let Some(next) = self.send.pop(max) {
            let t = match next {
                Next::Data(b) => Transmit::Data(b),
                Next::Error(b) => Transmit::Error(b),
                Next::Control(b) => Transmit::Control(b),
                Next::Fin => {
                    let mut b = BytesMut::new();
                    Control::Fin.encode(&mut b);
                    Transmit::Control(b.freeze())
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
        if self.send.outbox.is_empty() && self.ready_to_close() {
            let reason = match (self.recv.state == RecvState::Finished, self.fin_reply) {
                (true, FinReply::Refused { discarded }) => {
                    format!("the peer closed the channel with {discarded} bytes unread")
                }
                // Nobody will read what the peer still sends: tell it to stop.
                (false, _) => "channel closed by the peer".to_owned(),
                (true, _) => {
                    self.close_life();
                    return (Some(Transmit::Close { eof: true }), Wake::all());
                }
            };
            self.local_failure.get_or_insert(ChannelError::Closed);
            self.recv.fail(ChannelError::Closed);
            self.life = Life::Resetting {
                code: ResetCode::Closed,
                reason,
            };
            return self.poll_transmit(max);
        }
        (None, Wake::default())
    }
}
