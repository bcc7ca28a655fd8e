//! MACs the control plane knows win: every attachment's MAC, from the
//! replicated endpoint records, is pinned in the data plane to the host the
//! record names (see `dataplane::pins`), so a container or host elsewhere
//! that sends with it is dropped instead of stealing its traffic. This
//! host's own attachments are pinned from its own store as well, so another
//! member deleting their records cannot unpin them here.
//!
//! The same records give each remote attachment's addresses, so the data
//! plane answers a local container's ARP request or neighbour solicitation
//! for them itself (see `dataplane::neighbour`) instead of flooding it to
//! every member of the network.
//!
//! Recomputed whole, and handed over whole, whenever the endpoint records,
//! the removed hosts, the data plane's peers, the address ranges or the
//! networks change: a host not yet known to the data plane (no handle) is
//! pinned when it appears.

use dataplane::{AddressSet, Dataplane, MacOwner, NetworkId, PeerIdx, PinSet};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use tracing::{debug, warn};

use crate::attach::Attacher;
use crate::netdev::parse_mac;
use crate::peers::PeerTable;
use mesh_model::networks;
use mesh_model::records::{self, Channels, EndpointRecord, NetworkDef, RangeEntry, MACVLAN_MARK};

/// What a computation left out, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub pinned: usize,
    /// Records of hosts the data plane has no handle for yet.
    pub unresolved: usize,
    /// (network, MAC) claimed by records of more than one host. The
    /// first claim (the earliest stamp) keeps the pin, so a member that
    /// writes a record with another host's container's MAC takes nothing;
    /// claims of one millisecond are left to learning.
    pub conflicts: Vec<(String, String)>,
}

/// The pins for `records`: MAC → host per network, this host (`me`, hex)
/// as [`MacOwner::Local`], others by their data-plane handle. Records
/// without a MAC (VIPs, reservations), of macvlan attachments (their frames
/// never cross the overlay) and of removed hosts pin nothing.
pub fn compute(
    records: &BTreeMap<String, EndpointRecord>,
    first_written: &BTreeMap<String, u64>,
    local: &[(String, [u8; 6])],
    me: &str,
    removed: &BTreeSet<String>,
    handle: impl Fn(&str) -> Option<PeerIdx>,
) -> (PinSet, Summary) {
    // (network, MAC) → host → when its claim was written.
    let mut claims: BTreeMap<(&str, [u8; 6]), BTreeMap<&str, u64>> = BTreeMap::new();
    for (network, mac) in local {
        claims
            .entry((network.as_str(), *mac))
            .or_default()
            .insert(me, 0);
    }
    for (key, rec) in records {
        if rec.mac.is_empty()
            || rec.version.as_deref() == Some(MACVLAN_MARK)
            || removed.contains(&rec.host)
        {
            continue;
        }
        let Some(mac) = parse_mac(&rec.mac) else {
            debug!(%key, mac = %rec.mac, "endpoint record with an unparsable MAC not pinned");
            continue;
        };
        // Group or zero addresses are never a source: nothing to pin.
        if mac[0] & 1 == 1 || mac == [0; 6] {
            continue;
        }
        let at = first_written.get(key).copied().unwrap_or(0);
        let earliest = claims
            .entry((rec.network.as_str(), mac))
            .or_default()
            .entry(rec.host.as_str())
            .or_insert(at);
        *earliest = (*earliest).min(at);
    }
    let mut pins = PinSet::new();
    let mut summary = Summary::default();
    for ((network, mac), hosts) in claims {
        if hosts.len() > 1 {
            summary
                .conflicts
                .push((network.to_string(), crate::netdev::format_mac(&mac)));
        }
        // This host knows its own veths: its claim stands here.
        let host = if hosts.contains_key(me) {
            me
        } else {
            let first = hosts.values().min().copied().unwrap_or(0);
            let mut earliest = hosts.iter().filter(|(_, at)| **at == first);
            let (Some((host, _)), None) = (earliest.next(), earliest.next()) else {
                continue;
            };
            *host
        };
        let owner = if host == me {
            MacOwner::Local
        } else if let Some(idx) = handle(host) {
            MacOwner::Peer(idx)
        } else {
            summary.unresolved += 1;
            continue;
        };
        pins.entry(NetworkId(networks::wire_id(network)))
            .or_default()
            .insert(mac, owner);
        summary.pinned += 1;
    }
    (pins, summary)
}

