//! The life of one channel, without I/O.
//!
//! [`ChannelState`] is fed what arrives from the network (`on_*`), is driven by the
//! application (`read`, `write`, `close_write`, ...) and tells the transport what to
//! send next ([`ChannelState::poll_transmit`]). Every call returns a [`Wake`] saying
//! which waiters to wake; the state itself never blocks, sleeps or touches a socket.
//!
//! Each direction of a channel goes through these states:
//!
//! ```text
//!  sending:   Open ──close_write──▶ FinQueued ──sent──▶ FinSent ──FIN_ACK──▶ Acked
//!               │                                          │
//!               └───────────── reset / RESET / lost ───────┴──▶ Failed
//!
//!  receiving: Open ──FIN──▶ Finished (reads drain the buffer, then EOF)
//!               └── RESET / CLOSE without FIN / lost ──▶ Failed (after buffered data, for lost)
//! ```
//!
//! The SSH channel is closed once this side's FIN was acknowledged and the remote's
//! FIN arrived (and was acknowledged), or at once after a reset.
//!
//! Flow control: the receiver grants credit for bytes of data and error stream;
//! every channel starts with [`INITIAL_CREDIT`] each way. A receiver re-grants what
//! the application consumed once that reaches half its window, so the bytes held
//! for a channel never exceed its window, whatever the application does. A sender
//! that exceeds its credit is a protocol violation and gets the channel reset.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::buffer::ByteQueue;
use crate::error::ChannelError;
use crate::wire::control::{Control, ControlDecoder};
use crate::wire::frame::{self, FrameDecoder};
use crate::wire::reason::ResetCode;
use crate::wire::{EXT_CONTROL, EXT_ERROR, INITIAL_CREDIT};

/// Error-stream bytes credited back on arrival, before the application reads them.
///
/// Applications often read only data; credit withheld for unread errors would stall
/// the data too. Up to this many buffered error bytes do not hold credit back.
const ERROR_AUTO_CREDIT: usize = 64 * 1024;

/// Room a new send chunk gets for the small writes that follow it.
const COALESCE: usize = 64 * 1024;

/// Limits and sizes for one channel.
#[derive(Debug, Clone)]
pub(crate) struct StateConfig {
    /// Receive window: most bytes the peer may have outstanding (at least [`INITIAL_CREDIT`]).
    /// It is where the window starts; see `max_window`.
    pub window: u32,
    /// Largest the window grows to while the reader keeps up (no growth when it is
    /// not above `window`).
    pub max_window: u32,
    /// Largest frame accepted (data and error streams) or written.
    pub max_frame: usize,
    /// Bytes a writer may queue locally before `write` waits.
    pub send_buffer: usize,
    /// Largest encoded trailers.
    pub max_trailer_bytes: usize,
    /// Initial read timeout of the channel's handles (not used by the state itself).
    pub read_timeout: Option<std::time::Duration>,
    /// Initial write timeout of the channel's handles.
    pub write_timeout: Option<std::time::Duration>,
}

/// Which waiters a call made ready.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Wake {
    pub read: bool,
    pub write: bool,
    pub transmit: bool,
}

impl Wake {
    fn all() -> Wake {
        Wake {
            read: true,
            write: true,
            transmit: true,
        }
    }

    pub(crate) fn or(self, other: Wake) -> Wake {
        Wake {
            read: self.read || other.read,
            write: self.write || other.write,
            transmit: self.transmit || other.transmit,
        }
    }
}

/// What the transport should send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// SSH channel data.
    Data(Bytes),
    /// SSH extended data on the error stream.
    Error(Bytes),
    /// SSH extended data on the control stream (one or more records).
    Control(Bytes),
    /// SSH `CHANNEL_CLOSE`, after `CHANNEL_EOF` if `eof`: nothing more will be sent.
    Close { eof: bool },
    /// Compat mode: the end of stream as SSH `CHANNEL_EOF`, after an `exit-status`
    /// request when one is given.
    Eof { exit_status: Option<u32> },
    /// Compat mode: open the peer's SSH window by this much.
    WindowAdjust(u32),
}

/// Outcome of a non-blocking operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<T> {
    Ready(T),
    Pending,
    Failed(ChannelError),
}

#[derive(Debug)]
enum Queued {
    Data(BytesMut),
    Error(BytesMut),
    Control(Bytes),
    Fin,
}

/// How a channel talks to a standard SSH client (no control records, no credit of
/// ours): the SSH window is the flow control, SSH EOF the end of stream, error
/// frames are raw stderr bytes, and the `exit-status` trailer becomes the SSH
/// `exit-status` request.
#[derive(Debug)]
struct Compat {
    /// A `session` channel (exec/subsystem): it reports an exit status.
    session: bool,
    exit_status: Option<u32>,
}

#[derive(Debug)]
struct Assembly {
    body: BytesMut,
    remaining: usize,
}

/// The state of one channel.
#[derive(Debug)]
pub(crate) struct ChannelState {
    cfg: StateConfig,

