//! What a replicated write must satisfy before it enters this host's state:
//! the admission rules of the guarded channels (see
//! [`gossip::LwwMap::guarded`], which already checked the writer's signature
//! and that the stamp is not from the future).
//!
//! - **Well formed**: keys match their values, ids and names are what the
//!   API accepts, ranges are non-empty and inside their network's usable
//!   span, a network definition passes the API's own checks.
//! - **Authorised by ownership**: a host writes only its own endpoints,
//!   requests and removals (`host`/`from`/`removed_by` is the writer), and
//!   a network only under its own name as creator. A range may take space
//!   only from its writer (its owner splitting it or granting part of it, so
//!   a grant is always signed by the previous owner) or from a host removed
//!   for good; a network's first range comes only from its creator (see
//!   [`range`] for space no admitted range covers).
//! - Removals (tombstones) may come from any member: `network rm --force`
//!   and `peer rm` remove other hosts' records, and a removal can only take
//!   away, never hijack.
//!
//! Rules that need another channel read it through its handle (the ring
//! reads the networks and the removals), never the reverse, so the channel
//! locks are always taken in one order.

use std::net::IpAddr;
use std::sync::Arc;

use gossip::state::{Admission, LwwEntry};
use gossip::{Channel, LwwMap, PeerId};

use crate::edge::{
    binding_key, fip_key, pool_key, FipBindingRecord, FipPool, FipRecord, BINDINGS_CHANNEL,
    FIPS_CHANNEL, POOLS_CHANNEL,
};
use crate::records::{
    self, EndpointRecord, NetworkDef, NetworkSettings, RangeEntry, Records, RemovedPeer,
    SpaceRequest, Want,
};
use crate::{ipam, networks};

mod edge;
mod services;
mod traffic;
mod wireguard;

pub use edge::{fip_binding, fip_pool, fip_record};
pub use wireguard::wg_client;

type Verdict = Result<(), String>;

/// Whether `s` is a full peer id (64 lowercase hex characters).
pub fn is_peer_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn writer_hex(writer: &PeerId) -> String {
    writer.to_hex()
}

fn check(cond: bool, reason: impl FnOnce() -> String) -> Verdict {
    if cond {
        Ok(())
    } else {
        Err(reason())
    }
}

