//! One channel's protocol state, without I/O.
//!
//! A [`ChannelState`] is fed what arrives from the network (`on_*`), is driven by
//! the application (`read`, `write`, `close_write`, ...) and tells the transport
//! what to send next ([`ChannelState::poll_transmit`]). Every call returns a
//! [`Wake`] saying which waiters it made ready; the state never blocks, sleeps,
//! reads a clock or touches a socket.
//!
//! Between two Streamkit peers a channel is [`Native`]: its two directions are a
//! send half and a receive half, each an enum of states (see `send.rs`, `recv.rs`),
//! over an SSH channel whose life is another (see `native.rs`). With a standard SSH
//! client it is [`Compat`], a type of its own (see `compat.rs`).
//!
//! Flow control: the receiver grants credit for bytes of data and error stream;
//! every channel starts with [`INITIAL_CREDIT`](crate::wire::INITIAL_CREDIT) each
//! way, and nothing more until the application has the channel. A receiver
//! re-grants what the application consumed once that reaches half its window, so
//! the bytes held for a channel never exceed its window, whatever the application
//! does; and never past the allowance its connection's memory budget sets. A sender that exceeds its credit is a protocol violation and
//! gets the channel reset.

pub(crate) mod buffer;
mod compat;
mod headers;
mod inbox;
mod native;
mod outbox;
mod recv;
mod send;

pub use headers::Headers;

use bytes::Bytes;

pub(crate) use compat::Compat;
pub(crate) use native::Native;

use crate::error::ChannelError;

/// Limits and sizes for one channel.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Receive window: most bytes the peer may have outstanding (at least
    /// [`INITIAL_CREDIT`](crate::wire::INITIAL_CREDIT)). Where the window starts;
    /// see `max_window`.
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
    pub(crate) fn all() -> Wake {
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

/// What the transport should send next on a channel.
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
    /// A standard client's end of stream: SSH `CHANNEL_EOF`, after an `exit-status`
    /// request when one is given.
    Eof { exit_status: Option<u32> },
    /// A standard client may send this much more (SSH `CHANNEL_WINDOW_ADJUST`).
    WindowAdjust(u32),
}

/// Outcome of a non-blocking operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step<T> {
    Ready(T),
    Pending,
    Failed(ChannelError),
}

/// One channel's state: ours, or a standard SSH client's.
// Nearly every channel is native: boxing it would add an allocation to the
// common case to save memory in the rare one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ChannelState {
    Native(Native),
    Compat(Compat),
}

macro_rules! dispatch {
    ($(
        $(#[$doc:meta])*
        fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty;
    )*) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name(&mut self $(, $arg: $ty)*) -> $ret {
                match self {
                    ChannelState::Native(c) => c.$name($($arg),*),
                    ChannelState::Compat(c) => c.$name($($arg),*),
                }
            }
        )*
    };
}

