//! Scenario tests of the library: two or three peers, real connections, real
//! data, checked byte for byte. One test binary (one build, one link) with a
//! module per theme; nextest runs each test in a process of its own.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

mod adversaries;
mod bad_clients;
mod churn;
mod conformance;
mod hub;
mod inproc;
mod localtunnel;
mod peers;
mod raw_wire;
mod resilience;