/// A DNS label as names in the mesh use them (letters, digits, `-`, `_`;
/// 1..=63; no leading or trailing `-`).
pub fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn mac(s: &str) -> bool {
    s.is_empty()
        || (s.len() == 17
            && s.split(':').count() == 6
            && s.split(':')
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// A network definition: exactly what `network create` accepts, written by
/// the host it names as creator; an existing network is redefined only by
/// its creator.
pub fn network(
    key: &str,
    def: &NetworkDef,
    writer: &PeerId,
    current: Option<&NetworkDef>,
) -> Verdict {
    check(key == def.id, || {
        format!("key {key:?} is not the network id {:?}", def.id)
    })?;
    let (subnet, _) = networks::check_new_network(
        &def.id,
        &def.subnet.to_string(),
        Some(&def.subnet6.to_string()),
        &def.labels,
        &Default::default(),
    )
    .map_err(|e| format!("network {:?}: {e}", def.id))?;
    check(subnet == def.subnet, || {
        "subnet not in canonical form".into()
    })?;
    check(def.created_by == writer_hex(writer), || {
        format!("network {:?} names another host as its creator", def.id)
    })?;
    check(def.hosts.iter().all(|h| is_peer_hex(h)), || {
        "a restricted network's host is not a peer id".into()
    })?;
    check(
        def.sealed_secrets
            .keys()
            .all(|h| def.hosts.iter().any(|m| m == h)),
        || "a sealed secret for a host outside the network".into(),
    )?;
    check(def.labels.len() <= 64, || "too many labels".into())?;
    if let Some(existing) = current {
        check(existing.created_by == def.created_by, || {
            format!("network {:?} belongs to another creator", def.id)
        })?;
    }
    Ok(())
}

/// An address in use: the writer's own container (or reservation), under
/// its key, inside the network's subnet when the network is known here.
pub fn endpoint(
    key: &str,
    rec: &EndpointRecord,
    writer: &PeerId,
    net: Option<&NetworkDef>,
) -> Verdict {
    check(rec.host == writer_hex(writer), || {
        format!("endpoint {key:?} is for another host's container")
    })?;
    networks::validate_network_id(&rec.network).map_err(|e| e.to_string())?;
    check(key == records::endpoint_key(&rec.network, rec.ip), || {
        format!("key {key:?} does not match the endpoint")
    })?;
    check(mac(&rec.mac), || format!("bad MAC {:?}", rec.mac))?;
    if let Some(name) = &rec.name {
        check(dns_label(name), || {
            format!("name {name:?} is not a DNS label")
        })?;
    }
    check(rec.version.as_ref().is_none_or(|v| v.len() <= 64), || {
        "version too long".into()
    })?;
    let IpAddr::V4(v4) = rec.ip else {
        return Err("endpoint address is not IPv4".into());
    };
    let macvlan = rec.version.as_deref() == Some(records::MACVLAN_MARK);
    if let Some(net) = net.filter(|_| !macvlan) {
        check(net.subnet.contains(&v4), || {
            format!("{v4} is outside network {}'s subnet", net.id)
        })?;
        check(rec.ip6.is_none_or(|a| a == net.ipv6_for(v4)), || {
            "IPv6 address does not pair with the IPv4 one".into()
        })?;
    }
    Ok(())
}

/// A range: well formed, inside its network's usable span, and taking no
/// space from anyone but its writer (or a host removed for good): every
/// range it overlaps, among those admitted here, is the writer's, so a
/// grant is always signed by the previous owner. A network's first range
/// comes only from its creator. Space no admitted range covers may be
/// written (a host learning a ring whose grants were already re-split), but
/// two writes of one batch that overlap with different owners are both
/// refused, so the order of a batch cannot decide who owns what; honest
/// peers' batches, which never overlap, then settle it.
pub fn range(
    key: &str,
    r: &RangeEntry,
    writer: &PeerId,
    ring: &LwwMap<String, RangeEntry>,
    batch: &[&RangeEntry],
    net: Option<&NetworkDef>,
    removed: &dyn Fn(&str) -> bool,
) -> Verdict {
    networks::validate_network_id(&r.network).map_err(|e| e.to_string())?;
    check(key == r.key(), || {
        format!("key {key:?} does not match the range")
    })?;
    check(r.start < r.end, || {
        format!("empty or inverted range [{}, {})", r.start, r.end)
    })?;
    check(is_peer_hex(&r.owner), || "owner is not a peer id".into())?;
    let Some(net) = net else {
        // Retried by anti-entropy once the definition is here.
        return Err(format!("range of network {:?}, unknown here", r.network));
    };
    let (lo, hi) = ipam::usable_span(net.subnet);
    check(lo <= r.start && r.end <= hi, || {
        format!(
            "range [{}, {}) outside network {}'s usable space",
            r.start, r.end, net.id
        )
    })?;
    let me = writer_hex(writer);
    check(!removed(&me), || "writer was removed from the mesh".into())?;
    let overlaps = |e: &RangeEntry| e.network == r.network && e.end > r.start && e.start < r.end;
    let existing: Vec<&RangeEntry> = ring
        .iter()
        .map(|(_, v)| v)
        .filter(|e| e.network == r.network)
        .collect();
    if existing.is_empty() {
        return check(me == net.created_by, || {
            "only a network's creator writes its first range".into()
        });
    }
    if let Some(e) = existing
        .iter()
        .find(|e| overlaps(e) && e.owner != me && !removed(&e.owner))
    {
        return Err(format!(
            "range [{}, {}) of network {} takes space owned by {}",
            r.start,
            r.end,
            r.network,
            crate::hosts::short_id(&e.owner)
        ));
    }
    check(
        !batch.iter().any(|o| overlaps(o) && o.owner != r.owner),
        || "range conflicts with another write of the same batch".into(),
    )
}

/// A request for space: the writer's own, under its key.
pub fn request(
    key: &str,
    req: &SpaceRequest,
    writer: &PeerId,
    net: Option<&NetworkDef>,
) -> Verdict {
    check(req.from == writer_hex(writer), || {
        "request on behalf of another host".into()
    })?;
    networks::validate_network_id(&req.network).map_err(|e| e.to_string())?;
    check(key == records::request_key(&req.network, &req.from), || {
        format!("key {key:?} does not match the request")
    })?;
    check(is_peer_hex(&req.to), || "request to a non-peer".into())?;
    if let (Want::Addr(a), Some(net)) = (req.want, net) {
        check(net.subnet.contains(&std::net::Ipv4Addr::from(a)), || {
            "address asked for is outside the subnet".into()
        })?;
    }
    Ok(())
}

/// A removal for good: signed by the host that says it removed it.
pub fn removal(key: &str, r: &RemovedPeer, writer: &PeerId) -> Verdict {
    check(key == r.id && is_peer_hex(&r.id), || {
        "removal key is not the peer id".into()
    })?;
    check(r.removed_by == writer_hex(writer), || {
        "removal in another host's name".into()
    })?;
    check(r.name.len() <= 255, || "name too long".into())
}

/// The other values of the batch being merged, with their keys.
type Batch<'a, V> = &'a [(&'a String, &'a LwwEntry<V>)];

fn guard<V: records::Record>(
    name: &'static str,
    rule: impl Fn(&String, &V, &PeerId, &LwwMap<String, V>, Batch<'_, V>) -> Verdict
        + Send
        + Sync
        + 'static,
) -> LwwMap<String, V> {
    let admit: Admission<String, V> =
        Arc::new(
            move |key: &String, e: &LwwEntry<V>, map, batch| match &e.value {
                Some(v) => rule(key, v, &e.stamp.writer, map, batch),
                None if e.is_tombstone() => Ok(()),
                // Applying it as a removal could undo what the writer meant.
                None => Err("a value this build cannot read (a newer build's)".into()),
            },
        );
    LwwMap::guarded(name, admit)
}

/// The guarded (empty) initial state of each channel; the rules that read
/// other channels get their handles, so those channels are opened first.
pub struct Guards;

/// When removals of per-host records (endpoints, labels, health) are
/// forgotten (`gossip::state::expiry`). Only channels whose every value is
/// its host's own and rewritten by that host while it holds the container
/// expire: a host back after longer than this keeps only its own writes of
/// them, the rest comes back from the mesh. Networks, policies, services
/// and floating IPs, which any member may write and nobody re-derives,
/// keep their tombstones for good.
pub const OWNED_RECORDS_HORIZON: std::time::Duration = gossip::state::expiry::DEFAULT_HORIZON;

impl Guards {
    pub fn networks() -> LwwMap<String, NetworkDef> {
        guard(
            records::NETWORKS_CHANNEL,
            |key, def: &NetworkDef, writer, map, _| network(key, def, writer, map.get(key)),
        )
    }

    pub fn removed() -> LwwMap<String, RemovedPeer> {
        guard(
            records::REMOVED_CHANNEL,
            |key, r: &RemovedPeer, writer, _, _| removal(key, r, writer),
        )
    }

    /// Endpoints, their labels and their health (`services.rs`) expire
    /// their tombstones ([`OWNED_RECORDS_HORIZON`]); so a removed host's
    /// records, whose removal (`peer rm`) is forgotten in time, are refused
    /// if they come back, as its address ranges are.
    pub fn endpoints(
        networks: Records<NetworkDef>,
        removed: Records<RemovedPeer>,
    ) -> LwwMap<String, EndpointRecord> {
        guard(
            records::ENDPOINTS_CHANNEL,
            move |key, rec: &EndpointRecord, writer, _, _| {
                check(
                    !removed.read(|m| m.contains_key(&writer_hex(writer))),
                    || "writer was removed from the mesh".into(),
                )?;
                let net = records::get(&networks, &rec.network);
                endpoint(key, rec, writer, net.as_ref())
            },
        )
        .expiring(OWNED_RECORDS_HORIZON)
    }

    pub fn requests(networks: Records<NetworkDef>) -> LwwMap<String, SpaceRequest> {
        guard(
            records::REQUESTS_CHANNEL,
            move |key, req: &SpaceRequest, writer, _, _| {
                let net = records::get(&networks, &req.network);
                request(key, req, writer, net.as_ref())
            },
        )
    }

    pub fn ring(
        networks: Records<NetworkDef>,
        removed: Records<RemovedPeer>,
    ) -> LwwMap<String, RangeEntry> {
        guard(
            records::RING_CHANNEL,
            move |key, r: &RangeEntry, writer, ring, batch| {
                let net = records::get(&networks, &r.network);
                let gone = removed.get();
                let others: Vec<&RangeEntry> = batch
                    .iter()
                    .filter(|(k, _)| *k != key)
                    .filter_map(|(_, e)| e.value.as_ref())
                    .collect();
                range(key, r, writer, ring, &others, net.as_ref(), &|id| {
                    gone.contains_key(&id.to_string())
                })
            },
        )
    }
}

/// A network's settings: written by any member (`network set` works on any
/// host), only for a network that exists, with values the API could write.
pub fn network_settings(key: &str, s: &NetworkSettings, net: Option<&NetworkDef>) -> Verdict {
    check(net.is_some(), || {
        format!("settings of network {key:?}, unknown here")
    })?;
    s.validate()
}

impl Guards {
    pub fn network_settings(networks: Records<NetworkDef>) -> LwwMap<String, NetworkSettings> {
        guard(
            records::NETWORK_SETTINGS_CHANNEL,
            move |key, s: &NetworkSettings, _, _, _| {
                network_settings(key, s, records::get(&networks, key).as_ref())
            },
        )
    }
}

/// Detached guarded channels (tests: hosts played without a node).
pub fn detached_channels() -> records::Channels {
    let networks = Channel::detached(records::NETWORKS_CHANNEL, Guards::networks());
    let removed = Channel::detached(records::REMOVED_CHANNEL, Guards::removed());
    records::Channels {
        endpoints: Channel::detached(
            records::ENDPOINTS_CHANNEL,
            Guards::endpoints(networks.clone(), removed.clone()),
        ),
        requests: Channel::detached(
            records::REQUESTS_CHANNEL,
            Guards::requests(networks.clone()),
        ),
        ring: Channel::detached(
            records::RING_CHANNEL,
            Guards::ring(networks.clone(), removed.clone()),
        ),
        settings: Channel::detached(
            records::NETWORK_SETTINGS_CHANNEL,
            Guards::network_settings(networks.clone()),
        ),
        networks,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::{Identity, Stamp};
    use std::collections::BTreeMap;

    /// Real identities, so their writes are signed.
    fn id(n: u8) -> PeerId {
        Identity::from_seed([n + 100; 32]).unwrap().peer_id()
    }

    fn net(creator: PeerId) -> NetworkDef {
        NetworkDef {
            id: "blue".into(),
            subnet: "10.40.0.0/24".parse().unwrap(),
            subnet6: networks::derive_ula("blue"),
            created_by: creator.to_hex(),
            labels: BTreeMap::new(),
            hosts: vec![],
            sealed_secrets: BTreeMap::new(),
        }
    }

    fn range(start: u32, end: u32, owner: PeerId) -> RangeEntry {
        RangeEntry {
            network: "blue".into(),
            start,
            end,
            owner: owner.to_hex(),
        }
    }

    fn base() -> u32 {
        u32::from(std::net::Ipv4Addr::new(10, 40, 0, 0))
    }

    /// Host `victim`'s channels with network blue created by it.
    fn victim_state(victim: PeerId) -> records::Channels {
        let ch = detached_channels();
        let def = net(victim);
        records::put(&ch.networks, victim, "blue", def.clone());
        let first = ipam::initial_range("blue", def.subnet, &victim.to_hex());
        records::put(&ch.ring, victim, &first.key(), first);
        assert_eq!(
            records::live(&ch.ring).len(),
            1,
            "the creator's first range is admitted"
        );
        ch
    }

    /// What `attacker` writes on its own detached channels, played to `ch`.
    fn gossip_from<V: records::Record>(
        to: &Records<V>,
        write: impl FnOnce(&mut LwwMap<String, V>),
    ) {
        let mut theirs = LwwMap::new();
        gossip::Mergeable::bind_channel(&mut theirs, to.name());
        write(&mut theirs);
        to.update(theirs);
    }

    #[test]
    fn bad_ranges_are_dropped_and_the_ring_keeps_working() {
        let (victim, attacker) = (id(1), id(2));
        let ch = victim_state(victim);
        let before = records::live(&ch.ring);
        let b = base();
        for bad in [
            range(b + 100, b + 10, attacker), // inverted
            range(0, u32::MAX, attacker),     // the whole ring
            range(b + 10, b + 20, attacker),  // space owned by the victim
            range(b + 10, b + 20, victim),    // "granted" to the victim by a non-owner
            RangeEntry {
                owner: "é".repeat(32),
                ..range(b + 1, b + 2, attacker)
            }, // non-ASCII owner
        ] {
            gossip_from(&ch.ring, |m| {
                m.set(attacker, bad.key(), bad.clone());
            });
        }
        // A range of the victim re-stamped far in the future by its owner
        // is dropped too: it would shadow every later write.
        let forged = range(b + 1, b + 254, attacker);
        gossip_from(&ch.ring, |m| {
            m.apply(
                forged.key(),
                Stamp {
                    timestamp: u64::MAX,
                    writer: victim,
                },
                Some(forged.clone()),
            );
        });
        assert_eq!(records::live(&ch.ring), before, "victim's ring unchanged");

        // The victim still allocates and grants.
        let ring_of = |network| ipam::ranges(records::live(&ch.ring).values(), network);
        let ring = ring_of("blue");
        assert_eq!(ring.len(), 1);
        let grant = ipam::plan_grant(
            &ring,
            &victim.to_hex(),
            &Default::default(),
            &attacker.to_hex(),
            Want::Space,
        )
        .unwrap();
        ch.ring.modify(|m| {
            let mut delta = LwwMap::new();
            for e in grant {
                gossip::Mergeable::merge(&mut delta, &m.set(victim, e.key(), e));
            }
            delta
        });
        let ring = ring_of("blue");
        assert_eq!(
            ring.len(),
            2,
            "a grant signed by the owner is admitted: {ring:?}"
        );
        // Now the grantee may split what it was given.
        let given = ring
            .iter()
            .find(|r| r.owner == attacker.to_hex())
            .unwrap()
            .clone();
        let low = range(given.start, given.start + 1, attacker);
        let high = range(given.start + 1, given.end, attacker);
        gossip_from(&ch.ring, |m| {
            m.set(attacker, low.key(), low.clone());
            m.set(attacker, high.key(), high.clone());
        });
        assert_eq!(ring_of("blue").len(), 3);

        // A host that learns all of it at once (a full state after a
        // restart or a join) admits the whole chain of hand-overs.
        let fresh = detached_channels();
        fresh.networks.update(ch.networks.get());
        fresh.ring.update(ch.ring.get());
        assert_eq!(records::live(&fresh.ring), records::live(&ch.ring));
    }

    #[test]
    fn a_network_first_range_comes_only_from_its_creator() {
        let (creator, other) = (id(1), id(2));
        let ch = detached_channels();
        let def = net(creator);
        // Unknown network: refused (anti-entropy brings it back later).
        let first = ipam::initial_range("blue", def.subnet, &other.to_hex());
        gossip_from(&ch.ring, |m| {
            m.set(other, first.key(), first.clone());
        });
        assert!(records::live(&ch.ring).is_empty());
        records::put(&ch.networks, creator, "blue", def.clone());
        gossip_from(&ch.ring, |m| {
            m.set(other, first.key(), first.clone());
        });
        assert!(records::live(&ch.ring).is_empty(), "not the creator");
    }

    #[test]
    fn endpoints_are_written_only_by_their_host() {
        let (victim, attacker) = (id(1), id(2));
        let ch = victim_state(victim);
        let rec = |host: PeerId, ip: &str, name: &str| EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: "02:00:00:00:00:01".into(),
            host: host.to_hex(),
            name: Some(name.into()),
            version: None,
        };
        let web = rec(victim, "10.40.0.5", "web");
        let key = records::endpoint_key("blue", web.ip);
        records::put(&ch.endpoints, victim, &key, web.clone());
        // Hijack the victim's name with a record claiming its host.
        gossip_from(&ch.endpoints, |m| {
            m.set(attacker, key.clone(), rec(victim, "10.40.0.5", "web"));
            m.set(
                attacker,
                records::endpoint_key("blue", "10.40.0.9".parse().unwrap()),
                rec(victim, "10.40.0.9", "web"),
            );
            // Its own record, but under another key, outside the subnet, or badly named.
            m.set(
                attacker,
                "blue/10.40.0.7".into(),
                rec(attacker, "10.40.0.8", "x"),
            );
            m.set(
                attacker,
                "blue/10.99.0.1".into(),
                rec(attacker, "10.99.0.1", "x"),
            );
            m.set(
                attacker,
                "blue/10.40.0.3".into(),
                rec(attacker, "10.40.0.3", "bad name"),
            );
        });
        let live = records::live(&ch.endpoints);
        assert_eq!(live.len(), 1);
        assert_eq!(live[&key], web);
        // Its own, well-formed record is fine.
        let own = rec(attacker, "10.40.0.4", "db");
        gossip_from(&ch.endpoints, |m| {
            m.set(attacker, records::endpoint_key("blue", own.ip), own.clone());
        });
        assert_eq!(records::live(&ch.endpoints).len(), 2);
        // Once removed from the mesh (`peer rm`), its records are not taken
        // back, however they travel (their removal expires in a week).
        let gone = RemovedPeer {
            id: attacker.to_hex(),
            name: "h2".into(),
            removed_by: victim.to_hex(),
        };
        records::put(&ch.removed, victim, &attacker.to_hex(), gone);
        let key = records::endpoint_key("blue", own.ip);
        records::remove(&ch.endpoints, victim, &key);
        let later = rec(attacker, "10.40.0.6", "db2");
        gossip_from(&ch.endpoints, |m| {
            m.set(
                attacker,
                records::endpoint_key("blue", later.ip),
                later.clone(),
            );
        });
        assert_eq!(records::live(&ch.endpoints).len(), 1, "only the victim's");
    }

    #[test]
    fn networks_requests_and_removals_are_checked() {
        let (creator, attacker) = (id(1), id(2));
        let ch = victim_state(creator);
        // Redefining someone else's network, or one that fails the API's checks.
        let mut hijack = net(attacker);
        hijack.hosts = vec![attacker.to_hex()];
        let mut bad_id = net(attacker);
        bad_id.id = "BLUE\u{e9}".into();
        let mut bad_subnet = net(attacker);
        bad_subnet.id = "red".into();
        bad_subnet.subnet = "10.0.0.0/30".parse().unwrap();
        gossip_from(&ch.networks, |m| {
            m.set(attacker, "blue".into(), hijack);
            m.set(attacker, bad_id.id.clone(), bad_id);
            m.set(attacker, "red".into(), bad_subnet);
            // Claiming another host created it.
            let mut green = net(creator);
            green.id = "green".into();
            m.set(attacker, "green".into(), green);
        });
        let nets = records::live(&ch.networks);
        assert_eq!(nets.len(), 1);
        assert_eq!(nets["blue"], net(creator));
        // A request in another host's name, a removal in another's name.
        gossip_from(&ch.requests, |m| {
            let req = SpaceRequest {
                network: "blue".into(),
                from: creator.to_hex(),
                to: attacker.to_hex(),
                want: Want::Space,
                seq: 1,
            };
            m.set(attacker, records::request_key("blue", &req.from), req);
        });
        assert!(records::live(&ch.requests).is_empty());
        gossip_from(&ch.removed, |m| {
            let r = RemovedPeer {
                id: id(3).to_hex(),
                name: "x".into(),
                removed_by: creator.to_hex(),
            };
            m.set(attacker, r.id.clone(), r);
        });
        assert!(records::live(&ch.removed).is_empty());
        // A network removal (tombstone) by any member is allowed.
        gossip_from(&ch.networks, |m| {
            m.remove(attacker, "blue".into());
        });
        assert!(records::live(&ch.networks).is_empty());
    }

    #[test]
    fn settings_need_an_existing_network_and_any_member_may_write() {
        let (creator, other) = (id(1), id(2));
        let ch = victim_state(creator);
        let deny = NetworkSettings::new(mesh_api::PolicyMode::Deny, false);
        gossip_from(&ch.settings, |m| {
            m.set(other, "red".into(), deny.clone());
        });
        assert!(records::live(&ch.settings).is_empty(), "unknown network");
        gossip_from(&ch.settings, |m| {
            m.set(other, "blue".into(), deny.clone());
        });
        assert_eq!(ch.settings_of("blue"), deny, "a non-creator member may");
        assert_eq!(ch.settings_of("red"), NetworkSettings::default());
    }

    #[test]
    fn fip_records_are_checked() {
        use crate::edge::FipBinding;
        let (a, b) = (id(1), id(2));
        let cidr: ipnet::Ipv4Net = "198.18.0.0/24".parse().unwrap();
        let pool = FipPool {
            cidr,
            created_by: a.to_hex(),
        };
        assert!(fip_pool("198.18.0.0/24", &pool, &a).is_ok());
        assert!(
            fip_pool("198.18.0.0/24", &pool, &b).is_err(),
            "another creator"
        );
        assert!(fip_pool("10.0.0.0/8", &pool, &a).is_err(), "wrong key");
        let pools: BTreeMap<String, FipPool> = [(pool_key(&cidr), pool)].into();
        let f = FipRecord {
            addr: "198.18.0.200".parse().unwrap(),
            updated_by: b.to_hex(),
        };
        assert!(fip_record("198.18.0.200", &f, &b, &pools).is_ok());
        assert!(
            fip_record("198.18.0.200", &f, &a, &pools).is_err(),
            "writer"
        );
        assert!(fip_record("198.18.0.201", &f, &b, &pools).is_err(), "key");
        let outside = FipRecord {
            addr: "10.0.0.1".parse().unwrap(),
            ..f.clone()
        };
        assert!(
            fip_record("10.0.0.1", &outside, &b, &pools).is_err(),
            "no pool"
        );
        let mut bind = FipBindingRecord {
            addr: f.addr,
            binding: FipBinding {
                network: "blue".into(),
                service: "web".into(),
                public_port: 80,
            },
            updated_by: b.to_hex(),
        };
        let key = binding_key(f.addr, "blue", "web");
        assert!(fip_binding(&key, &bind, &b, &pools).is_ok());
        assert!(fip_binding(&key, &bind, &a, &pools).is_err(), "writer");
        assert!(
            fip_binding("198.18.0.200/blue/api", &bind, &b, &pools).is_err(),
            "key"
        );
        bind.binding.public_port = 0;
        assert!(fip_binding(&key, &bind, &b, &pools).is_err(), "port 0");
    }

    #[test]
    fn peer_supplied_ids_never_panic_when_shortened() {
        assert_eq!(crate::hosts::short_id("ééééééééééééé"), "éééééééééééé");
        assert_eq!(crate::hosts::short_id("abc"), "abc");
        assert!(!is_peer_hex(&"é".repeat(32)));
        assert!(is_peer_hex(&id(1).to_hex()));
    }
}
