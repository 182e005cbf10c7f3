//! One channel's state machine under hostile input and arbitrary application calls.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| streamkit::fuzzing::channel_state(data));