    // ---- receiving ----
    rx: ByteQueue,
    rx_frame: Option<Assembly>,
    rx_err_decoder: FrameDecoder,
    rx_errors: VecDeque<Bytes>,
    rx_errors_bytes: usize,
    /// Error-stream bytes not yet credited back.
    rx_err_held: u64,
    ctl_decoder: ControlDecoder,
    /// Total bytes the peer may send (data and errors), ever.
    rx_limit: u64,
    /// The receive window now: `cfg.window`, doubled at a grant while the reader keeps
    /// up, up to `cfg.max_window`.
    rx_window: u32,
    rx_received: u64,
    /// Bytes released to the peer's credit or waiting to be (consumed by the application).
    rx_consumed: u64,
    rx_fin: bool,
    rx_trailers: Vec<String>,
    rx_trailer_bytes: usize,
    reader_gone: bool,

    // ---- sending ----
    tx: VecDeque<Queued>,
    tx_queued: usize,
    /// Whether anything (data, error frames, trailers) was ever queued to send: if
    /// not, the peer closing first cannot have lost anything of ours.
    tx_wrote: bool,
    tx_credit: u64,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    trailer_bytes: usize,

    // ---- control to send before anything queued ----
    out_credit: u64,
    out_fin_ack: bool,
    out_reset: Option<(ResetCode, String)>,

    // ---- lifecycle ----
    close_requested: bool,
    /// Set when we reset (locally or after a violation): both directions fail with it.
    local_failure: Option<ChannelError>,
    remote_reset: Option<ChannelError>,
    lost: Option<ChannelError>,
    reset_sent: bool,
    close_sent: bool,
    close_received: bool,
    compat: Option<Compat>,
    /// Channels opened inside this one are open: see `ready_to_close`.
    has_children: bool,
}

impl ChannelState {
    pub(crate) fn new(cfg: StateConfig) -> ChannelState {
        let ctl_max = cfg.max_trailer_bytes + 1024;
        ChannelState {
            rx: ByteQueue::default(),
            rx_frame: None,
            rx_err_decoder: FrameDecoder::new(cfg.max_frame),
            rx_errors: VecDeque::new(),
            rx_errors_bytes: 0,
            rx_err_held: 0,
            ctl_decoder: ControlDecoder::new(ctl_max),
            rx_limit: u64::from(INITIAL_CREDIT),
            rx_window: cfg.window,
            rx_received: 0,
            rx_consumed: 0,
            rx_fin: false,
            rx_trailers: Vec::new(),
            rx_trailer_bytes: 0,
            reader_gone: false,
            tx: VecDeque::new(),
            tx_queued: 0,
            tx_wrote: false,
            tx_credit: u64::from(INITIAL_CREDIT),
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            trailer_bytes: 0,
            out_credit: 0,
            out_fin_ack: false,
            out_reset: None,
            close_requested: false,
            local_failure: None,
            remote_reset: None,
            lost: None,
            reset_sent: false,
            close_sent: false,
            close_received: false,
            compat: None,
            has_children: false,
            cfg,
        }
    }

    /// A channel with a standard SSH client (see [`Compat`]); `initial_window` is the
    /// SSH window this side advertised when the channel opened.
    pub(crate) fn new_compat(cfg: StateConfig, initial_window: u32, session: bool) -> ChannelState {
        let mut s = ChannelState::new(cfg);
        s.rx_limit = u64::from(initial_window);
        // The SSH window, enforced by the SSH layer, limits what we send.
        s.tx_credit = u64::MAX / 2;
        s.compat = Some(Compat {
            session,
            exit_status: None,
        });
        s
    }

    /// Grants the peer the rest of our window; called once when the channel is established.
    pub(crate) fn open_window(&mut self) -> Wake {
        let target = self.rx_consumed + u64::from(self.rx_window);
        if target > self.rx_limit {
            self.out_credit += target - self.rx_limit;
            self.rx_limit = target;
            return Wake {
                transmit: true,
                ..Wake::default()
            };
        }
        Wake::default()
    }

    // ------------------------------------------------------------------
    // Observers
    // ------------------------------------------------------------------

    /// Bytes held for this channel on the receiving side (data, errors, partial frames).
    ///
    /// At most the window, plus one frame being assembled by `read_frame` (at most
    /// the frame limit) and error frames credited on arrival (at most 64 KiB plus one
    /// frame).
    pub(crate) fn buffered(&self) -> usize {
        self.rx.len()
            + self.rx_frame.as_ref().map_or(0, |a| a.body.len())
            + self.rx_errors_bytes
            + self.rx_err_decoder.buffered()
    }

    /// Why sending has failed, if it has (reset, lost connection): written data
    /// still queued was dropped.
    pub(crate) fn send_failure(&self) -> Option<ChannelError> {
        self.failure().or(self.lost.as_ref()).cloned()
    }

