//! The channel-open request: service, headers and channel identity in one message.
//!
//! A native channel is an SSH `direct-streamlocal@openssh.com` channel (RFC 4254 §7.2
//! as extended by OpenSSH's PROTOCOL §2.4) whose `socket path` field carries this
//! encoding, so opening a channel costs one round trip:
//!
//! ```text
//! request = "streamkit:1;" *field
//! field   = tag length ":" value        ; tag: one ASCII lower-case letter
//! length  = decimal byte length of value (no sign, no leading zeros)
//! ```
//!
//! | tag | value | count |
//! |-----|-------|-------|
//! | `s` | service name | exactly one |
//! | `h` | one header, any UTF-8 | any, in order |
//! | `i` | the opener's id for this channel, decimal | at most one |
//! | `p` | parent channel: `l<id>` (opened by the sender) or `r<id>` (by the receiver) | at most one |
//!
//! Unknown tags are skipped, so later versions can add optional fields.

use std::fmt::Write as _;

/// Prefix that marks a Streamkit open request (and its version).
pub const MAGIC: &str = "streamkit:1;";

/// Longest service name, in bytes.
pub const MAX_SERVICE: usize = 256;

/// Which side opened the parent of a nested channel, as seen by the *sender* of the open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentRef {
    /// The parent was opened by the side sending this open request.
    Local(u64),
    /// The parent was opened by the side receiving this open request.
    Remote(u64),
}

/// A decoded channel-open request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenRequest {
    /// Service name.
    pub service: String,
    /// Headers, in order.
    pub headers: Vec<String>,
    /// The opener's id for the channel.
    pub id: Option<u64>,
    /// The parent channel, for nested channels.
    pub parent: Option<ParentRef>,
}

