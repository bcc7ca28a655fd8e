//! A bounded neighbour set for large meshes (no I/O): instead of a
//! connection to every member, each host keeps links to the members at
//! ring distances ±1, ±2, ±4, … on the ring of member ids sorted by
//! [`PeerId`] — about 2·log₂ N links, a diameter of about log₂ N hops,
//! and (because ±d is in the set for every d) symmetric: when two hosts
//! hold the same member list, A picks B exactly when B picks A, so nobody
//! keeps a link the other side would close.
//!
//! Used by the scale simulation (`simnet`) to compare with the full mesh
//! the node runs today; see docs/scale.md for what wiring it into the node
//! takes (relaying channel deltas, on-demand data-plane links).

use std::collections::BTreeSet;

use crate::PeerId;

/// The ring offsets for a mesh of `n` members: 1, 2, 4, … below `n`.
fn offsets(n: usize) -> impl Iterator<Item = usize> {
    std::iter::successors(Some(1usize), |d| d.checked_mul(2)).take_while(move |d| *d < n)
}

/// The neighbours of `local` among `members` (which may or may not contain
/// `local`; order and duplicates do not matter). Empty if alone.
pub fn neighbours(local: PeerId, members: impl IntoIterator<Item = PeerId>) -> BTreeSet<PeerId> {
    let mut ring: Vec<PeerId> = members.into_iter().collect();
    ring.push(local);
    ring.sort_unstable();
    ring.dedup();
    neighbours_in_ring(local, &ring)
}

/// As [`neighbours`], for a ring already sorted and deduplicated that
/// contains `local`.
pub fn neighbours_in_ring(local: PeerId, ring: &[PeerId]) -> BTreeSet<PeerId> {
    let n = ring.len();
    let Ok(me) = ring.binary_search(&local) else {
        return BTreeSet::new();
    };
    offsets(n)
        .flat_map(|d| [(me + d) % n, (me + n - d % n) % n])
        .filter(|&i| i != me)
        .map(|i| ring[i])
        .collect()
}

/// The most links [`neighbours`] keeps in a mesh of `n` members.
pub fn max_degree(n: usize) -> usize {
    (2 * offsets(n).count()).min(n.saturating_sub(1))
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
                id[..8]
                    .copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                PeerId(id)
            })
            .collect()
    }

    #[test]
    fn small_meshes_are_full_meshes() {
        for n in 1..=4 {
            let all = ids(n);
            for &me in &all {
                let got = neighbours(me, all.iter().copied());
                assert_eq!(got.len(), n - 1, "n = {n}");
                assert!(!got.contains(&me));
            }
        }
    }

    #[test]
    fn the_set_is_symmetric_bounded_and_connected_with_a_small_diameter() {
        for n in [5, 16, 100, 300, 1000] {
            let all = ids(n);
            let mut ring = all.clone();
            ring.sort_unstable();
            let sets: Vec<BTreeSet<PeerId>> = ring
                .iter()
                .map(|me| neighbours_in_ring(*me, &ring))
                .collect();
            for (i, set) in sets.iter().enumerate() {
                assert!(set.len() <= max_degree(n), "n = {n}: {}", set.len());
                for peer in set {
                    let j = ring.binary_search(peer).unwrap();
                    assert!(sets[j].contains(&ring[i]), "n = {n}: not symmetric");
                }
            }
            // Breadth-first from the first host: everyone within log2(n)+1 hops.
            let mut hops = vec![usize::MAX; n];
            hops[0] = 0;
            let mut queue = VecDeque::from([0]);
            while let Some(i) = queue.pop_front() {
                for peer in &sets[i] {
                    let j = ring.binary_search(peer).unwrap();
                    if hops[j] == usize::MAX {
                        hops[j] = hops[i] + 1;
                        queue.push_back(j);
                    }
                }
            }
            let diameter = *hops.iter().max().unwrap();
            assert!(
                diameter <= (n as f64).log2().ceil() as usize,
                "n = {n}: {diameter}"
            );
        }
        assert_eq!(max_degree(1000), 20);
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
