//! Codecs: how objects become frame payloads.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A way of encoding objects, chosen by the caller per call and named in the
/// session channel's `codec` header. A server serves every codec at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Codec {
    /// JSON (`serde_json`).
    Json,
    /// MessagePack (`rmp-serde`, structs as maps).
    MsgPack,
    /// CBOR (`ciborium`).
    Cbor,
    /// Protocol Buffers: [`Proto`] messages natively (prost); other serde types
    /// as a `google.protobuf.Value`.
    Protobuf,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 4] = [Codec::Json, Codec::MsgPack, Codec::Cbor, Codec::Protobuf];

    /// The name used on the wire (`json`, `msgpack`, `cbor`, `protobuf`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
            Codec::Cbor => "cbor",
            Codec::Protobuf => "protobuf",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown codec name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec {0:?} (known: json, msgpack, cbor, protobuf)")]
pub struct UnknownCodec(pub String);

impl FromStr for Codec {
    type Err = UnknownCodec;

    fn from_str(s: &str) -> Result<Codec, UnknownCodec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCodec(s.to_owned()))
    }
}

/// Why an object could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{codec}: {reason}")]
pub struct CodecError {
    /// The codec.
    pub codec: Codec,
    /// What went wrong.
    pub reason: String,
}

fn ce<E: fmt::Display>(codec: Codec) -> impl FnOnce(E) -> CodecError {
    move |e| CodecError::new(codec, e)
}

impl CodecError {
    fn new(codec: Codec, reason: impl fmt::Display) -> CodecError {
        CodecError {
            codec,
            reason: reason.to_string(),
        }
    }
}

/// An object that travels in calls: every serde type, and protobuf messages
/// wrapped in [`Proto`].
pub trait Message: Sized + Send + 'static {
    /// Encodes the object.
    fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError>;
    /// Decodes an object.
    fn decode(codec: Codec, bytes: &[u8]) -> Result<Self, CodecError>;
}

impl<T> Message for T
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError> {
        match codec {
            Codec::Protobuf => {
                let v = serde_json::to_value(self).map_err(ce(codec))?;
                Ok(prost::Message::encode_to_vec(&value_to_proto(v)))
            }
            _ => encode_serde(self, codec),
        }
    }

    fn decode(codec: Codec, bytes: &[u8]) -> Result<T, CodecError> {
        match codec {
            Codec::Json => serde_json::from_slice(bytes).map_err(ce(codec)),
            Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(ce(codec)),
            Codec::Cbor => ciborium::from_reader(bytes).map_err(ce(codec)),
            Codec::Protobuf => {
                let v: prost_types::Value = prost::Message::decode(bytes).map_err(ce(codec))?;
                serde_json::from_value(proto_to_value(v, 0).map_err(ce(codec))?).map_err(ce(codec))
            }
        }
    }
}

/// A protobuf message (a `prost::Message`, derived or generated) as an RPC object.
///
/// With [`Codec::Protobuf`] it is the message's own encoding, so any gRPC or
/// protobuf peer can read it; with the other codecs its protobuf encoding travels
/// as a byte string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proto<T>(pub T);

impl<T> Message for Proto<T>
where
    T: prost::Message + Default + Send + 'static,
{
    fn encode(&self, codec: Codec) -> Result<Vec<u8>, CodecError> {
        let raw = self.0.encode_to_vec();
        match codec {
            Codec::Protobuf => Ok(raw),
            _ => serde_bytes_encode(codec, &raw),
        }
    }

    fn decode(codec: Codec, bytes: &[u8]) -> Result<Self, CodecError> {
        let raw;
        let bytes = match codec {
            Codec::Protobuf => bytes,
            _ => {
                raw = serde_bytes_decode(codec, bytes)?;
                &raw[..]
            }
        };
        T::decode(bytes)
            .map(Proto)
            .map_err(|e| CodecError::new(codec, e))
    }
}

struct ByteString<'a>(&'a [u8]);