    /// The handles' initial read and write timeouts.
    pub(crate) fn timeouts(&self) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
        (self.cfg.read_timeout, self.cfg.write_timeout)
    }

    /// Bytes written by the application but not yet handed to the transport.
    pub(crate) fn send_buffered(&self) -> usize {
        self.tx_queued
    }

    /// The remote's trailers, once its end of stream arrived.
    pub(crate) fn trailers(&self) -> Option<&[String]> {
        self.rx_fin.then_some(&self.rx_trailers[..])
    }

    /// True once the SSH channel is closed on this side: the transport can forget it.
    pub(crate) fn is_closed(&self) -> bool {
        self.close_sent || self.close_received
    }

    /// Whether channels may still be opened inside this one: it is neither closed,
    /// closing, nor failed.
    pub(crate) fn accepts_children(&self) -> bool {
        !self.is_closed()
            && !self.close_requested
            && self.failure().is_none()
            && self.lost.is_none()
    }

    /// Whether the channel was reset (either way): nothing is left to read. A
    /// channel the remote merely closed (`ClosedByPeer`: it reads no more) still
    /// has its data.
    pub(crate) fn has_failed(&self) -> bool {
        self.failure()
            .is_some_and(|e| *e != ChannelError::ClosedByPeer)
    }

    /// The parent closed: this channel is reset.
    pub(crate) fn on_parent_closed(&mut self) -> Wake {
        if self.is_closed() || self.failure().is_some() || self.lost.is_some() {
            return Wake::default();
        }
        self.fail_locally(ChannelError::ParentClosed, ResetCode::ParentClosed)
    }

    fn failure(&self) -> Option<&ChannelError> {
        self.local_failure.as_ref().or(self.remote_reset.as_ref())
    }

    // ------------------------------------------------------------------
    // From the network
    // ------------------------------------------------------------------

    fn take_credit(&mut self, n: usize) -> Result<(), ChannelError> {
        if self.rx_fin {
            return Err(ChannelError::Protocol("data after end of stream".into()));
        }
        let n = n as u64;
        if self.rx_received + n > self.rx_limit {
            return Err(ChannelError::Protocol(
                format!(
                    "flow-control window exceeded ({} bytes over)",
                    self.rx_received + n - self.rx_limit
                )
                .into(),
            ));
        }
        self.rx_received += n;
        Ok(())
    }

    /// SSH channel data arrived.
    pub(crate) fn on_data(&mut self, data: &[u8]) -> Wake {
        self.receive(data.len(), |rx| rx.push_slice(data))
    }

    /// Data handed over whole (in-process connections): the same as
    /// [`on_data`](Self::on_data), without a copy where the bytes are not shared.
    pub(crate) fn on_data_owned(&mut self, data: Bytes) -> Wake {
        self.receive(data.len(), |rx| rx.push_bytes(data))
    }

    /// `len` bytes of data arrived; `push` queues them for the reader.
    fn receive(&mut self, len: usize, push: impl FnOnce(&mut ByteQueue)) -> Wake {
        if self.is_closed() || self.failure().is_some() {
            return Wake::default();
        }
        if let Err(e) = self.take_credit(len) {
            return self.violation(e);
        }
        if self.reader_gone {
            self.rx_consumed += len as u64;
            return self.maybe_grant();
        }
        push(&mut self.rx);
        Wake {
            read: true,
            ..Wake::default()
        }
    }

    /// SSH extended data arrived.
    pub(crate) fn on_extended(&mut self, ext: u32, data: &[u8]) -> Wake {
        if self.is_closed() || self.failure().is_some() {
            return Wake::default();
        }
        match (ext, self.compat.is_some()) {
            (EXT_ERROR, false) => self.on_error_bytes(data),
            (EXT_ERROR, true) => self.on_raw_error(data),
            (EXT_CONTROL, false) => self.on_control_bytes(data),
            _ => Wake::default(), // unknown streams are ignored, as RFC 4254 allows
        }
    }

    /// Compat mode: each chunk of stderr is one error frame.
    fn on_raw_error(&mut self, data: &[u8]) -> Wake {
        if let Err(e) = self.take_credit(data.len()) {
            return self.violation(e);
        }
        if self.reader_gone || self.rx_errors_bytes > ERROR_AUTO_CREDIT {
            // Nobody reads them, or too many wait: drop rather than hold the window.
            self.rx_consumed += data.len() as u64;
            return self.maybe_grant();
        }
        self.rx_errors_bytes += data.len() + frame::HEADER_LEN;
        self.rx_errors.push_back(Bytes::copy_from_slice(data));
        self.rx_consumed += data.len() as u64;
        self.maybe_grant().or(Wake {
            read: true,
            ..Wake::default()
        })
    }

    fn on_error_bytes(&mut self, data: &[u8]) -> Wake {
        if let Err(e) = self.take_credit(data.len()) {
            return self.violation(e);
        }
        if self.reader_gone {
            self.rx_consumed += data.len() as u64;
            return self.maybe_grant();
        }
        let before = self.rx_errors.len();
        let (errors, bytes) = (&mut self.rx_errors, &mut self.rx_errors_bytes);
        let res = self.rx_err_decoder.push(data, |f| {
            *bytes += f.len() + frame::HEADER_LEN;
            errors.push_back(f);
        });
        if let Err(e) = res {
            return self.fail_locally(
                ChannelError::FrameTooLarge {
                    len: e.len,
                    max: e.max,
                },
                ResetCode::FrameTooLarge,
            );
        }
        let mut wake = Wake {
            read: self.rx_errors.len() > before,
            ..Wake::default()
        };
        // Bytes of a frame still arriving are always credited (a frame may be larger
        // than the window); complete frames nobody reads hold credit back past the cap.
        if self.rx_errors_bytes <= ERROR_AUTO_CREDIT {
            self.rx_consumed += data.len() as u64;
            wake = wake.or(self.maybe_grant());
        } else {
            self.rx_err_held += data.len() as u64;
        }
        wake
    }

    fn on_control_bytes(&mut self, data: &[u8]) -> Wake {
        let mut records = Vec::new();
        if let Err(e) = self.ctl_decoder.push(data, &mut records) {
            return self.violation(ChannelError::Protocol(e.to_string().into()));
        }
        let mut wake = Wake::default();
        for rec in records {
            wake = wake.or(self.on_control(rec));
            if self.failure().is_some() {
                break;
            }
        }
        wake
    }

    fn on_control(&mut self, rec: Control) -> Wake {
        match rec {
            Control::Credit(n) => {
                self.tx_credit = self.tx_credit.saturating_add(u64::from(n));
                Wake {
                    transmit: true,
                    ..Wake::default()
                }
            }
            Control::Trailers(list) => {
                if self.rx_fin {
                    return self.violation(ChannelError::Protocol(
                        "trailers after end of stream".into(),
                    ));
                }
                self.rx_trailer_bytes += list.iter().map(|t| t.len() + 4).sum::<usize>();
                if self.rx_trailer_bytes > self.cfg.max_trailer_bytes {
                    return self.fail_locally(
                        ChannelError::TrailersTooLarge {
                            len: self.rx_trailer_bytes,
                            max: self.cfg.max_trailer_bytes,
                        },
                        ResetCode::LimitExceeded,
                    );
                }
                self.rx_trailers.extend(list);
                Wake::default()
            }
            Control::Fin => {
                if self.rx_fin {
                    return self
                        .violation(ChannelError::Protocol("duplicate end of stream".into()));
                }
                if !self.reader_gone && !self.rx_err_decoder.is_idle() {
                    return self.violation(ChannelError::Protocol(
                        "end of stream inside an error frame".into(),
                    ));
                }
                self.rx_fin = true;
                self.out_fin_ack = true;
                Wake {
                    read: true,
                    transmit: true,
                    ..Wake::default()
                }
            }
            Control::FinAck => {
                if !self.fin_sent || self.fin_acked {
                    return self.violation(ChannelError::Protocol("unexpected FIN_ACK".into()));
                }
                self.fin_acked = true;
                Wake {
                    write: true,
                    transmit: true,
                    ..Wake::default()
                }
            }
            Control::Reset { code, reason } => {
                let code = ResetCode::from_code(code);
                self.remote_reset = Some(match code {
                    ResetCode::Closed => ChannelError::ClosedByPeer,
                    ResetCode::ParentClosed => ChannelError::ParentClosed,
                    _ => ChannelError::ResetByPeer { code, reason },
                });
                self.drop_send_queue();
                Wake::all()
            }
            Control::Unknown(_) => Wake::default(),
        }
    }

    /// The remote sent SSH EOF. Native peers send it only right before closing (the
    /// end of stream is the FIN record); for a standard client it is the end of stream.
    pub(crate) fn on_eof(&mut self) -> Wake {
        if self.compat.is_some() && !self.rx_fin {
            self.rx_fin = true;
            return Wake {
                read: true,
                transmit: true,
                ..Wake::default()
            };
        }
        Wake::default()
    }

    /// The remote closed the SSH channel (the SSH layer has answered with its own close).
    pub(crate) fn on_close(&mut self) -> Wake {
        self.close_received = true;
        self.close_sent = true;
        if !self.rx_fin && self.failure().is_none() {
            self.remote_reset = Some(ChannelError::ResetByPeer {
                code: ResetCode::Cancelled,
                reason: "channel closed without end of stream".into(),
            });
        }
        if !self.fin_acked && self.failure().is_none() {
            self.remote_reset = Some(ChannelError::ClosedByPeer);
        }
        self.drop_send_queue();
        Wake::all()
    }

    /// The connection is gone.
    pub(crate) fn on_connection_lost(&mut self, reason: &Arc<str>) -> Wake {
        if self.lost.is_none() && !self.is_closed() {
            self.lost = Some(ChannelError::ConnectionLost(reason.clone()));
            self.drop_send_queue();
        }
        Wake::all()
    }

    /// The local peer shut down and the channel did not finish in time.
    pub(crate) fn on_shutdown(&mut self) -> Wake {
        if self.is_closed() {
            return Wake::default();
        }
        self.fail_locally(ChannelError::Shutdown, ResetCode::Shutdown)
    }

    fn violation(&mut self, e: ChannelError) -> Wake {
        tracing::debug!(error = %e, "resetting channel after a protocol violation");
        self.fail_locally(e, ResetCode::ProtocolError)
    }

    fn fail_locally(&mut self, e: ChannelError, code: ResetCode) -> Wake {
        if self.local_failure.is_none() {
            // The remote is told why, except for an application's own reset.
            let reason = if e == ChannelError::ResetLocally {
                String::new()
            } else {
                e.to_string()
            };
            self.local_failure = Some(e);
            if !self.reset_sent && !self.is_closed() {
                self.out_reset = Some((code, reason));
            }
            self.drop_send_queue();
        }
        Wake::all()
    }

    fn drop_send_queue(&mut self) {
        self.tx.clear();
        self.tx_queued = 0;
    }

    // ------------------------------------------------------------------
    // Reading
    // ------------------------------------------------------------------

    fn maybe_grant(&mut self) -> Wake {
        if self.rx_fin || self.is_closed() || self.failure().is_some() {
            return Wake::default();
        }
        let window = u64::from(self.rx_window);
        let mut target = self.rx_consumed + window;
        let mut grant = target - self.rx_limit.min(target);
        if grant >= window / 2 {
            // The reader has kept up (little is left unread), so the window, not the
            // reader, limits the sender: double it. A reader that falls behind stops
            // the growth, and nothing ever buffers more than `max_window`.
            if self.rx_window < self.cfg.max_window && self.rx.len() as u64 <= window / 4 {
                self.rx_window = self.rx_window.saturating_mul(2).min(self.cfg.max_window);
                target = self.rx_consumed + u64::from(self.rx_window);
                grant = target - self.rx_limit.min(target);
            }
            self.out_credit += grant;
            self.rx_limit = target;
            return Wake {
                transmit: true,
                ..Wake::default()
            };
        }
        Wake::default()
    }

    fn consumed(&mut self, n: usize) -> Wake {
        self.rx_consumed += n as u64;
        self.maybe_grant()
    }

    /// The error that ends reading once buffered data is gone, or `None` for EOF.
    fn read_end(&self) -> Step<()> {
        if self.rx_fin {
            Step::Ready(())
        } else if let Some(e) = &self.lost {
            Step::Failed(e.clone())
        } else {
            Step::Pending
        }
    }

    /// Why reading fails before any buffered data: closed, reset (by us, or by the
    /// peer before its end of stream), or a protocol failure.
    fn read_failure(&self) -> Option<ChannelError> {
        if self.close_requested {
            return Some(ChannelError::Closed);
        }
        if let Some(e) = &self.local_failure {
            return Some(e.clone());
        }
        if self.rx_fin {
            None
        } else {
            self.remote_reset.clone()
        }
    }

    /// Reads bytes; `Ready(0)` is end of stream (unless `buf` is empty).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> (Step<usize>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        if !self.rx.is_empty() {
            let n = self.rx.copy_out(buf);
            return (Step::Ready(n), self.consumed(n));
        }
        match self.read_end() {
            Step::Ready(()) => (Step::Ready(0), Wake::default()),
            Step::Failed(e) => (Step::Failed(e), Wake::default()),
            Step::Pending => (Step::Pending, Wake::default()),
        }
    }

    /// Reads one frame; `Ready(None)` is a clean end of stream between frames.
    pub(crate) fn read_frame(&mut self) -> (Step<Option<Bytes>>, Wake) {
        if let Some(e) = self.read_failure() {
            return (Step::Failed(e), Wake::default());
        }
        let mut wake = Wake::default();
        if self.rx_frame.is_none() {
            let Some(len) = self.rx.peek_u32() else {
                return match self.read_end() {
                    Step::Ready(()) if self.rx.is_empty() => (Step::Ready(None), wake),
                    Step::Ready(()) => (Step::Failed(ChannelError::TruncatedFrame), wake),
                    Step::Failed(e) => (Step::Failed(e), wake),
                    Step::Pending => (Step::Pending, wake),
                };
            };
            let len = len as usize;
            if len > self.cfg.max_frame {
                let w = self.fail_locally(
                    ChannelError::FrameTooLarge {
                        len: len as u64,
                        max: self.cfg.max_frame,
                    },
                    ResetCode::FrameTooLarge,
                );
                return (
                    Step::Failed(
                        self.local_failure
                            .clone()
                            .unwrap_or(ChannelError::TruncatedFrame),
                    ),
                    w,
                );
            }
            if self.rx.len() >= frame::HEADER_LEN + len {
                self.rx.take(frame::HEADER_LEN);
                let f = self.rx.take(len);
                return (Step::Ready(Some(f)), self.consumed(frame::HEADER_LEN + len));
            }
            // Not all here yet: move what is into an assembly buffer so that the
            // window reopens even for frames larger than it.
            self.rx.take(frame::HEADER_LEN);
            wake = wake.or(self.consumed(frame::HEADER_LEN));
            self.rx_frame = Some(Assembly {
                body: BytesMut::with_capacity(len.min(64 * 1024)),
                remaining: len,
            });
        }
        let Some(asm) = self.rx_frame.as_mut() else {
            return (Step::Pending, wake);
        };
        let moved = self.rx.move_into(&mut asm.body, asm.remaining);
        asm.remaining -= moved;
        let done = asm.remaining == 0;
        if moved > 0 {
            wake = wake.or(self.consumed(moved));
        }
        if done {
            let body = self
                .rx_frame
                .take()
                .map(|a| a.body.freeze())
                .unwrap_or_default();
            return (Step::Ready(Some(body)), wake);
        }
        match self.read_end() {
            Step::Ready(()) => (Step::Failed(ChannelError::TruncatedFrame), wake),
            Step::Failed(e) => (Step::Failed(e), wake),
            Step::Pending => (Step::Pending, wake),
        }
    }

    /// Reads one error frame; `Ready(None)` once the stream ended with no more errors.
    ///
    /// Error frames that arrived before a reset or a lost connection are still
    /// returned before the failure.
    pub(crate) fn read_error(&mut self) -> (Step<Option<Bytes>>, Wake) {
        if let Some(f) = self.rx_errors.pop_front() {
            let n = f.len() + frame::HEADER_LEN;
            self.rx_errors_bytes -= n;
            let mut release = self.rx_err_held.min(n as u64);
            if self.rx_errors.is_empty() && self.rx_err_decoder.is_idle() {
                release = self.rx_err_held;
            }
            self.rx_err_held -= release;
            let wake = if release > 0 {
                self.rx_consumed += release;
                self.maybe_grant()
            } else {
                Wake::default()
            };
            return (Step::Ready(Some(f)), wake);
        }
        if let Some(e) = self.local_failure.clone() {
            return (Step::Failed(e), Wake::default());
        }
        if self.rx_fin {
            return (Step::Ready(None), Wake::default());
        }
        if let Some(e) = self.remote_reset.clone().or_else(|| self.lost.clone()) {
            return (Step::Failed(e), Wake::default());
        }
        (Step::Pending, Wake::default())
    }

    /// The application dropped its reading half: discard what arrives, keep crediting.
    pub(crate) fn reader_dropped(&mut self) -> Wake {
        if self.reader_gone {
            return Wake::default();
        }
        self.reader_gone = true;
        // Bytes already credited (a frame being assembled, error bytes credited on
        // arrival) are not counted again.
        let n = self.rx.len() + self.rx_err_held as usize;
        self.rx.clear();
        self.rx_frame = None;
        self.rx_errors.clear();
        self.rx_errors_bytes = 0;
        self.rx_err_held = 0;
        self.rx_err_decoder = FrameDecoder::new(self.cfg.max_frame);
        self.rx_consumed += n as u64;
        self.maybe_grant()
    }

    // ------------------------------------------------------------------
    // Writing
    // ------------------------------------------------------------------

    fn write_check(&self) -> Option<ChannelError> {
        if self.close_requested {
            return Some(ChannelError::Closed);
        }
        if let Some(e) = self.failure().or(self.lost.as_ref()) {
            return Some(e.clone());
        }
        if self.fin_queued || self.is_closed() {
            return Some(ChannelError::WriteClosed);
        }
        None
    }

    fn enqueue(&mut self, error_stream: bool, bytes: &[u8], framed: bool) {
        let len = bytes.len() + if framed { frame::HEADER_LEN } else { 0 };
        // Append to the last chunk only while it has room: growing it would copy
        // everything still queued (its front is shared with packets in flight).
        let tail = match (self.tx.back_mut(), error_stream) {
            (Some(Queued::Data(b)), false) | (Some(Queued::Error(b)), true)
                if b.capacity() - b.len() >= len =>
            {
                b
            }
            _ => {
                // Small writes share a chunk, so they leave in large packets.
                let b = BytesMut::with_capacity(len.max(COALESCE.min(self.cfg.send_buffer)));
                self.tx.push_back(if error_stream {
                    Queued::Error(b)
                } else {
                    Queued::Data(b)
                });
                match self.tx.back_mut() {
                    Some(Queued::Data(b) | Queued::Error(b)) => b,
                    _ => return, // just pushed
                }
            }
        };
        if framed {
            frame::encode(bytes, tail);
        } else {
            tail.extend_from_slice(bytes);
        }
        self.tx_queued += len;
        self.tx_wrote = true;
    }

    /// Writes bytes to the byte stream, as many as fit in the send buffer.
    pub(crate) fn write(&mut self, data: &[u8]) -> (Step<usize>, Wake) {
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        if data.is_empty() {
            return (Step::Ready(0), Wake::default());
        }
        let room = self.cfg.send_buffer.saturating_sub(self.tx_queued);
        if room == 0 {
            return (Step::Pending, Wake::default());
        }
        let n = room.min(data.len());
        self.enqueue(false, &data[..n], false);
        (
            Step::Ready(n),
            Wake {
                transmit: true,
                ..Wake::default()
            },
        )
    }

    fn check_frame(&self, len: usize) -> Option<ChannelError> {
        (len > self.cfg.max_frame).then_some(ChannelError::FrameTooLarge {
            len: len as u64,
            max: self.cfg.max_frame,
        })
    }

    /// Writes one frame to the data stream (`error_stream = false`) or the error stream.
    ///
    /// A frame goes in whole; an empty send buffer always takes it, so frames larger
    /// than the buffer make progress.
    pub(crate) fn write_frame(&mut self, payload: &[u8], error_stream: bool) -> (Step<()>, Wake) {
        if let Some(e) = self
            .check_frame(payload.len())
            .or_else(|| self.write_check())
        {
            return (Step::Failed(e), Wake::default());
        }
        let need = payload.len() + frame::HEADER_LEN;
        if self.tx_queued > 0 && self.tx_queued + need > self.cfg.send_buffer {
            return (Step::Pending, Wake::default());
        }
        // A standard SSH client gets error frames as plain stderr bytes.
        let framed = !(error_stream && self.compat.is_some());
        self.enqueue(error_stream, payload, framed);
        (
            Step::Ready(()),
            Wake {
                transmit: true,
                ..Wake::default()
            },
        )
    }

    /// Queues trailers after everything written so far.
    pub(crate) fn write_trailers(&mut self, trailers: Vec<String>) -> (Step<()>, Wake) {
        if let Some(e) = self.write_check() {
            return (Step::Failed(e), Wake::default());
        }
        let len = self.trailer_bytes + trailers.iter().map(|t| t.len() + 4).sum::<usize>();
        if len > self.cfg.max_trailer_bytes {
            return (
                Step::Failed(ChannelError::TrailersTooLarge {
                    len,
                    max: self.cfg.max_trailer_bytes,
                }),
                Wake::default(),
            );
        }
        self.trailer_bytes = len;
        self.tx_wrote = true;
        if let Some(compat) = &mut self.compat {
            // SSH has no trailers; `exit-status=N` becomes the exit status.
            for t in &trailers {
                if let Some(code) = t
                    .strip_prefix("exit-status=")
                    .and_then(|v| v.parse::<i64>().ok())
                {
                    compat.exit_status = Some((code & 0xff) as u32);
                }
            }
            return (Step::Ready(()), Wake::default());
        }
        let mut buf = BytesMut::new();
        Control::Trailers(trailers).encode(&mut buf);
        self.tx.push_back(Queued::Control(buf.freeze()));
        (
            Step::Ready(()),
            Wake {
                transmit: true,
                ..Wake::default()
            },
        )
    }

    /// Queues the end of stream (once) and reports whether the peer has confirmed it.
    pub(crate) fn close_write(&mut self) -> (Step<()>, Wake) {
        let mut wake = Wake::default();
        if !self.fin_queued && self.write_check().is_none() {
            self.fin_queued = true;
            self.tx.push_back(Queued::Fin);
            wake.transmit = true;
        }
        (self.poll_fin_acked(), wake)
    }

    fn poll_fin_acked(&self) -> Step<()> {
        if self.fin_acked {
            return Step::Ready(());
        }
        if !self.tx_wrote && self.failure() == Some(&ChannelError::ClosedByPeer) {
            // Both ends closing at once, and we never sent anything: nothing was lost.
            return Step::Ready(());
        }
        if let Some(e) = self.failure().or(self.lost.as_ref()) {
            return Step::Failed(e.clone());
        }
        if !self.fin_queued {
            return Step::Failed(ChannelError::WriteClosed);
        }
        Step::Pending
    }

    /// Starts an orderly close: end of stream, then once it is confirmed, stop the
    /// peer's sending (if it has not finished) and close the SSH channel.
    ///
    /// Ready once our end of stream was confirmed (everything written arrived).
    pub(crate) fn close(&mut self) -> (Step<()>, Wake) {
        // Nothing will be read any more: discard and keep crediting, so the peer can
        // always send what stands between us and our FIN's acknowledgement.
        let (_, mut wake) = self.close_write();
        wake = wake.or(self.reader_dropped());
        if !self.close_requested {
            self.close_requested = true;
            wake.transmit = true;
        }
        if self.local_failure == Some(ChannelError::ResetLocally) {
            return (Step::Ready(()), wake);
        }
        (self.poll_fin_acked(), wake)
    }

    /// Aborts the channel: queued data is dropped, the peer sees an error.
    pub(crate) fn reset(&mut self) -> Wake {
        if self.is_closed() || self.local_failure.is_some() {
            return Wake::default();
        }
        self.fail_locally(ChannelError::ResetLocally, ResetCode::Cancelled)
    }

    /// Every handle was dropped: finish gracefully in the background.
    pub(crate) fn released(&mut self) -> Wake {
        let w = self.reader_dropped();
        let (_, w2) = self.close();
        w.or(w2)
    }

    // ------------------------------------------------------------------
    // To the network
    // ------------------------------------------------------------------

    /// The next thing to send, if any. `max` bounds data and error chunks.
    pub(crate) fn poll_transmit(&mut self, max: usize) -> (Option<Transmit>, Wake) {
        if self.close_sent || self.lost.is_some() {
            return (None, Wake::default());
        }
        // Control that jumps the queue: reset, then acknowledgements and credit.
        let mut ctl = BytesMut::new();
        if let Some((code, reason)) = self.out_reset.take() {
            // A standard client has no reset: the channel just closes.
            if self.compat.is_none() {
                Control::Reset {
                    code: code.code(),
                    reason,
                }
                .encode(&mut ctl);
            }
            self.reset_sent = true;
        }
        if self.compat.is_some() && self.out_credit > 0 && !self.reset_sent {
            let n = u32::try_from(self.out_credit).unwrap_or(u32::MAX);
            self.out_credit -= u64::from(n);
            return (Some(Transmit::WindowAdjust(n)), Wake::default());
        }
        if std::mem::take(&mut self.out_fin_ack) && !self.reset_sent {
            Control::FinAck.encode(&mut ctl);
        }
        if self.out_credit > 0 && !self.reset_sent {
            let n = u32::try_from(self.out_credit).unwrap_or(u32::MAX);
            self.out_credit -= u64::from(n);
            Control::Credit(n).encode(&mut ctl);
        }
        if !ctl.is_empty() {
            return (Some(Transmit::Control(ctl.freeze())), Wake::default());
        }
        if self.reset_sent || self.remote_reset.is_some() {
            self.close_sent = true;
            // A reset is not an end of stream: a standard client must not see EOF.
            let eof = self.compat.is_none();
            return (Some(Transmit::Close { eof }), Wake::all());
        }
        let mut wake = Wake::default();
        match self.tx.front_mut() {
            Some(front @ (Queued::Data(_) | Queued::Error(_))) => {
                let error_stream = matches!(front, Queued::Error(_));
                let (Queued::Data(b) | Queued::Error(b)) = front else {
                    return (None, wake);
                };
                let n = (b.len() as u64).min(self.tx_credit).min(max as u64) as usize;
                if n == 0 {
                    return (None, wake); // waiting for credit
                }
                let chunk = b.split_to(n).freeze();
                if b.is_empty() {
                    self.tx.pop_front();
                }
                self.tx_credit -= n as u64;
                self.tx_queued -= n;
                wake.write = true;
                let t = if error_stream {
                    Transmit::Error(chunk)
                } else {
                    Transmit::Data(chunk)
                };
                return (Some(t), wake);
            }
            Some(Queued::Control(_)) => {
                if let Some(Queued::Control(b)) = self.tx.pop_front() {
                    return (Some(Transmit::Control(b)), wake);
                }
            }
            Some(Queued::Fin) => {
                self.tx.pop_front();
                self.fin_sent = true;
                if let Some(compat) = &self.compat {
                    // No acknowledgement exists: handing it over is as far as we know.
                    self.fin_acked = true;
                    wake.write = true;
                    let exit_status = compat.session.then(|| compat.exit_status.unwrap_or(0));
                    return (Some(Transmit::Eof { exit_status }), wake);
                }
                let mut b = BytesMut::new();
                Control::Fin.encode(&mut b);
                return (Some(Transmit::Control(b.freeze())), wake);
            }
            None => {}
        }
        if self.ready_to_close() {
            if self.compat.is_some() {
                self.close_sent = true;
                return (Some(Transmit::Close { eof: false }), Wake::all());
            }
            if !self.rx_fin {
                // Nobody will read what the peer still sends: tell it to stop.
                self.out_reset = Some((ResetCode::Closed, "channel closed by the peer".into()));
                self.local_failure.get_or_insert(ChannelError::Closed);
                return self.poll_transmit(max);
            }
            self.close_sent = true;
            return (Some(Transmit::Close { eof: true }), Wake::all());
        }
        (None, wake)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has something to send now.
    pub(crate) fn wants_transmit(&self) -> bool {
        if self.close_sent || self.lost.is_some() {
            return false;
        }
        self.out_reset.is_some()
            || self.out_fin_ack
            || self.out_credit > 0
            || self.reset_sent
            || self.remote_reset.is_some()
            || match self.tx.front() {
                Some(Queued::Data(b) | Queued::Error(b)) => self.tx_credit > 0 && !b.is_empty(),
                Some(_) => true,
                None => self.ready_to_close(),
            }
    }

    /// Both directions are finished (or the application closed): the SSH channel
    /// can close. A channel whose streams merely ended stays open while channels
    /// opened inside it are open, since closing it would reset them.
    fn ready_to_close(&self) -> bool {
        self.fin_acked && (self.close_requested || (self.rx_fin && !self.has_children))
    }

    /// Whether channels opened inside this one are open (see `ready_to_close`).
    pub(crate) fn set_has_children(&mut self, has: bool) -> Wake {
        self.has_children = has;
        Wake {
            transmit: !has,
            ..Wake::default()
        }
    }
}

#[cfg(test)]
mod tests;
