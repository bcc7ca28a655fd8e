//! Reverse zones for every network's subnets (`in-addr.arpa.` and
//! `ip6.arpa.`): PTR → `<name>.<network>.` for attached containers and
//! `ns.<network>.` for the service addresses.
//!
//! A subnet's zones are cut at the label boundary at or below its prefix
//! (a /24 is one zone, a /20 sixteen /24 zones, a /64 one nibble zone), so
//! we are never authoritative for addresses outside our subnets.

use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::IpAddr;

use super::snapshot::Snapshots;
use super::zone::{self, LocalAnswer, NS_LABEL, RECORD_TTL};
use mesh_model::records::NetworkDef;

/// The address prefix a reverse name spells: `(address, prefix length)`,
/// or None for names outside `in-addr.arpa.`/`ip6.arpa.`.
pub fn parse(qname: &Name) -> Option<(IpAddr, u8)> {
    let mut n = qname.clone();
    n.set_fqdn(true);
    let net = n.parse_arpa_name().ok()?;
    Some((net.addr(), net.prefix_len()))
}

/// Bits per label: octets for IPv4, nibbles for IPv6.
fn label_bits(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        8
    } else {
        4
    }
}

fn max_len(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

fn as_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Whether the first `len` bits of `a` and `b` agree (same family).
fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    if a.is_ipv4() != b.is_ipv4() {
        return false;
    }
    let width = max_len(a);
    if len == 0 {
        return true;
    }
    let shift = u32::from(width - len.min(width));
    (as_bits(a) >> shift) == (as_bits(b) >> shift)
}

/// The subnet of `def` in `a`'s family: `(network address, prefix length)`.
fn subnet_of(def: &NetworkDef, a: IpAddr) -> (IpAddr, u8) {
    if a.is_ipv4() {
        (IpAddr::V4(def.subnet.network()), def.subnet.prefix_len())
    } else {
        (IpAddr::V6(def.subnet6.network()), def.subnet6.prefix_len())
    }
}

