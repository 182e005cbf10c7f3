//! `authorized_keys` and `known_hosts` files, and OpenSSH host patterns.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::error::KeyError;
use crate::keys::PublicKey;

/// A key from an `authorized_keys` file, with the peer names it is bound to.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizedKey {
    pub key: PublicKey,
    /// Names from `name="..."` options; empty means any name.
    pub names: Vec<String>,
}

fn looks_like_key_type(token: &str) -> bool {
    ["ssh-", "ecdsa-", "sk-"]
        .iter()
        .any(|p| token.starts_with(p))
}

/// Splits leading OpenSSH options (`no-pty,name="a b",...`) off a line: the
/// options end at the first whitespace outside double quotes.
fn split_options(line: &str) -> Result<(&str, &str), &'static str> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return Ok((&line[..i], line[i..].trim_start())),
            _ => {}
        }
    }
    Err(if quoted {
        "unterminated quote in options"
    } else {
        "options without a key"
    })
}

/// Splits an options string at commas outside quotes and unquotes `name="value"`.
fn parse_options(opts: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut push = |cur: &mut String| {
        let item = std::mem::take(cur);
        match item.split_once('=') {
            Some((k, v)) => {
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                out.push((k.to_owned(), Some(v.to_owned())));
            }
            None if !item.is_empty() => out.push((item, None)),
            None => {}
        }
    };
    for c in opts.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => push(&mut cur),
            c => cur.push(c),
        }
    }
    push(&mut cur);
    out
}

/// Parses `type base64` (the rest of a line may follow) into a key.
fn parse_key(rest: &str) -> Result<PublicKey, String> {
    let mut it = rest.split_whitespace();
    let (Some(kind), Some(b64)) = (it.next(), it.next()) else {
        return Err("expected a key type and a base64 key".into());
    };
    PublicKey::from_openssh(&format!("{kind} {b64}")).map_err(|e| match e {
        KeyError::Parse { why, .. } => why,
        other => other.to_string(),
    })
}

/// Parses `authorized_keys` text. Blank lines and `#` comments are skipped; a line
/// that does not parse is an error naming its number.
///
/// The only option Streamkit reads is `name="NAME"` (repeatable), which binds the key
/// to the peer names it may claim. Other options are accepted and ignored.
pub(crate) fn parse_authorized_keys(
    text: &str,
    what: &str,
) -> Result<Vec<AuthorizedKey>, KeyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: String| KeyError::Parse {
            what: format!("{what} line {}", i + 1),
            why,
        };
        let first = line.split_whitespace().next().unwrap_or_default();
        let (opts, rest) = if looks_like_key_type(first) {
            ("", line)
        } else {
            split_options(line).map_err(|w| err(w.to_owned()))?
        };
        let key = parse_key(rest).map_err(err)?;
        let names = parse_options(opts)
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("name"))
            .filter_map(|(_, v)| v)
            .collect();
        out.push(AuthorizedKey { key, names });
    }
    Ok(out)
}

/// How a `known_hosts` entry names its hosts.
#[derive(Debug, Clone)]
enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// One `known_hosts` entry.
#[derive(Debug, Clone)]
pub(crate) struct KnownHost {
    hosts: Hosts,
    pub key: PublicKey,
    pub revoked: bool,
}

