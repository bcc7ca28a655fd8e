//! Member records and the membership table merge (no I/O).
//!
//! A record is owned by the member it describes: only that member changes it,
//! bumping `version`; a restart bumps `incarnation` (start time in ms, kept
//! strictly increasing), so a restarted host supersedes its old self wherever
//! the two meet. Every record is signed by the member it describes (its id
//! is its Ed25519 key), and a record whose signature does not verify is
//! dropped before merge: a member relays other hosts' records but can never
//! forge or alter one (e.g. swap the `netkey` a network secret is sealed to).
//! Incarnations may run at most [`MAX_INCARNATION_AHEAD_MS`] ahead of our
//! clock, so none can be pushed out of reach of a refutation. Merging keeps, per id, the record with the highest
//! `(incarnation, version)`, which makes the table a join-semilattice: merges
//! commute and repeat harmlessly, so records can be flooded and re-sent freely.

use std::collections::BTreeMap;

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::signed::{self, Signature};
use crate::state::now_millis;
use crate::PeerId;

/// Domain of member record signatures.
const RECORD_DOMAIN: &str = "mesh/member-record/1";
/// How far ahead of our clock an incarnation (start time in ms) may be: a
/// day of clock skew. Beyond, a record is refused, so no incarnation can be
/// pushed to where `+ 1` no longer fits.
pub const MAX_INCARNATION_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Bounds on what a peer may make us store (a member is authenticated, but a
/// bug or a compromised host must not exhaust memory).
pub const MAX_MEMBERS: usize = 4096;
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_ADDRS: usize = 16;
pub const MAX_ADDR_LEN: usize = 255;
pub const MAX_META_ENTRIES: usize = 64;
pub const MAX_META_LEN: usize = 1024;
/// All metadata keys and values of a record together, at most.
pub const MAX_META_BYTES: usize = 2048;
/// A whole encoded record, signature included, at most: 1,000 members take
/// at most 2.5 MB, 60 % of a frame (`wire::MAX_FRAME_LEN`); a real one
/// (listen address, data port, MTU, ciphers, network key, underlay) is
/// about 500 bytes. Full tables travel in parts anyway (`wire::MAX_PART_LEN`).
pub const MAX_RECORD_LEN: usize = 2560;

/// What a member says about itself; gossiped verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: PeerId,
    pub name: String,
    /// Where the member can be reached: `host:port` strings, re-resolved on
    /// every dial so DNS changes are picked up.
    pub addrs: Vec<String>,
    pub incarnation: u64,
    pub version: u64,
    pub meta: BTreeMap<String, String>,
    /// The subject's signature over all of the above ([`MemberRecord::sign`]).
    pub signature: Signature,
}

/// Why a member record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Limits(&'static str),
    #[error("signature is not the subject's")]
    Signature,
    #[error("incarnation {0} is too far in the future")]
    Incarnation(u64),
}

impl MemberRecord {
    fn signed_bytes(&self) -> Vec<u8> {
        let body = (
            &self.id,
            &self.name,
            &self.addrs,
            self.incarnation,
            self.version,
            &self.meta,
        );
        postcard::to_stdvec(&body).unwrap_or_default()
    }

    /// Signs the record as its subject; false if this process does not hold
    /// the subject's key.
    pub fn sign(&mut self) -> bool {
        match signed::sign_as(&self.id, RECORD_DOMAIN, &self.signed_bytes()) {
            Some(sig) => {
                self.signature = sig;
                true
            }
            None => false,
        }
    }

    /// Whether the signature is the subject's over this content.
    pub fn signature_verifies(&self) -> bool {
        signed::verify(
            &self.id,
            RECORD_DOMAIN,
            &self.signed_bytes(),
            &self.signature,
        )
    }

    fn rank(&self) -> (u64, u64) {
        (self.incarnation, self.version)
    }

