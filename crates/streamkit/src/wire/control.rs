//! Control records: the per-channel signals that SSH itself cannot carry for us.
//!
//! Control records travel as SSH extended data of type [`EXT_CONTROL`](super::EXT_CONTROL),
//! so they stay ordered with the channel's data and error streams. Each record is
//! framed like a message frame, its payload starting with a kind byte:
//!
//! ```text
//! record  = length:u32be kind:u8 body       ; length counts kind and body
//! CREDIT  = 0x01 increment:u32be            ; receiver grants more window
//! TRAILERS= 0x02 *(len:u32be utf8)          ; trailers, before FIN
//! FIN     = 0x03                            ; no more data, errors or trailers
//! FIN_ACK = 0x04                            ; the peer's FIN (and all before it) arrived
//! RESET   = 0x05 code:u32be reason:utf8     ; abort the channel
//! ```
//!
//! Unknown kinds are skipped so that later versions can add optional records.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::{FrameDecoder, FrameTooLarge};

const CREDIT: u8 = 0x01;
const TRAILERS: u8 = 0x02;
const FIN: u8 = 0x03;
const FIN_ACK: u8 = 0x04;
const RESET: u8 = 0x05;

/// Longest reset reason we send; longer ones are cut at a character boundary.
pub const MAX_REASON: usize = 1024;

/// One control record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The receiver grants this many more bytes of data and error stream.
    Credit(u32),
    /// Trailers, visible to the receiver at end of stream.
    Trailers(Vec<String>),
    /// End of the sender's data and error streams.
    Fin,
    /// Acknowledges the receiver's `Fin`: everything sent before it arrived.
    FinAck,
    /// Aborts the channel.
    Reset {
        /// Reason code (see [`ResetCode`](super::reason::ResetCode)).
        code: u32,
        /// Human-readable reason.
        reason: String,
    },
    /// A kind this version does not know; skipped.
    Unknown(u8),
}

