//! The parts of the wire protocol that are ours, free of I/O.
//!
//! Everything here is a pure function or a small state machine over bytes, so it can
//! be unit-tested, property-tested and fuzzed without sockets. `docs/PROTOCOL.md`
//! describes the same encodings for someone writing a compatible peer.

pub mod control;
pub mod frame;
pub mod ident;
pub mod open;
pub mod reason;
pub mod relay;

/// SSH extended-data type code of the error stream (RFC 4254 §5.2: `SSH_EXTENDED_DATA_STDERR`).
pub const EXT_ERROR: u32 = 1;

/// SSH extended-data type code of the control-record stream ("sk" in ASCII).
///
/// Only peers that announced protocol version 1 in their identification string send
/// or expect it.
pub const EXT_CONTROL: u32 = 0x736b;

/// Credit each side may use on a new channel before it hears from the other side.
///
/// Every channel starts with this much credit in both directions; a receiver with a
/// larger window grants the difference with its first `CREDIT` record.
pub const INITIAL_CREDIT: u32 = 64 * 1024;

/// Version of the native protocol announced in the identification string.
pub const PROTOCOL_VERSION: u32 = 1;
