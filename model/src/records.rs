//! What the hosts of a mesh replicate: the gossip channels, their names and
//! the records they hold, and the few operations the daemon needs on a
//! last-writer-wins map. Every host reads and writes these; nothing here
//! does I/O.

use gossip::{Channel, LwwMap, PeerId};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Network definitions, keyed by network id.
pub const NETWORKS_CHANNEL: &str = "networks";
/// Addresses in use, keyed by [`endpoint_key`].
pub const ENDPOINTS_CHANNEL: &str = "endpoints";
/// Address ranges and their owners, keyed by [`range_key`].
pub const RING_CHANNEL: &str = "ipam";
/// Requests for address space, keyed by [`request_key`]; not persisted.
pub const REQUESTS_CHANNEL: &str = "ipam-requests";
/// Hosts removed for good, keyed by peer id (hex).
pub const REMOVED_CHANNEL: &str = "removed-peers";
/// What any member may change about a network ([`NetworkSettings`]), keyed
/// by network id; apart from the creator-only definitions.
pub const NETWORK_SETTINGS_CHANNEL: &str = "network-settings";

pub type Records<V> = Channel<LwwMap<String, V>>;

/// Values a daemon keeps on a channel.
pub trait Record: Clone + Serialize + DeserializeOwned + Send + Sync + PartialEq + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + PartialEq + 'static> Record for T {}

pub fn put<V: Record>(ch: &Records<V>, me: PeerId, key: &str, value: V) {
    ch.modify(|m| m.set(me, key.to_string(), value));
}

pub fn remove<V: Record>(ch: &Records<V>, me: PeerId, key: &str) {
    ch.modify(|m| m.remove(me, key.to_string()));
}

