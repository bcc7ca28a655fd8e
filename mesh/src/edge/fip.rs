//! Floating-IP rules, pure: who holds an address, which address is free,
//! and whether an association is allowed. Every host computes the same
//! answers from the same records and the same view of who is up.

use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use mesh_model::edge::{fip_key, Fip, FipBinding, FipBindingRecord, FipPool, FipRecord};

/// A mesh host, as far as holding floating IPs goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub underlay: Ipv4Addr,
    /// The subnets of its underlay interfaces (member metadata); none: a
    /// host of an older version, which advertises none.
    pub subnets: Vec<Ipv4Net>,
    /// The ranges its operator permits floating IPs in (`fip_pools`);
    /// none: anywhere on its LAN.
    pub permits: Vec<Ipv4Net>,
}

impl Candidate {
    /// Whether it may hold the addresses of `pool`: the pool is on its
    /// LAN, i.e. its underlay subnet contains the whole pool (operators hand
    /// a sub-range of the LAN to floating IPs; the hosts are never in it).
    /// Without a subnet, the rule of older versions: its address lies in
    /// the pool (so mixed-version meshes agree on pools that cover the LAN).
    /// A replicated pool is a proposal: a host whose operator lists ranges
    /// holds only a pool inside one of them.
    pub fn may_hold(&self, pool: &Ipv4Net) -> bool {
        let permitted = self.permits.is_empty() || self.permits.iter().any(|r| r.contains(pool));
        permitted
            && match self.subnets.is_empty() {
                false => self.subnets.iter().any(|s| s.trunc().contains(pool)),
                true => pool.contains(&self.underlay),
            }
    }
}

/// The pool `addr` belongs to.
pub fn pool_of(pools: &BTreeMap<String, FipPool>, addr: Ipv4Addr) -> Option<&FipPool> {
    pools.values().find(|p| p.cidr.contains(&addr))
}

/// The hosts that may hold addresses of `pool`.
pub fn candidates<'a>(pool: &FipPool, hosts: &'a [Candidate]) -> Vec<&'a Candidate> {
    hosts.iter().filter(|h| h.may_hold(&pool.cidr)).collect()
}

/// Why a floating IP has no holder (`meshctl fip list` shows it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoHolder {
    #[error("{0} is in no floating-IP pool")]
    NoPool(Ipv4Addr),
    #[error("no host's underlay subnet contains {0}")]
    NoCandidate(Ipv4Net),
    #[error("no majority of candidates reachable (this host hears {heard} of {of})")]
    NoMajority { heard: usize, of: usize },
    #[error("no candidate is up")]
    NoneUp,
    #[error("address in use by {mac}, not a mesh host (ARP probe by {prober})")]
    InUse { mac: String, prober: String },
    #[error("address is a gateway or a mesh host's own address, never a floating IP (refused by {prober})")]
    Protected { prober: String },
}

