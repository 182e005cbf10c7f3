//! What crosses the wire for a hub: the relay request, the hub's answer, and
//! presence (which names are reachable through it). `docs/PROTOCOL.md` §12
//! describes the same.

use std::collections::BTreeSet;

use super::ident::validate_peer_name;

/// The service of a relay channel: opened by a peer on its connection to a hub
/// (header `to=NAME`), and by the hub on its connection to `NAME` (header
/// `from=CALLER`). The two channels are joined by the hub; the callers run an
/// SSH session of their own inside.
pub const RELAY_SERVICE: &str = "$relay";

/// The service of the presence channel a hub opens on every connection that
/// dialled it: frames of [`PresenceUpdate`]s.
pub const PRESENCE_SERVICE: &str = "$presence";

/// Header naming the peer a relay should reach (peer to hub).
pub const TO: &str = "to";
/// Header naming the peer a relay comes from, as the hub authenticated it (hub to peer).
pub const FROM: &str = "from";
/// Header naming the relay's mode: [`RelayMode::as_str`].
pub const MODE: &str = "mode";

/// Header (hub to peer, repeated) naming a service the caller may open in the
/// session, or `*` for all but those named by [`DENY`].
pub const ALLOW: &str = "allow";
/// Header (hub to peer, repeated, with `allow=*`) naming a service the caller may not open.
pub const DENY: &str = "deny";

/// Which services the hub's policy lets a caller open in a relayed session; the
/// hub cannot see them (they are opened inside the session), so it tells the
/// called peer, which enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Every service but these.
    AllBut(BTreeSet<String>),
    /// Only these.
    Only(BTreeSet<String>),
}

impl Allowed {
    /// Every service.
    pub fn all() -> Allowed {
        Allowed::AllBut(BTreeSet::new())
    }

    /// Whether `service` may be opened.
    pub fn allows(&self, service: &str) -> bool {
        match self {
            Allowed::AllBut(denied) => !denied.contains(service),
            Allowed::Only(allowed) => allowed.contains(service),
        }
    }

    /// Whether nothing may be opened.
    pub fn is_none(&self) -> bool {
        matches!(self, Allowed::Only(s) if s.is_empty())
    }

    /// As headers ([`ALLOW`], [`DENY`]).
    pub fn to_headers(&self) -> Vec<String> {
        match self {
            Allowed::AllBut(denied) => std::iter::once(format!("{ALLOW}=*"))
                .chain(denied.iter().map(|s| format!("{DENY}={s}")))
                .collect(),
            Allowed::Only(allowed) => allowed.iter().map(|s| format!("{ALLOW}={s}")).collect(),
        }
    }

    /// From headers; no [`ALLOW`] at all is every service (a relay from a peer
    /// that states no policy).
    pub fn from_headers<'a>(
        allow: impl Iterator<Item = &'a str>,
        deny: impl Iterator<Item = &'a str>,
    ) -> Allowed {
        let allow: BTreeSet<String> = allow.map(str::to_owned).collect();
        if allow.is_empty() || allow.contains("*") {
            Allowed::AllBut(deny.map(str::to_owned).collect())
        } else {
            Allowed::Only(allow)
        }
    }
}

/// How the two ends of a relay know each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayMode {
    /// Each end checks the other's key against its own trust; the session inside
    /// the relay is encrypted, and the hub sees ciphertext only.
    EndToEnd,
    /// Each end takes the hub's word for who the other is; the session inside is
    /// not encrypted (the hub's connections are), so the hub can read it.
    TrustHub,
}

impl RelayMode {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayMode::EndToEnd => "end-to-end",
            RelayMode::TrustHub => "trust-hub",
        }
    }

    /// Parses a header value; `None` if unknown.
    pub fn parse(s: &str) -> Option<RelayMode> {
        match s {
            "end-to-end" => Some(RelayMode::EndToEnd),
            "trust-hub" => Some(RelayMode::TrustHub),
            _ => None,
        }
    }
}

/// The hub's answer on a relay channel: its first frame is empty once the target
/// accepted the relay (the session's bytes follow); otherwise it is why not, in
/// words, and the hub closes the channel.
pub fn answer(refusal: Option<&str>) -> Vec<u8> {
    refusal.map(|r| r.as_bytes().to_vec()).unwrap_or_default()
}

