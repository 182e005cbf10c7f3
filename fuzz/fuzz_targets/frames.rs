//! Frame decoding: bounded, split-independent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use streamkit::wire::frame::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let at = usize::from(split).min(data.len());
    let mut a = Vec::new();
    let ra = FrameDecoder::new(1024).push(data, |f| a.push(f));
    let mut b = Vec::new();
    let mut dec = FrameDecoder::new(1024);
    let rb = dec.push(&data[..at], |f| b.push(f)).and_then(|()| dec.push(&data[at..], |f| b.push(f)));
    assert_eq!(ra, rb);
    assert_eq!(a, b);
    assert!(dec.buffered() <= 1024 + 4);
});