    /// True if `self` should replace `other` (same id assumed). Equal ranks
    /// with different contents (only possible through misuse) are ordered by
    /// their encoding so every host still picks the same one.
    pub fn supersedes(&self, other: &MemberRecord) -> bool {
        match self.rank().cmp(&other.rank()) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                self != other && postcard_bytes(self) > postcard_bytes(other)
            }
        }
    }

    /// Checks the size limits, the incarnation bound and the signature
    /// (cheapest first).
    pub fn validate(&self) -> Result<(), RecordError> {
        self.check_limits().map_err(RecordError::Limits)?;
        if self.incarnation > now_millis().saturating_add(MAX_INCARNATION_AHEAD_MS) {
            return Err(RecordError::Incarnation(self.incarnation));
        }
        if !self.signature_verifies() {
            return Err(RecordError::Signature);
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), &'static str> {
        if self.name.len() > MAX_NAME_LEN {
            return Err("member name too long");
        }
        if self.addrs.len() > MAX_ADDRS || self.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
            return Err("too many or too long member addresses");
        }
        if self.meta.len() > MAX_META_ENTRIES
            || self
                .meta
                .iter()
                .any(|(k, v)| k.len() > MAX_META_LEN || v.len() > MAX_META_LEN)
        {
            return Err("member metadata too large");
        }
        let meta_bytes: usize = self.meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta_bytes > MAX_META_BYTES {
            return Err("member metadata over 2048 bytes in all");
        }
        if postcard::experimental::serialized_size(self).unwrap_or(usize::MAX) > MAX_RECORD_LEN {
            return Err("member record over 2560 bytes");
        }
        Ok(())
    }

    /// Whether the record is within the size limits (what
    /// [`MemberRecord::validate`] checks first).
    pub fn check_size(&self) -> Result<(), RecordError> {
        self.check_limits().map_err(RecordError::Limits)
    }
}

fn postcard_bytes(record: &MemberRecord) -> Vec<u8> {
    postcard::to_stdvec(record).unwrap_or_default()
}

/// Outcome of merging records into the table.
#[derive(Debug, Default, PartialEq)]
pub struct MergeOutcome {
    /// Records that were new or superseded ours: to re-flood and to dial.
    pub changed: Vec<MemberRecord>,
    /// Someone gossiped a record of *ours* that outranks the current one
    /// (e.g. a pre-restart incarnation with a skewed clock): we bumped our
    /// incarnation past it and the refreshed own record is in `changed`.
    pub refuted_self: bool,
    /// Records dropped for breaking limits, a future incarnation or a
    /// signature that is not their subject's; the first reason is kept.
    pub rejected: usize,
    pub first_rejection: Option<(PeerId, RecordError)>,
}

/// All known members, including the local one.
#[derive(Clone, Debug)]
pub struct MembershipTable {
    local: PeerId,
    records: BTreeMap<PeerId, MemberRecord>,
}

impl MembershipTable {
    pub fn new(own: MemberRecord) -> Self {
        let local = own.id;
        let mut records = BTreeMap::new();
        records.insert(local, own);
        MembershipTable { local, records }
    }

    pub fn local(&self) -> &MemberRecord {
        // The local record is inserted at construction and never removed.
        &self.records[&self.local]
    }

    pub fn get(&self, id: &PeerId) -> Option<&MemberRecord> {
        self.records.get(id)
    }

    pub fn records(&self) -> impl Iterator<Item = &MemberRecord> {
        self.records.values()
    }

