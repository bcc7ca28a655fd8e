//! MACs the control plane knows. Each attachment's MAC is pinned to the host
//! it lives on: frames to it go there without learning, and a frame that
//! claims it as its source from anywhere else (another peer, or this host's
//! TAP for a remote attachment, or a peer for one of ours) is a spoof:
//! dropped and counted, never learned, never delivered. Learning
//! ([`crate::switch`]) is left for the MACs no attachment claims.
//!
//! Pins are part of the engine's immutable tables (replaced whole by the
//! control plane), so checking one is a hash lookup in a map the packet
//! path has already loaded: no lock, no extra atomic. They never age out.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::switch::Mac;
use crate::{NetworkId, PeerIdx};

/// Where the control plane places a MAC.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
pub enum MacOwner {
    /// An attachment of this host (behind the local TAP).
    Local,
    /// An attachment of the host the data plane knows as this peer.
    Peer(PeerIdx),
}

/// The pinned MACs of one network.
pub type NetworkPins = HashMap<Mac, MacOwner, BuildHasherDefault<MacHasher>>;

/// Hashes a MAC with one 64-bit mix instead of SipHash: it runs twice per
/// frame. Flooding attacks on the hash need inserts, and only the control
/// plane inserts pins (learned MACs keep SipHash).
#[derive(Default)]
pub struct MacHasher(u64);

impl Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(29) ^ n as u64;
    }

    fn finish(&self) -> u64 {
        // murmur3's finaliser: every input bit reaches the low bits (the
        // bucket) and the high ones (hashbrown's tag).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Every network's pinned MACs, as the control plane hands them over.
pub type PinSet = HashMap<NetworkId, NetworkPins>;

/// What a frame's source MAC says about the frame.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum SourceCheck {
    /// Pinned to where the frame came from: pass, nothing to learn.
    Pinned,
    /// No attachment claims it: pass, and learn it (bounded).
    Unpinned,
    /// Pinned elsewhere: a spoof.
    Foreign,
}

/// Checks the source of a frame that arrived from `from` (`Local`: read
/// from this host's TAP).
pub fn check_source(pins: &NetworkPins, source: &Mac, from: MacOwner) -> SourceCheck {
    match pins.get(source) {
        None => SourceCheck::Unpinned,
        Some(owner) if *owner == from => SourceCheck::Pinned,
        Some(_) => SourceCheck::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const DB: Mac = [0x02, 0, 0, 0, 0, 0xb];
    const OTHER: Mac = [0x02, 0, 0, 0, 0, 0xc];

    #[test]
    fn sources_pass_only_from_where_they_are_pinned() {
        let pins: NetworkPins = [(WEB, MacOwner::Peer(1)), (DB, MacOwner::Local)]
            .into_iter()
            .collect();
        let check = |mac, from| check_source(&pins, &mac, from);
        assert_eq!(check(WEB, MacOwner::Peer(1)), SourceCheck::Pinned);
        assert_eq!(check(WEB, MacOwner::Peer(2)), SourceCheck::Foreign);
        assert_eq!(check(WEB, MacOwner::Local), SourceCheck::Foreign);
        assert_eq!(check(DB, MacOwner::Local), SourceCheck::Pinned);
        assert_eq!(check(DB, MacOwner::Peer(1)), SourceCheck::Foreign);
        assert_eq!(check(OTHER, MacOwner::Peer(2)), SourceCheck::Unpinned);
        assert_eq!(check(OTHER, MacOwner::Local), SourceCheck::Unpinned);
    }

    #[test]
    fn macs_differing_in_one_byte_spread_over_buckets() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<MacHasher>::default();
        for byte in 0..6 {
            let buckets: std::collections::BTreeSet<u64> = (0..=255u8)
                .map(|v| {
                    let mut mac = [0x02, 0, 0, 0, 0, 0];
                    mac[byte] = v;
                    build.hash_one(mac) & 0xff
                })
                .collect();
            assert!(
                buckets.len() > 128,
                "byte {byte}: {} buckets",
                buckets.len()
            );
        }
    }
}