macro_rules! observe {
    ($(
        $(#[$doc:meta])*
        fn $name:ident(&self) -> $ret:ty;
    )*) => {
        $(
            $(#[$doc])*
            pub(crate) fn $name(&self) -> $ret {
                match self {
                    ChannelState::Native(c) => c.$name(),
                    ChannelState::Compat(c) => c.$name(),
                }
            }
        )*
    };
}

impl ChannelState {
    pub(crate) fn native(cfg: Config) -> ChannelState {
        ChannelState::Native(Native::new(cfg))
    }

    /// A standard client's channel; `initial_window` is the SSH window this side
    /// advertised for it, `session` whether it reports an exit status.
    pub(crate) fn compat(cfg: Config, initial_window: u32, session: bool) -> ChannelState {
        ChannelState::Compat(Compat::new(cfg, initial_window, session))
    }

    observe! {
        /// Bytes held for the reader: data, error frames, a frame being assembled.
        fn buffered(&self) -> usize;
        /// Bytes written and not yet handed to the transport.
        fn send_buffered(&self) -> usize;
        /// The SSH channel is closed on this side: the connection can forget it.
        fn is_closed(&self) -> bool;
        /// Channels may still be opened inside this one.
        fn accepts_children(&self) -> bool;
        /// Reset (either way): nothing is left to read.
        fn has_failed(&self) -> bool;
        /// Reset, or its connection lost before the end of its stream: nothing an
        /// application could use is left.
        fn is_dead(&self) -> bool;
        /// Why sending failed, if it did.
        fn send_failure(&self) -> Option<ChannelError>;
        /// Something waits to be sent now.
        fn wants_transmit(&self) -> bool;
        /// Bytes the channel costs its connection's memory budget: credit granted
        /// and not used, plus what it holds.
        fn charge(&self) -> u64;
        /// A grant was cut short by the budget: worth retrying when it has room.
        fn held_back(&self) -> bool;
        /// A frame larger than what has arrived is being assembled.
        fn assembling(&self) -> bool;
    }

    /// The most the channel may cost its connection's budget; grants stay within it.
    pub(crate) fn set_allowance(&mut self, bytes: u64) {
        match self {
            ChannelState::Native(c) => c.set_allowance(bytes),
            ChannelState::Compat(c) => c.set_allowance(bytes),
        }
    }

    /// The remote's trailers, once its end of stream arrived.
    pub(crate) fn trailers(&self) -> Option<&[String]> {
        match self {
            ChannelState::Native(c) => c.trailers(),
            ChannelState::Compat(c) => c.trailers(),
        }
    }

    dispatch! {
        /// Grants the rest of the window; once the application has the channel.
        fn open_window(&mut self) -> Wake;
        /// Grants what the budget now allows, after a grant was cut short.
        fn regrant(&mut self) -> Wake;
        /// Whether channels opened inside this one are open.
        fn set_has_children(&mut self, has: bool) -> Wake;
        /// SSH channel data arrived.
        fn on_data(&mut self, data: Bytes) -> Wake;
        /// SSH extended data arrived.
        fn on_extended(&mut self, ext: u32, data: &[u8]) -> Wake;
        /// SSH EOF arrived.
        fn on_eof(&mut self) -> Wake;
        /// The remote closed the SSH channel (the SSH layer answered with its own close).
        fn on_close(&mut self) -> Wake;
        /// The connection is gone.
        fn on_connection_lost(&mut self, e: &ChannelError) -> Wake;
        /// The parent channel closed: this one is reset.
        fn on_parent_closed(&mut self) -> Wake;
        /// The local peer shut down and the channel did not finish in time.
        fn on_shutdown(&mut self) -> Wake;
        /// A close (or dropped handles) did not finish within the close timeout.
        fn on_close_timeout(&mut self, after: std::time::Duration) -> Wake;
        /// Reads bytes; `Ready(0)` is the end of stream (unless `buf` is empty).
        fn read(&mut self, buf: &mut [u8]) -> (Step<usize>, Wake);
        /// Takes up to `max` bytes without copying; empty at the end of stream. A
        /// large read copies them outside the connection's lock.
        fn read_owned(&mut self, max: usize) -> (Step<Bytes>, Wake);
        /// Reads one frame; `Ready(None)` is a clean end of stream between frames.
        fn read_frame(&mut self) -> (Step<Option<Bytes>>, Wake);
        /// Reads one error frame; `Ready(None)` once the stream ended with none left.
        fn read_error(&mut self) -> (Step<Option<Bytes>>, Wake);
        /// The reading half was dropped: discard what arrives, keep crediting.
        fn reader_dropped(&mut self) -> Wake;
        /// Writes bytes, as many as fit in the send buffer.
        fn write(&mut self, data: &[u8]) -> (Step<usize>, Wake);
        /// How many bytes `write_owned` takes now (waits while none).
        fn write_room(&mut self) -> (Step<usize>, Wake);
        /// Writes bytes already copied out of the caller's buffer (at most what
        /// `write_room` reported): a large write copies outside the connection's lock.
        fn write_owned(&mut self, data: Bytes) -> (Step<usize>, Wake);
        /// Writes one frame on the data stream or the error stream.
        fn write_frame(&mut self, payload: &[u8], error_stream: bool) -> (Step<()>, Wake);
        /// Queues trailers after everything written so far.
        fn write_trailers(&mut self, trailers: Vec<String>) -> (Step<()>, Wake);
        /// Queues the end of stream (once); ready once the remote confirmed it.
        fn close_write(&mut self) -> (Step<()>, Wake);
        /// Orderly close; ready once our end of stream was confirmed.
        fn close(&mut self) -> (Step<()>, Wake);
        /// Aborts the channel.
        fn reset(&mut self) -> Wake;
        /// Every handle was dropped: finish gracefully in the background.
        fn released(&mut self) -> Wake;
        /// The next thing to send, at most `max` bytes of data.
        fn poll_transmit(&mut self, max: usize) -> (Option<Transmit>, Wake);
    }
}

#[cfg(test)]
mod tests;