    /// Everyone but the local member.
    pub fn others(&self) -> impl Iterator<Item = &MemberRecord> {
        let local = self.local;
        self.records.values().filter(move |r| r.id != local)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Changes the local record (bumping its version), signs it with the
    /// local key and returns it.
    pub fn update_local(&mut self, change: impl FnOnce(&mut MemberRecord)) -> MemberRecord {
        let mut own = self.local().clone();
        change(&mut own);
        own.id = self.local;
        own.version = own.version.saturating_add(1);
        own.sign();
        self.records.insert(self.local, own.clone());
        own
    }

    pub fn merge(&mut self, incoming: impl IntoIterator<Item = MemberRecord>) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        for record in incoming {
            // What would not change the table needs no signature check
            // (anti-entropy re-sends whole tables).
            let stale = self.records.get(&record.id).is_some_and(|existing| {
                if record.id == self.local {
                    record.rank() < existing.rank() || record == *existing
                } else {
                    !record.supersedes(existing)
                }
            });
            if stale {
                continue;
            }
            if let Err(e) = record.validate() {
                outcome.rejected += 1;
                outcome.first_rejection.get_or_insert((record.id, e));
                continue;
            }
            if record.id == self.local {
                let own = self.local();
                if record.rank() >= own.rank() && record != *own {
                    let past = record.incarnation;
                    let refreshed = self.update_local(|r| {
                        // `past` is bounded by validate(), so this never saturates in practice.
                        r.incarnation = r.incarnation.max(past.saturating_add(1));
                    });
                    outcome.changed.push(refreshed);
                    outcome.refuted_self = true;
                }
                continue;
            }
            match self.records.get(&record.id) {
                Some(existing) if !record.supersedes(existing) => {}
                None if self.records.len() >= MAX_MEMBERS => outcome.rejected += 1,
                _ => {
                    self.records.insert(record.id, record.clone());
                    outcome.changed.push(record);
                }
            }
        }
        outcome
    }

