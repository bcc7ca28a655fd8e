//! Address allocation without duplicates, also under partition.
//!
//! The design follows Weave's ring: every address of a network's subnet
//! belongs to exactly one host's *range*, and only a range's owner
//! allocates from it or gives part of it away. Ranges live on the gossip
//! channel `ipam` as last-writer-wins entries keyed by `network/start`;
//! each entry is only ever written by its current owner, so entries never
//! conflict and two hosts can never hand out the same address, whatever the
//! partition.
//!
//! Ranges only ever split (never merge), so a start, once it exists, stays
//! a start: a split creates keys that never existed before.
//!
//! A host that runs out asks the host with the most free space through the
//! `ipam-requests` channel; the owner answers by splitting off part of its
//! largest free run (or the one address asked for) and writing the new
//! owner. `meshctl peer rm` marks a host gone for good; its ranges are then
//! inherited by one host that every member computes the same way (the owner
//! of the preceding range), so it is safe to run on any number of hosts.
//!
//! This module is plain logic over the replicated values; the daemon does
//! the I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::records::{RangeEntry, Want};

/// The ranges of one network, sorted by start.
pub fn ranges<'a>(all: impl Iterator<Item = &'a RangeEntry>, network: &str) -> Vec<RangeEntry> {
    // Empty or inverted ranges never pass admission (`crate::validate`);
    // skipping them here too keeps every range operation panic-free.
    let mut v: Vec<RangeEntry> = all
        .filter(|r| r.network == network && r.start < r.end)
        .cloned()
        .collect();
    v.sort_by_key(|r| r.start);
    v
}

/// Addresses of the subnet that are never allocated: network, broadcast,
/// and the per-network service address (DNS).
pub fn usable_span(subnet: ipnet::Ipv4Net) -> (u32, u32) {
    let net = u32::from(subnet.network());
    let bcast = u32::from(subnet.broadcast());
    // [net+1, bcast-1): the last usable address is the service address.
    (net + 1, bcast - 1)
}

/// The address every host serves DNS on in this network: the last usable
/// address of the subnet (e.g. .254 in a /24).
pub fn service_address(subnet: ipnet::Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
}

/// The first ring of a new network: its creator owns all usable space.
pub fn initial_range(network: &str, subnet: ipnet::Ipv4Net, creator: &str) -> RangeEntry {
    let (start, end) = usable_span(subnet);
    RangeEntry {
        network: network.to_string(),
        start,
        end,
        owner: creator.to_string(),
    }
}

/// Lowest free address in `me`'s ranges.
pub fn pick_free(ranges: &[RangeEntry], me: &str, used: &BTreeSet<u32>) -> Option<u32> {
    ranges
        .iter()
        .filter(|r| r.owner == me)
        .flat_map(|r| r.start..r.end)
        .find(|a| !used.contains(a))
}

pub fn owner_of(ranges: &[RangeEntry], a: u32) -> Option<&RangeEntry> {
    ranges.iter().find(|r| r.contains(a))
}

/// Free addresses per owner (`used`: every allocation known mesh-wide).
pub fn free_by_owner(ranges: &[RangeEntry], used: &BTreeSet<u32>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in ranges {
        let used_here = used.range(r.start..r.end).count() as u64;
        *m.entry(r.owner.clone()).or_insert(0) += u64::from(r.len()) - used_here;
    }
    m
}

/// The entries `me` writes to give `to` what it asked for, or `None` if
/// `me` cannot (nothing free, or the address is not free and ours).
/// `used` are `me`'s own allocations: only `me` allocates in its ranges.
pub fn plan_grant(
    ranges: &[RangeEntry],
    me: &str,
    used: &BTreeSet<u32>,
    to: &str,
    want: Want,
) -> Option<Vec<RangeEntry>> {
    let (a, b) = match want {
        Want::Addr(x) => {
            let r = owner_of(ranges, x)?;
            if r.owner != me || used.contains(&x) {
                return None;
            }
            (x, x + 1)
        }
        Want::Space => {
            // Largest run of free addresses in our ranges; give its upper half.
            let mut best: Option<(u32, u32)> = None;
            for r in ranges.iter().filter(|r| r.owner == me) {
                let mut run_start = None;
                for x in r.start..=r.end {
                    let free = x < r.end && !used.contains(&x);
                    match (free, run_start) {
                        (true, None) => run_start = Some(x),
                        (false, Some(s)) => {
                            if best.is_none_or(|(bs, be)| x - s > be - bs) {
                                best = Some((s, x));
                            }
                            run_start = None;
                        }
                        _ => {}
                    }
                }
            }
            let (s, e) = best?;
            let half = (e - s).div_ceil(2);
            (e - half, e)
        }
    };
    let r = owner_of(ranges, a)?.clone();
    debug_assert!(b <= r.end);
    let mut out = Vec::new();
    let network = r.network.clone();
    let piece = |start, end, owner: &str| RangeEntry {
        network: network.clone(),
        start,
        end,
        owner: owner.to_string(),
    };
    if a > r.start {
        out.push(piece(r.start, a, me));
    }
    out.push(piece(a, b, to));
    if b < r.end {
        out.push(piece(b, r.end, me));
    }
    Some(out)
}

