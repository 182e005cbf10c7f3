#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Streamkit (work in progress).

pub mod error;
pub mod wire;
mod channel;
pub mod endpoint;
