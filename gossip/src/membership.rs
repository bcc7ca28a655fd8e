//! Member records and the membership table merge (no I/O).
//!
//! A record is owned by the member it describes: only that member changes it,
//! bumping `version`; a restart bumps `incarnation` (start time in ms, kept
//! strictly increasing), so a restarted host supersedes its old self wherever
//! the two meet. Merging keeps, per id, the record with the highest
//! `(incarnation, version)`, which makes the table a join-semilattice: merges
//! commute and repeat harmlessly, so records can be flooded and re-sent freely.

use std::collections::BTreeMap;

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::PeerId;

/// Bounds on what a peer may make us store (a member is authenticated, but a
/// bug or a compromised host must not exhaust memory).
pub const MAX_MEMBERS: usize = 4096;
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_ADDRS: usize = 16;
pub const MAX_ADDR_LEN: usize = 255;
pub const MAX_META_ENTRIES: usize = 64;
pub const MAX_META_LEN: usize = 1024;

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
}

impl MemberRecord {
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

    /// Checks the size limits above.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.len() > MAX_NAME_LEN {
            return Err(format!("member name longer than {MAX_NAME_LEN} bytes"));
        }
        if self.addrs.len() > MAX_ADDRS || self.addrs.iter().any(|a| a.len() > MAX_ADDR_LEN) {
            return Err("too many or too long member addresses".into());
        }
        if self.meta.len() > MAX_META_ENTRIES
            || self
                .meta
                .iter()
                .any(|(k, v)| k.len() > MAX_META_LEN || v.len() > MAX_META_LEN)
        {
            return Err("member metadata too large".into());
        }
        Ok(())
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
    /// Records dropped for breaking limits.
    pub rejected: usize,
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

    /// Changes the local record (bumping its version) and returns it.
    pub fn update_local(&mut self, change: impl FnOnce(&mut MemberRecord)) -> MemberRecord {
        let mut own = self.local().clone();
        change(&mut own);
        own.id = self.local;
        own.version += 1;
        self.records.insert(self.local, own.clone());
        own
    }

    pub fn merge(&mut self, incoming: impl IntoIterator<Item = MemberRecord>) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        for record in incoming {
            if record.validate().is_err() {
                outcome.rejected += 1;
                continue;
            }
            if record.id == self.local {
                let own = self.local();
                if record.rank() >= own.rank() && record != *own {
                    let past = record.incarnation;
                    let refreshed = self.update_local(|r| {
                        r.incarnation = r.incarnation.max(past + 1);
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

    fn record(id: u8, incarnation: u64, version: u64) -> MemberRecord {
        MemberRecord {
            id: PeerId([id; 32]),
            name: format!("host{id}"),
            addrs: vec![format!("127.0.0.1:{}", 1000 + id as u16)],
            incarnation,
            version,
            meta: BTreeMap::new(),
        }
    }

    #[test]
    fn newer_incarnation_supersedes_old_self() {
        let mut table = MembershipTable::new(record(1, 10, 0));
        assert_eq!(table.merge([record(2, 5, 3)]).changed.len(), 1);
        assert!(table.merge([record(2, 5, 2)]).changed.is_empty());
        assert!(table.merge([record(2, 5, 3)]).changed.is_empty());
        let out = table.merge([record(2, 6, 0)]);
        assert_eq!(out.changed, vec![record(2, 6, 0)]);
        assert_eq!(table.get(&PeerId([2; 32])).unwrap().incarnation, 6);
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
        // An older self record is simply ignored.
        assert!(!table.merge([record(1, 3, 0)]).refuted_self);
    }

    #[test]
    fn oversized_records_are_rejected() {
        let mut table = MembershipTable::new(record(1, 1, 0));
        let mut big = record(2, 1, 0);
        big.name = "x".repeat(MAX_NAME_LEN + 1);
        let out = table.merge([big]);
        assert_eq!(out.rejected, 1);
        assert_eq!(table.len(), 1);
    }
}