impl Serialize for ByteString<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteBuf, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// The serde codecs (protobuf is the caller's business).
fn encode_serde<T: Serialize + ?Sized>(v: &T, codec: Codec) -> Result<Vec<u8>, CodecError> {
    match codec {
        Codec::Json => serde_json::to_vec(v).map_err(ce(codec)),
        Codec::MsgPack => rmp_serde::to_vec_named(v).map_err(ce(codec)),
        Codec::Cbor => {
            let mut out = Vec::new();
            ciborium::into_writer(v, &mut out).map_err(ce(codec))?;
            Ok(out)
        }
        Codec::Protobuf => Err(CodecError::new(codec, "not a serde codec")),
    }
}

fn serde_bytes_encode(codec: Codec, raw: &[u8]) -> Result<Vec<u8>, CodecError> {
    encode_serde(&ByteString(raw), codec)
}

fn serde_bytes_decode(codec: Codec, bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
    let b: ByteBuf = match codec {
        Codec::Json => serde_json::from_slice(bytes).map_err(ce(codec))?,
        Codec::MsgPack => rmp_serde::from_slice(bytes).map_err(ce(codec))?,
        Codec::Cbor => ciborium::from_reader(bytes).map_err(ce(codec))?,
        Codec::Protobuf => return Ok(bytes.to_vec()),
    };
    Ok(b.0)
}

fn value_to_proto(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(value_to_proto).collect(),
        }),
        J::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, value_to_proto(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Nesting beyond this is refused (as serde_json does), so a hostile value
/// cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

fn proto_to_value(v: prost_types::Value, depth: usize) -> Result<serde_json::Value, &'static str> {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err("value nested too deeply");
    }
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::NumberValue(n)) => {
            // Integers come back as integers, so they decode into integer fields.
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                J::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::ListValue(l)) => J::Array(
            l.values
                .into_iter()
                .map(|v| proto_to_value(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => J::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| Ok((k, proto_to_value(v, depth + 1)?)))
                .collect::<Result<_, &'static str>>()?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i64,
        y: f64,
        label: String,
        tags: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Pair {
        #[prost(int64, tag = "1")]
        a: i64,
        #[prost(string, tag = "2")]
        b: String,
    }

    #[test]
    fn serde_types_round_trip_in_every_codec() {
        let p = Point {
            x: -42,
            y: 1.5,
            label: "a,b=c&%\n".into(),
            tags: vec![String::new(), "é".into()],
        };
        for c in Codec::ALL {
            let bytes = p.encode(c).unwrap();
            assert_eq!(Point::decode(c, &bytes).unwrap(), p, "{c}");
        }
    }

    #[test]
    fn prost_messages_round_trip_in_every_codec() {
        let m = Proto(Pair {
            a: 7,
            b: "seven".into(),
        });
        for c in Codec::ALL {
            let bytes = m.encode(c).unwrap();
            assert_eq!(Proto::<Pair>::decode(c, &bytes).unwrap(), m, "{c}");
        }
        // Natively encoded: readable by any protobuf implementation.
        let raw = m.encode(Codec::Protobuf).unwrap();
        assert_eq!(raw, prost::Message::encode_to_vec(&m.0));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for c in Codec::ALL {
            let err = Point::decode(c, b"\xff\x00garbage").unwrap_err();
            assert_eq!(err.codec, c);
            assert!(!err.reason.is_empty());
        }
        assert_eq!(
            "yaml".parse::<Codec>().unwrap_err().to_string(),
            r#"unknown codec "yaml" (known: json, msgpack, cbor, protobuf)"#
        );
    }

    #[test]
    fn deep_protobuf_values_are_refused() {
        let mut v = prost_types::Value { kind: None };
        for _ in 0..200 {
            v = prost_types::Value {
                kind: Some(prost_types::value::Kind::ListValue(
                    prost_types::ListValue { values: vec![v] },
                )),
            };
        }
        let bytes = prost::Message::encode_to_vec(&v);
        assert!(serde_json::Value::decode(Codec::Protobuf, &bytes).is_err());
    }
}
