//! Errors of calls.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{Codec, CodecError, Message};

/// An error code. The constants are the codes Streamkit itself uses (numbered as
/// gRPC numbers its status codes); applications may use any other number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u32);

impl Code {
    /// The caller cancelled the call.
    pub const CANCELLED: Code = Code(1);
    /// An error without a more specific code.
    pub const UNKNOWN: Code = Code(2);
    /// The input did not decode under the call's codec, or the call had the
    /// wrong number of inputs.
    pub const BAD_ARGUMENTS: Code = Code(3);
    /// The call's deadline passed.
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    /// No such method (or no connected peer serves it).
    pub const METHOD_NOT_FOUND: Code = Code(5);
    /// A limit was hit: object size, concurrent calls, flow-control credit.
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    /// The session's codec is not one this peer knows.
    pub const UNKNOWN_CODEC: Code = Code(12);
    /// The handler panicked, or the callee broke the protocol.
    pub const INTERNAL: Code = Code(13);
    /// No peer to call, or the connection was lost during the call.
    pub const UNAVAILABLE: Code = Code(14);

    /// A short name for the known codes.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::CANCELLED => "cancelled",
            Code::UNKNOWN => "unknown",
            Code::BAD_ARGUMENTS => "bad arguments",
            Code::DEADLINE_EXCEEDED => "deadline exceeded",
            Code::METHOD_NOT_FOUND => "method not found",
            Code::RESOURCE_EXHAUSTED => "resource exhausted",
            Code::UNKNOWN_CODEC => "unknown codec",
            Code::INTERNAL => "internal",
            Code::UNAVAILABLE => "unavailable",
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "code {}", self.0),
        }
    }
}

type Encoder = Arc<dyn Fn(Codec) -> Result<Vec<u8>, CodecError> + Send + Sync>;

#[derive(Clone)]
enum Data {
    /// Attached by a local handler: encoded with the caller's codec when sent.
    Local(Encoder),
    /// Received from the remote, encoded with the session's codec.
    Remote(Codec, Bytes),
}

/// A call's error: a code, a message and optional data. Handlers return it;
/// callers receive it, typed, whether it happened locally or remotely.
#[derive(Clone)]
pub struct RpcError {
    code: Code,
    message: String,
    data: Option<Data>,
    remote: bool,
}

impl RpcError {
    /// An error with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
            remote: false,
        }
    }

    /// Attaches data, encoded with whatever codec the caller chose.
    pub fn with_data<T: Message + Sync + Clone>(mut self, data: T) -> RpcError {
        let f: Encoder = Arc::new(move |c| data.encode(c));
        self.data = Some(Data::Local(f));
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the error came from the remote peer (as opposed to this side:
    /// a lost connection, a local deadline, an encoding failure).
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// The attached data, decoded as `T`, if there is any.
    pub fn data<T: Message>(&self) -> Option<Result<T, CodecError>> {
        match self.data.as_ref()? {
            Data::Remote(codec, bytes) => Some(T::decode(*codec, bytes)),
            Data::Local(enc) => Some(enc(Codec::Cbor).and_then(|b| T::decode(Codec::Cbor, &b))),
        }
    }

    pub(crate) fn encoded_data(&self, codec: Codec) -> Option<Bytes> {
        match self.data.as_ref()? {
            Data::Remote(c, b) if *c == codec => Some(b.clone()),
            // Passed on to a caller with another codec: re-encoded.
            Data::Remote(c, b) => serde_json::Value::decode(*c, b)
                .and_then(|v| v.encode(codec))
                .ok()
                .map(Bytes::from),
            Data::Local(enc) => enc(codec).ok().map(Bytes::from),
        }
    }

    pub(crate) fn from_wire(code: u32, message: String, data: Option<(Codec, Bytes)>) -> RpcError {
        RpcError {
            code: Code(code),
            message,
            data: data.map(|(c, b)| Data::Remote(c, b)),
            remote: true,
        }
    }

    pub(crate) fn bad_arguments(e: CodecError) -> RpcError {
        RpcError::new(Code::BAD_ARGUMENTS, format!("bad arguments: {e}"))
    }

    pub(crate) fn unavailable(why: impl fmt::Display) -> RpcError {
        RpcError::new(Code::UNAVAILABLE, why.to_string())
    }

    pub(crate) fn cancelled() -> RpcError {
        RpcError::new(Code::CANCELLED, "call cancelled")
    }

    pub(crate) fn deadline() -> RpcError {
        RpcError::new(Code::DEADLINE_EXCEEDED, "deadline exceeded")
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("has_data", &self.data.is_some())
            .field("remote", &self.remote)
            .finish()
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = if self.remote { "remote error" } else { "error" };
        write!(f, "{side} ({}): {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

impl PartialEq for RpcError {
    /// Code and message only.
    fn eq(&self, other: &RpcError) -> bool {
        self.code == other.code && self.message == other.message
    }
}
