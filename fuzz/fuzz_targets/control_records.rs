//! Control records: any split of the stream decodes the same, and decoded records round-trip.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use streamkit::wire::control::ControlDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let at = usize::from(split).min(data.len());
    let mut whole = Vec::new();
    let r1 = ControlDecoder::new(4096).push(data, &mut whole);
    let mut parts = Vec::new();
    let mut dec = ControlDecoder::new(4096);
    let r2 = dec.push(&data[..at], &mut parts).and_then(|()| dec.push(&data[at..], &mut parts));
    assert_eq!(r1.is_ok(), r2.is_ok());
    if r1.is_ok() {
        assert_eq!(whole, parts);
        let mut wire = BytesMut::new();
        for rec in &whole {
            rec.encode(&mut wire);
        }
        let mut back = Vec::new();
        ControlDecoder::new(1 << 20).push(&wire, &mut back).expect("re-decodes");
        assert_eq!(back.len(), whole.len());
    }
});
