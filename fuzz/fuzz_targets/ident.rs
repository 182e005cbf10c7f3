//! SSH identification lines from the network.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = streamkit::wire::ident::parse_ident(data) {
        if let Some(name) = id.name {
            assert!(streamkit::wire::ident::validate_peer_name(&name).is_ok());
        }
    }
});
