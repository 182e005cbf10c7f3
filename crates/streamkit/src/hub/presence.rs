//! The hub's presence: the names connected to it, and a bounded log of the
//! changes, from which each peer is sent what it has not seen yet. A peer's
//! sender keeps only the version it has seen, so a hub with many peers holds one
//! set and one log, however far behind its peers are; one that fell further
//! behind than the log reaches gets the whole set again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::wire::relay::PresenceUpdate;

/// Changes kept for peers that are behind.
pub(super) const LOG: usize = 4096;

#[derive(Default)]
pub(super) struct Presence {
    names: BTreeSet<String>,
    /// The version of the latest change (0: none yet).
    version: u64,
    /// The latest changes, oldest first, with their versions.
    log: VecDeque<(u64, PresenceUpdate)>,
}

/// What a peer that has seen some version is sent next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Catch {
    /// Nothing changed.
    Nothing,
    /// These changes, at most one per name.
    Changes(Vec<PresenceUpdate>),
    /// Everything: the peer is too far behind (or new).
    Everything(Vec<String>),
}

impl Presence {
    /// Makes the set `names`, logging the difference; whether anything changed.
    pub(super) fn set(&mut self, names: BTreeSet<String>) -> bool {
        let left: Vec<String> = self.names.difference(&names).cloned().collect();
        let joined: Vec<String> = names.difference(&self.names).cloned().collect();
        if left.is_empty() && joined.is_empty() {
            return false;
        }
        let changes = left
            .into_iter()
            .map(PresenceUpdate::Left)
            .chain(joined.into_iter().map(PresenceUpdate::Joined));
        for change in changes {
            self.version += 1;
            self.log.push_back((self.version, change));
            if self.log.len() > LOG {
                self.log.pop_front();
            }
        }
        self.names = names;
        true
    }

    pub(super) fn version(&self) -> u64 {
        self.version
    }

    /// The frame a peer that has seen `seen` needs (`None`: nothing it is shown
    /// changed), encoded in place (a hub with many peers copies no set for
    /// each), and the version it will then have seen.
    pub(super) fn frame_since(
        &self,
        seen: u64,
        shown: impl Fn(&str) -> bool,
    ) -> (Option<Vec<u8>>, u64) {
        let mut out = Vec::new();
        let mut line = |sign: u8, name: &str| {
            out.push(sign);
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        };
        let oldest = self.log.front().map_or(self.version + 1, |(v, _)| *v);
        if seen == 0 || seen + 1 < oldest {
            line(b'=', "");
            for n in self.names.iter().filter(|n| shown(n)) {
                line(b'+', n);
            }
        } else {
            match self.since(seen).0 {
                Catch::Changes(changes) => {
                    for c in changes {
                        match c {
                            PresenceUpdate::Joined(n) if shown(&n) => line(b'+', &n),
                            PresenceUpdate::Left(n) if shown(&n) => line(b'-', &n),
                            _ => {}
                        }
                    }
                }
                Catch::Nothing | Catch::Everything(_) => {}
            }
        }
        ((!out.is_empty()).then_some(out), self.version)
    }

    /// What a peer that has seen `seen` (0: nothing) needs, and the version it
    /// will then have seen.
    pub(super) fn since(&self, seen: u64) -> (Catch, u64) {
        if seen == self.version && seen != 0 {
            return (Catch::Nothing, seen);
        }
        let oldest = self.log.front().map_or(self.version + 1, |(v, _)| *v);
        if seen == 0 || seen + 1 < oldest {
            return (
                Catch::Everything(self.names.iter().cloned().collect()),
                self.version,
            );
        }
        // The last change of each name since `seen`.
        let mut last: BTreeMap<&str, &PresenceUpdate> = BTreeMap::new();
        for (_, change) in self.log.iter().filter(|(v, _)| *v > seen) {
            if let PresenceUpdate::Joined(n) | PresenceUpdate::Left(n) = change {
                last.insert(n.as_str(), change);
            }
        }
        let changes = last.into_values().cloned().collect();
        (Catch::Changes(changes), self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_peer_gets_everything_then_what_changed_once_per_name() {
        let mut p = Presence::default();
        assert!(p.set(set(&["a", "b"])));
        let (first, seen) = p.since(0);
        assert_eq!(first, Catch::Everything(vec!["a".into(), "b".into()]));
        assert_eq!(p.since(seen).0, Catch::Nothing);
        assert!(!p.set(set(&["a", "b"])), "no change, no version");
        p.set(set(&["a", "c"]));
        p.set(set(&["a"]));
        p.set(set(&["a", "b"]));
        let (changes, now) = p.since(seen);
        assert_eq!(
            changes,
            Catch::Changes(vec![
                PresenceUpdate::Joined("b".into()),
                PresenceUpdate::Left("c".into()),
            ])
        );
        assert_eq!(now, p.version());
    }

    #[test]
    fn frames_are_what_the_peer_is_shown() {
        let mut p = Presence::default();
        p.set(set(&["me", "a", "hidden"]));
        let shown = |n: &str| n != "me" && n != "hidden";
        let (first, seen) = p.frame_since(0, shown);
        let first = crate::wire::relay::decode_presence(&first.unwrap()).unwrap();
        assert_eq!(
            first,
            vec![PresenceUpdate::Reset, PresenceUpdate::Joined("a".into())]
        );
        p.set(set(&["me", "a"]));
        assert_eq!(
            p.frame_since(seen, shown).0,
            None,
            "only a hidden name left"
        );
        p.set(set(&["me"]));
        let (next, _) = p.frame_since(seen, shown);
        assert_eq!(
            crate::wire::relay::decode_presence(&next.unwrap()).unwrap(),
            vec![PresenceUpdate::Left("a".into())]
        );
    }

    #[test]
    fn a_peer_too_far_behind_gets_everything_again() {
        let mut p = Presence::default();
        p.set(set(&["x"]));
        let (_, seen) = p.since(0);
        for i in 0..LOG {
            p.set(set(&["x", &format!("n{i}")]));
        }
        assert!(matches!(p.since(seen).0, Catch::Everything(names) if names.len() == 2));
    }
}