/// Most names one presence frame or one hub's presence may list.
pub const MAX_PRESENCE_NAMES: usize = 65_536;

/// One change to the set of names reachable through a hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceUpdate {
    /// The names that follow in this frame are everything reachable: forget the
    /// others (a line `=`, first in its frame).
    Reset,
    /// The name is reachable.
    Joined(String),
    /// The name is no longer reachable.
    Left(String),
}

/// Why a presence frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceError {
    /// Not UTF-8.
    #[error("presence frame is not UTF-8")]
    NotUtf8,
    /// A line was neither `+NAME` nor `-NAME` with a valid peer name.
    #[error("bad presence line {0:?}")]
    BadLine(String),
    /// More than [`MAX_PRESENCE_NAMES`] lines.
    #[error("presence frame lists more than {MAX_PRESENCE_NAMES} names")]
    TooMany,
}

/// Encodes updates as one frame: a line per name, `+NAME` or `-NAME` (the hub
/// encodes in place, see `hub::presence`; this is the reference).
#[cfg(test)]
pub fn encode_presence(updates: &[PresenceUpdate]) -> Vec<u8> {
    let mut out = Vec::new();
    for u in updates {
        let (sign, name) = match u {
            PresenceUpdate::Reset => ('=', &String::new()),
            PresenceUpdate::Joined(n) => ('+', n),
            PresenceUpdate::Left(n) => ('-', n),
        };
        out.push(sign as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Decodes a presence frame.
pub fn decode_presence(frame: &[u8]) -> Result<Vec<PresenceUpdate>, PresenceError> {
    let text = std::str::from_utf8(frame).map_err(|_| PresenceError::NotUtf8)?;
    let mut out = Vec::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        if out.len() == MAX_PRESENCE_NAMES {
            return Err(PresenceError::TooMany);
        }
        let bad = || PresenceError::BadLine(line.chars().take(80).collect());
        if line == "=" && out.is_empty() {
            out.push(PresenceUpdate::Reset);
            continue;
        }
        let (sign, name) = line.split_at_checked(1).ok_or_else(bad)?;
        validate_peer_name(name).map_err(|_| bad())?;
        out.push(match sign {
            "+" => PresenceUpdate::Joined(name.to_owned()),
            "-" => PresenceUpdate::Left(name.to_owned()),
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_round_trips() {
        let snapshot = vec![
            PresenceUpdate::Reset,
            PresenceUpdate::Joined("carol".into()),
        ];
        assert_eq!(
            decode_presence(&encode_presence(&snapshot)).unwrap(),
            snapshot
        );
        assert!(decode_presence(b"+a\n=\n").is_err(), "a reset comes first");
        let ups = vec![
            PresenceUpdate::Joined("carol".into()),
            PresenceUpdate::Left("bob".into()),
        ];
        assert_eq!(decode_presence(&encode_presence(&ups)).unwrap(), ups);
        assert_eq!(decode_presence(b"").unwrap(), vec![]);
    }

    #[test]
    fn bad_presence_is_refused() {
        for bad in [
            &b"carol\n"[..],
            b"+\n",
            b"*carol\n",
            b"+ca\x01rol\n",
            b"\xff",
        ] {
            assert!(decode_presence(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allowed_round_trips_through_headers() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        for a in [
            Allowed::all(),
            Allowed::AllBut(set(&["admin"])),
            Allowed::Only(set(&["echo", "sink"])),
        ] {
            let h = crate::channel::Headers::from(a.to_headers());
            let back = Allowed::from_headers(h.get_all(ALLOW), h.get_all(DENY));
            assert_eq!(back, a);
        }
        assert!(Allowed::Only(set(&["echo"])).allows("echo"));
        assert!(!Allowed::Only(set(&["echo"])).allows("sink"));
        assert!(!Allowed::AllBut(set(&["admin"])).allows("admin"));
    }

    #[test]
    fn modes_round_trip() {
        for m in [RelayMode::EndToEnd, RelayMode::TrustHub] {
            assert_eq!(RelayMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(RelayMode::parse("plain"), None);
    }
}
