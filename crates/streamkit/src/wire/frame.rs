//! Message frames: a `u32` big-endian length, then that many bytes.
//!
//! Frames travel inside a channel's byte stream (so any SSH client can speak them)
//! and, for error frames, inside its error stream. A decoder never allocates the
//! announced length up front: it refuses lengths over its limit as soon as the four
//! header bytes are in, and grows its buffer only as bytes arrive.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// First allocation for a frame body; the buffer grows as bytes arrive.
const INITIAL_BODY: usize = 16 * 1024;

/// A frame announced a length over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes is over the limit of {max}")]
pub struct FrameTooLarge {
    /// The announced length.
    pub len: u64,
    /// The limit.
    pub max: usize,
}

/// Appends one frame (header and payload) to `out`.
pub fn encode(payload: &[u8], out: &mut BytesMut) {
    out.reserve(HEADER_LEN + payload.len());
    // Callers check the payload against the frame limit, which is below u32::MAX.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
}

/// Incremental decoder of a stream of frames.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    body: BytesMut,
    remaining: usize,
    in_body: bool,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            max,
            header: [0; HEADER_LEN],
            header_len: 0,
            body: BytesMut::new(),
            remaining: 0,
            in_body: false,
        }
    }

    /// Bytes held for a frame not yet complete.
    pub fn buffered(&self) -> usize {
        self.header_len + self.body.len()
    }

    /// True between frames (no partial frame held).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && !self.in_body
    }

    /// Feeds bytes in; calls `emit` for every complete frame.
    ///
    /// After an error the decoder is poisoned: the stream cannot be resynchronised.
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut emit: impl FnMut(Bytes),
    ) -> Result<(), FrameTooLarge> {
        while !input.is_empty() {
            if !self.in_body {
                let take = (HEADER_LEN - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&input[..take]);
                self.header_len += take;
                input = &input[take..];
                if self.header_len < HEADER_LEN {
                    return Ok(());
                }
                let len = u32::from_be_bytes(self.header) as usize;
                if len > self.max {
                    return Err(FrameTooLarge {
                        len: len as u64,
                        max: self.max,
                    });
                }
                self.header_len = 0;
                if len == 0 {
                    emit(Bytes::new());
                    continue;
                }
                self.in_body = true;
                self.remaining = len;
                self.body = BytesMut::with_capacity(len.min(INITIAL_BODY));
            }
            let take = self.remaining.min(input.len());
            if self.body.is_empty() && take == self.remaining {
                // The whole body is in this chunk: one copy, exact size.
                emit(Bytes::copy_from_slice(&input[..take]));
            } else {
                self.body.extend_from_slice(&input[..take]);
                if take == self.remaining {
                    emit(std::mem::take(&mut self.body).freeze());
                }
            }
            self.remaining -= take;
            input = &input[take..];
            if self.remaining == 0 {
                self.in_body = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(max: usize, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameTooLarge> {
        let mut dec = FrameDecoder::new(max);
        let mut out = Vec::new();
        for c in chunks {
            dec.push(c, |f| out.push(f.to_vec()))?;
        }
        Ok(out)
    }

    #[test]
    fn oversize_is_refused_at_the_header() {
        let err = decode_all(1024, &[&[0xff, 0xff, 0xff, 0xff]]).unwrap_err();
        assert_eq!(
            err,
            FrameTooLarge {
                len: u32::MAX as u64,
                max: 1024
            }
        );
    }

    #[test]
    fn empty_frames_are_frames() {
        assert_eq!(
            decode_all(10, &[&[0, 0, 0, 0, 0, 0, 0, 0]]).unwrap(),
            vec![Vec::<u8>::new(), Vec::new()]
        );
    }

    #[test]
    fn big_announced_frame_allocates_on_demand() {
        let mut dec = FrameDecoder::new(1 << 30);
        dec.push(&(1u32 << 29).to_be_bytes(), |_| {}).unwrap();
        dec.push(&[1, 2, 3], |_| {}).unwrap();
        assert!(dec.body.capacity() <= INITIAL_BODY);
        assert_eq!(dec.buffered(), 3);
    }

    proptest! {
        #[test]
        fn round_trip_at_every_split(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            split in any::<proptest::sample::Index>(),
        ) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode(f, &mut wire);
            }
            let at = split.index(wire.len() + 1);
            let (a, b) = wire.split_at(at);
            prop_assert_eq!(decode_all(300, &[a, b]).unwrap(), frames.clone());
            // One byte at a time.
            let singles: Vec<&[u8]> = wire.chunks(1).collect();
            prop_assert_eq!(decode_all(300, &singles).unwrap(), frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_all(64, &[&bytes]);
        }
    }
}