/// The live (not removed) records.
pub fn live<V: Record>(ch: &Records<V>) -> BTreeMap<String, V> {
    ch.get()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn get<V: Record>(ch: &Records<V>, key: &str) -> Option<V> {
    ch.get().get(&key.to_string()).cloned()
}

/// The replicated state of one host: one handle per channel.
#[derive(Clone)]
pub struct Channels {
    pub networks: Records<NetworkDef>,
    pub endpoints: Records<EndpointRecord>,
    pub ring: Records<RangeEntry>,
    pub requests: Records<SpaceRequest>,
    pub removed: Records<RemovedPeer>,
    pub settings: Records<NetworkSettings>,
}

impl Channels {
    /// Channels bound to no node (tests; see [`gossip::Channel::detached`]).
    pub fn detached() -> Channels {
        Channels {
            networks: Channel::detached(NETWORKS_CHANNEL, LwwMap::new()),
            endpoints: Channel::detached(ENDPOINTS_CHANNEL, LwwMap::new()),
            ring: Channel::detached(RING_CHANNEL, LwwMap::new()),
            requests: Channel::detached(REQUESTS_CHANNEL, LwwMap::new()),
            removed: Channel::detached(REMOVED_CHANNEL, LwwMap::new()),
            settings: Channel::detached(NETWORK_SETTINGS_CHANNEL, LwwMap::new()),
        }
    }

    /// Plays gossip between two hosts' detached channels: each learns what
    /// the other knows (tests: hosts played without a node).
    pub fn sync_with(&self, other: &Channels) {
        fn both<V: Record>(a: &Records<V>, b: &Records<V>) {
            a.update(b.get());
            b.update(a.get());
        }
        both(&self.networks, &other.networks);
        both(&self.endpoints, &other.endpoints);
        both(&self.ring, &other.ring);
        both(&self.requests, &other.requests);
        both(&self.removed, &other.removed);
        both(&self.settings, &other.settings);
    }

    /// The settings of `network` (the defaults if none were written).
    pub fn settings_of(&self, network: &str) -> NetworkSettings {
        get(&self.settings, network).unwrap_or_default()
    }

    pub fn removed_hosts(&self) -> BTreeSet<String> {
        live(&self.removed).into_keys().collect()
    }

    /// IPv4 addresses in use on `network`, by any host.
    pub fn used_addresses(&self, network: &str) -> BTreeSet<u32> {
        used_addresses(live(&self.endpoints).values(), network)
    }

    /// The records the DNS of `network` may answer with: those of hosts
    /// that are live (`live`, this host included) and not removed.
    pub fn serving_records(
        &self,
        network: &str,
        live_hosts: &BTreeSet<String>,
    ) -> Vec<EndpointRecord> {
        let removed = self.removed_hosts();
        live(&self.endpoints)
            .into_values()
            .filter(|e| {
                e.network == network && live_hosts.contains(&e.host) && !removed.contains(&e.host)
            })
            .collect()
    }
}

/// IPv4 addresses of `network` among `records`.
pub fn used_addresses<'a>(
    records: impl IntoIterator<Item = &'a EndpointRecord>,
    network: &str,
) -> BTreeSet<u32> {
    records
        .into_iter()
        .filter(|e| e.network == network)
        .filter_map(|e| match e.ip {
            IpAddr::V4(v4) => Some(u32::from(v4)),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// A network definition, replicated to every host (keyed by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    pub id: String,
    pub subnet: Ipv4Net,
    /// IPv6 ULA prefix (a /64); each container's IPv6 address is derived
    /// from its IPv4 one, so IPv4 uniqueness gives IPv6 uniqueness.
    pub subnet6: Ipv6Net,
    /// Peer id of the host that created it.
    pub created_by: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Hosts (peer ids, hex) the network is restricted to; empty = all.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// For a restricted network: its secret, sealed to each member host
    /// (peer id hex → sealed copy, see `netsecret` in meshd).
    #[serde(default)]
    pub sealed_secrets: BTreeMap<String, String>,
}

impl NetworkDef {
    pub fn allows_host(&self, peer_hex: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == peer_hex)
    }

    /// The IPv6 address paired with an IPv4 address of this network: the
    /// ULA prefix plus the IPv4 host offset.
    pub fn ipv6_for(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let offset = u32::from(v4) - u32::from(self.subnet.network());
        Ipv6Addr::from(u128::from(self.subnet6.network()) | u128::from(offset))
    }
}

/// What any member may change about a network. Replicated as JSON text
/// (inside the binary gossip encoding) so that fields can be added: a
/// field absent from a record decodes to its default, and a field this
/// version does not know survives re-encoding (the writer's signature
/// covers the exact text, see [`SettingsFields`]).
#[derive(Debug, Clone, Default)]
pub struct NetworkSettings {
    pub policy: mesh_api::PolicyMode,
    /// Containers reach outside the mesh through their host (issue 13).
    pub egress: bool,
    /// Interface MTU of the network's devices; None: what the smallest
    /// known path allows (see `mtu` in meshd). A setting rather than a
    /// field of [`NetworkDef`]: that one is postcard, where a new field
    /// would not decode on older hosts.
    pub mtu: Option<u32>,
    /// The text this value was decoded from, re-sent verbatim while the
    /// fields are unchanged.
    raw: Option<String>,
}

/// The JSON form of [`NetworkSettings`]; every field has a default.
#[derive(Serialize, Deserialize, PartialEq)]
struct SettingsFields {
    #[serde(default)]
    policy: mesh_api::PolicyMode,
    #[serde(default)]
    egress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
}

impl NetworkSettings {
    pub fn new(policy: mesh_api::PolicyMode, egress: bool) -> NetworkSettings {
        NetworkSettings {
            policy,
            egress,
            mtu: None,
            raw: None,
        }
    }

    fn fields(&self) -> SettingsFields {
        SettingsFields {
            policy: self.policy,
            egress: self.egress,
            mtu: self.mtu,
        }
    }

    /// A peer's value admitted only if it is what the API could write.
    pub fn validate(&self) -> Result<(), String> {
        match &self.raw {
            Some(raw) if raw.len() > 4096 => Err("network settings too long".into()),
            _ => self
                .mtu
                .map_or(Ok(()), crate::networks::validate_mtu)
                .map_err(|e| e.to_string()),
        }
    }
}

impl PartialEq for NetworkSettings {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl Serialize for NetworkSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.fields();
        let unchanged = self
            .raw
            .as_deref()
            .and_then(|r| serde_json::from_str::<SettingsFields>(r).ok())
            .is_some_and(|f| f == fields);
        match (&self.raw, unchanged) {
            (Some(raw), true) => s.serialize_str(raw),
            _ => {
                let text = serde_json::to_string(&fields).map_err(serde::ser::Error::custom)?;
                s.serialize_str(&text)
            }
        }
    }
}

