//! Channels.
pub(crate) mod buffer;
pub(crate) mod state;