impl KnownHost {
    /// Whether this entry names `host` (already in `host` or `[host]:port` form).
    pub fn matches(&self, host: &str) -> bool {
        match &self.hosts {
            Hosts::Patterns(pats) => match_pattern_list(host, pats),
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(host.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
        }
    }
}

/// Parses `known_hosts` text. `@cert-authority` lines are skipped (certificates are not
/// supported); `@revoked` lines make their key refused for the hosts they name.
pub(crate) fn parse_known_hosts(text: &str, what: &str) -> Result<Vec<KnownHost>, KeyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: String| KeyError::Parse {
            what: format!("{what} line {}", i + 1),
            why,
        };
        let (marker, rest) = match line.strip_prefix('@') {
            Some(m) => {
                let (m, rest) = m
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| err("marker without hosts".into()))?;
                (Some(m), rest.trim_start())
            }
            None => (None, line),
        };
        let revoked = match marker {
            None => false,
            Some("revoked") => true,
            Some("cert-authority") => continue,
            Some(m) => return Err(err(format!("unknown marker @{m}"))),
        };
        let (hosts, rest) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("expected hosts then a key".into()))?;
        let hosts = if let Some(hashed) = hosts.strip_prefix("|1|") {
            let (salt, hash) = hashed
                .split_once('|')
                .ok_or_else(|| err("malformed hashed host".into()))?;
            let b64 = data_encoding::BASE64;
            let salt = b64
                .decode(salt.as_bytes())
                .map_err(|e| err(format!("hashed host salt: {e}")))?;
            let hash = b64
                .decode(hash.as_bytes())
                .map_err(|e| err(format!("hashed host: {e}")))?;
            Hosts::Hashed { salt, hash }
        } else {
            Hosts::Patterns(hosts.split(',').map(str::to_owned).collect())
        };
        let key = parse_key(rest.trim_start()).map_err(err)?;
        out.push(KnownHost {
            hosts,
            key,
            revoked,
        });
    }
    Ok(out)
}

/// OpenSSH's host-pattern list: any positive match and no negated match.
pub(crate) fn match_pattern_list(host: &str, patterns: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard(&host, &neg.to_ascii_lowercase()) {
                return false;
            }
        } else if wildcard(&host, &p.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

/// `*` matches any run of characters, `?` one character.
fn wildcard(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut ti, mut pi) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The name OpenSSH looks up in `known_hosts` for a TCP host and port.
pub(crate) fn host_port_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZxQr1P3LDKuYjKHqqXaNSyQCC+9OiuVT6Wb+P4lL6b";

    #[test]
    fn wildcards() {
        assert!(wildcard("host.example.com", "*.example.com"));
        assert!(wildcard("a", "?"));
        assert!(!wildcard("ab", "?"));
        assert!(wildcard("", "*"));
        assert!(!wildcard("x.example.org", "*.example.com"));
        assert!(match_pattern_list("web1", &["web*".into(), "!web2".into()]));
        assert!(!match_pattern_list(
            "web2",
            &["web*".into(), "!web2".into()]
        ));
        assert!(match_pattern_list("HOST", &["host".into()]));
    }

    #[test]
    fn authorized_keys_with_names_and_comments() {
        let text = format!(
            "# comment\n\n{KEY} alice@laptop\nname=\"bob\",name=\"carol\" {KEY} x\nno-pty {KEY}\ncommand=\"echo a, b\",name=\"d e\" {KEY} c d e\n"
        );
        let keys = parse_authorized_keys(&text, "ak").unwrap();
        assert_eq!(keys.len(), 4);
        assert!(keys[0].names.is_empty());
        assert_eq!(keys[1].names, ["bob", "carol"]);
        assert!(keys[2].names.is_empty());
        assert_eq!(keys[3].names, ["d e"]);
        let err = parse_authorized_keys("garbage here", "ak").unwrap_err();
        assert!(err.to_string().contains("ak line 1"), "{err}");
    }

    #[test]
    fn known_hosts_plain_and_hashed() {
        // Hashed form of "[127.0.0.1]:7000" with a fixed salt.
        let salt = b"0123456789abcdef0123";
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.1]:7000");
        let hash = mac.finalize().into_bytes();
        let b64 = data_encoding::BASE64;
        let text = format!(
            "server1,*.lan {KEY}\n|1|{}|{} {KEY}\n@revoked old {KEY}\n@cert-authority *.ca {KEY}\n",
            b64.encode(salt),
            b64.encode(&hash)
        );
        let hosts = parse_known_hosts(&text, "kh").unwrap();
        assert_eq!(hosts.len(), 3);
        assert!(hosts[0].matches("server1") && hosts[0].matches("box.lan"));
        assert!(hosts[1].matches("[127.0.0.1]:7000"));
        assert!(!hosts[1].matches("[127.0.0.1]:7001"));
        assert!(hosts[2].revoked);
        assert_eq!(host_port_name("h", 22), "h");
        assert_eq!(host_port_name("h", 7000), "[h]:7000");
    }
}