/// Rendezvous score of `host` for `addr` (highest wins): stable across
/// hosts and releases, and moving only the addresses of a host that leaves.
fn score(addr: Ipv4Addr, host: &str) -> [u8; 32] {
    let mut input = addr.octets().to_vec();
    input.extend_from_slice(host.as_bytes());
    let d = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Who answers for `addr`: the best-scored of `live` among `candidates`,
/// provided `supporting` (the candidates this host hears from) are a
/// strict majority of all candidates, so at most one side of a partition
/// can choose at all.
pub fn holder(
    addr: Ipv4Addr,
    candidates: &[&Candidate],
    live: &BTreeSet<String>,
    supporting: &BTreeSet<String>,
) -> Result<String, NoHolder> {
    let support = candidates
        .iter()
        .filter(|c| supporting.contains(&c.id))
        .count();
    if support * 2 <= candidates.len() {
        return Err(NoHolder::NoMajority {
            heard: support,
            of: candidates.len(),
        });
    }
    candidates
        .iter()
        .filter(|c| live.contains(&c.id))
        .max_by_key(|c| score(addr, &c.id))
        .map(|c| c.id.clone())
        .ok_or(NoHolder::NoneUp)
}

/// [`holder`] from the pools and every host.
pub fn resolve(
    addr: Ipv4Addr,
    pools: &BTreeMap<String, FipPool>,
    hosts: &[Candidate],
    live: &BTreeSet<String>,
    supporting: &BTreeSet<String>,
) -> Result<String, NoHolder> {
    let pool = pool_of(pools, addr).ok_or(NoHolder::NoPool(addr))?;
    let cands = candidates(pool, hosts);
    if cands.is_empty() {
        return Err(NoHolder::NoCandidate(pool.cidr));
    }
    holder(addr, &cands, live, supporting)
}

/// How long a host that becomes the holder while the previous one may
/// still answer (it came back, or this host just started) waits before it
/// answers: long enough for the previous holder to learn it has been
/// displaced (it hears the new holder on their control link within a
/// heartbeat, 2 s, and sees the records by gossip). A holder that is gone
/// is replaced at once.
pub const HANDOVER: Duration = Duration::from_millis(2500);

/// What this host remembers between rounds, so that it never answers for
/// an address while another host may still do so.
#[derive(Debug, Default)]
pub struct Handover {
    /// The last holder other than this host seen for each address (`None`:
    /// nobody, or not known).
    last_other: BTreeMap<Ipv4Addr, Option<String>>,
    /// Since when this host has been the holder, without answering yet.
    pending: BTreeMap<Ipv4Addr, Instant>,
    held: BTreeSet<Ipv4Addr>,
}

impl Handover {
    /// The addresses this host answers for now, given who holds what
    /// (`holders`) and who is live.
    pub fn step(
        &mut self,
        me: &str,
        holders: &BTreeMap<Ipv4Addr, Option<String>>,
        live: &BTreeSet<String>,
        now: Instant,
    ) -> BTreeSet<Ipv4Addr> {
        let mut held = BTreeSet::new();
        for (addr, h) in holders {
            if h.as_deref() != Some(me) {
                self.pending.remove(addr);
                self.last_other.insert(*addr, h.clone());
                continue;
            }
            let previous_gone = matches!(
                self.last_other.get(addr),
                Some(Some(prev)) if !live.contains(prev)
            );
            let since = *self.pending.entry(*addr).or_insert(now);
            if self.held.contains(addr)
                || previous_gone
                || now.saturating_duration_since(since) >= HANDOVER
            {
                held.insert(*addr);
            }
        }
        self.pending.retain(|a, _| holders.contains_key(a));
        self.last_other.retain(|a, _| holders.contains_key(a));
        self.held = held.clone();
        held
    }

    /// When, after `after`, an address this host was given but does not
    /// answer for yet becomes its to answer for (the earliest), if ever.
    pub fn next_due(&self, after: Instant) -> Option<Instant> {
        self.pending
            .iter()
            .filter(|(a, _)| !self.held.contains(a))
            .map(|(_, since)| *since + HANDOVER)
            .filter(|at| *at > after)
            .min()
    }
}

/// Addresses of a pool that may float: not the subnet's network or
/// broadcast address (for pools shorter than /31), not a host's own.
fn usable(cidr: &Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let (first, last) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
    let (first, last) = if cidr.prefix_len() < 31 {
        (first + 1, last - 1)
    } else {
        (first, last)
    };
    (first..=last).map(Ipv4Addr::from)
}

/// The floating IPs with the associations in effect: in key order, one
/// that would take a public port already taken on its FIP, or give a
/// service a second FIP, is ignored, so every host resolves associations
/// written at once on different hosts the same way.
pub fn effective(
    fips: &BTreeMap<String, FipRecord>,
    bindings: &BTreeMap<String, FipBindingRecord>,
) -> BTreeMap<String, Fip> {
    let mut out: BTreeMap<String, Fip> = fips
        .values()
        .map(|f| {
            (
                fip_key(f.addr),
                Fip {
                    addr: f.addr,
                    bindings: Vec::new(),
                },
            )
        })
        .collect();
    let mut bound: BTreeSet<(String, String)> = BTreeSet::new();
    for b in bindings.values() {
        let service = (b.binding.network.clone(), b.binding.service.clone());
        let Some(f) = out.get_mut(&fip_key(b.addr)) else {
            continue;
        };
        if bound.contains(&service)
            || f.bindings
                .iter()
                .any(|x| x.public_port == b.binding.public_port)
        {
            continue;
        }
        bound.insert(service);
        f.bindings.push(b.binding.clone());
    }
    out
}

/// The free addresses of the pools, lowest first.
pub fn free<'a>(
    pools: &'a BTreeMap<String, FipPool>,
    fips: &BTreeMap<String, Fip>,
    hosts: &[Candidate],
) -> impl Iterator<Item = Ipv4Addr> + 'a {
    let taken: BTreeSet<Ipv4Addr> = fips
        .values()
        .map(|f| f.addr)
        .chain(hosts.iter().map(|h| h.underlay))
        .collect();
    pools
        .values()
        .flat_map(|p| usable(&p.cidr))
        .filter(move |a| !taken.contains(a))
}

