//! One connection between two peers: its channels' state, free of I/O, and the one
//! driver that feeds it.
//!
//! ```text
//!  application (Channel, ReadHalf, WriteHalf)       transport (russh handler, inproc)
//!        │ read, write, open, close, ...                 │ open request, data, EOF, CLOSE, lost
//!        ▼                                               ▼
//!  ┌──────────────────────── Conn: one lock, held for one step ─────────────────────┐
//!  │  ConnectionState: channel table, open ids and nesting, pending opens, accept   │
//!  │  queues of children, credit and buffers, deadlines. No tokio, no sockets.      │
//!  └───────────────┬────────────────────────────────────────────────────────────────┘
//!                  │ transmits, commands (open, answer), deadlines
//!                  ▼
//!          driver task ──▶ Link (the transport: russh channels, or the other inproc side)
//! ```
//!
//! Every event, whichever task brings it, is one synchronous step on the state
//! under the connection's lock; nothing awaits while holding it. Orderings that
//! used to be races ("the confirmation arrived before the opener claimed the
//! channel") are events in some order, which the state handles and the simulation
//! in `sim.rs` explores.

pub(crate) mod accept;
pub(crate) mod driver;
pub(crate) mod handle;
pub(crate) mod join;
pub(crate) mod state;
mod timer;

#[cfg(test)]
mod sim;

pub(crate) use driver::{Conn, ConnInfo, Link, Observer, OpenFailed, SendFailed};
pub(crate) use state::{
    COMPAT_INITIAL_WINDOW, ChannelKey, ForwardedTcpip, Incoming, Limits, Meta, OpenWire, PeerBudget,
};
