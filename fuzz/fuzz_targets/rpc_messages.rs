//! RPC messages and codec payloads from a hostile peer: decoding never panics, and
//! what decodes encodes back to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamkit_rpc::wire::Message;

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    if let Ok(m) = Message::decode(&frame) {
        assert_eq!(Message::decode(&m.encode()).as_ref(), Ok(&m));
    }
    if let Some((&c, rest)) = data.split_first() {
        let codec = streamkit_rpc::Codec::ALL[usize::from(c) % streamkit_rpc::Codec::ALL.len()];
        let _ = <serde_json::Value as streamkit_rpc::Message>::decode(codec, rest);
    }
});