/// Who inherits `gone`'s ranges: for each of its ranges, the owner of the
/// nearest preceding range (wrapping) that is not itself gone. Every host
/// computes the same answer from the same ring, so only one host ever
/// takes a given range over. Falls back to the lowest remaining owner, or
/// `fallback` if the gone host owned the whole ring.
pub fn heirs(
    ranges: &[RangeEntry],
    gone: &BTreeSet<String>,
    fallback: &str,
) -> Vec<(RangeEntry, String)> {
    let n = ranges.len();
    let mut out = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        if !gone.contains(&r.owner) {
            continue;
        }
        let heir = (1..n)
            .map(|k| &ranges[(i + n - k) % n])
            .find(|p| !gone.contains(&p.owner))
            .map(|p| p.owner.clone())
            .unwrap_or_else(|| fallback.to_string());
        out.push((r.clone(), heir));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subnet() -> ipnet::Ipv4Net {
        "198.19.0.0/24".parse().unwrap()
    }

    fn base(u: u32) -> u32 {
        u32::from(Ipv4Addr::new(198, 19, 0, 0)) + u
    }

    #[test]
    fn initial_ring_covers_usable_space() {
        let r = initial_range("n", subnet(), "a");
        assert_eq!(r.start, base(1));
        assert_eq!(r.end, base(254));
        assert_eq!(service_address(subnet()), Ipv4Addr::new(198, 19, 0, 254));
        assert!(!r.contains(base(254)));
    }

    #[test]
    fn grant_of_space_gives_upper_half_of_largest_free_run() {
        let ring = vec![initial_range("n", subnet(), "a")];
        let used: BTreeSet<u32> = [base(1), base(2)].into();
        let g = plan_grant(&ring, "a", &used, "b", Want::Space).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].owner.as_str(), g[0].start, g[0].end),
            ("a", base(1), g[1].start)
        );
        assert_eq!(g[1].owner, "b");
        assert_eq!(g[1].end, base(254));
        assert!(g[1].start > base(2));
    }

    #[test]
    fn grant_of_one_address_splits_in_three() {
        let ring = vec![initial_range("n", subnet(), "a")];
        let g = plan_grant(&ring, "a", &BTreeSet::new(), "b", Want::Addr(base(100))).unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[1].start, base(100));
        assert_eq!(g[1].end, base(101));
        assert_eq!(g[1].owner, "b");
        assert!(plan_grant(&ring, "a", &[base(100)].into(), "b", Want::Addr(base(100))).is_none());
        assert!(plan_grant(&ring, "z", &BTreeSet::new(), "b", Want::Addr(base(100))).is_none());
    }

    #[test]
    fn heirs_are_the_preceding_owner() {
        let mk = |s, e, o: &str| RangeEntry {
            network: "n".into(),
            start: s,
            end: e,
            owner: o.into(),
        };
        let ring = vec![
            mk(1, 10, "a"),
            mk(10, 20, "b"),
            mk(20, 30, "c"),
            mk(30, 40, "b"),
        ];
        let h = heirs(&ring, &["b".to_string()].into(), "z");
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].1, "a");
        assert_eq!(h[1].1, "c");
        let only = vec![mk(1, 10, "b")];
        assert_eq!(heirs(&only, &["b".to_string()].into(), "z")[0].1, "z");
    }

    /// A model of several hosts with their own (possibly stale) views of
    /// the ring: whatever the interleaving of allocations, grants and
    /// partial propagation, no address is ever allocated twice.
    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Ask(usize, usize),
        Sync(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize).prop_map(Op::Alloc),
            (0..4usize, 0..4usize).prop_map(|(a, b)| Op::Ask(a, b)),
            (0..4usize, 0..4usize).prop_map(|(a, b)| Op::Sync(a, b)),
        ]
    }

    proptest! {
        #[test]
        fn no_duplicates_under_any_propagation(ops in prop::collection::vec(op(), 1..200)) {
            let names = ["a", "b", "c", "d"];
            let sub: ipnet::Ipv4Net = "198.19.0.0/27".parse().unwrap();
            // Each host's view: key -> (version, entry). Only owners write.
            type View = BTreeMap<u32, (u64, RangeEntry)>;
            let first = initial_range("n", sub, "a");
            let mut views: Vec<View> = vec![[(first.start, (1, first.clone()))].into(); 4];
            let mut used: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); 4];
            let mut all: BTreeMap<u32, usize> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Alloc(h) => {
                        let ring: Vec<RangeEntry> = views[h].values().map(|(_, e)| e.clone()).collect();
                        if let Some(a) = pick_free(&ring, names[h], &used[h]) {
                            used[h].insert(a);
                            prop_assert!(all.insert(a, h).is_none(), "address {a} allocated twice");
                        }
                    }
                    Op::Ask(h, owner) => {
                        // The owner acts on its own view only.
                        let ring: Vec<RangeEntry> = views[owner].values().map(|(_, e)| e.clone()).collect();
                        if let Some(g) = plan_grant(&ring, names[owner], &used[owner], names[h], Want::Space) {
                            for e in g {
                                let v = views[owner].get(&e.start).map(|(v, _)| v + 1).unwrap_or(1);
                                views[owner].insert(e.start, (v, e));
                            }
                        }
                    }
                    Op::Sync(from, to) => {
                        let src = views[from].clone();
                        for (k, (v, e)) in src {
                            let newer = views[to].get(&k).is_none_or(|(tv, _)| v > *tv);
                            if newer {
                                views[to].insert(k, (v, e));
                            }
                        }
                    }
                }
            }
        }
    }
}
