//! The hosts of the mesh as the daemon sees them at one moment: who is up,
//! what each is called, and the one place a name or id prefix given by an
//! operator is turned into a host.

use std::collections::{BTreeMap, BTreeSet};

/// What the allocator and the views ask about hosts (peer ids in hex).
pub trait Members: Sync {
    /// This host's id.
    fn me(&self) -> &str;
    /// Whether `host` is reachable now; this host always is.
    fn is_live(&self, host: &str) -> bool;
    /// The host's name, or the start of its id if unknown.
    fn name_of(&self, host: &str) -> String;
    /// Every host known, this one included, live or not.
    fn all(&self) -> Vec<String>;
}

/// One host of a [`HostSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub up: bool,
    /// Advertised metadata (data port, network key).
    pub meta: BTreeMap<String, String>,
}

/// A snapshot of the mesh's hosts, taken once per operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSet {
    me: Host,
    peers: Vec<Host>,
}

/// Which hosts a lookup may answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any host, this one included.
    Everyone,
    /// Only other hosts.
    Peers,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no host named or with id {0:?}")]
    Unknown(String),
    #[error("{query:?} is ambiguous: it matches {}; give more of the id", candidates.join(", "))]
    Ambiguous {
        query: String,
        /// `name (id prefix)` of each match.
        candidates: Vec<String>,
    },
}

/// The short form of an id used in messages.
pub fn short_id(id: &str) -> &str {
    // Ids can come from peers: at most 12 characters, never slicing
    // through one.
    let end = id.char_indices().nth(12).map_or(id.len(), |(i, _)| i);
    &id[..end]
}

impl HostSet {
    pub fn new(me: Host, peers: Vec<Host>) -> HostSet {
        HostSet { me, peers }
    }

    /// From gossip's member list.
    pub fn from_members(me_id: &str, me_name: &str, members: &[gossip::Member]) -> HostSet {
        HostSet {
            me: Host {
                id: me_id.to_string(),
                name: me_name.to_string(),
                up: true,
                meta: BTreeMap::new(),
            },
            peers: members
                .iter()
                .map(|m| Host {
                    id: m.id.to_hex(),
                    name: m.name.clone(),
                    up: m.state == gossip::PeerState::Up,
                    meta: m.meta.clone(),
                })
                .collect(),
        }
    }

    pub fn this_host(&self) -> &Host {
        &self.me
    }

    pub fn peer(&self, id: &str) -> Option<&Host> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Hosts that are up, this one included.
    pub fn live(&self) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|p| p.up)
            .map(|p| p.id.clone())
            .chain(std::iter::once(self.me.id.clone()))
            .collect()
    }

    /// Turns an operator's `NAME`, `ID` or id prefix into a host. A name
    /// matches before any prefix does, so a peer called `ab` is never taken
    /// for a host whose id happens to start with `ab`. Several matches are
    /// an error that names them.
    pub fn resolve(&self, query: &str, scope: Scope) -> Result<&Host, LookupError> {
        let candidates: Vec<&Host> = match scope {
            Scope::Everyone => std::iter::once(&self.me).chain(&self.peers).collect(),
            Scope::Peers => self.peers.iter().collect(),
        };
        if query.is_empty() {
            return Err(LookupError::Unknown(query.to_string()));
        }
        let by_name: Vec<&Host> = candidates
            .iter()
            .copied()
            .filter(|h| h.name == query)
            .collect();
        let by_id: Vec<&Host> = candidates
            .iter()
            .copied()
            .filter(|h| h.id.starts_with(&query.to_ascii_lowercase()))
            .collect();
        let exact_id = by_id.iter().copied().find(|h| h.id == query);
        let found = if !by_name.is_empty() {
            by_name
        } else if let Some(h) = exact_id {
            vec![h]
        } else {
            by_id
        };
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(LookupError::Unknown(query.to_string())),
            many => Err(LookupError::Ambiguous {
                query: query.to_string(),
                candidates: many
                    .iter()
                    .map(|h| format!("{} ({})", h.name, short_id(&h.id)))
                    .collect(),
            }),
        }
    }
}

impl Members for HostSet {
    fn me(&self) -> &str {
        &self.me.id
    }

    fn is_live(&self, host: &str) -> bool {
        host == self.me.id || self.peer(host).is_some_and(|p| p.up)
    }

    fn name_of(&self, host: &str) -> String {
        if host == self.me.id {
            return self.me.name.clone();
        }
        self.peer(host)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| short_id(host).to_string())
    }

    fn all(&self) -> Vec<String> {
        std::iter::once(&self.me)
            .chain(&self.peers)
            .map(|h| h.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn short_ids_never_split_a_character() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        // 11 ASCII bytes then a 2-byte character across the 12-byte cut.
        assert_eq!(short_id("01234567890é-rest"), "01234567890é");
    }

    use super::*;

    fn host(id: &str, name: &str, up: bool) -> Host {
        Host {
            id: id.into(),
            name: name.into(),
            up,
            meta: BTreeMap::new(),
        }
    }

    fn set() -> HostSet {
        HostSet::new(
            host("ab12ff", "me", true),
            vec![
                host("ab", "ab34cd", true),
                host("ab34cd", "ab", false),
                host("cd5678", "db", true),
                host("cd9999", "db2", false),
            ],
        )
    }

    #[test]
    fn names_ids_and_prefixes() {
        let s = set();
        assert_eq!(s.resolve("me", Scope::Everyone).unwrap().id, "ab12ff");
        assert_eq!(s.resolve("ab12", Scope::Everyone).unwrap().id, "ab12ff");
        assert_eq!(s.resolve("db", Scope::Everyone).unwrap().id, "cd5678");
        assert_eq!(s.resolve("CD56", Scope::Everyone).unwrap().id, "cd5678");
        assert!(matches!(
            s.resolve("nobody", Scope::Everyone),
            Err(LookupError::Unknown(_))
        ));
        assert!(matches!(
            s.resolve("", Scope::Everyone),
            Err(LookupError::Unknown(_))
        ));
        // This host is not a peer.
        assert!(matches!(
            s.resolve("me", Scope::Peers),
            Err(LookupError::Unknown(_))
        ));
    }

    #[test]
    fn a_peer_name_wins_over_an_id_prefix() {
        let s = set();
        // "ab" is a prefix of this host's id and of two peers' ids, and the
        // name of one peer: the name wins.
        assert_eq!(s.resolve("ab", Scope::Everyone).unwrap().id, "ab34cd");
        // "ab34cd" is one peer's name and another's full id: the name wins.
        assert_eq!(s.resolve("ab34cd", Scope::Everyone).unwrap().id, "ab");
    }

    #[test]
    fn ambiguous_prefixes_name_the_candidates() {
        let s = set();
        let e = s.resolve("cd", Scope::Everyone).unwrap_err();
        match &e {
            LookupError::Ambiguous { candidates, .. } => {
                assert_eq!(candidates, &["db (cd5678)", "db2 (cd9999)"]);
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        assert!(e.to_string().contains("db2 (cd9999)"), "{e}");
    }

    #[test]
    fn liveness_and_names() {
        let s = set();
        assert_eq!(
            s.live(),
            ["ab12ff", "ab", "cd5678"].map(String::from).into()
        );
        assert!(s.is_live("ab12ff"));
        assert!(!s.is_live("cd9999"));
        assert!(!s.is_live("unknown"));
        assert_eq!(s.name_of("cd9999"), "db2");
        assert_eq!(s.name_of("ab12ff"), "me");
        assert_eq!(s.name_of("0123456789abcdef"), "0123456789ab");
        assert_eq!(s.all().len(), 5);
    }
}
