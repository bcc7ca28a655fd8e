//! A bounded neighbour set for large meshes (no I/O): instead of a
//! connection to every member, each host wants links to its ring
//! successor and predecessor and to the first member at or after
//! `id ± 2⁶⁴⁻ᵏ` (k = 1, 2, …) on the ring of 64-bit id prefixes — Chord's
//! fingers, both ways: about 2·log₂ N links and a diameter of about log₂ N
//! hops.
//!
//! The targets are points in id space, not ranks, so a join changes only
//! the few fingers whose target interval the newcomer falls in. (Offsets by
//! rank — "the member 4 places on" — looked simpler but shift with every
//! join: in a 1,000-host join every host was at some point the neighbour of
//! ~770 others, and each new link costs a full anti-entropy exchange.)
//! The relation is not symmetric, so a link is kept while either end wants
//! it ([`keeps`]); both ends compute that from the same member list.
//!
//! Used by the scale simulation (`simnet`) to compare with the full mesh
//! the node runs today; see docs/scale.md for what wiring it into the node
//! takes (relaying channel deltas, on-demand data-plane links).

use std::collections::BTreeSet;

use crate::PeerId;

/// The first 8 bytes of an id: its position on the ring.
fn position(id: &PeerId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_be_bytes(b)
}

/// How many finger distances a ring of `n` members uses: 2⁶³, 2⁶², … down
/// to about the mean gap between members.
fn finger_count(n: usize) -> u32 {
    usize::BITS - n.max(1).leading_zeros()
}

/// The neighbours of `local` among `members` (which may or may not contain
/// `local`; order and duplicates do not matter). Empty if alone.
pub fn neighbours(local: PeerId, members: impl IntoIterator<Item = PeerId>) -> BTreeSet<PeerId> {
    let mut ring: Vec<PeerId> = members.into_iter().collect();
    ring.push(local);
    ring.sort_unstable_by_key(|id| (position(id), *id));
    ring.dedup();
    neighbours_in_ring(local, &ring)
}

/// As [`neighbours`], for a ring sorted by [`PeerId`] (the membership
/// table's order) and deduplicated, containing `local`.
pub fn neighbours_in_ring(local: PeerId, ring: &[PeerId]) -> BTreeSet<PeerId> {
    let n = ring.len();
    let Ok(me) = ring.binary_search(&local) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    if n < 2 {
        return out;
    }
    out.insert(ring[(me + 1) % n]);
    out.insert(ring[(me + n - 1) % n]);
    let origin = position(&local);
    // The member at or after a point, and the one at or before it.
    let after = |point: u64| {
        let i = ring.partition_point(|id| position(id) < point);
        ring[i % n]
    };
    let before = |point: u64| {
        let i = ring.partition_point(|id| position(id) <= point);
        ring[(i + n - 1) % n]
    };
    for k in 1..=finger_count(n) {
        let distance = 1u64 << (64 - k);
        out.insert(after(origin.wrapping_add(distance)));
        out.insert(before(origin.wrapping_sub(distance)));
    }
    out.remove(&local);
    out
}

/// Whether the link between `a` and `b` stays: either end wants it.
pub fn keeps(a: PeerId, b: PeerId, ring: &[PeerId]) -> bool {
    neighbours_in_ring(a, ring).contains(&b) || neighbours_in_ring(b, ring).contains(&a)
}

/// The most links [`neighbours`] wants in a mesh of `n` members.
pub fn max_degree(n: usize) -> usize {
    (2 * finger_count(n) as usize + 2).min(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn ids(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|i| {
                let mut id = [0u8; 32];
                // Spread over the id space, not in index order.
                id[..8].copy_from_slice(
                    &(i as u64 + 1)
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .to_be_bytes(),
                );
                PeerId(id)
            })
            .collect()
    }

    fn sorted(mut v: Vec<PeerId>) -> Vec<PeerId> {
        v.sort_unstable();
        v
    }

    #[test]
    fn small_meshes_are_full_meshes() {
        for n in 1..=3 {
            let all = ids(n);
            for &me in &all {
                let got = neighbours(me, all.iter().copied());
                assert_eq!(got.len(), n - 1, "n = {n}");
                assert!(!got.contains(&me));
            }
        }
    }

    #[test]
    fn links_are_bounded_and_the_mesh_is_connected_with_a_small_diameter() {
        for n in [5, 16, 100, 300, 1000] {
            let ring = sorted(ids(n));
            let wanted: Vec<BTreeSet<PeerId>> = ring
                .iter()
                .map(|me| neighbours_in_ring(*me, &ring))
                .collect();
            // Links kept by either end; a host's degree counts both.
            let mut links = vec![BTreeSet::new(); n];
            for (i, set) in wanted.iter().enumerate() {
                assert!(set.len() <= max_degree(n), "n = {n}: {}", set.len());
                for peer in set {
                    let j = ring.binary_search(peer).unwrap();
                    links[i].insert(j);
                    links[j].insert(i);
                    assert!(keeps(ring[i], ring[j], &ring) && keeps(ring[j], ring[i], &ring));
                }
            }
            let degree = links.iter().map(|l| l.len()).max().unwrap();
            assert!(degree <= 3 * max_degree(n), "n = {n}: degree {degree}");
            let mut hops = vec![usize::MAX; n];
            hops[0] = 0;
            let mut queue = VecDeque::from([0]);
            while let Some(i) = queue.pop_front() {
                for &j in &links[i] {
                    if hops[j] == usize::MAX {
                        hops[j] = hops[i] + 1;
                        queue.push_back(j);
                    }
                }
            }
            let diameter = *hops.iter().max().unwrap();
            assert!(
                diameter <= finger_count(n) as usize,
                "n = {n}: diameter {diameter}"
            );
        }
    }

    #[test]
    fn a_join_changes_few_neighbour_sets() {
        let all = ids(1001);
        let (newcomer, rest) = all.split_last().unwrap();
        let before = sorted(rest.to_vec());
        let after = sorted(all.clone());
        let changed = rest
            .iter()
            .filter(|me| neighbours_in_ring(**me, &before) != neighbours_in_ring(**me, &after))
            .count();
        // About the newcomer's own ~2 log2 N fingers pointing back at it.
        assert!(changed <= 4 * max_degree(1001), "{changed} of 1000 changed");
        assert!(neighbours_in_ring(*newcomer, &after).len() >= 2);
    }

    #[test]
    fn input_order_and_duplicates_do_not_matter() {
        let all = ids(50);
        let mut shuffled: Vec<PeerId> = all.iter().rev().copied().collect();
        shuffled.extend_from_slice(&all[..10]);
        assert_eq!(
            neighbours(all[7], all.iter().copied()),
            neighbours(all[7], shuffled)
        );
        assert!(neighbours(all[0], []).is_empty());
    }
}
