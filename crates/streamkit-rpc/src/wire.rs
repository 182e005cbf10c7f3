//! The RPC messages, one per channel frame. Pure functions over bytes, so they can
//! be unit-tested, property-tested and fuzzed without sockets.
//!
//! Every message starts with a kind byte and the call id (an unsigned LEB128
//! varint); see `docs/PROTOCOL.md`, "RPC", for the layout of each kind.

use bytes::{BufMut, Bytes, BytesMut};

/// Longest method name accepted on the wire.
pub const MAX_METHOD_LEN: usize = 1024;
/// Most methods a catalogue may list.
pub const MAX_METHODS: usize = 65_536;

const CALL: u8 = 1;
const ITEM: u8 = 2;
const END: u8 = 3;
const ERROR: u8 = 4;
const CANCEL: u8 = 5;
const CREDIT: u8 = 6;
const METHODS: u8 = 7;

/// `Call` flag: an input object follows.
const HAS_INPUT: u8 = 1;
/// `Call` and `Item` flag: this direction ends with this message.
const LAST: u8 = 2;

/// One RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Starts call `id` (caller to callee).
    Call {
        /// Chosen by the caller, unique among its open calls on the session.
        id: u64,
        /// The method's registered name.
        method: String,
        /// The time left for the call, in microseconds; 0 means none.
        budget_us: u64,
        /// The first input object, if sent with the call.
        input: Option<Bytes>,
        /// No input follows.
        last: bool,
    },
    /// One object: an input (caller to callee) or an output (callee to caller).
    Item {
        /// The call.
        id: u64,
        /// The encoded object.
        payload: Bytes,
        /// No object follows in this direction.
        last: bool,
    },
    /// No object follows in this direction (for the callee: the call succeeded).
    End {
        /// The call.
        id: u64,
    },
    /// The call failed (callee to caller); id 0 fails the whole session.
    Error {
        /// The call.
        id: u64,
        /// The error code.
        code: u32,
        /// A human-readable message.
        message: String,
        /// Optional details, encoded with the session's codec.
        data: Option<Bytes>,
    },
    /// The caller gave up on the call.
    Cancel {
        /// The call.
        id: u64,
    },
    /// The receiver of a call's objects consumed this many bytes: the sender may
    /// send that many more.
    Credit {
        /// The call.
        id: u64,
        /// Bytes granted.
        bytes: u64,
    },
    /// The callee's catalogue of methods (sent first on every session, and again
    /// when it changes).
    Methods {
        /// Registered method names.
        names: Vec<String>,
    },
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended early.
    #[error("truncated rpc message")]
    Truncated,
    /// Unknown kind byte.
    #[error("unknown rpc message kind {0}")]
    UnknownKind(u8),
    /// A varint longer than 64 bits.
    #[error("malformed varint")]
    BadVarint,
    /// A string that is not UTF-8 or is too long.
    #[error("bad string: {0}")]
    BadString(&'static str),
    /// Bytes after the end of a message that has no payload.
    #[error("trailing bytes after rpc message")]
    Trailing,
    /// Unknown flag bits.
    #[error("unknown flags {0:#x}")]
    BadFlags(u8),
    /// Well-formed, but not allowed (a catalogue with an id, too many methods).
    #[error("invalid rpc message: {0}")]
    Invalid(&'static str),
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_str(buf: &mut BytesMut, s: &str) {
    put_varint(buf, s.len() as u64);
    buf.put_slice(s.as_bytes());
}

impl Message {
    /// The call this message belongs to (0 for session-wide messages).
    pub fn id(&self) -> u64 {
        match self {
            Message::Call { id, .. }
            | Message::Item { id, .. }
            | Message::End { id }
            | Message::Error { id, .. }
            | Message::Cancel { id }
            | Message::Credit { id, .. } => *id,
            Message::Methods { .. } => 0,
        }
    }

    /// Encodes the message as one frame's payload.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(16 + self.payload_len());
        match self {
            Message::Call {
                id,
                method,
                budget_us,
                input,
                last,
            } => {
                b.put_u8(CALL);
                put_varint(&mut b, *id);
                let flags =
                    if input.is_some() { HAS_INPUT } else { 0 } | if *last { LAST } else { 0 };
                b.put_u8(flags);
                put_str(&mut b, method);
                put_varint(&mut b, *budget_us);
                if let Some(p) = input {
                    b.put_slice(p);
                }
            }
            Message::Item { id, payload, last } => {
                b.put_u8(ITEM);
                put_varint(&mut b, *id);
                b.put_u8(if *last { LAST } else { 0 });
                b.put_slice(payload);
            }
            Message::End { id } => {
                b.put_u8(END);
                put_varint(&mut b, *id);
            }
            Message::Error {
                id,
                code,
                message,
                data,
            } => {
                b.put_u8(ERROR);
                put_varint(&mut b, *id);
                put_varint(&mut b, u64::from(*code));
                put_str(&mut b, message);
                if let Some(d) = data {
                    b.put_u8(1);
                    b.put_slice(d);
                } else {
                    b.put_u8(0);
                }
            }
            Message::Cancel { id } => {
                b.put_u8(CANCEL);
                put_varint(&mut b, *id);
            }
            Message::Credit { id, bytes } => {
                b.put_u8(CREDIT);
                put_varint(&mut b, *id);
                put_varint(&mut b, *bytes);
            }
            Message::Methods { names } => {
                b.put_u8(METHODS);
                put_varint(&mut b, 0);
                put_varint(&mut b, names.len() as u64);
                for n in names {
                    put_str(&mut b, n);
                }
            }
        }
        b.freeze()
    }

    fn payload_len(&self) -> usize {
        match self {
            Message::Call { input, method, .. } => {
                method.len() + input.as_ref().map_or(0, Bytes::len)
            }
            Message::Item { payload, .. } => payload.len(),
            Message::Error { message, data, .. } => {
                message.len() + data.as_ref().map_or(0, Bytes::len)
            }
            Message::Methods { names } => names.iter().map(|n| n.len() + 2).sum(),
            _ => 0,
        }
    }

    /// Decodes one frame's payload. Payloads are slices of `frame`, not copies.
    pub fn decode(frame: &Bytes) -> Result<Message, DecodeError> {
        let mut r = Reader { buf: frame, pos: 0 };
        let kind = r.u8()?;
        let id = r.varint()?;
        let msg = match kind {
            CALL => {
                let flags = r.u8()?;
                if flags & !(HAS_INPUT | LAST) != 0 {
                    return Err(DecodeError::BadFlags(flags));
                }
                let method = r.string(MAX_METHOD_LEN)?;
                let budget_us = r.varint()?;
                let input = if flags & HAS_INPUT != 0 {
                    Some(r.rest())
                } else {
                    r.done()?;
                    None
                };
                Message::Call {
                    id,
                    method,
                    budget_us,
                    input,
                    last: flags & LAST != 0,
                }
            }
            ITEM => {
                let flags = r.u8()?;
                if flags & !LAST != 0 {
                    return Err(DecodeError::BadFlags(flags));
                }
                Message::Item {
                    id,
                    payload: r.rest(),
                    last: flags & LAST != 0,
                }
            }
            END => {
                r.done()?;
                Message::End { id }
            }
            ERROR => {
                let code = u32::try_from(r.varint()?).map_err(|_| DecodeError::BadVarint)?;
                let message = r.string(usize::MAX)?;
                let data = match r.u8()? {
                    0 => {
                        r.done()?;
                        None
                    }
                    1 => Some(r.rest()),
                    f => return Err(DecodeError::BadFlags(f)),
                };
                Message::Error {
                    id,
                    code,
                    message,
                    data,
                }
            }
            CANCEL => {
                r.done()?;
                Message::Cancel { id }
            }
            CREDIT => {
                let bytes = r.varint()?;
                r.done()?;
                Message::Credit { id, bytes }
            }
            METHODS => {
                if id != 0 {
                    return Err(DecodeError::Invalid("a catalogue must have id 0"));
                }
                let n = r.varint()?;
                if n > MAX_METHODS as u64 {
                    return Err(DecodeError::Invalid("too many methods"));
                }
                // Each name takes at least one byte: never reserve more than the frame holds.
                let mut names = Vec::with_capacity((n as usize).min(frame.len()));
                for _ in 0..n {
                    names.push(r.string(MAX_METHOD_LEN)?);
                }
                r.done()?;
                Message::Methods { names }
            }
            k => return Err(DecodeError::UnknownKind(k)),
        };
        Ok(msg)
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(DecodeError::BadVarint);
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        if len > max {
            return Err(DecodeError::BadString("too long"));
        }
        let end = self.pos.checked_add(len).ok_or(DecodeError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadString("not UTF-8"))?;
        self.pos = end;
        Ok(s.to_owned())
    }

    fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }

    fn done(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::Trailing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                any::<u64>(),
                "\\PC{0,40}",
                any::<u64>(),
                proptest::option::of(bytes()),
                any::<bool>()
            )
                .prop_map(|(id, method, budget_us, input, last)| Message::Call {
                    id,
                    method,
                    budget_us,
                    input,
                    last
                }),
            (any::<u64>(), bytes(), any::<bool>()).prop_map(|(id, payload, last)| Message::Item {
                id,
                payload,
                last
            }),
            any::<u64>().prop_map(|id| Message::End { id }),
            (
                any::<u64>(),
                any::<u32>(),
                "\\PC{0,40}",
                proptest::option::of(bytes())
            )
                .prop_map(|(id, code, message, data)| Message::Error {
                    id,
                    code,
                    message,
                    data
                }),
            any::<u64>().prop_map(|id| Message::Cancel { id }),
            (any::<u64>(), any::<u64>()).prop_map(|(id, bytes)| Message::Credit { id, bytes }),
            proptest::collection::vec("\\PC{0,20}", 0..8)
                .prop_map(|names| Message::Methods { names }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in message()) {
            prop_assert_eq!(Message::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Message::decode(&Bytes::from(b));
        }
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let cases: &[(&[u8], DecodeError)] = &[
            (&[], DecodeError::Truncated),
            (&[9, 0], DecodeError::UnknownKind(9)),
            (&[END], DecodeError::Truncated),
            (&[END, 1, 0], DecodeError::Trailing),
            (&[CALL, 1, 0x80], DecodeError::BadFlags(0x80)),
            (&[CALL, 1, 0, 5, b'a'], DecodeError::Truncated),
            (
                &[CALL, 1, 0, 1, 0xff, 0],
                DecodeError::BadString("not UTF-8"),
            ),
            (
                &[
                    CREDIT, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                DecodeError::BadVarint,
            ),
            (
                &[METHODS, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
                DecodeError::Invalid("too many methods"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Message::decode(&Bytes::copy_from_slice(bytes)).as_ref(),
                Err(want),
                "{bytes:?}"
            );
        }
    }
}
