//! The network zones `<network>.`: which names are ours, what they answer
//! (version-aware addresses, SOA and NS at the apex) and the negative
//! answers that carry the SOA (RFC 2308). Pure: no sockets, no clock.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use std::collections::BTreeSet;
use std::net::IpAddr;

use super::snapshot::Snapshots;
use mesh_model::ipam;
use mesh_model::records::{EndpointRecord, NetworkDef};

/// TTL of our own records: short, since containers come and go.
pub const RECORD_TTL: u32 = 5;
/// How long a resolver may remember that a name or type is missing
/// (the SOA's MINIMUM and its own TTL, RFC 2308 §5): as short as the
/// records, since a container may appear any moment.
pub const NEGATIVE_TTL: u32 = RECORD_TTL;
/// The name server of every network zone, answering with the network's
/// service addresses (unless a container took the name).
pub const NS_LABEL: &str = "ns";

/// An authoritative answer from one of our zones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
}

impl LocalAnswer {
    pub fn records(answers: Vec<Record>) -> LocalAnswer {
        LocalAnswer {
            rcode: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
        }
    }

    /// No such name (NXDOMAIN) or no such type (NODATA), with `zone`'s SOA.
    pub fn negative(nxdomain: bool, zone: &Name, soa_owner: &str) -> LocalAnswer {
        LocalAnswer {
            rcode: if nxdomain {
                ResponseCode::NXDomain
            } else {
                ResponseCode::NoError
            },
            answers: Vec::new(),
            authority: vec![soa(zone, soa_owner)],
        }
    }
}

/// `label.zone.`
fn child(label: &str, zone: &Name) -> Option<Name> {
    Name::from_ascii(label).ok()?.append_domain(zone).ok()
}

/// The SOA of a zone served by the network `network`: its name server,
/// a fixed serial (the zone is never transferred), the negative TTL.
pub fn soa(zone: &Name, network: &str) -> Record {
    let apex = network_apex(network).unwrap_or_else(Name::root);
    let mname = child(NS_LABEL, &apex).unwrap_or_else(Name::root);
    let rname = child("hostmaster", &apex).unwrap_or_else(Name::root);
    Record::from_rdata(
        zone.clone(),
        NEGATIVE_TTL,
        RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, NEGATIVE_TTL)),
    )
}

/// The NS record of a zone served by `network`.
pub fn ns(zone: &Name, network: &str) -> Option<Record> {
    let target = child(NS_LABEL, &network_apex(network)?)?;
    Some(Record::from_rdata(
        zone.clone(),
        RECORD_TTL,
        RData::NS(NS(target)),
    ))
}

/// `<network>.`
pub fn network_apex(network: &str) -> Option<Name> {
    let mut n = Name::from_ascii(network).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The network's service addresses, where its DNS answers.
pub fn service_addresses(def: &NetworkDef) -> [IpAddr; 2] {
    let svc = ipam::service_address(def.subnet);
    [IpAddr::V4(svc), IpAddr::V6(def.ipv6_for(svc))]
}

/// Address records for `name` of `qtype` (A, AAAA, or both for ANY).
pub fn address_records(name: &Name, qtype: RecordType, addrs: &[IpAddr]) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|a| match (a, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|d| Record::from_rdata(name.clone(), RECORD_TTL, d))
        .collect()
}

/// The records of `named` a client of `client_version` gets: those of its
/// own version when there are any, otherwise all.
pub fn version_aware<'a>(
    named: Vec<&'a EndpointRecord>,
    client_version: Option<&str>,
) -> Vec<&'a EndpointRecord> {
    let same: Vec<&EndpointRecord> = named
        .iter()
        .copied()
        .filter(|r| client_version.is_some() && r.version.as_deref() == client_version)
        .collect();
    if same.is_empty() {
        named
    } else {
        same
    }
}

/// The version of the container asking from `client`, among the records
/// of the network it asks on.
pub fn client_version(asked_on: &[EndpointRecord], client: IpAddr) -> Option<String> {
    asked_on
        .iter()
        .find(|r| r.ip == client || r.ip6.map(IpAddr::V6) == Some(client))
        .and_then(|r| r.version.clone())
}