/// The lowest free address of any pool.
pub fn pick_free(
    pools: &BTreeMap<String, FipPool>,
    fips: &BTreeMap<String, Fip>,
    hosts: &[Candidate],
) -> Option<Ipv4Addr> {
    free(pools, fips, hosts).next()
}

/// Why an address cannot be taken, or an association made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FipError {
    #[error("{0} is in no floating-IP pool (see `meshctl fip pool add`)")]
    NotInPool(Ipv4Addr),
    #[error("{0} is already a floating IP")]
    InUse(Ipv4Addr),
    #[error("{0} is the underlay address of a host")]
    HostAddress(Ipv4Addr),
    #[error("{addr} is in use on the LAN: {mac} answers ARP for it (not a mesh host)")]
    Taken { addr: Ipv4Addr, mac: String },
    #[error("{addr} already fronts {service} ({network}) on port {port}")]
    PortClash {
        addr: Ipv4Addr,
        port: u16,
        service: String,
        network: String,
    },
    #[error("service {service} ({network}) already has floating IP {other}")]
    AlreadyAssociated {
        service: String,
        network: String,
        other: Ipv4Addr,
    },
    #[error("pool {0} overlaps pool {1}")]
    Overlap(Ipv4Net, Ipv4Net),
}

/// Checks that `addr` may become a floating IP.
pub fn check_new(
    addr: Ipv4Addr,
    pools: &BTreeMap<String, FipPool>,
    fips: &BTreeMap<String, Fip>,
    hosts: &[Candidate],
) -> Result<(), FipError> {
    pool_of(pools, addr).ok_or(FipError::NotInPool(addr))?;
    if fips.values().any(|f| f.addr == addr) {
        return Err(FipError::InUse(addr));
    }
    if hosts.iter().any(|h| h.underlay == addr) {
        return Err(FipError::HostAddress(addr));
    }
    Ok(())
}

