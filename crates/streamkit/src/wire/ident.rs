//! The SSH identification string (RFC 4253 §4.2) as Streamkit uses it.
//!
//! Both sides announce the native protocol version in the comments of their
//! identification string; the server also announces its peer name there. The
//! identification strings are part of the key-exchange hash, so once the client has
//! verified the server's host key the server's name is authenticated too.
//!
//! ```text
//! SSH-2.0-streamkit_0.1.0 streamkit=1 name=bob
//! ```

use std::fmt::Write as _;

/// Longest peer name, in bytes of UTF-8.
///
/// Chosen so that a name made only of percent-encoded bytes still fits in the
/// 255-byte identification line.
pub const MAX_PEER_NAME: usize = 64;

/// The software-version part of our identification string.
pub const SOFTWARE: &str = concat!("streamkit_", env!("CARGO_PKG_VERSION"));

/// What a remote identification string told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIdent {
    /// Native protocol version, or `None` for a plain SSH implementation.
    pub version: Option<u32>,
    /// The peer name the remote announced, if any.
    pub name: Option<String>,
    /// The software-version field, for error messages.
    pub software: String,
}

/// Why an identification string or a peer name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentError {
    /// The line does not start with `SSH-2.0-`.
    #[error("not an SSH-2.0 identification string")]
    NotSsh2,
    /// A field could not be decoded.
    #[error("malformed identification field {0:?}")]
    Malformed(String),
    /// A peer name is empty, too long or holds control characters.
    #[error("invalid peer name {name:?}: {why}")]
    InvalidName {
        /// The offending name, as received.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Checks that `name` is a usable peer name: 1 to 64 bytes of UTF-8, no control characters.
pub fn validate_peer_name(name: &str) -> Result<(), IdentError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_PEER_NAME {
        "longer than 64 bytes"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(IdentError::InvalidName {
        name: name.to_owned(),
        why,
    })
}

/// The identification string a server sends: version and peer name.
pub fn server_ident(name: &str) -> String {
    format!(
        "SSH-2.0-{SOFTWARE} streamkit={} name={}",
        super::PROTOCOL_VERSION,
        percent_encode(name)
    )
}

/// The identification string a client sends: version only (its name rides in the user name).
pub fn client_ident() -> String {
    format!("SSH-2.0-{SOFTWARE} streamkit={}", super::PROTOCOL_VERSION)
}

/// Parses a remote identification line (without its CR LF).
pub fn parse_ident(line: &[u8]) -> Result<RemoteIdent, IdentError> {
    let line = std::str::from_utf8(line).map_err(|_| IdentError::NotSsh2)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let rest = line.strip_prefix("SSH-2.0-").ok_or(IdentError::NotSsh2)?;
    let (software, comments) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut ident = RemoteIdent {
        version: None,
        name: None,
        software: software.to_owned(),
    };
    for token in comments.split(' ') {
        if let Some(v) = token.strip_prefix("streamkit=") {
            let v = v
                .parse::<u32>()
                .map_err(|_| IdentError::Malformed(token.to_owned()))?;
            ident.version = Some(v);
        } else if let Some(n) = token.strip_prefix("name=") {
            let name = percent_decode(n).ok_or_else(|| IdentError::Malformed(token.to_owned()))?;
            validate_peer_name(&name)?;
            ident.name = Some(name);
        }
    }
    Ok(ident)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reverses [`percent_encode`]; `None` on a malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if is_unreserved(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ident_round_trips_any_valid_name() {
        for name in ["bob", "a b", "名前", "x=y&z%,", &"é".repeat(32)] {
            let line = server_ident(name);
            assert!(line.len() <= 253, "{} bytes", line.len());
            let parsed = parse_ident(line.as_bytes()).unwrap();
            assert_eq!(parsed.name.as_deref(), Some(name));
            assert_eq!(parsed.version, Some(1));
        }
    }

    #[test]
    fn plain_ssh_servers_have_no_version() {
        let parsed = parse_ident(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6").unwrap();
        assert_eq!(parsed.version, None);
        assert_eq!(parsed.name, None);
        assert_eq!(parsed.software, "OpenSSH_9.2p1");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_ident(b"HTTP/1.1 200 OK"), Err(IdentError::NotSsh2));
        assert!(parse_ident(b"SSH-2.0-x streamkit=one").is_err());
        assert!(parse_ident(b"SSH-2.0-x name=%ZZ").is_err());
        assert!(
            parse_ident(b"SSH-2.0-x name=%0A").is_err(),
            "control characters"
        );
        assert!(parse_ident(b"SSH-2.0-x name=").is_err(), "empty name");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_peer_name("alice").is_ok());
        assert!(validate_peer_name("").is_err());
        assert!(validate_peer_name("a\nb").is_err());
        assert!(validate_peer_name(&"x".repeat(65)).is_err());
        assert!(validate_peer_name(&"x".repeat(64)).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn percent_coding_round_trips(s in "\\PC*") {
            proptest::prop_assert_eq!(percent_decode(&percent_encode(&s)), Some(s));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_ident(&bytes);
        }
    }
}