impl<'de> Deserialize<'de> for NetworkSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let f: SettingsFields = serde_json::from_str(&raw).map_err(serde::de::Error::custom)?;
        Ok(NetworkSettings {
            policy: f.policy,
            egress: f.egress,
            mtu: f.mtu,
            raw: Some(raw),
        })
    }
}

/// An address in use on a network, replicated so a duplicate is refused on
/// any host, and the source of the network's DNS names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub ip: IpAddr,
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    pub mac: String,
    /// Peer id of the host the container lives on.
    pub host: String,
    /// DNS name (`<name>.<network>`), if the container has one.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// Marks the endpoint record of a macvlan attachment: its address is on
/// the physical network, not necessarily inside the network's subnet.
pub const MACVLAN_MARK: &str = "macvlan";

pub fn endpoint_key(network: &str, ip: IpAddr) -> String {
    format!("{network}/{ip}")
}

/// A host removed for good (`meshctl peer rm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedPeer {
    pub id: String,
    pub name: String,
    pub removed_by: String,
}

/// One range `[start, end)` of a network's IPv4 space and its owner (peer
/// id, hex). Only the owner writes it (see [`crate::ipam`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeEntry {
    pub network: String,
    pub start: u32,
    pub end: u32,
    pub owner: String,
}

impl RangeEntry {
    pub fn key(&self) -> String {
        range_key(&self.network, self.start)
    }

    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn contains(&self, a: u32) -> bool {
        self.start <= a && a < self.end
    }
}

pub fn range_key(network: &str, start: u32) -> String {
    format!("{network}/{start:08x}")
}

/// A host asking an owner for space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRequest {
    pub network: String,
    pub from: String,
    pub to: String,
    pub want: Want,
    /// Distinguishes successive requests of one host.
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    /// Any free space (the owner gives half of its largest free run).
    Space,
    /// Exactly this address (a static `--ip` inside someone else's range).
    Addr(u32),
}

pub fn request_key(network: &str, from: &str) -> String {
    format!("{network}/{from}")
}

/// An address in a record (`ADDR` or `ADDR/LEN`) that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 address (optionally with /LEN)")]
pub struct BadAddress(pub String);