    /// Hash of the whole table, for anti-entropy digests.
    pub fn digest(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for record in self.records.values() {
            ctx.update(&postcard_bytes(record));
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    fn id(n: u8) -> PeerId {
        Identity::from_seed([n; 32]).unwrap().peer_id()
    }

    fn unsigned(n: u8, incarnation: u64, version: u64) -> MemberRecord {
        MemberRecord {
            id: id(n),
            name: format!("host{n}"),
            addrs: vec![format!("127.0.0.1:{}", 1000 + n as u16)],
            incarnation,
            version,
            meta: BTreeMap::new(),
            signature: Signature::NONE,
        }
    }

    fn record(n: u8, incarnation: u64, version: u64) -> MemberRecord {
        let mut r = unsigned(n, incarnation, version);
        assert!(r.sign());
        r
    }

    #[test]
    fn newer_incarnation_supersedes_old_self() {
        let mut table = MembershipTable::new(record(1, 10, 0));
        assert_eq!(table.merge([record(2, 5, 3)]).changed.len(), 1);
        assert!(table.merge([record(2, 5, 2)]).changed.is_empty());
        assert!(table.merge([record(2, 5, 3)]).changed.is_empty());
        let out = table.merge([record(2, 6, 0)]);
        assert_eq!(out.changed, vec![record(2, 6, 0)]);
        assert_eq!(table.get(&id(2)).unwrap().incarnation, 6);
    }

    #[test]
    fn merge_order_does_not_matter() {
        let updates = [
            record(2, 1, 0),
            record(3, 1, 1),
            record(2, 2, 0),
            record(3, 1, 0),
        ];
        let mut forward = MembershipTable::new(record(1, 1, 0));
        forward.merge(updates.clone());
        let mut backward = MembershipTable::new(record(1, 1, 0));
        backward.merge(updates.iter().rev().cloned());
        assert_eq!(forward.digest(), backward.digest());
    }

    #[test]
    fn stale_self_record_is_refuted() {
        let mut table = MembershipTable::new(record(1, 10, 0));
        let out = table.merge([record(1, 12, 4)]);
        assert!(out.refuted_self);
        assert!(table.local().incarnation > 12);
        assert!(
            table.local().signature_verifies(),
            "the refutation is signed"
        );
        // An older self record is simply ignored.
        assert!(!table.merge([record(1, 3, 0)]).refuted_self);
    }

    #[test]
    fn oversized_records_are_rejected() {
        let mut table = MembershipTable::new(record(1, 1, 0));
        let mut big = unsigned(2, 1, 0);
        big.name = "x".repeat(MAX_NAME_LEN + 1);
        big.sign();
        let out = table.merge([big]);
        assert_eq!(out.rejected, 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_thousand_records_at_the_limits_stay_well_inside_a_frame() {
        let mut big = unsigned(2, 1, 0);
        for i in 0..8 {
            big.meta
                .insert(format!("k{i}"), "v".repeat(MAX_META_BYTES / 8 - 2));
        }
        assert!(big.sign());
        assert!(big.validate().is_ok());
        // Fill the rest of the record with addresses, up to its cap.
        while big.addrs.len() < MAX_ADDRS {
            big.addrs.push("a".repeat(30));
            big.sign();
            if big.validate().is_err() {
                big.addrs.pop();
                break;
            }
        }
        big.sign();
        let size = postcard::to_stdvec(&big).unwrap().len();
        assert!(
            size <= MAX_RECORD_LEN && size > MAX_RECORD_LEN - 64,
            "{size}"
        );
        let table = postcard::to_stdvec(&vec![big.clone(); 1000]).unwrap().len();
        assert!(table < crate::wire::MAX_FRAME_LEN * 2 / 3, "{table} bytes");
        // One byte more metadata, or a record past its cap, is refused.
        let mut over = big.clone();
        over.meta
            .insert("k0".into(), "v".repeat(MAX_META_BYTES / 8 - 1));
        over.sign();
        assert!(matches!(over.validate(), Err(RecordError::Limits(_))));
        let mut over = big;
        over.addrs.push("a".repeat(64));
        over.sign();
        assert!(matches!(over.validate(), Err(RecordError::Limits(_))));
    }

    #[test]
    fn forged_and_altered_records_are_dropped_before_merge() {
        let mut table = MembershipTable::new(record(1, 10, 0));
        table.merge([record(2, 5, 0)]);
        let before = table.digest();
        // Host 3 re-signs a record about host 2 with its own key: the
        // signature is not the subject's.
        let mut forged = unsigned(2, 6, 0);
        forged.meta.insert("netkey".into(), "attacker".into());
        forged.signature = signed::sign_as(&id(3), RECORD_DOMAIN, &forged.signed_bytes()).unwrap();
        // A genuine record with its content changed afterwards.
        let mut altered = record(2, 7, 0);
        altered.addrs = vec!["192.0.2.1:1".into()];
        // Unsigned, and a record about us that we never signed.
        let out = table.merge([forged, altered, unsigned(2, 8, 0), unsigned(1, 99, 0)]);
        assert_eq!(out.rejected, 4);
        assert_eq!(out.first_rejection, Some((id(2), RecordError::Signature)));
        assert!(!out.refuted_self);
        assert_eq!(table.digest(), before, "nothing changed");
    }

    #[test]
    fn incarnations_cannot_be_pushed_out_of_reach() {
        let mut table = MembershipTable::new(record(1, 10, 0));
        // Even signed by the subject itself: far-future incarnations are refused.
        for incarnation in [u64::MAX, now_millis() + 2 * MAX_INCARNATION_AHEAD_MS] {
            let out = table.merge([record(2, incarnation, 0), record(1, incarnation, 0)]);
            assert_eq!(out.rejected, 2);
            assert!(matches!(
                out.first_rejection,
                Some((_, RecordError::Incarnation(_)))
            ));
            assert!(!out.refuted_self);
        }
        assert_eq!(table.len(), 1);
        assert_eq!(table.local().incarnation, 10);
        // Within the bound, a refutation still lands above it.
        let near = now_millis() + 1000;
        assert!(table.merge([record(1, near, 0)]).refuted_self);
        assert!(table.local().incarnation > near);
    }
}
