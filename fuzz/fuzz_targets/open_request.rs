//! The channel-open request: decoding never panics, and what decodes re-encodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamkit::wire::open::OpenRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(req) = OpenRequest::decode(text, 256 * 1024) {
        let again = req.encode(256 * 1024).expect("a decoded request encodes");
        assert_eq!(OpenRequest::decode(&again, 256 * 1024).expect("re-decodes"), req);
    }
});