/// A control record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The record is over the size limit.
    #[error("control record too large: {0}")]
    TooLarge(#[from] FrameTooLarge),
    /// The record body does not match its kind.
    #[error("malformed control record: {0}")]
    Malformed(&'static str),
}

impl Control {
    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0); // patched below
        match self {
            Control::Credit(n) => {
                out.put_u8(CREDIT);
                out.put_u32(*n);
            }
            Control::Trailers(list) => {
                out.put_u8(TRAILERS);
                for t in list {
                    out.put_u32(u32::try_from(t.len()).unwrap_or(u32::MAX));
                    out.put_slice(t.as_bytes());
                }
            }
            Control::Fin => out.put_u8(FIN),
            Control::FinAck => out.put_u8(FIN_ACK),
            Control::Reset { code, reason } => {
                out.put_u8(RESET);
                out.put_u32(*code);
                out.put_slice(truncate(reason, MAX_REASON).as_bytes());
            }
            Control::Unknown(kind) => out.put_u8(*kind),
        }
        let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Decodes one record payload (kind byte and body).
    pub fn decode(mut payload: Bytes) -> Result<Control, ControlError> {
        if payload.is_empty() {
            return Err(ControlError::Malformed("empty record"));
        }
        let kind = payload.get_u8();
        let rec = match kind {
            CREDIT => {
                if payload.len() != 4 {
                    return Err(ControlError::Malformed("CREDIT body must be 4 bytes"));
                }
                Control::Credit(payload.get_u32())
            }
            TRAILERS => {
                let mut list = Vec::new();
                while payload.has_remaining() {
                    if payload.len() < 4 {
                        return Err(ControlError::Malformed("truncated trailer length"));
                    }
                    let len = payload.get_u32() as usize;
                    if payload.len() < len {
                        return Err(ControlError::Malformed(
                            "trailer past the end of the record",
                        ));
                    }
                    let s = payload.split_to(len);
                    let s = String::from_utf8(s.to_vec())
                        .map_err(|_| ControlError::Malformed("trailer is not UTF-8"))?;
                    list.push(s);
                }
                Control::Trailers(list)
            }
            FIN | FIN_ACK => {
                if !payload.is_empty() {
                    return Err(ControlError::Malformed("FIN and FIN_ACK have no body"));
                }
                if kind == FIN {
                    Control::Fin
                } else {
                    Control::FinAck
                }
            }
            RESET => {
                if payload.len() < 4 {
                    return Err(ControlError::Malformed("RESET body too short"));
                }
                let code = payload.get_u32();
                let reason = String::from_utf8(payload.to_vec())
                    .map_err(|_| ControlError::Malformed("reset reason is not UTF-8"))?;
                Control::Reset { code, reason }
            }
            other => Control::Unknown(other),
        };
        Ok(rec)
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Incremental decoder of a control-record stream.
#[derive(Debug)]
pub struct ControlDecoder {
    frames: FrameDecoder,
}

impl ControlDecoder {
    /// A decoder refusing records over `max` bytes.
    pub fn new(max: usize) -> ControlDecoder {
        ControlDecoder {
            frames: FrameDecoder::new(max),
        }
    }

    /// Feeds bytes in, appending decoded records to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Control>) -> Result<(), ControlError> {
        let mut err = None;
        self.frames.push(input, |payload| {
            if err.is_none() {
                match Control::decode(payload) {
                    Ok(rec) => out.push(rec),
                    Err(e) => err = Some(e),
                }
            }
        })?;
        err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn control() -> impl Strategy<Value = Control> {
        prop_oneof![
            any::<u32>().prop_map(Control::Credit),
            proptest::collection::vec("\\PC*", 0..5).prop_map(Control::Trailers),
            Just(Control::Fin),
            Just(Control::FinAck),
            (any::<u32>(), "\\PC{0,50}").prop_map(|(code, reason)| Control::Reset { code, reason }),
            (6u8..).prop_map(Control::Unknown),
        ]
    }

    #[test]
    fn reasons_are_truncated_on_a_boundary() {
        let long = "é".repeat(MAX_REASON);
        let mut buf = BytesMut::new();
        Control::Reset {
            code: 1,
            reason: long,
        }
        .encode(&mut buf);
        let mut out = Vec::new();
        ControlDecoder::new(4096).push(&buf, &mut out).unwrap();
        match &out[0] {
            Control::Reset { reason, .. } => assert!(reason.len() <= MAX_REASON),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        let cases: &[&[u8]] = &[
            &[0, 0, 0, 0],
            &[0, 0, 0, 2, CREDIT, 1],
            &[0, 0, 0, 2, FIN, 0],
            &[0, 0, 0, 3, RESET, 0, 0],
            &[0, 0, 0, 3, TRAILERS, 0, 0],
            &[0, 0, 0, 6, TRAILERS, 0, 0, 0, 9, b'x'],
            &[0, 0, 0, 7, TRAILERS, 0, 0, 0, 2, 0xff, 0xfe],
        ];
        for case in cases {
            let mut out = Vec::new();
            assert!(
                ControlDecoder::new(100).push(case, &mut out).is_err(),
                "{case:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn round_trip_at_every_split(
            records in proptest::collection::vec(control(), 0..6),
            split in any::<proptest::sample::Index>(),
        ) {
            let mut wire = BytesMut::new();
            for r in &records {
                r.encode(&mut wire);
            }
            let at = split.index(wire.len() + 1);
            let mut dec = ControlDecoder::new(64 * 1024);
            let mut out = Vec::new();
            dec.push(&wire[..at], &mut out).unwrap();
            dec.push(&wire[at..], &mut out).unwrap();
            prop_assert_eq!(out, records);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut out = Vec::new();
            let _ = ControlDecoder::new(256).push(&bytes, &mut out);
        }
    }
}