/// The addresses (IPv4 and IPv6) of the attachments whose MAC `pins`
/// places on the host their record names, other than this one, where the
/// mesh's own state backs the record (see [`backed`]). Whatever is left
/// out floods, and whoever holds it answers. Records are keyed by their
/// IPv4 address and the IPv6 one must derive from it, so no address is
/// answered from two records.
pub fn addresses(
    records: &BTreeMap<String, EndpointRecord>,
    pins: &PinSet,
    handle: impl Fn(&str) -> Option<PeerIdx>,
    nets: &BTreeMap<String, NetworkDef>,
    ring: &[RangeEntry],
) -> AddressSet {
    // Grouped once: each record looks only at its own network's ranges.
    let mut ranges: BTreeMap<&str, Vec<&RangeEntry>> = BTreeMap::new();
    for r in ring {
        ranges.entry(r.network.as_str()).or_default().push(r);
    }
    let mut set = AddressSet::new();
    for rec in records.values() {
        let net = NetworkId(networks::wire_id(&rec.network));
        let Some(mac) = parse_mac(&rec.mac) else {
            continue;
        };
        let held_there = pins
            .get(&net)
            .and_then(|macs| macs.get(&mac))
            .is_some_and(|owner| Some(*owner) == handle(&rec.host).map(MacOwner::Peer));
        let Some(def) = nets.get(&rec.network).filter(|_| held_there) else {
            continue;
        };
        let known = set.entry(net).or_default();
        let ranges = ranges
            .get(rec.network.as_str())
            .map_or(&[][..], Vec::as_slice);
        known.extend(backed(rec, def, ranges).into_iter().map(|ip| (ip, mac)));
    }
    set.retain(|_, known| !known.is_empty());
    set
}

/// The addresses of `rec` that the mesh's state backs. Any member may
/// write a record naming itself, so a record alone does not prove an
/// address is its host's: IPAM gives each host ranges of its own, and
/// every address it hands out lies in one. So the IPv4 address must lie
/// in a range `rec`'s host owns (which also leaves out the network's
/// service address), the host must be one the network allows, and the
/// IPv6 address must be the one the network derives from the IPv4 one.
fn backed(rec: &EndpointRecord, def: &NetworkDef, ranges: &[&RangeEntry]) -> Vec<IpAddr> {
    let IpAddr::V4(v4) = rec.ip else {
        return Vec::new();
    };
    let a = u32::from(v4);
    let owned = ranges.iter().any(|r| r.owner == rec.host && r.contains(a));
    if !owned || !def.subnet.contains(&v4) || !def.allows_host(&rec.host) {
        return Vec::new();
    }
    let mut ips = vec![rec.ip];
    ips.extend(
        rec.ip6
            .filter(|ip6| *ip6 == def.ipv6_for(v4))
            .map(IpAddr::V6),
    );
    ips
}