/// Why an open request could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenDecodeError {
    /// Not a Streamkit request (no magic prefix).
    #[error("not a streamkit open request")]
    NotStreamkit,
    /// The field structure is broken.
    #[error("malformed open request: {0}")]
    Malformed(&'static str),
    /// No service, or more than one.
    #[error("open request must name exactly one service")]
    Service,
    /// The service name is not usable.
    #[error("invalid service name: {0}")]
    InvalidService(&'static str),
    /// The encoded request exceeds the limit.
    #[error("open request is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks a service name: 1 to 256 bytes, no control characters.
pub fn validate_service(service: &str) -> Result<(), OpenDecodeError> {
    if service.is_empty() {
        Err(OpenDecodeError::InvalidService("empty"))
    } else if service.len() > MAX_SERVICE {
        Err(OpenDecodeError::InvalidService("longer than 256 bytes"))
    } else if service.chars().any(char::is_control) {
        Err(OpenDecodeError::InvalidService(
            "contains control characters",
        ))
    } else {
        Ok(())
    }
}

fn push_field(out: &mut String, tag: char, value: &str) {
    out.push(tag);
    // Writing to a String cannot fail.
    let _ = write!(out, "{}:", value.len());
    out.push_str(value);
}

impl OpenRequest {
    /// Encodes the request; fails if the service is invalid or the result is over `max` bytes.
    pub fn encode(&self, max: usize) -> Result<String, OpenDecodeError> {
        validate_service(&self.service)?;
        let mut out = String::with_capacity(
            MAGIC.len()
                + self.service.len()
                + self.headers.iter().map(|h| h.len() + 8).sum::<usize>()
                + 32,
        );
        out.push_str(MAGIC);
        push_field(&mut out, 's', &self.service);
        for h in &self.headers {
            push_field(&mut out, 'h', h);
        }
        if let Some(id) = self.id {
            push_field(&mut out, 'i', &id.to_string());
        }
        match self.parent {
            Some(ParentRef::Local(id)) => push_field(&mut out, 'p', &format!("l{id}")),
            Some(ParentRef::Remote(id)) => push_field(&mut out, 'p', &format!("r{id}")),
            None => {}
        }
        if out.len() > max {
            return Err(OpenDecodeError::TooLarge {
                len: out.len(),
                max,
            });
        }
        Ok(out)
    }

    /// Decodes a request, refusing anything over `max` bytes before looking inside.
    pub fn decode(input: &str, max: usize) -> Result<OpenRequest, OpenDecodeError> {
        if input.len() > max {
            return Err(OpenDecodeError::TooLarge {
                len: input.len(),
                max,
            });
        }
        let mut rest = input
            .strip_prefix(MAGIC)
            .ok_or(OpenDecodeError::NotStreamkit)?;
        let mut req = OpenRequest::default();
        let mut service = None;
        while !rest.is_empty() {
            let mut chars = rest.char_indices();
            let tag = match chars.next() {
                Some((_, c)) if c.is_ascii_lowercase() => c,
                _ => return Err(OpenDecodeError::Malformed("expected a field tag")),
            };
            let after_tag = &rest[1..];
            let colon = after_tag
                .find(':')
                .ok_or(OpenDecodeError::Malformed("missing ':' after field length"))?;
            let digits = &after_tag[..colon];
            if digits.is_empty()
                || digits.len() > 9
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
            {
                return Err(OpenDecodeError::Malformed("bad field length"));
            }
            let len: usize = digits
                .parse()
                .map_err(|_| OpenDecodeError::Malformed("bad field length"))?;
            let body = &after_tag[colon + 1..];
            let value = body.get(..len).ok_or(OpenDecodeError::Malformed(
                "field length past the end or inside a character",
            ))?;
            rest = &body[len..];
            match tag {
                's' if service.replace(value).is_some() => return Err(OpenDecodeError::Service),
                's' => {}
                'h' => req.headers.push(value.to_owned()),
                'i' => {
                    if req.id.is_some() {
                        return Err(OpenDecodeError::Malformed("duplicate channel id"));
                    }
                    req.id = Some(parse_id(value)?);
                }
                'p' => {
                    if req.parent.is_some() {
                        return Err(OpenDecodeError::Malformed("duplicate parent"));
                    }
                    req.parent = Some(if let Some(id) = value.strip_prefix('l') {
                        ParentRef::Local(parse_id(id)?)
                    } else if let Some(id) = value.strip_prefix('r') {
                        ParentRef::Remote(parse_id(id)?)
                    } else {
                        return Err(OpenDecodeError::Malformed("bad parent reference"));
                    });
                }
                _ => {} // unknown optional field
            }
        }
        let service = service.ok_or(OpenDecodeError::Service)?;
        validate_service(service)?;
        req.service = service.to_owned();
        Ok(req)
    }
}

fn parse_id(s: &str) -> Result<u64, OpenDecodeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(OpenDecodeError::Malformed("bad channel id"));
    }
    s.parse()
        .map_err(|_| OpenDecodeError::Malformed("bad channel id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 256 * 1024;

    #[test]
    fn example_encoding() {
        let req = OpenRequest {
            service: "echo".into(),
            headers: vec!["a=b,c".into(), "".into()],
            id: Some(7),
            parent: Some(ParentRef::Remote(3)),
        };
        let enc = req.encode(MAX).unwrap();
        assert_eq!(enc, "streamkit:1;s4:echoh5:a=b,ch0:i1:7p2:r3");
        assert_eq!(OpenRequest::decode(&enc, MAX).unwrap(), req);
    }

    #[test]
    fn headers_survive_awkward_content() {
        let big = "v".repeat(4096);
        let headers = vec![
            "k=v,w=x".to_string(),
            "=".into(),
            "a&b%c".into(),
            "line1\nline2\r\n".into(),
            "".into(),
            "nul\0inside".into(),
            "ünïcödé ✓".into(),
            format!("big={big}"),
            "h12:sneaky".into(),
        ];
        let req = OpenRequest {
            service: "svc".into(),
            headers,
            id: None,
            parent: None,
        };
        let enc = req.encode(MAX).unwrap();
        assert_eq!(OpenRequest::decode(&enc, MAX).unwrap(), req);
    }

    #[test]
    fn refuses_bad_requests() {
        let cases = [
            "",
            "streamkit:1;",
            "streamkit:2;s4:echo",
            "streamkit:1;s4:ech",
            "streamkit:1;s4:echos4:echo",
            "streamkit:1;s04:echo",
            "streamkit:1;S4:echo",
            "streamkit:1;s4echo",
            "streamkit:1;s0:",
            "streamkit:1;s4:echoi2:01",
            "streamkit:1;s4:echop2:x1",
            "streamkit:1;s99999999999:x",
            "streamkit:1;s1:\u{7}",
        ];
        for case in cases {
            assert!(
                OpenRequest::decode(case, MAX).is_err(),
                "{case:?} should be refused"
            );
        }
        // A length that ends inside a multi-byte character.
        assert!(OpenRequest::decode("streamkit:1;s2:é", MAX).is_ok());
        assert!(OpenRequest::decode("streamkit:1;s1:é", MAX).is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let req = OpenRequest::decode("streamkit:1;z3:abcs4:echo", MAX).unwrap();
        assert_eq!(req.service, "echo");
    }

    #[test]
    fn size_limit_applies_both_ways() {
        let req = OpenRequest {
            service: "s".into(),
            headers: vec!["x".repeat(100)],
            ..Default::default()
        };
        assert!(matches!(
            req.encode(50),
            Err(OpenDecodeError::TooLarge { .. })
        ));
        let enc = req.encode(MAX).unwrap();
        assert!(matches!(
            OpenRequest::decode(&enc, 50),
            Err(OpenDecodeError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(
            service in "[^\\p{Cc}]{1,40}",
            headers in proptest::collection::vec("\\PC*|[\\x00-\\x7f]*", 0..8),
            id in proptest::option::of(any::<u64>()),
            parent in proptest::option::of((any::<bool>(), any::<u64>())),
        ) {
            let parent = parent.map(|(l, id)| if l { ParentRef::Local(id) } else { ParentRef::Remote(id) });
            let req = OpenRequest { service, headers, id, parent };
            let enc = req.encode(MAX).unwrap();
            prop_assert_eq!(OpenRequest::decode(&enc, MAX).unwrap(), req);
        }

        #[test]
        fn decode_never_panics(s in "\\PC*|streamkit:1;[a-z0-9:]*") {
            let _ = OpenRequest::decode(&s, MAX);
        }
    }
}
