//! authorized_keys and known_hosts files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = streamkit::fuzzing::authorized_keys(&text);
    let _ = streamkit::fuzzing::known_hosts(&text);
});