/// The reverse name of the first `len` bits of `a` (`len` a label multiple).
fn arpa_name(a: IpAddr, len: u8) -> Option<Name> {
    let labels: Vec<String> = match a {
        IpAddr::V4(v4) => v4.octets()[..usize::from(len / 8)]
            .iter()
            .rev()
            .map(u8::to_string)
            .chain(["in-addr".into(), "arpa".into()])
            .collect(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            (0..u32::from(len / 4))
                .rev()
                .map(|i| format!("{:x}", (bits >> (124 - 4 * i)) & 0xf))
                .chain(["ip6".into(), "arpa".into()])
                .collect()
        }
    };
    let mut n = Name::from_labels(labels.iter().map(String::as_bytes)).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// Answers a reverse name if it lies in the reverse zone of a network's
/// subnet. The network the query came to wins when subnets overlap.
pub fn answer(
    source: &Snapshots,
    asked_on: &str,
    qname: &Name,
    qtype: RecordType,
) -> Option<LocalAnswer> {
    let (addr, len) = parse(qname)?;
    let all = source.networks();
    // Only the asking network's own subnets: the names of another
    // network's containers are not the asker's to learn.
    let nets: Vec<&NetworkDef> = all.iter().filter(|n| n.id == asked_on).collect();
    let mut zone_of: Option<(Name, u8, String)> = None;
    let mut matching: Vec<&NetworkDef> = Vec::new();
    for def in nets {
        let (net, plen) = subnet_of(def, addr);
        let bits = label_bits(addr);
        let zone_len = plen.div_ceil(bits) * bits;
        if len < zone_len || !same_prefix(addr, net, plen) {
            continue;
        }
        if zone_of.is_none() {
            zone_of = Some((arpa_name(addr, zone_len)?, zone_len, def.id.clone()));
        }
        matching.push(def);
    }
    let (zone, zone_len, soa_network) = zone_of?;
    if len == zone_len {
        return Some(zone::apex_answer(&zone, &soa_network, qtype));
    }
    // Names for the whole address, or empty non-terminals above some.
    let mut targets: Vec<Name> = Vec::new();
    let mut below = false;
    for (i, def) in matching.iter().enumerate() {
        if i > 0 && def.id != asked_on && !targets.is_empty() {
            break;
        }
        let apex = zone::network_apex(&def.id)?;
        for svc in zone::service_addresses(def) {
            if len == max_len(addr) && svc == addr {
                targets.push(Name::from_ascii(NS_LABEL).ok()?.append_domain(&apex).ok()?);
            }
        }
        for r in source.records(&def.id).iter() {
            for ip in [Some(r.ip), r.ip6.map(IpAddr::V6)].into_iter().flatten() {
                if !same_prefix(ip, addr, len) {
                    continue;
                }
                below = true;
                if len != max_len(addr) {
                    continue;
                }
                if let Some(name) = r
                    .name
                    .as_deref()
                    .and_then(|n| Name::from_ascii(n).ok())
                    .and_then(|n| n.append_domain(&apex).ok())
                {
                    targets.push(name);
                }
            }
        }
    }
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return Some(LocalAnswer::negative(!below, &zone, &soa_network));
    }
    if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
        return Some(LocalAnswer::negative(false, &zone, &soa_network));
    }
    Some(LocalAnswer::records(
        targets
            .into_iter()
            .map(|t| Record::from_rdata(qname.clone(), RECORD_TTL, RData::PTR(PTR(t))))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::tests::{blue, exact, fixed, rec, Fixed};
    use hickory_proto::op::ResponseCode;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ptrs(a: &LocalAnswer) -> Vec<String> {
        a.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn arpa_names_round_trip() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(arpa_name(v4, 24).unwrap(), n("2.1.10.in-addr.arpa."));
        assert_eq!(parse(&n("3.2.1.10.in-addr.arpa.")), Some((v4, 32)));
        let v6: IpAddr = "fd00::a".parse().unwrap();
        let full = arpa_name(v6, 128).unwrap();
        assert!(full.to_ascii().starts_with("a.0.0.0."), "{full}");
        assert_eq!(parse(&full), Some((v6, 128)));
        assert!(parse(&n("web.blue.")).is_none());
    }

    #[test]
    fn ptr_v4_and_v6_for_attached_containers() {
        let src = exact(fixed(vec![rec("10.0.0.2", "web", None)]));
        let a = answer(&src, "blue", &n("2.0.0.10.in-addr.arpa."), RecordType::PTR).unwrap();
        assert_eq!(ptrs(&a), ["web.blue."]);
        let v6 = arpa_name("fd00::2".parse().unwrap(), 128).unwrap();
        let a = answer(&src, "blue", &v6, RecordType::PTR).unwrap();
        assert_eq!(ptrs(&a), ["web.blue."]);
        // The service address is the name server.
        let a = answer(
            &src,
            "blue",
            &n("254.0.0.10.in-addr.arpa."),
            RecordType::PTR,
        )
        .unwrap();
        assert_eq!(ptrs(&a), ["ns.blue."]);
    }

    #[test]
    fn reverse_negative_answers_and_apex() {
        let src = exact(fixed(vec![rec("10.0.0.2", "web", None)]));
        let nx = answer(&src, "blue", &n("9.0.0.10.in-addr.arpa."), RecordType::PTR).unwrap();
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].name, n("0.0.10.in-addr.arpa."));
        assert_eq!(nx.authority[0].record_type(), RecordType::SOA);
        let soa = answer(&src, "blue", &n("0.0.10.in-addr.arpa."), RecordType::SOA).unwrap();
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        // Outside every subnet (and above the zone cut): not ours.
        assert!(answer(&src, "blue", &n("2.0.1.10.in-addr.arpa."), RecordType::PTR).is_none());
        assert!(answer(&src, "blue", &n("0.10.in-addr.arpa."), RecordType::SOA).is_none());
        // An empty non-terminal of the /64 zone: NODATA, not NXDOMAIN.
        let v6 = arpa_name("fd00::2".parse().unwrap(), 120).unwrap();
        let ent = answer(&src, "blue", &v6, RecordType::PTR).unwrap();
        assert_eq!(ent.rcode, ResponseCode::NoError);
        assert!(ent.answers.is_empty());
    }

    #[test]
    fn overlapping_subnets_prefer_the_asking_network() {
        let mut red = blue();
        red.id = "red".into();
        let mut r = rec("10.0.0.2", "db", None);
        r.network = "red".into();
        let src = exact(Fixed {
            records: vec![rec("10.0.0.2", "web", None), r],
            networks: vec![blue(), red],
        });
        let q = n("2.0.0.10.in-addr.arpa.");
        assert_eq!(
            ptrs(&answer(&src, "red", &q, RecordType::PTR).unwrap()),
            ["db.red."]
        );
        assert_eq!(
            ptrs(&answer(&src, "blue", &q, RecordType::PTR).unwrap()),
            ["web.blue."]
        );
    }
}
