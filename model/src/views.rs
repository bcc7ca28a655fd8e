//! The API's read views, built from replicated state and a [`HostSet`]
//! snapshot: plain functions, so what `meshctl` shows is testable without
//! a daemon. (A peer's status, which reads the data plane's counters, is
//! built in meshd's `daemon::status`.)

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mesh_api as api;

use crate::hosts::{short_id, HostSet, Members};
use crate::ipam;
use crate::networks;
use crate::records::{self, EndpointRecord, NetworkDef, NetworkSettings, RangeEntry};

pub fn network(
    def: &NetworkDef,
    settings: &NetworkSettings,
    link_prefix: &str,
    mtu: u32,
) -> api::Network {
    let w = networks::wire_id(&def.id);
    let svc = ipam::service_address(def.subnet);
    api::Network {
        id: def.id.clone(),
        subnet: def.subnet.to_string(),
        subnet6: def.subnet6.to_string(),
        dns: svc.to_string(),
        dns6: def.ipv6_for(svc).to_string(),
        labels: def.labels.clone(),
        hosts: def.hosts.clone(),
        wire_id: w,
        bridge: networks::bridge_name(link_prefix, w),
        mtu,
        created_by: def.created_by.clone(),
        policy: settings.policy,
        egress: settings.egress,
        mtu_set: settings.mtu.is_some(),
    }
}

/// Every named record, with whether its host is up (served) or not.
pub fn dns(
    endpoints: &BTreeMap<String, EndpointRecord>,
    removed: &BTreeSet<String>,
    hosts: &HostSet,
) -> Vec<api::DnsRecord> {
    let live = hosts.live();
    endpoints
        .values()
        .filter(|e| !removed.contains(&e.host))
        .filter_map(|e| {
            let name = e.name.clone()?;
            Some(api::DnsRecord {
                fqdn: format!("{name}.{}", e.network),
                ip: e.ip.to_string(),
                ip6: e.ip6.map(|v| v.to_string()),
                version: e.version.clone(),
                host: hosts.name_of(&e.host),
                live: live.contains(&e.host),
            })
        })
        .collect()
}

/// Each network's ranges (with how full they are) and allocations.
pub fn ipam(
    nets: &BTreeMap<String, NetworkDef>,
    ring: &[RangeEntry],
    endpoints: &BTreeMap<String, EndpointRecord>,
    hosts: &HostSet,
) -> Vec<api::IpamNetwork> {
    nets.values()
        .map(|net| {
            let allocs: Vec<&EndpointRecord> =
                endpoints.values().filter(|e| e.network == net.id).collect();
            let used = records::used_addresses(allocs.iter().copied(), &net.id);
            api::IpamNetwork {
                network: net.id.clone(),
                subnet: net.subnet.to_string(),
                ranges: ipam::ranges(ring.iter(), &net.id)
                    .iter()
                    .map(|r| api::IpamRange {
                        start: Ipv4Addr::from(r.start).to_string(),
                        end: Ipv4Addr::from(r.end - 1).to_string(),
                        size: u64::from(r.len()),
                        used: used.range(r.start..r.end).count() as u64,
                        owner: short_id(&r.owner).to_string(),
                        owner_name: hosts.name_of(&r.owner),
                    })
                    .collect(),
                allocations: allocs
                    .iter()
                    .map(|e| api::IpamAllocation {
                        ip: e.ip.to_string(),
                        host: hosts.name_of(&e.host),
                        name: e.name.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::Host;

    fn hosts() -> HostSet {
        let h = |id: &str, name: &str, up| Host {
            id: id.into(),
            name: name.into(),
            up,
            meta: BTreeMap::new(),
        };
        HostSet::new(
            h("aa", "me", true),
            vec![h("bb", "up", true), h("cc", "down", false)],
        )
    }

    fn ep(ip: &str, host: &str, name: Option<&str>) -> (String, EndpointRecord) {
        let r = EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: String::new(),
            host: host.into(),
            name: name.map(Into::into),
            version: None,
        };
        (records::endpoint_key("blue", r.ip), r)
    }

    #[test]
    fn dns_view_names_hosts_and_marks_the_down_ones() {
        let eps: BTreeMap<_, _> = [
            ep("10.0.0.2", "aa", Some("a")),
            ep("10.0.0.3", "cc", Some("c")),
            ep("10.0.0.4", "bb", None),
            ep("10.0.0.5", "dd", Some("d")),
        ]
        .into();
        let removed: BTreeSet<String> = ["dd".to_string()].into();
        let v = dns(&eps, &removed, &hosts());
        let got: Vec<(String, String, bool)> =
            v.into_iter().map(|r| (r.fqdn, r.host, r.live)).collect();
        assert_eq!(
            got,
            [
                ("a.blue".to_string(), "me".to_string(), true),
                ("c.blue".to_string(), "down".to_string(), false)
            ]
        );
    }

    #[test]
    fn ipam_view_counts_use_per_range() {
        let def = NetworkDef {
            id: "blue".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            subnet6: networks::derive_ula("blue"),
            created_by: "aa".into(),
            labels: BTreeMap::new(),
            hosts: vec![],
            sealed_secrets: BTreeMap::new(),
        };
        let nets: BTreeMap<_, _> = [("blue".to_string(), def.clone())].into();
        let whole = ipam::initial_range("blue", def.subnet, "aa");
        let ring =
            ipam::plan_grant(&[whole], "aa", &BTreeSet::new(), "bb", records::Want::Space).unwrap();
        let eps: BTreeMap<_, _> = [ep("10.0.0.1", "aa", None), ep("10.0.0.200", "bb", None)].into();
        let v = ipam(&nets, &ring, &eps, &hosts());
        assert_eq!(v.len(), 1);
        let ranges = &v[0].ranges;
        assert_eq!(ranges.len(), 2);
        assert_eq!((ranges[0].owner_name.as_str(), ranges[0].used), ("me", 1));
        assert_eq!((ranges[1].owner_name.as_str(), ranges[1].used), ("up", 1));
        assert_eq!(
            ranges.iter().map(|r| r.size).sum::<u64>(),
            253,
            "the whole usable span"
        );
        assert_eq!(v[0].allocations.len(), 2);
    }
}