/// Checks that `binding` may be added to `fip`: its public port is free
/// there and the service has no other floating IP.
pub fn check_binding(
    fip: &Fip,
    binding: &FipBinding,
    fips: &BTreeMap<String, Fip>,
) -> Result<(), FipError> {
    for f in fips.values() {
        for b in &f.bindings {
            let same = b.network == binding.network && b.service == binding.service;
            if same && f.addr != fip.addr {
                return Err(FipError::AlreadyAssociated {
                    service: b.service.clone(),
                    network: b.network.clone(),
                    other: f.addr,
                });
            }
            if f.addr == fip.addr && !same && b.public_port == binding.public_port {
                return Err(FipError::PortClash {
                    addr: fip.addr,
                    port: b.public_port,
                    service: b.service.clone(),
                    network: b.network.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Checks that a new pool overlaps no existing one.
pub fn check_pool(cidr: Ipv4Net, pools: &BTreeMap<String, FipPool>) -> Result<(), FipError> {
    match pools
        .values()
        .find(|p| mesh_model::networks::overlaps(p.cidr, cidr))
    {
        Some(p) => Err(FipError::Overlap(cidr, p.cidr)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, last: u8) -> Candidate {
        let underlay = Ipv4Addr::new(198, 18, 0, last);
        Candidate {
            id: id.into(),
            underlay,
            subnets: vec![Ipv4Net::new(underlay, 24).unwrap()],
            permits: vec![],
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn pools() -> BTreeMap<String, FipPool> {
        let cidr: Ipv4Net = "198.18.0.0/24".parse().unwrap();
        [(
            cidr.to_string(),
            FipPool {
                cidr,
                created_by: "a".into(),
            },
        )]
        .into()
    }

    #[test]
    fn one_holder_and_only_with_a_majority() {
        let hosts = [c("a", 1), c("b", 2), c("c", 3), c("x", 9)];
        let outside = Candidate {
            id: "y".into(),
            underlay: Ipv4Addr::new(10, 0, 0, 1),
            subnets: vec!["10.0.0.1/16".parse().unwrap()],
            permits: vec![],
        };
        let pool = &pools()["198.18.0.0/24"];
        let all: Vec<Candidate> = hosts.iter().cloned().chain([outside]).collect();
        let cands = candidates(pool, &all);
        assert_eq!(
            cands.len(),
            4,
            "the host outside the subnet is no candidate"
        );
        let fip = Ipv4Addr::new(198, 18, 0, 200);
        let everyone = set(&["a", "b", "c", "x"]);
        let h = holder(fip, &cands, &everyone, &everyone).unwrap();
        // Every host with the same view agrees; without the holder, another.
        let mut rest = everyone.clone();
        rest.remove(&h);
        let h2 = holder(fip, &cands, &rest, &rest).unwrap();
        assert_ne!(h, h2);
        // Two of four is no majority: that side holds nothing.
        let half = set(&["a", "b"]);
        assert_eq!(
            holder(fip, &cands, &half, &half),
            Err(NoHolder::NoMajority { heard: 2, of: 4 })
        );
        // Holders spread over hosts for different addresses.
        let holders: BTreeSet<String> = (1..=40)
            .filter_map(|i| holder(Ipv4Addr::new(198, 18, 0, i), &cands, &everyone, &everyone).ok())
            .collect();
        assert!(holders.len() > 1);
    }

    fn pool(cidr: &str) -> BTreeMap<String, FipPool> {
        let cidr: Ipv4Net = cidr.parse().unwrap();
        [(
            cidr.to_string(),
            FipPool {
                cidr,
                created_by: "a".into(),
            },
        )]
        .into()
    }

    fn host(id: &str, underlay: &str, subnet: Option<&str>) -> Candidate {
        Candidate {
            id: id.into(),
            underlay: underlay.parse().unwrap(),
            subnets: subnet.map(|s| s.parse().unwrap()).into_iter().collect(),
            permits: vec![],
        }
    }

    #[test]
    fn a_sub_range_of_the_lan_is_held_by_the_hosts_on_that_lan() {
        let pools = pool("192.168.1.240/28");
        let p = &pools["192.168.1.240/28"];
        let hosts = [
            host("h1", "192.168.1.1", Some("192.168.1.1/24")),
            host("h2", "192.168.1.2", Some("192.168.1.2/24")),
            // A subnet wider than the LAN still contains the pool.
            host("h3", "192.168.0.3", Some("192.168.0.3/23")),
            // Another LAN, and a subnet that covers only part of the pool.
            host("other", "10.0.0.1", Some("10.0.0.1/24")),
            host("half", "192.168.1.250", Some("192.168.1.248/29")),
            // Older versions advertise no subnet: in the pool or not.
            host("old-in", "192.168.1.241", None),
            host("old-out", "192.168.1.4", None),
        ];
        let ids: Vec<&str> = candidates(p, &hosts)
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["h1", "h2", "h3", "old-in"]);
        // The defect this rule fixes: with the old rule alone (nobody's
        // address in the pool), nobody could hold it.
        let fip = Ipv4Addr::new(192, 168, 1, 242);
        let up = set(&["h1", "h2", "h3", "old-in"]);
        let h = resolve(fip, &pools, &hosts, &up, &up).unwrap();
        assert!(["h1", "h2", "h3", "old-in"].contains(&h.as_str()), "{h}");
    }

    #[test]
    fn a_host_holds_only_pools_its_operator_permits() {
        let pools = pool("192.168.1.240/28");
        let p = &pools["192.168.1.240/28"];
        let mut strict = host("strict", "192.168.1.1", Some("192.168.1.1/24"));
        strict.permits = vec!["192.168.1.224/27".parse().unwrap()];
        let mut elsewhere = host("elsewhere", "192.168.1.2", Some("192.168.1.2/24"));
        elsewhere.permits = vec!["192.168.1.128/28".parse().unwrap()];
        let mut partly = host("partly", "192.168.1.3", Some("192.168.1.3/24"));
        partly.permits = vec!["192.168.1.240/29".parse().unwrap()];
        let hosts = [strict, elsewhere, partly];
        let ids: Vec<&str> = candidates(p, &hosts)
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["strict"], "a pool is held whole or not at all");
    }

    #[test]
    fn the_reasons_a_fip_has_no_holder() {
        let pools = pool("192.168.1.240/28");
        let fip = Ipv4Addr::new(192, 168, 1, 241);
        let elsewhere = [
            host("a", "10.0.0.1", Some("10.0.0.1/24")),
            host("b", "192.168.1.2", Some("192.168.1.2/32")),
        ];
        let all = set(&["a", "b"]);
        let reason = |r: Result<String, NoHolder>| r.unwrap_err().to_string();
        assert_eq!(
            reason(resolve(fip, &pools, &elsewhere, &all, &all)),
            "no host's underlay subnet contains 192.168.1.240/28"
        );
        assert_eq!(
            reason(resolve(
                Ipv4Addr::new(10, 1, 1, 1),
                &pools,
                &elsewhere,
                &all,
                &all
            )),
            "10.1.1.1 is in no floating-IP pool"
        );
        let lan = [
            host("a", "192.168.1.1", Some("192.168.1.1/24")),
            host("b", "192.168.1.2", Some("192.168.1.2/24")),
            host("c", "192.168.1.3", Some("192.168.1.3/24")),
        ];
        let me = set(&["a"]);
        assert_eq!(
            reason(resolve(fip, &pools, &lan, &me, &me)),
            "no majority of candidates reachable (this host hears 1 of 3)"
        );
        // A host that hears a majority without any candidate being live
        // (it is no candidate itself, and the others just went stale).
        assert_eq!(
            reason(resolve(fip, &pools, &lan, &set(&["x"]), &set(&["a", "b"]))),
            "no candidate is up"
        );
        assert_eq!(
            NoHolder::InUse {
                mac: "52:54:00:12:34:56".into(),
                prober: "h2".into()
            }
            .to_string(),
            "address in use by 52:54:00:12:34:56, not a mesh host (ARP probe by h2)"
        );
    }

    #[test]
    fn free_addresses_skip_hosts_fips_and_the_subnet_edges() {
        let hosts = [c("a", 1), c("b", 2)];
        let mut fips = BTreeMap::new();
        assert_eq!(
            pick_free(&pools(), &fips, &hosts),
            Some(Ipv4Addr::new(198, 18, 0, 3))
        );
        let addr = Ipv4Addr::new(198, 18, 0, 3);
        fips.insert(
            fip_key(addr),
            Fip {
                addr,
                bindings: vec![],
            },
        );
        assert_eq!(
            pick_free(&pools(), &fips, &hosts),
            Some(Ipv4Addr::new(198, 18, 0, 4))
        );
        assert_eq!(
            check_new(addr, &pools(), &fips, &hosts),
            Err(FipError::InUse(addr))
        );
        let outside = Ipv4Addr::new(10, 1, 1, 1);
        assert_eq!(
            check_new(outside, &pools(), &fips, &hosts),
            Err(FipError::NotInPool(outside))
        );
        assert!(check_new(Ipv4Addr::new(198, 18, 0, 1), &pools(), &fips, &hosts).is_err());
        assert!(check_pool("198.18.0.128/25".parse().unwrap(), &pools()).is_err());
        assert!(check_pool("198.19.0.0/24".parse().unwrap(), &pools()).is_ok());
    }

    use mesh_model::edge::fip_key;

    #[test]
    fn a_gone_holder_is_replaced_at_once_a_live_one_only_after_the_handover() {
        let fip = Ipv4Addr::new(198, 18, 0, 200);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let holders = |h: Option<&str>| -> BTreeMap<Ipv4Addr, Option<String>> {
            [(fip, h.map(String::from))].into()
        };
        // b saw a hold it; a dies (not live): b takes over at once.
        let mut b = Handover::default();
        assert!(b
            .step("b", &holders(Some("a")), &set(&["a", "b"]), at(0))
            .is_empty());
        assert_eq!(
            b.step("b", &holders(Some("b")), &set(&["b"]), at(10)),
            [fip].into()
        );
        // a comes back and is the holder again: b lets go at once…
        assert!(b
            .step("b", &holders(Some("a")), &set(&["a", "b"]), at(20))
            .is_empty());
        // …while a, just started (it knows no previous holder), waits,
        // and says until when (the daemon wakes its pass then).
        let mut a = Handover::default();
        assert!(a
            .step("a", &holders(Some("a")), &set(&["a", "b"]), at(0))
            .is_empty());
        assert_eq!(a.next_due(at(0)), Some(at(0) + HANDOVER));
        assert!(a
            .step("a", &holders(Some("a")), &set(&["a", "b"]), at(2000))
            .is_empty());
        assert_eq!(
            a.step("a", &holders(Some("a")), &set(&["a", "b"]), at(2600)),
            [fip].into()
        );
        assert_eq!(a.next_due(at(0)), None, "held: nothing to wait for");
        // Once held, kept while it stays the holder; lost without a majority.
        assert_eq!(
            a.step("a", &holders(Some("a")), &set(&["a"]), at(2700)),
            [fip].into()
        );
        assert!(a
            .step("a", &holders(None), &set(&["a"]), at(2800))
            .is_empty());
        // The majority regained, a waits again (nobody known before).
        assert!(a
            .step("a", &holders(Some("a")), &set(&["a", "b"]), at(2900))
            .is_empty());
    }

    #[test]
    fn one_fip_per_service_and_one_service_per_port() {
        let b = |svc: &str, port| FipBinding {
            network: "blue".into(),
            service: svc.into(),
            public_port: port,
        };
        let f1 = Fip {
            addr: Ipv4Addr::new(198, 18, 0, 10),
            bindings: vec![b("web", 80)],
        };
        let f2 = Fip {
            addr: Ipv4Addr::new(198, 18, 0, 11),
            bindings: vec![],
        };
        let fips: BTreeMap<String, Fip> = [
            (fip_key(f1.addr), f1.clone()),
            (fip_key(f2.addr), f2.clone()),
        ]
        .into();
        assert!(check_binding(&f1, &b("api", 8080), &fips).is_ok());
        assert!(matches!(
            check_binding(&f1, &b("api", 80), &fips),
            Err(FipError::PortClash { port: 80, .. })
        ));
        assert!(matches!(
            check_binding(&f2, &b("web", 80), &fips),
            Err(FipError::AlreadyAssociated { .. })
        ));
        // Re-associating on the same FIP (a port change) is allowed.
        assert!(check_binding(&f1, &b("web", 81), &fips).is_ok());
    }

    #[test]
    fn associations_made_at_once_resolve_the_same_everywhere() {
        use mesh_model::edge::binding_key;
        let rec = |addr: Ipv4Addr| FipRecord {
            addr,
            updated_by: "a".into(),
        };
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 11));
        let fips: BTreeMap<String, FipRecord> = [(fip_key(a), rec(a)), (fip_key(b), rec(b))].into();
        let bind = |addr, svc: &str, port| {
            (
                binding_key(addr, "blue", svc),
                FipBindingRecord {
                    addr,
                    binding: FipBinding {
                        network: "blue".into(),
                        service: svc.into(),
                        public_port: port,
                    },
                    updated_by: "x".into(),
                },
            )
        };
        // Two hosts at once: api and web on port 80 of a; web also on b.
        let bindings: BTreeMap<String, FipBindingRecord> = [
            bind(a, "web", 80),
            bind(a, "api", 80),
            bind(a, "db", 5432),
            bind(b, "web", 8080),
            bind(Ipv4Addr::new(198, 18, 0, 99), "gone", 1),
        ]
        .into();
        let e = effective(&fips, &bindings);
        let names = |addr| -> Vec<String> {
            e[&fip_key(addr)]
                .bindings
                .iter()
                .map(|x| x.service.clone())
                .collect()
        };
        // Key order: "…10/blue/api" before "…10/blue/web".
        assert_eq!(names(a), ["api", "db"]);
        assert_eq!(names(b), ["web"]);
        assert_eq!(e.len(), 2);
    }
}
