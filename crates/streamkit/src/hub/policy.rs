//! Who may reach whom through a hub, and which services: a small rule file.
//!
//! ```text
//! # first match wins; a file with rules denies what no rule allows
//! alice -> carol:echo        # alice may open carol's echo
//! deny mallory -> *          # mallory may reach nobody
//! * -> printer:*             # everyone may open any service of printer
//! ```

use std::collections::BTreeMap;

use crate::wire::relay::Allowed;

/// A hub's routing policy: who may reach whom, and which services.
///
/// ```text
/// # first match wins; a file with rules denies what no rule allows
/// alice -> carol:echo        # alice may open carol's echo
/// deny mallory -> *          # mallory may reach nobody
/// * -> printer:*             # everyone may open any service of printer
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    /// What no rule decides.
    default_allow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    allow: bool,
    from: Option<String>,
    to: Option<String>,
    /// `None`: every service.
    service: Option<String>,
}

/// Why a policy file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy line {line}: {why} (expected `[allow|deny] FROM -> TO[:SERVICE]`)")]
pub struct PolicyError {
    /// The line number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

impl Default for Policy {
    /// Every peer the hub trusts may reach every other, any service.
    fn default() -> Policy {
        Policy::allow_all()
    }
}

impl Policy {
    /// Every peer the hub trusts may reach every other, any service.
    pub fn allow_all() -> Policy {
        Policy {
            rules: Vec::new(),
            default_allow: true,
        }
    }

    /// Parses a rule file: one rule per line, `[allow|deny] FROM -> TO[:SERVICE]`,
    /// `FROM` and `TO` a peer name or `*`, `SERVICE` a service or `*` (the default);
    /// `#` starts a comment. The first rule that matches decides; what no rule
    /// matches is denied.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| PolicyError {
                line: i + 1,
                why: why.to_owned(),
            };
            let (allow, rest) = match line.split_once(char::is_whitespace) {
                Some(("allow", rest)) => (true, rest),
                Some(("deny", rest)) => (false, rest),
                _ => (true, line),
            };
            let (from, to) = rest.split_once("->").ok_or_else(|| bad("no `->`"))?;
            let (from, to) = (from.trim(), to.trim());
            let (to, service) = match to.split_once(':') {
                Some((t, s)) => (t.trim(), s.trim()),
                None => (to, "*"),
            };
            for (what, v) in [("sender", from), ("target", to), ("service", service)] {
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(bad(&format!("the {what} must be one word")));
                }
            }
            let pattern = |v: &str| (v != "*").then(|| v.to_owned());
            rules.push(Rule {
                allow,
                from: pattern(from),
                to: pattern(to),
                service: pattern(service),
            });
        }
        Ok(Policy {
            rules,
            default_allow: false,
        })
    }

    /// The services `from` may open on `to`.
    pub fn allowed(&self, from: &str, to: &str) -> Allowed {
        // Services decided by a rule naming them, before any rule for all.
        let mut decided: BTreeMap<&str, bool> = BTreeMap::new();
        let all = |allow: bool, decided: BTreeMap<&str, bool>| {
            let pick = |want: bool| {
                decided
                    .iter()
                    .filter(|(_, a)| **a == want)
                    .map(|(s, _)| (*s).to_owned())
                    .collect()
            };
            if allow {
                Allowed::AllBut(pick(false))
            } else {
                Allowed::Only(pick(true))
            }
        };
        for r in &self.rules {
            let hits = |p: &Option<String>, v: &str| p.as_deref().is_none_or(|p| p == v);
            if !hits(&r.from, from) || !hits(&r.to, to) {
                continue;
            }
            match &r.service {
                Some(s) => {
                    decided.entry(s.as_str()).or_insert(r.allow);
                }
                None => return all(r.allow, decided),
            }
        }
        all(self.default_allow, decided)
    }

    /// Whether `from` may reach `to` at all (some service).
    pub fn reaches(&self, from: &str, to: &str) -> bool {
        !self.allowed(from, to).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins() {
        let p = Policy::parse(
            "# who may reach whom\n\
             alice -> carol:echo\n\
             deny alice -> carol:sink\n\
             allow alice -> carol:sink   # never reached: denied above\n\
             deny mallory -> *\n\
             * -> printer:*\n",
        )
        .unwrap();
        let a = p.allowed("alice", "carol");
        assert!(a.allows("echo"));
        assert!(!a.allows("sink"));
        assert!(!a.allows("other"));
        assert!(p.reaches("alice", "carol"));
        assert!(!p.reaches("bob", "carol"));
        assert!(p.allowed("bob", "printer").allows("anything"));
        assert!(!p.reaches("mallory", "printer"));
    }

    #[test]
    fn a_rule_for_all_keeps_earlier_exceptions() {
        let p = Policy::parse("deny * -> carol:admin\n* -> *\n").unwrap();
        let a = p.allowed("alice", "carol");
        assert!(a.allows("echo"));
        assert!(!a.allows("admin"));
        assert!(p.allowed("alice", "bob").allows("admin"));
    }

    #[test]
    fn default_allows_everything() {
        assert!(Policy::default().allowed("a", "b").allows("x"));
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let e = Policy::parse("alice -> carol\nalice carol\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(Policy::parse("a b -> c").is_err());
    }
}
