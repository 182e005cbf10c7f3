//! What the application does to channels (beyond reading and writing, which go
//! straight to each channel's state), and the turns channels take to send.

use super::*;

impl ConnectionState {
    // ------------------------------------------------------------------
    // The application
    // ------------------------------------------------------------------

    /// Runs a channel operation for the application. `None` if the channel is gone.
    pub(crate) fn op<R>(
        &mut self,
        key: ChannelKey,
        f: impl FnOnce(&mut ChannelState) -> (R, Wake),
    ) -> Option<R> {
        self.with(key, f)
    }

    /// `close()`: orderly close; children are reset. If the remote has not taken
    /// everything within the close timeout, the channel is reset.
    pub(crate) fn close(&mut self, key: ChannelKey, now: Instant) -> Option<Step<()>> {
        let step = self.with(key, |s| s.close())?;
        self.close_children(key);
        if matches!(step, Step::Pending) {
            self.linger(key, now);
        }
        Some(step)
    }

    /// Sets `key`'s close deadline, once.
    fn linger(&mut self, key: ChannelKey, now: Instant) {
        self.linger_until(key, now + self.limits.close_timeout);
    }

    /// Sets `key`'s deadline to `at`, once: past it, the channel is reset if it has
    /// not finished (or, a standard client's session, started).
    pub(super) fn linger_until(&mut self, key: ChannelKey, at: Instant) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if e.linger.is_some() || e.ssh.is_none() || e.state.is_closed() {
            return;
        }
        e.linger = Some(at);
        self.lingering.insert((at, key));
        if self.lingering.first() == Some(&(at, key))
            && self.deadlines.first().is_none_or(|(d, _)| at < *d)
        {
            self.wake.driver = true;
        }
    }

    /// Close deadlines passed: channels that have not finished are reset (a
    /// standard client's session that never started is closed).
    pub(super) fn handle_close_timeouts(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.lingering.first() {
            if at > now {
                break;
            }
            self.lingering.pop_first();
            if let Some(e) = self.entries.get_mut(&key)
                && e.linger == Some(at)
            {
                e.linger = None;
                let after = match e.phase {
                    Phase::Session { .. } => self.limits.session_timeout,
                    _ => self.limits.close_timeout,
                };
                self.with(key, |s| ((), s.on_close_timeout(after)));
                self.close_children(key);
            }
        }
    }

    /// `reset()`: abort; children are reset.
    pub(crate) fn reset(&mut self, key: ChannelKey) {
        self.with(key, |s| ((), s.reset()));
        self.close_children(key);
    }

    pub(crate) fn reader_dropped(&mut self, key: ChannelKey, now: Instant) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        e.holder.take_from_queue();
        if let Holder::App { writer, .. } = e.holder {
            e.holder = Holder::App {
                reader: false,
                writer,
            };
            if writer {
                self.with(key, |s| ((), s.reader_dropped()));
            } else {
                self.release(key);
                self.linger(key, now);
            }
        }
    }

    pub(crate) fn writer_dropped(&mut self, key: ChannelKey, now: Instant) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        e.holder.take_from_queue();
        if let Holder::App { reader, .. } = e.holder {
            e.holder = Holder::App {
                reader,
                writer: false,
            };
            if reader {
                // Like a socket's write half: dropping it ends the stream.
                self.with(key, |s| {
                    let (_, w) = s.close_write();
                    ((), w)
                });
            } else {
                self.release(key);
                self.linger(key, now);
            }
        }
    }

    /// Nobody holds the channel any more: it finishes gracefully (a child that was
    /// never accepted is reset instead: its opener must see an error, not an empty
    /// reply).
    pub(super) fn release(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let handed = e.holder != Holder::Queued;
        e.holder = Holder::Released;
        if handed {
            self.with(key, |s| ((), s.released()));
        } else {
            self.with(key, |s| ((), s.reset()));
        }
        self.close_children(key);
        self.maybe_remove(key);
    }

    /// A top-level channel the application never took (its accept queue was
    /// closed or dropped with it): reset, so its opener sees an error.
    pub(crate) fn refuse_unaccepted(&mut self, key: ChannelKey) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.holder = Holder::Queued;
            self.release(key);
        }
    }

    /// The local peer shut down and `key` did not finish in time: reset.
    pub(crate) fn shutdown(&mut self, key: ChannelKey) {
        self.with(key, |s| ((), s.on_shutdown()));
    }

    // ------------------------------------------------------------------
    // To the transport
    // ------------------------------------------------------------------

    /// The channel whose turn it is to send, if any. Channels take turns of
    /// [`TURN_BUDGET`] bytes, so small writes of many channels share the connection
    /// fairly while each stays in order.
    pub(crate) fn next_sender(&mut self) -> Option<ChannelKey> {
        if let Some((key, _)) = self.turn {
            return Some(key);
        }
        let key = self.ready.pop_front()?;
        if let Some(e) = self.entries.get_mut(&key) {
            e.scheduled = false;
        }
        self.turn = Some((key, 0));
        Some(key)
    }

    /// What `key` (whose turn it is) sends next, at most `max` bytes of data;
    /// `None` ends its turn.
    pub(crate) fn poll_transmit(&mut self, key: ChannelKey, max: usize) -> Option<Transmit> {
        if self.turn.map(|(k, _)| k) != Some(key) {
            return None;
        }
        let routed = self.entries.get(&key).is_some_and(|e| e.ssh.is_some());
        let t = if routed {
            self.with(key, |s| s.poll_transmit(max)).flatten()
        } else {
            None
        };
        let Some(t) = t else {
            self.turn = None;
            return None;
        };
        if let Transmit::Data(b) | Transmit::Error(b) = &t
            && let Some((_, sent)) = &mut self.turn
        {
            *sent += b.len();
            if *sent >= TURN_BUDGET {
                self.turn = None;
                if self
                    .entries
                    .get(&key)
                    .is_some_and(|e| e.state.wants_transmit())
                {
                    self.schedule(key);
                }
            }
        }
        if matches!(t, Transmit::Close { .. }) {
            self.turn = None;
            self.closed(key);
        }
        Some(t)
    }
}
