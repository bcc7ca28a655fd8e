//! MACs the control plane knows win: every attachment's MAC, from the
//! replicated endpoint records, is pinned in the data plane to the host the
//! record names (see `dataplane::pins`), so a container or host elsewhere
//! that sends with it is dropped instead of stealing its traffic. This
//! host's own attachments are pinned from its own store as well, so another
//! member deleting their records cannot unpin them here.
//!
//! Recomputed whole, and handed over whole, whenever the endpoint records,
//! the removed hosts or the data plane's peers change: a host not yet known
//! to the data plane (no handle) is pinned when it appears.

use dataplane::{Dataplane, MacOwner, NetworkId, PeerIdx, PinSet};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::{debug, warn};

use crate::attach::Attacher;
use crate::netdev::parse_mac;
use crate::peers::PeerTable;
use mesh_model::networks;
use mesh_model::records::{self, Channels, EndpointRecord, MACVLAN_MARK};

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

/// Keeps the data plane's pins in line with the records, for as long as
/// the channels live.
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
    tokio::spawn(async move {
        let mut last: Option<(PinSet, Summary)> = None;
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
            let (pins, summary) = compute(
                &records::live(&channels.endpoints),
                &first_written,
                &local,
                &me,
                &channels.removed_hosts(),
                |host| peers.handle(&host.parse().ok()?),
            );
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