/// Answers `qname`/`qtype` if it lies in a network zone; `asked_on` is the
/// network whose DNS address the query came to.
pub fn answer(
    source: &Snapshots,
    asked_on: &str,
    qname: &Name,
    qtype: RecordType,
    client: IpAddr,
) -> Option<LocalAnswer> {
    let lower = qname.to_lowercase();
    let labels: Vec<String> = lower
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let zone_label = labels.last()?;
    let records = source.records(zone_label);
    // Definitions only when the records do not tell (the common query
    // names a container and needs none).
    let def = || {
        source
            .networks()
            .iter()
            .find(|n| n.id == *zone_label)
            .cloned()
    };
    // Only the asking network's own zone: a container never learns the
    // names on a network it is not on (tenants on one mesh stay apart).
    // Other zones go on like any name outside the mesh.
    if zone_label != asked_on || (records.is_empty() && def().is_none()) {
        return None;
    }
    let apex = network_apex(zone_label)?;
    let network = zone_label.as_str();
    match labels.len() {
        1 => Some(apex_answer(&apex, network, qtype)),
        2 => {
            let name = labels[0].as_str();
            let named: Vec<&EndpointRecord> = records
                .iter()
                .filter(|r| {
                    r.name
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .collect();
            let addrs: Vec<IpAddr> = if !named.is_empty() {
                // Usually the zone asked about is the asking network's.
                let version = if network == asked_on {
                    client_version(&records, client)
                } else {
                    client_version(&source.records(asked_on), client)
                };
                let chosen = version_aware(named, version.as_deref());
                let set: BTreeSet<IpAddr> = chosen
                    .iter()
                    .flat_map(|r| [Some(r.ip), r.ip6.map(IpAddr::V6)])
                    .flatten()
                    .collect();
                let mut v: Vec<IpAddr> = set.into_iter().collect();
                v.shuffle(&mut rand::thread_rng());
                v
            } else if let (NS_LABEL, Some(def)) = (name, def()) {
                service_addresses(&def).to_vec()
            } else {
                return Some(LocalAnswer::negative(true, &apex, network));
            };
            let found = address_records(qname, qtype, &addrs);
            if found.is_empty() {
                Some(LocalAnswer::negative(false, &apex, network))
            } else {
                Some(LocalAnswer::records(found))
            }
        }
        // Nothing lives below `<name>.<network>.`.
        _ => Some(LocalAnswer::negative(true, &apex, network)),
    }
}

/// SOA and NS at a zone's apex; NODATA for other types.
pub fn apex_answer(apex: &Name, network: &str, qtype: RecordType) -> LocalAnswer {
    let mut found = Vec::new();
    if matches!(qtype, RecordType::SOA | RecordType::ANY) {
        found.push(soa(apex, network));
    }
    if matches!(qtype, RecordType::NS | RecordType::ANY) {
        found.extend(ns(apex, network));
    }
    if found.is_empty() {
        LocalAnswer::negative(false, apex, network)
    } else {
        LocalAnswer::records(found)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::RecordSource;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    pub(crate) struct Fixed {
        pub(crate) records: Vec<EndpointRecord>,
        pub(crate) networks: Vec<NetworkDef>,
    }
    impl RecordSource for Fixed {
        fn records(&self, network: &str) -> Vec<EndpointRecord> {
            self.records
                .iter()
                .filter(|r| r.network == network)
                .cloned()
                .collect()
        }
        fn networks(&self) -> Vec<NetworkDef> {
            self.networks.clone()
        }
    }

    pub(crate) fn blue() -> NetworkDef {
        NetworkDef {
            id: "blue".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            subnet6: "fd00::/64".parse().unwrap(),
            created_by: "h".into(),
            labels: BTreeMap::new(),
            hosts: vec![],
            sealed_secrets: BTreeMap::new(),
        }
    }

    pub(crate) fn rec(ip: &str, name: &str, version: Option<&str>) -> EndpointRecord {
        EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: Some(
                format!("fd00::{}", ip.rsplit('.').next().unwrap())
                    .parse()
                    .unwrap(),
            ),
            mac: "02:00:00:00:00:01".into(),
            host: "h".into(),
            name: Some(name.into()),
            version: version.map(Into::into),
        }
    }

    pub(crate) fn fixed(records: Vec<EndpointRecord>) -> Fixed {
        Fixed {
            records,
            networks: vec![blue()],
        }
    }

    /// Snapshots that are always fresh: every read sees `f` as it is.
    pub(crate) fn exact(f: Fixed) -> Snapshots {
        Snapshots::new(Arc::new(f), std::time::Duration::ZERO)
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ask(src: &Snapshots, qname: &str, qtype: RecordType, client: &str) -> Option<LocalAnswer> {
        answer(src, "blue", &n(qname), qtype, client.parse().unwrap())
    }

    fn addrs(a: &LocalAnswer) -> BTreeSet<IpAddr> {
        a.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    fn is_soa_of(r: &Record, zone: &str) -> bool {
        r.record_type() == RecordType::SOA && r.name == n(zone) && r.ttl == NEGATIVE_TTL
    }

    #[test]
    fn answers_a_and_aaaa_for_all_containers_of_a_name() {
        let src = exact(fixed(vec![
            rec("10.0.0.2", "web", None),
            rec("10.0.0.3", "web", None),
            rec("10.0.0.4", "db", None),
        ]));
        let a = ask(&src, "web.blue.", RecordType::A, "10.0.0.9").unwrap();
        assert_eq!(
            addrs(&a),
            ["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()].into()
        );
        assert!(a.answers.iter().all(|r| r.ttl == RECORD_TTL));
        let aaaa = ask(&src, "WEB.Blue.", RecordType::AAAA, "10.0.0.9").unwrap();
        assert_eq!(aaaa.answers.len(), 2);
        assert!(addrs(&aaaa).iter().all(IpAddr::is_ipv6));
        assert!(ask(&src, "example.com.", RecordType::A, "10.0.0.9").is_none());
    }

    #[test]
    fn another_networks_names_are_not_answered() {
        let src = exact(fixed(vec![rec("10.0.0.2", "web", None)]));
        // Asked on network red: blue's zone is not red's to see.
        let other = |q: &str| {
            answer(
                &src,
                "red",
                &n(q),
                RecordType::A,
                "10.1.0.9".parse().unwrap(),
            )
        };
        assert!(other("web.blue.").is_none());
        assert!(other("blue.").is_none());
        assert!(ask(&src, "web.blue.", RecordType::A, "10.0.0.9").is_some());
    }

    #[test]
    fn negative_answers_carry_the_zone_soa() {
        let src = exact(fixed(vec![rec("10.0.0.2", "web", None)]));
        let nx = ask(&src, "nope.blue.", RecordType::A, "10.0.0.9").unwrap();
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert!(nx.answers.is_empty());
        assert!(is_soa_of(&nx.authority[0], "blue."));
        let deep = ask(&src, "a.web.blue.", RecordType::A, "10.0.0.9").unwrap();
        assert_eq!(deep.rcode, ResponseCode::NXDomain);
        // The name exists, the type does not: NODATA.
        let nodata = ask(&src, "web.blue.", RecordType::MX, "10.0.0.9").unwrap();
        assert_eq!(nodata.rcode, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert!(is_soa_of(&nodata.authority[0], "blue."));
    }

    #[test]
    fn zone_apex_has_soa_and_ns_and_the_ns_resolves() {
        let src = exact(fixed(vec![]));
        let s = ask(&src, "blue.", RecordType::SOA, "10.0.0.9").unwrap();
        assert_eq!(s.rcode, ResponseCode::NoError);
        let RData::SOA(soa) = &s.answers[0].data else {
            panic!("not an SOA: {s:?}")
        };
        assert_eq!(soa.mname, n("ns.blue."));
        assert_eq!(soa.minimum, NEGATIVE_TTL);
        let ns = ask(&src, "blue.", RecordType::NS, "10.0.0.9").unwrap();
        assert_eq!(ns.answers[0].data, RData::NS(NS(n("ns.blue."))));
        let a = ask(&src, "ns.blue.", RecordType::A, "10.0.0.9").unwrap();
        assert_eq!(addrs(&a), ["10.0.0.254".parse().unwrap()].into());
        let apex_a = ask(&src, "blue.", RecordType::A, "10.0.0.9").unwrap();
        assert!(apex_a.answers.is_empty() && is_soa_of(&apex_a.authority[0], "blue."));
    }

    #[test]
    fn version_aware_answers() {
        let src = exact(fixed(vec![
            rec("10.0.0.2", "api", Some("v1")),
            rec("10.0.0.3", "api", Some("v2")),
            rec("10.0.0.10", "client", Some("v2")),
            rec("10.0.0.11", "old", Some("v3")),
        ]));
        let v2 = ask(&src, "api.blue.", RecordType::A, "10.0.0.10").unwrap();
        assert_eq!(addrs(&v2), ["10.0.0.3".parse().unwrap()].into());
        // The same client asking from its IPv6 address.
        let v2_6 = ask(&src, "api.blue.", RecordType::A, "fd00::10").unwrap();
        assert_eq!(addrs(&v2_6), ["10.0.0.3".parse().unwrap()].into());
        // A v3 client: no v3 api, so all of them; an unknown client too.
        for c in ["10.0.0.11", "10.0.0.99"] {
            assert_eq!(
                ask(&src, "api.blue.", RecordType::A, c)
                    .unwrap()
                    .answers
                    .len(),
                2
            );
        }
    }
}
