//! The `streamkit` binary, driven as a user would: real processes, real keys,
//! real sockets, and standard SSH clients against it. One test binary with a
//! module per theme; nextest runs each test in a process of its own.
#![allow(clippy::unwrap_used)]

mod common;

mod commands;
mod hub;
mod nat;
mod restart;
mod ssh_clients;
mod tunnels;