/// The address of `ADDR/LEN` (or a bare `ADDR`): never a made-up default.
pub fn parse_ipv4(addr_len: &str) -> Result<Ipv4Addr, BadAddress> {
    let addr = addr_len.split('/').next().unwrap_or_default();
    addr.parse().map_err(|_| BadAddress(addr_len.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerId = PeerId([1; 32]);

    fn rec(ip: &str, host: &str, name: &str) -> EndpointRecord {
        EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: String::new(),
            host: host.into(),
            name: Some(name.into()),
            version: None,
        }
    }

    #[test]
    fn addresses_parse_or_fail_never_default() {
        assert_eq!(
            parse_ipv4("10.0.0.7/24").unwrap(),
            Ipv4Addr::new(10, 0, 0, 7)
        );
        assert_eq!(parse_ipv4("10.0.0.7").unwrap(), Ipv4Addr::new(10, 0, 0, 7));
        for bad in ["", "/24", "bogus/24", "10.0.0/24", "fd00::1/64"] {
            let e = parse_ipv4(bad).unwrap_err();
            assert_eq!(e.0, bad);
        }
    }

    #[test]
    fn dns_serves_only_live_and_not_removed_hosts() {
        let ch = Channels::detached();
        for (i, host) in ["me", "up", "down", "gone"].iter().enumerate() {
            let r = rec(&format!("10.0.0.{}", i + 2), host, host);
            put(&ch.endpoints, A, &endpoint_key("blue", r.ip), r);
        }
        let other = EndpointRecord {
            network: "red".into(),
            ..rec("10.0.0.9", "me", "x")
        };
        put(&ch.endpoints, A, &endpoint_key("red", other.ip), other);
        put(
            &ch.removed,
            A,
            "gone",
            RemovedPeer {
                id: "gone".into(),
                name: "g".into(),
                removed_by: "me".into(),
            },
        );
        let live_hosts: BTreeSet<String> = ["me", "up", "gone"].map(String::from).into();
        let names: BTreeSet<String> = ch
            .serving_records("blue", &live_hosts)
            .into_iter()
            .filter_map(|r| r.name)
            .collect();
        assert_eq!(names, ["me", "up"].map(String::from).into());
        assert_eq!(ch.used_addresses("blue").len(), 4);
        assert_eq!(ch.used_addresses("red").len(), 1);
        // A deleted record stops answering.
        remove(
            &ch.endpoints,
            A,
            &endpoint_key("blue", "10.0.0.3".parse().unwrap()),
        );
        assert_eq!(ch.serving_records("blue", &live_hosts).len(), 1);
    }

    #[test]
    fn settings_decode_with_missing_and_unknown_fields() {
        use gossip::Mergeable;
        let decode = |text: &str| {
            let bytes = postcard::to_stdvec(text).unwrap();
            postcard::from_bytes::<NetworkSettings>(&bytes).unwrap()
        };
        let old = decode("{}");
        assert_eq!(old, NetworkSettings::default());
        assert_eq!(old.policy, mesh_api::PolicyMode::Open);
        assert!(!old.egress);
        let partial = decode(r#"{"policy":"deny"}"#);
        assert_eq!(partial.policy, mesh_api::PolicyMode::Deny);
        assert!(!partial.egress);
        // A field of a later version survives re-encoding unchanged (its
        // writer's signature covers these bytes).
        let newer = r#"{"policy":"deny","egress":true,"mtu":1300}"#;
        let v = decode(newer);
        assert!(v.egress);
        assert_eq!(
            postcard::to_stdvec(&v).unwrap(),
            postcard::to_stdvec(newer).unwrap()
        );
        // A changed field is written afresh.
        let mut changed = v.clone();
        changed.egress = false;
        let back: NetworkSettings =
            postcard::from_bytes(&postcard::to_stdvec(&changed).unwrap()).unwrap();
        assert!(!back.egress);
        // Garbage is refused, never defaulted.
        let bad = postcard::to_stdvec("{\"policy\":\"closed\"}").unwrap();
        assert!(postcard::from_bytes::<NetworkSettings>(&bad).is_err());
        // Through a whole channel snapshot too.
        let ch = Channels::detached();
        put(&ch.settings, A, "blue", partial.clone());
        let snap = ch.settings.get().encode();
        let back = LwwMap::<String, NetworkSettings>::decode(&snap).unwrap();
        assert_eq!(back.get(&"blue".to_string()), Some(&partial));
    }

    #[test]
    fn two_detached_hosts_converge_on_records() {
        let (a, b) = (Channels::detached(), Channels::detached());
        let r = rec("10.0.0.2", "a", "web");
        put(&a.endpoints, A, &endpoint_key("blue", r.ip), r.clone());
        assert!(live(&b.endpoints).is_empty());
        a.sync_with(&b);
        assert_eq!(get(&b.endpoints, &endpoint_key("blue", r.ip)), Some(r));
    }
}
