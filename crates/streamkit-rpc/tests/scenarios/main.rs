//! RPC scenarios: real peers, every call shape and codec, the wire spoken by hand,
//! and the plugin example run as its two processes. One test binary with a module
//! per theme; nextest runs each test in a process of its own.
#![allow(clippy::unwrap_used)]

mod calls;
mod plugin_example;
mod raw_session;
