//! The sending direction of a native channel: what the application wrote, the
//! credit the remote granted, and the end of stream.
//!
//! ```text
//!  Open ──close_write──▶ FinQueued ──FIN sent──▶ FinSent ──FIN_ACK──▶ Acked
//!    └───────── reset (either side), SSH CLOSE, connection lost ────────▶ Failed
//!               (from any state before Acked)
//! ```

use super::outbox::{Next, Outbox};
use crate::error::ChannelError;
use crate::wire::INITIAL_CREDIT;

/// Where the sending direction stands (see the module's diagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SendState {
    Open,
    FinQueued,
    FinSent,
    Acked,
    Failed(ChannelError),
}

/// The sending direction of a native channel.
#[derive(Debug)]
pub(super) struct Send {
    pub(super) state: SendState,
    pub(super) outbox: Outbox,
    /// Bytes the remote lets us send now.
    credit: u64,
    trailer_bytes: usize,
}

impl Send {
    pub(super) fn new(send_buffer: usize) -> Send {
        Send {
            state: SendState::Open,
            outbox: Outbox::new(send_buffer),
            credit: u64::from(INITIAL_CREDIT),
            trailer_bytes: 0,
        }
    }

    /// Why writing fails now, if it does.
    pub(super) fn write_check(&self) -> Option<ChannelError> {
        match &self.state {
            SendState::Open => None,
            SendState::Failed(e) => Some(e.clone()),
            SendState::FinQueued | SendState::FinSent | SendState::Acked => {
                Some(ChannelError::WriteClosed)
            }
        }
    }

    pub(super) fn add_credit(&mut self, n: u32) {
        self.credit = self.credit.saturating_add(u64::from(n));
    }

    /// Counts trailers against `max`; `Err` with the total if over.
    pub(super) fn count_trailers(&mut self, list: &[String], max: usize) -> Result<(), usize> {
        let len = self.trailer_bytes + list.iter().map(|t| t.len() + 4).sum::<usize>();
        if len > max {
            return Err(len);
        }
        self.trailer_bytes = len;
        Ok(())
    }

    /// Queues the end of stream, once, if writing is still possible.
    pub(super) fn queue_fin(&mut self) -> bool {
        if self.state != SendState::Open {
            return false;
        }
        self.state = SendState::FinQueued;
        self.outbox.push_fin();
        true
    }

    /// Whether our end of stream has been confirmed: `Ok(true)` yes, `Ok(false)` not
    /// yet, `Err` never.
    pub(super) fn fin_acked(&self) -> Result<bool, ChannelError> {
        match &self.state {
            SendState::Acked => Ok(true),
            // Both ends closing at once, and we never sent anything: nothing was lost.
            SendState::Failed(ChannelError::ClosedByPeer) if !self.outbox.wrote() => Ok(true),
            SendState::Failed(e) => Err(e.clone()),
            SendState::FinQueued | SendState::FinSent => Ok(false),
            SendState::Open => Err(ChannelError::WriteClosed),
        }
    }

    /// The remote's FIN_ACK arrived; `false` if it acknowledges nothing we sent.
    pub(super) fn on_fin_ack(&mut self) -> bool {
        if self.state != SendState::FinSent {
            return false;
        }
        self.state = SendState::Acked;
        true
    }

    /// Fails the direction (unless its end was already confirmed) and drops what is
    /// queued.
    pub(super) fn fail(&mut self, e: ChannelError) {
        if !matches!(self.state, SendState::Acked | SendState::Failed(_)) {
            self.state = SendState::Failed(e);
        }
        self.outbox.clear();
    }

    pub(super) fn wants_transmit(&self) -> bool {
        self.outbox.ready(self.credit)
    }

    /// The next thing to send, within our credit and `max` bytes.
    pub(super) fn pop(&mut self, max: usize) -> Option<Next> {
        let max = (self.credit.min(max as u64)) as usize;
        let next = self.outbox.pop(max)?;
        match &next {
            Next::Data(b) | Next::Error(b) => self.credit -= b.len() as u64,
            Next::Fin => self.state = SendState::FinSent,
            Next::Control(_) => {}
        }
        Some(next)
    }
}
