//! The host-wide state as the links see it: what a link's anti-entropy
//! hashes, sends and merges ([`Replica`]).

use rand::Rng;
use tracing::warn;

use super::{lock, Inner};
use crate::link::Replica;
use crate::membership::MemberRecord;
use crate::wire::{self, Digest};
use crate::PeerId;

/// The host-wide state as the links see it.
impl Replica for &Inner {
    /// As hashed towards a host of today's protocol.
    fn digest(&self) -> Digest {
        self.digest_cut_at(crate::state::now_millis().into())
    }

    fn digest_for(&self, remote: &PeerId) -> Digest {
        self.set_aside_if_stale();
        self.digest_cut_at(self.digest_cut_towards(remote))
    }

    /// Starting at a random record: a table larger than a peer's outbound
    /// queue (`node/outbound.rs`) then gets a different part through each
    /// round instead of the same first ones every time.
    fn member_records(&self) -> Vec<MemberRecord> {
        let mut records: Vec<MemberRecord> = lock(&self.peers).table.records().cloned().collect();
        let start = rand::thread_rng().gen_range(0..records.len().max(1));
        records.rotate_left(start);
        records
    }

    fn member_digest(&self) -> [u8; 32] {
        lock(&self.peers).table.digest()
    }

    fn merge_members(&mut self, from: PeerId, records: Vec<MemberRecord>) {
        Inner::merge_members(self, records, from);
    }

    fn channel_state(&self, name: &str) -> Option<Vec<u8>> {
        let channel = lock(&self.channels).named(name)?;
        Some(channel.encoded())
    }

    /// Parts in a random rotation, as for the member records.
    fn channel_parts(&self, name: &str) -> Option<(Vec<Vec<u8>>, [u8; 32])> {
        self.channel_parts_cut_at(name, crate::state::now_millis().into())
    }

    fn channel_parts_for(&self, name: &str, remote: &PeerId) -> Option<(Vec<Vec<u8>>, [u8; 32])> {
        self.set_aside_if_stale();
        self.channel_parts_cut_at(name, self.digest_cut_towards(remote))
    }

    fn in_sync_with(&mut self, _remote: PeerId) {
        self.note_sync();
    }

    fn offer_secret(&mut self, from: PeerId, epoch: u64, token: &str) {
        Inner::offer_secret(self, from, epoch, token);
    }

    fn merge_channel(&mut self, from: PeerId, name: &str, data: Vec<u8>) -> bool {
        let Some(channel) = lock(&self.channels).named(name) else {
            lock(&self.channels).hold(name, data);
            return false;
        };
        if let Err(e) = crate::journal::delivered_by(from, || channel.merge_encoded(&data)) {
            // An opaque payload we cannot read is the channel owner's problem
            // (e.g. a newer daemon's type); the connection itself is fine.
            warn!(peer = %from, channel = name, error = %e, "dropping undecodable channel update");
        }
        true
    }
}

impl Inner {
    /// The digest with tombstones left out as at `cut` (see
    /// `Mergeable::encode_for_digest`).
    fn digest_cut_at(&self, cut: Option<u64>) -> Digest {
        let members = lock(&self.peers).table.digest();
        // Encoded outside the registry lock: encoding takes each channel's own.
        let channels = lock(&self.channels).for_digest();
        Digest {
            members,
            channels: channels
                .into_iter()
                .map(|(name, ch)| (name, wire::state_hash(&ch.encoded_for_digest(cut))))
                .collect(),
        }
    }

    fn channel_parts_cut_at(
        &self,
        name: &str,
        cut: Option<u64>,
    ) -> Option<(Vec<Vec<u8>>, [u8; 32])> {
        let channel = lock(&self.channels).named(name)?;
        let mut parts = channel.encoded_parts(wire::MAX_PART_LEN);
        let start = rand::thread_rng().gen_range(0..parts.len().max(1));
        parts.rotate_left(start);
        // The digest's hash, so a reply is skipped when the digests agree.
        let hash = wire::state_hash(&channel.encoded_for_digest(cut));
        Some((parts, hash))
    }
}