/// Keeps the data plane's pins and answered addresses in line with the
/// records, for as long as the channels live.
pub fn spawn(
    channels: Channels,
    attacher: Arc<Attacher>,
    peers: Arc<PeerTable>,
    dp: Dataplane,
    me: String,
) {
    let mut endpoints = channels.endpoints.subscribe();
    let mut removed = channels.removed.subscribe();
    let mut peer_changes = peers.subscribe();
    let mut ranges_changed = channels.ring.subscribe();
    let mut networks_changed = channels.networks.subscribe();
    tokio::spawn(async move {
        let mut last: Option<(PinSet, Summary)> = None;
        let mut last_addresses: Option<AddressSet> = None;
        loop {
            let state = channels.endpoints.get();
            let first_written: BTreeMap<String, u64> = state
                .entries()
                .map(|(k, e)| (k.clone(), e.stamp.timestamp))
                .collect();
            // Attaching writes an endpoint record, so a change of the local
            // store also wakes this loop.
            let local: Vec<(String, [u8; 6])> = attacher
                .records()
                .iter()
                .filter(|r| !crate::attach::is_macvlan(r))
                .filter_map(|r| Some((r.attachment.network.clone(), parse_mac(&r.attachment.mac)?)))
                .collect();
            let live = records::live(&channels.endpoints);
            let handle = |host: &str| peers.handle(&host.parse().ok()?);
            let (pins, summary) = compute(
                &live,
                &first_written,
                &local,
                &me,
                &channels.removed_hosts(),
                handle,
            );
            let ring: Vec<RangeEntry> = records::live(&channels.ring).into_values().collect();
            let known = addresses(
                &live,
                &pins,
                handle,
                &records::live(&channels.networks),
                &ring,
            );
            if last_addresses.as_ref() != Some(&known) {
                dp.set_addresses(known.clone());
                last_addresses = Some(known);
            }
            if last.as_ref().map(|(p, _)| p) != Some(&pins) {
                dp.set_pinned_macs(pins.clone());
            }
            if last.as_ref().map(|(_, s)| s) != Some(&summary) {
                if !summary.conflicts.is_empty() {
                    warn!(
                        conflicts = ?summary.conflicts,
                        "MACs claimed by attachments on several hosts: pinned to the first claim"
                    );
                }
                // Every attach anywhere changes it: debug, not info.
                debug!(
                    pinned = summary.pinned,
                    unresolved_hosts = summary.unresolved,
                    "attachment MACs pinned in the data plane"
                );
            }
            last = Some((pins, summary));
            tokio::select! {
                r = endpoints.changed() => if r.is_err() { break },
                r = removed.changed() => if r.is_err() { break },
                r = peer_changes.changed() => if r.is_err() { break },
                r = ranges_changed.changed() => if r.is_err() { break },
                r = networks_changed.changed() => if r.is_err() { break },
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const ME: &str = "aa";

    fn rec(network: &str, ip: &str, mac: &str, host: &str) -> (String, EndpointRecord) {
        let ip: IpAddr = ip.parse().unwrap();
        (
            records::endpoint_key(network, ip),
            EndpointRecord {
                network: network.into(),
                ip,
                ip6: None,
                mac: mac.into(),
                host: host.into(),
                name: None,
                version: None,
            },
        )
    }

    /// The pins of `records` alone: no stamps, no local store, nobody removed.
    fn plain(records: &BTreeMap<String, EndpointRecord>) -> (PinSet, Summary) {
        compute(
            records,
            &BTreeMap::new(),
            &[],
            ME,
            &BTreeSet::new(),
            handles,
        )
    }

    fn handles(host: &str) -> Option<PeerIdx> {
        match host {
            "bb" => Some(2),
            "cc" => Some(3),
            _ => None,
        }
    }

    const WEB: &str = "02:00:00:00:00:0b";
    const DB: &str = "02:00:00:00:00:0a";

    #[test]
    fn attachments_are_pinned_to_their_hosts_per_network() {
        let records = BTreeMap::from([
            rec("blue", "10.0.0.1", DB, ME),
            rec("blue", "10.0.0.2", WEB, "bb"),
            rec("red", "10.1.0.2", WEB, "cc"),
        ]);
        let (pins, summary) = plain(&records);
        let blue = &pins[&NetworkId(networks::wire_id("blue"))];
        assert_eq!(blue[&parse_mac(DB).unwrap()], MacOwner::Local);
        assert_eq!(blue[&parse_mac(WEB).unwrap()], MacOwner::Peer(2));
        let red = &pins[&NetworkId(networks::wire_id("red"))];
        assert_eq!(red[&parse_mac(WEB).unwrap()], MacOwner::Peer(3));
        assert_eq!(summary.pinned, 3);
    }

    #[test]
    fn vips_reservations_macvlan_removed_and_unknown_hosts_pin_nothing() {
        let mut macvlan = rec("blue", "192.0.2.9", "02:00:00:00:00:09", "bb");
        macvlan.1.version = Some(MACVLAN_MARK.into());
        let records = BTreeMap::from([
            rec("blue", "10.0.0.9", "", "bb"), // VIP or reservation
            macvlan,
            rec("blue", "10.0.0.3", "02:00:00:00:00:03", "gone"),
            rec("blue", "10.0.0.4", "02:00:00:00:00:04", "dd"), // no handle yet
            rec("blue", "10.0.0.5", "not-a-mac", "bb"),
            rec("blue", "10.0.0.6", "01:00:5e:00:00:01", "bb"),
        ]);
        let removed = BTreeSet::from(["gone".to_string()]);
        let (pins, summary) = compute(&records, &BTreeMap::new(), &[], ME, &removed, handles);
        assert!(pins.is_empty(), "{pins:?}");
        assert_eq!(summary.unresolved, 1);
        // Once the data plane knows the host, it is pinned.
        let (pins, _) = compute(&records, &BTreeMap::new(), &[], ME, &removed, |h| {
            handles(h).or((h == "dd").then_some(4))
        });
        assert_eq!(
            pins[&NetworkId(networks::wire_id("blue"))][&parse_mac("02:00:00:00:00:04").unwrap()],
            MacOwner::Peer(4)
        );
    }

    #[test]
    fn a_later_claim_on_another_host_takes_nothing() {
        let records = BTreeMap::from([
            rec("blue", "10.0.0.2", WEB, "bb"),
            rec("blue", "10.0.0.7", WEB, "cc"),
        ]);
        let written: BTreeMap<String, u64> = records
            .keys()
            .map(|k| (k.clone(), if k.contains("10.0.0.2") { 100 } else { 200 }))
            .collect();
        let (pins, summary) = compute(&records, &written, &[], ME, &BTreeSet::new(), handles);
        let blue = &pins[&NetworkId(networks::wire_id("blue"))];
        assert_eq!(
            blue[&parse_mac(WEB).unwrap()],
            MacOwner::Peer(2),
            "bb was first"
        );
        assert_eq!(summary.conflicts, vec![("blue".into(), WEB.into())]);
        // Nor is cc's address answered with WEB's MAC.
        let (nets, ring) = backing(&records);
        let set = addresses(&records, &pins, handles, &nets, &ring);
        let blue = &set[&NetworkId(networks::wire_id("blue"))];
        assert_eq!(blue.keys().collect::<Vec<_>>(), vec![&ip("10.0.0.2")]);
    }

    #[test]
    fn a_mac_claimed_from_two_hosts_at_once_is_left_to_learning() {
        let records = BTreeMap::from([
            rec("blue", "10.0.0.2", WEB, "bb"),
            rec("blue", "10.0.0.7", WEB, "cc"),
            rec("blue", "10.0.0.1", DB, ME),
            // Two addresses of one container on one host are no conflict.
            rec("blue", "10.0.0.8", DB, ME),
        ]);
        let (pins, summary) = plain(&records);
        let blue = &pins[&NetworkId(networks::wire_id("blue"))];
        assert!(!blue.contains_key(&parse_mac(WEB).unwrap()));
        assert_eq!(blue[&parse_mac(DB).unwrap()], MacOwner::Local);
        assert_eq!(summary.conflicts, vec![("blue".into(), WEB.into())]);
    }

    #[test]
    fn this_hosts_attachments_stay_pinned_when_their_records_go() {
        // Another member deleted DB's record and wrote one claiming its
        // MAC for itself: the local store still pins it here.
        let records = BTreeMap::from([rec("blue", "10.0.0.9", DB, "bb")]);
        let local = [("blue".to_string(), parse_mac(DB).unwrap())];
        let written = BTreeMap::from([(
            records::endpoint_key("blue", "10.0.0.9".parse().unwrap()),
            1,
        )]);
        let (pins, _) = compute(&records, &written, &local, ME, &BTreeSet::new(), handles);
        let blue = &pins[&NetworkId(networks::wire_id("blue"))];
        assert_eq!(blue[&parse_mac(DB).unwrap()], MacOwner::Local);
        let (pins, _) = compute(&records, &written, &[], ME, &BTreeSet::new(), handles);
        let blue = &pins[&NetworkId(networks::wire_id("blue"))];
        assert_eq!(
            blue[&parse_mac(DB).unwrap()],
            MacOwner::Peer(2),
            "without the store"
        );
    }

    /// The networks of the tests (blue 10.0.0.0/24 and fd00::/64, red
    /// 10.1.0.0/24), and ranges that give each record's address to its
    /// host, as IPAM would have.
    fn backing(
        records: &BTreeMap<String, EndpointRecord>,
    ) -> (BTreeMap<String, NetworkDef>, Vec<RangeEntry>) {
        let net = |id: &str, subnet: &str, subnet6: &str| NetworkDef {
            id: id.into(),
            subnet: subnet.parse().unwrap(),
            subnet6: subnet6.parse().unwrap(),
            created_by: ME.into(),
            labels: BTreeMap::new(),
            hosts: Vec::new(),
            sealed_secrets: BTreeMap::new(),
        };
        let nets = BTreeMap::from([
            ("blue".to_string(), net("blue", "10.0.0.0/24", "fd00::/64")),
            ("red".to_string(), net("red", "10.1.0.0/24", "fd01::/64")),
        ]);
        let ring = records
            .values()
            .filter_map(|r| match r.ip {
                IpAddr::V4(v4) => Some(RangeEntry {
                    network: r.network.clone(),
                    start: u32::from(v4),
                    end: u32::from(v4) + 1,
                    owner: r.host.clone(),
                }),
                IpAddr::V6(_) => None,
            })
            .collect();
        (nets, ring)
    }

    /// What `addresses` answers for `records`, with `backing`.
    fn answered(records: &BTreeMap<String, EndpointRecord>) -> AddressSet {
        let (pins, _) = plain(records);
        let (nets, ring) = backing(records);
        addresses(records, &pins, handles, &nets, &ring)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn remote_attachments_addresses_resolve_to_their_macs() {
        let mut dual = rec("blue", "10.0.0.2", WEB, "bb");
        dual.1.ip6 = Some("fd00::2".parse().unwrap());
        let mut macvlan = rec("blue", "192.0.2.9", "02:00:00:00:00:09", "bb");
        macvlan.1.version = Some(MACVLAN_MARK.into());
        let records = BTreeMap::from([
            dual,
            rec("blue", "10.0.0.1", DB, ME),   // answers for itself
            rec("blue", "10.0.0.9", "", "bb"), // VIP: no MAC
            macvlan,
            rec("blue", "10.0.0.4", "02:00:00:00:00:04", "dd"), // no handle yet
            rec("red", "10.1.0.2", WEB, "cc"),
        ]);
        let set = answered(&records);
        let blue = &set[&NetworkId(networks::wire_id("blue"))];
        let web = parse_mac(WEB).unwrap();
        let expected: dataplane::NetworkAddresses = [(ip("10.0.0.2"), web), (ip("fd00::2"), web)]
            .into_iter()
            .collect();
        assert_eq!(blue, &expected);
        let red = &set[&NetworkId(networks::wire_id("red"))];
        assert_eq!(red.len(), 1);
    }

    #[test]
    fn addresses_the_mesh_state_does_not_back_are_not_answered() {
        let mut web = rec("blue", "10.0.0.2", WEB, "bb");
        web.1.ip6 = Some("fd00::2".parse().unwrap());
        let records = BTreeMap::from([web.clone()]);
        let (pins, _) = plain(&records);
        let (mut nets, ring) = backing(&records);
        let blue = NetworkId(networks::wire_id("blue"));
        assert_eq!(
            addresses(&records, &pins, handles, &nets, &ring)[&blue].len(),
            2
        );
        // bb claims an address of a range another host owns (or no range:
        // the network's service address).
        let mut taken = ring.clone();
        taken[0].owner = "cc".into();
        assert!(addresses(&records, &pins, handles, &nets, &taken).is_empty());
        assert!(addresses(&records, &pins, handles, &nets, &[]).is_empty());
        // An IPv6 address the network does not derive from the IPv4 one.
        let mut odd = web.clone();
        odd.1.ip6 = Some("fd00::99".parse().unwrap());
        let odd = BTreeMap::from([odd]);
        assert_eq!(
            addresses(&odd, &pins, handles, &nets, &ring)[&blue]
                .keys()
                .collect::<Vec<_>>(),
            vec![&ip("10.0.0.2")]
        );
        // A network restricted to other hosts, or not known here.
        nets.get_mut("blue").unwrap().hosts = vec!["cc".into()];
        assert!(addresses(&records, &pins, handles, &nets, &ring).is_empty());
        assert!(addresses(&records, &pins, handles, &BTreeMap::new(), &ring).is_empty());
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:ab:CD:00:00:ff"),
            Some([0x02, 0xab, 0xcd, 0, 0, 0xff])
        );
        for bad in [
            "",
            "02:ab:cd:00:00",
            "02:ab:cd:00:00:ff:00",
            "2:ab:cd:00:00:ff",
            "zz:ab:cd:00:00:ff",
            "+2:ab:cd:00:00:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
