//! Per-handle read and write timeouts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::ChannelError;

/// Fails an operation that stays pending longer than the timeout.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    timeout: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Timer {
    pub(crate) fn new(timeout: Option<Duration>) -> Timer {
        Timer {
            timeout,
            sleep: None,
        }
    }

    pub(crate) fn set(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        self.sleep = None;
    }

    /// Starts timing a new operation.
    pub(crate) fn restart(&mut self) {
        self.sleep = None;
    }

    /// Passes a result through; a pending one turns into `TimedOut` once it has
    /// been pending for the timeout. The clock starts at the first pending poll.
    pub(crate) fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<Result<T, ChannelError>>,
    ) -> Poll<Result<T, ChannelError>> {
        if r.is_ready() {
            self.sleep = None;
            return r;
        }
        let Some(d) = self.timeout else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.sleep = None;
            return Poll::Ready(Err(ChannelError::TimedOut(d)));
        }
        Poll::Pending
    }
}
