//! Last-writer-wins map entries, signed by their writers, and the map
//! itself with its local admission guard.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use tracing::warn;

use super::expiry::{self, Expiry};
use super::quota::{self, Limit, Quota, QuotaError};
use super::{now_millis, postcard_decode, postcard_encode, DecodeError, Mergeable, Stamp};
use crate::journal;
use crate::signed::{self, Signature};
use crate::{protocol, PeerId};

/// Domain of the signature every LWW write carries. `/2`: the signature
/// covers the channel's name and the value's bytes as its writer encoded
/// them, not a re-encoding, so fields a reader does not know stay covered
/// and a write cannot be replayed into another channel (protocol major 2).
const LWW_DOMAIN: &str = "mesh/lww-entry/2";
/// Admission passes over one batch (see `LwwMap::merge_from`): deep enough
/// for the hand-over chains a full state carries, bounded so a crafted
/// batch cannot make a merge quadratic.
const MAX_ADMISSION_PASSES: usize = 8;
/// How far ahead of our clock a guarded map accepts a stamp: beyond, a
/// write would silently win over every later one (a value nobody can
/// change or remove).
pub const MAX_STAMP_AHEAD_MS: u64 = 10 * 60 * 1000;
/// Zero bytes an older writer's value is extended with when it ends before
/// the fields this build appended: those read as their zero encoding
/// (`None`, empty, `0`, `false`), which PROTOCOL.md makes "absent".
const ZERO_TAIL: usize = 256;

/// One LWW slot: a value or a tombstone, signed by the stamp's writer over
/// key, stamp and the value's encoding.
///
/// The encoding is kept as the writer made it: a newer writer may have
/// appended fields this build does not know; they are kept, re-gossiped
/// and still covered by the signature (PROTOCOL.md, "Replicated values").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwwEntry<V> {
    pub stamp: Stamp,
    /// The value as this build reads it; `None` for a tombstone, or for a
    /// value this build cannot read at all ([`LwwEntry::is_tombstone`]
    /// tells them apart).
    pub value: Option<V>,
    pub signature: Signature,
    /// The value's bytes as signed; `None` for a tombstone.
    encoded: Option<Arc<[u8]>>,
}

/// How an entry travels: the value as bytes.
#[derive(Serialize)]
struct WireEntryRef<'a> {
    stamp: &'a Stamp,
    value: Option<&'a [u8]>,
    signature: &'a Signature,
}

#[derive(Deserialize)]
struct WireEntry {
    stamp: Stamp,
    value: Option<Vec<u8>>,
    signature: Signature,
}

impl<V> Serialize for LwwEntry<V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireEntryRef {
            stamp: &self.stamp,
            value: self.encoded.as_deref(),
            signature: &self.signature,
        }
        .serialize(serializer)
    }
}

impl<'de, V: DeserializeOwned> Deserialize<'de> for LwwEntry<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireEntry::deserialize(deserializer)?;
        Ok(LwwEntry {
            stamp: wire.stamp,
            value: wire.value.as_deref().and_then(read_value),
            signature: wire.signature,
            encoded: wire.value.map(Arc::from),
        })
    }
}

/// Reads a value a writer of any build of this major encoded: fields after
/// the ones this build knows are counted and left in the bytes; fields this
/// build knows that the writer's build did not have read as zero.
fn read_value<V: DeserializeOwned>(bytes: &[u8]) -> Option<V> {
    let read = match postcard::take_from_bytes::<V>(bytes) {
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            let mut extended = Vec::with_capacity(bytes.len() + ZERO_TAIL);
            extended.extend_from_slice(bytes);
            extended.resize(bytes.len() + ZERO_TAIL, 0);
            postcard::take_from_bytes::<V>(&extended).map(|(value, _)| (value, &[][..]))
        }
        read => read,
    };
    match read {
        Ok((value, rest)) => {
            if !rest.is_empty() {
                protocol::count(&protocol::UNKNOWN.value_fields);
            }
            Some(value)
        }
        Err(_) => {
            protocol::count(&protocol::UNKNOWN.unreadable_values);
            None
        }
    }
}

fn entry_bytes<K: Serialize>(
    channel: &str,
    key: &K,
    stamp: &Stamp,
    encoded: Option<&[u8]>,
) -> Vec<u8> {
    postcard_encode(&(channel, key, stamp, encoded))
}

impl<V: Serialize> LwwEntry<V> {
    /// A write to `key` of `channel`, signed as `stamp.writer` if this
    /// process holds that key.
    pub fn signed<K: Serialize>(
        channel: &str,
        key: &K,
        stamp: Stamp,
        value: Option<V>,
    ) -> LwwEntry<V> {
        let encoded: Option<Arc<[u8]>> = value.as_ref().map(|v| {
            let mut bytes = postcard_encode(v);
            bytes.extend_from_slice(protocol::appended_field());
            bytes.into()
        });
        let signature = signed::sign_as(
            &stamp.writer,
            LWW_DOMAIN,
            &entry_bytes(channel, key, &stamp, encoded.as_deref()),
        )
        .unwrap_or(Signature::NONE);
        LwwEntry {
            stamp,
            value,
            signature,
            encoded,
        }
    }
}

impl<V> LwwEntry<V> {
    /// Whether the slot is a removal (not merely a value this build cannot
    /// read).
    pub fn is_tombstone(&self) -> bool {
        self.encoded.is_none()
    }

    /// Whether the signature is the writer's over `channel`, `key`, stamp
    /// and value.
    pub fn signature_verifies<K: Serialize>(&self, channel: &str, key: &K) -> bool {
        signed::verify(
            &self.stamp.writer,
            LWW_DOMAIN,
            &entry_bytes(channel, key, &self.stamp, self.encoded.as_deref()),
            &self.signature,
        )
    }

    /// Total order used by merges. Equal stamps with different contents can
    /// only come from a misbehaving writer; comparing encodings keeps merges
    /// commutative even then.
    pub(super) fn beats(&self, other: &LwwEntry<V>) -> bool {
        match self.stamp.cmp(&other.stamp) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                (self.encoded.as_deref(), self.signature)
                    > (other.encoded.as_deref(), other.signature)
            }
        }
    }
}

/// What a guarded map asks before a write enters it: `Err(reason)` drops
/// it. Gets the key, the write (its signature already verified), the map
/// with what the batch being merged has had admitted so far, and the rest
/// of the batch still waiting (so a rule can refuse writes that conflict
/// with each other rather than let their order decide).
pub type Admission<K, V> = Arc<
    dyn Fn(&K, &LwwEntry<V>, &LwwMap<K, V>, &[(&K, &LwwEntry<V>)]) -> Result<(), String>
        + Send
        + Sync,
>;

struct Guard<K, V> {
    /// Names the map in logs and metrics.
    name: String,
    admit: Admission<K, V>,
}

/// Per-key last-writer-wins map with tombstones.
///
/// Tombstones are kept (a removed key must not be resurrected by a host
/// that missed the removal): forever, or, in a map opened with
/// [`LwwMap::expiring`], until the node turns expiry on and they pass the
/// horizon (see [`super::expiry`]).
///
/// A *guarded* map ([`LwwMap::guarded`]) admits a write only if its
/// signature is its writer's, its stamp is at most [`MAX_STAMP_AHEAD_MS`]
/// ahead of our clock and the map's [`Admission`] accepts it; anything else
/// is dropped, counted and logged once per writer (see
/// [`signed::note_rejection`]). The guard is local: it is not encoded, and a
/// decoded map has none (it is merged into a guarded one).
///
/// A *limited* map ([`Mergeable::limit_writers`], done by the node for every
/// channel) also refuses writes that would take their writer past its
/// [`Quota`]: a local one with a [`QuotaError`], a remote one is dropped;
/// both are counted ([`quota::refused_total`]). Like the guard, the limit is
/// local.
pub struct LwwMap<K, V> {
    pub(super) entries: BTreeMap<K, LwwEntry<V>>,
    /// The channel this map is the state of ([`Mergeable::bind_channel`]):
    /// signed into its writes and checked on others'; local like the guard.
    channel: Arc<str>,
    guard: Option<Arc<Guard<K, V>>>,
    limit: Option<Limit>,
    /// Tombstone expiry, local like the guard.
    expiry: Option<Expiring>,
}

/// A map's expiry policy and where it stands.
#[derive(Clone, Copy, Debug)]
struct Expiring {
    policy: Expiry,
    /// Tombstones stamped before this are forgotten, and received ones
    /// taken as absence; 0 while the node has expiry off.
    forget_before: u64,
}

impl<K, V> Default for LwwMap<K, V> {
    fn default() -> Self {
        LwwMap {
            entries: BTreeMap::new(),
            channel: Arc::from(""),
            guard: None,
            limit: None,
            expiry: None,
        }
    }
}

impl<K: Clone, V: Clone> Clone for LwwMap<K, V> {
    fn clone(&self) -> Self {
        LwwMap {
            entries: self.entries.clone(),
            channel: self.channel.clone(),
            guard: self.guard.clone(),
            limit: self.limit.clone(),
            expiry: self.expiry,
        }
    }
}

/// Encoded bytes of one slot, as it travels in a full state.
fn slot_size<K: Serialize, V: Serialize>(key: &K, entry: &LwwEntry<V>) -> usize {
    postcard::experimental::serialized_size(&(key, entry)).unwrap_or(usize::MAX / 2)
}

impl<K: PartialEq, V: PartialEq> PartialEq for LwwMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl<K: Eq, V: Eq> Eq for LwwMap<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for LwwMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LwwMap")
            .field("entries", &self.entries)
            .field("guard", &self.guard.as_ref().map(|g| &g.name))
            .finish()
    }
}

impl<K, V> LwwMap<K, V>
where
    K: Ord + Clone + Serialize,
    V: Clone + Serialize + PartialEq,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map that admits only signed writes that `admit` accepts.
    pub fn guarded(name: &str, admit: Admission<K, V>) -> Self {
        LwwMap {
            entries: BTreeMap::new(),
            channel: Arc::from(""),
            guard: Some(Arc::new(Guard {
                name: name.to_string(),
                admit,
            })),
            limit: None,
            expiry: None,
        }
    }

    /// This map with tombstone expiry after `horizon` (see
    /// [`super::expiry`]); it starts once the node turns expiry on.
    pub fn expiring(mut self, horizon: std::time::Duration) -> Self {
        self.expiry = Some(Expiring {
            policy: Expiry::new(horizon),
            forget_before: 0,
        });
        self
    }

    /// The horizon of [`LwwMap::expiring`], if any.
    pub fn expiry(&self) -> Option<Expiry> {
        self.expiry.map(|e| e.policy)
    }

    /// With `now_ms`: forgets tombstones past the horizon and from then on
    /// takes older received ones as absence; returns how many were
    /// forgotten. `None`: expiry off (tombstones kept and taken as sent).
    pub fn expire_at(&mut self, now_ms: Option<u64>) -> usize {
        let Some(expiring) = &mut self.expiry else {
            return 0;
        };
        let Some(now) = now_ms else {
            expiring.forget_before = 0;
            return 0;
        };
        let cutoff = expiring.policy.removal_cutoff(now);
        expiring.forget_before = cutoff;
        let before = self.entries.len();
        let limit = &mut self.limit;
        self.entries.retain(|key, entry| {
            let keep = !entry.is_tombstone() || entry.stamp.timestamp >= cutoff;
            if !keep {
                if let Some(limit) = limit {
                    limit.release(entry.stamp.writer, slot_size(key, entry));
                }
            }
            keep
        });
        let forgotten = before - self.entries.len();
        expiry::count_expired(forgotten);
        forgotten
    }

    /// Keeps the slots `keep` says yes to, tombstones included; returns
    /// how many went (a host back after an expiring map's horizon keeps
    /// its own writes). Not a removal: nothing of it is sent.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &LwwEntry<V>) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|k, e| keep(k, e));
        if let Some((channel, quota)) = self
            .limit
            .as_ref()
            .map(|l| (l.channel().to_string(), l.quota()))
        {
            self.set_quota(&channel, quota);
        }
        before - self.entries.len()
    }

    /// The encoding anti-entropy hashes: as [`Mergeable::encode`], without
    /// the tombstones an expiring map leaves out of digests at `now_ms`.
    fn encode_for_digest_at(&self, now_ms: Option<u64>) -> Vec<u8> {
        let (Some(expiring), Some(now)) = (&self.expiry, now_ms) else {
            return postcard_encode(&self.entries);
        };
        let cutoff = expiring.policy.digest_cutoff(now);
        let old = |e: &LwwEntry<V>| e.is_tombstone() && e.stamp.timestamp < cutoff;
        if !self.entries.values().any(old) {
            return postcard_encode(&self.entries);
        }
        let kept: BTreeMap<&K, &LwwEntry<V>> =
            self.entries.iter().filter(|(_, e)| !old(e)).collect();
        postcard_encode(&kept)
    }

    /// Sets `key` and returns the one-entry delta to pass to `Channel::update`.
    /// Over the writer's quota, nothing changes, the refusal is logged and
    /// the delta is empty (see [`LwwMap::try_set`]).
    pub fn set(&mut self, writer: PeerId, key: K, value: V) -> Self {
        self.write_or_log(writer, key, Some(value))
    }

    /// Removes `key` (leaves a tombstone) and returns the delta; quota as
    /// for [`LwwMap::set`].
    pub fn remove(&mut self, writer: PeerId, key: K) -> Self {
        self.write_or_log(writer, key, None)
    }

    /// [`LwwMap::set`], with a write over the writer's quota refused.
    pub fn try_set(&mut self, writer: PeerId, key: K, value: V) -> Result<Self, QuotaError> {
        self.write(writer, key, Some(value))
    }

    /// [`LwwMap::remove`], with a write over the writer's quota refused.
    pub fn try_remove(&mut self, writer: PeerId, key: K) -> Result<Self, QuotaError> {
        self.write(writer, key, None)
    }

    fn write_or_log(&mut self, writer: PeerId, key: K, value: Option<V>) -> Self {
        self.write(writer, key, value).unwrap_or_else(|e| {
            warn!(error = %e, "local write not made");
            Self::default()
        })
    }

    fn write(&mut self, writer: PeerId, key: K, value: Option<V>) -> Result<Self, QuotaError> {
        let stamp = Stamp::next(writer, self.entries.get(&key).map(|e| e.stamp));
        let entry = LwwEntry::signed(&self.channel, &key, stamp, value);
        if let Some(limit) = &mut self.limit {
            let old = self
                .entries
                .get(&key)
                .map(|e| (e.stamp.writer, slot_size(&key, e)));
            let size = slot_size(&key, &entry);
            if let Err(e) = limit.check(writer, old, size) {
                quota::count_refusal();
                return Err(e);
            }
            limit.record(writer, old, size);
        }
        self.entries.insert(key.clone(), entry.clone());
        let mut delta = Self::default();
        delta.entries.insert(key, entry);
        Ok(delta)
    }

    /// Starts counting writers against `quota` (replacing an earlier one).
    pub fn set_quota(&mut self, channel: &str, quota: Quota) {
        let slots = self
            .entries
            .iter()
            .map(|(k, e)| (e.stamp.writer, slot_size(k, e)));
        self.limit = Some(Limit::new(channel, quota, slots));
    }

    /// Inserts an entry with an explicit stamp, merging it like a remote write.
    pub fn apply(&mut self, key: K, stamp: Stamp, value: Option<V>) -> bool {
        let mut single = Self::default();
        let entry = LwwEntry::signed(&self.channel, &key, stamp, value);
        single.entries.insert(key, entry);
        self.merge_from(&single)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// The slot of `key`, a tombstone included, with its stamp.
    pub fn entry(&self, key: &K) -> Option<&LwwEntry<V>> {
        self.entries.get(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Live (non-removed) entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (k, v)))
    }

    /// Every slot including tombstones, with stamps.
    pub fn entries(&self) -> impl Iterator<Item = (&K, &LwwEntry<V>)> {
        self.entries.iter()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges `other` in; a guarded map first drops what it does not admit.
    fn merge_from(&mut self, other: &Self) -> bool {
        let Some(guard) = self.guard.clone() else {
            return self.merge_entries(other.entries.iter());
        };
        let now = now_millis();
        let mut pending: Vec<(&K, &LwwEntry<V>)> = Vec::new();
        for (key, theirs) in &other.entries {
            if !self.entries.get(key).is_none_or(|ours| theirs.beats(ours)) {
                continue;
            }
            let bad = if theirs.stamp.timestamp > now.saturating_add(MAX_STAMP_AHEAD_MS) {
                Some(format!(
                    "stamp {} ms ahead of our clock",
                    theirs.stamp.timestamp - now
                ))
            } else if !theirs.signature_verifies(&self.channel, key) {
                Some("signature is not the writer's".to_string())
            } else {
                None
            };
            match bad {
                Some(reason) => {
                    journal::rejected(key, self.entries.get(key), theirs, &reason);
                    signed::note_rejection(theirs.stamp.writer, &guard.name, &reason)
                }
                None => pending.push((key, theirs)),
            }
        }
        // Admission may depend on the map (who owns what): each pass judges
        // what is left against the map as the previous passes left it, so a
        // batch holding a chain of hand-overs (a full state after a restart)
        // lands at once, in whatever order it is listed; entries of one pass
        // are judged together, so one pass's order does not matter either.
        let mut changed = false;
        for pass in 1..=MAX_ADMISSION_PASSES {
            let mut admitted = Vec::new();
            let mut refused = Vec::new();
            pending.retain(|(key, theirs)| {
                self.entries.get(key).is_none_or(|ours| theirs.beats(ours))
            });
            for &(key, theirs) in &pending {
                match (guard.admit)(key, theirs, self, &pending) {
                    Ok(()) => admitted.push((key, theirs)),
                    Err(reason) => refused.push((key, theirs, reason)),
                }
            }
            if admitted.is_empty() || pass == MAX_ADMISSION_PASSES {
                // Left for the next anti-entropy round if still refused.
                for (key, theirs, reason) in refused {
                    journal::rejected(key, self.entries.get(key), theirs, &reason);
                    signed::note_rejection(theirs.stamp.writer, &guard.name, &reason);
                }
                changed |= self.merge_entries(admitted.into_iter());
                return changed;
            }
            changed |= self.merge_entries(admitted.into_iter());
            pending = refused.into_iter().map(|(k, e, _)| (k, e)).collect();
        }
        changed
    }

    fn merge_entries<'a>(
        &mut self,
        incoming: impl Iterator<Item = (&'a K, &'a LwwEntry<V>)>,
    ) -> bool
    where
        K: 'a,
        V: 'a,
    {
        let mut changed = false;
        let forget_before = self.expiry.map_or(0, |e| e.forget_before);
        // A removal older than the horizon that replaces a slot held here
        // is not refused for a quota: a host that has not forgotten it
        // (expiry off) takes it back even from a writer whose freed slots
        // were used again since. New keys are always counted, so back-dated
        // removals cannot grow a map past the quota.
        let exempt_before = self
            .expiry
            .map_or(0, |e| e.policy.removal_cutoff(now_millis()));
        for (key, theirs) in incoming {
            let ours = self.entries.get(key);
            if ours.is_some_and(|ours| !theirs.beats(ours)) {
                continue;
            }
            if theirs.is_tombstone() && theirs.stamp.timestamp < forget_before {
                // Past the horizon: the removal still applies, no slot stays.
                if let Some(ours) = self.entries.remove(key) {
                    if let Some(limit) = &mut self.limit {
                        limit.release(ours.stamp.writer, slot_size(key, &ours));
                    }
                    journal::admitted(key, Some(&ours), theirs);
                    changed = true;
                }
                continue;
            }
            if let Some(limit) = &mut self.limit {
                let old = ours.map(|e| (e.stamp.writer, slot_size(key, e)));
                let size = slot_size(key, theirs);
                let exempt = old.is_some()
                    && theirs.is_tombstone()
                    && theirs.stamp.timestamp < exempt_before;
                let verdict = limit.check(theirs.stamp.writer, old, size);
                if let (Err(e), false) = (verdict, exempt) {
                    quota::count_refusal();
                    journal::rejected(key, ours, theirs, &e.to_string());
                    signed::note_rejection(theirs.stamp.writer, limit.channel(), &e.to_string());
                    continue;
                }
                limit.record(theirs.stamp.writer, old, size);
            }
            journal::admitted(key, ours, theirs);
            self.entries.insert(key.clone(), theirs.clone());
            changed = true;
        }
        changed
    }
}

impl<K, V> Mergeable for LwwMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    V: Clone + Serialize + DeserializeOwned + PartialEq + Send + Sync + 'static,
{
    fn merge(&mut self, other: &Self) -> bool {
        self.merge_from(other)
    }
    fn encode(&self) -> Vec<u8> {
        postcard_encode(&self.entries)
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(LwwMap {
            entries: postcard_decode(bytes)?,
            channel: Arc::from(""),
            guard: None,
            limit: None,
            expiry: None,
        })
    }
    fn expire(&mut self, now_ms: Option<u64>) -> usize {
        self.expire_at(now_ms)
    }
    fn encode_for_digest(&self, now_ms: Option<u64>) -> Vec<u8> {
        self.encode_for_digest_at(now_ms)
    }
    fn set_aside(&mut self, own: PeerId, away_ms: u64) -> Option<usize> {
        match self.expiry {
            Some(e) if Duration::from_millis(away_ms) > e.policy.horizon() => {
                Some(self.retain(|_, entry| entry.stamp.writer == own))
            }
            _ => None,
        }
    }
    /// Runs of whole slots: each part is a map of its own (every entry
    /// carries its own signature), so a receiver merges each as it comes.
    fn encode_parts(&self, max: usize) -> Vec<Vec<u8>> {
        crate::wire::split_by_size(self.entries.iter().collect(), max)
            .into_iter()
            .map(|part| postcard_encode(&part.into_iter().collect::<BTreeMap<_, _>>()))
            .collect()
    }
    fn limit_writers(&mut self, channel: &str, quota: Quota) {
        self.set_quota(channel, quota);
    }
    fn bind_channel(&mut self, channel: &str) {
        self.channel = channel.into();
    }
}

#[cfg(test)]
mod versions {
    //! Values written by builds with more or fewer fields (PROTOCOL.md).
    use super::*;
    use crate::state::Mergeable;

    /// A record as this build knows it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Today {
        name: String,
        port: u16,
    }

    /// The same record as a newer build writes it: a field appended.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Next {
        name: String,
        port: u16,
        weight: Option<u32>,
    }

    fn writer() -> PeerId {
        crate::Identity::from_seed([43; 32]).unwrap().peer_id()
    }

    #[test]
    fn a_newer_writers_fields_survive_an_older_host_and_stay_signed() {
        let mut newer: LwwMap<String, Next> = LwwMap::new();
        let next = Next {
            name: "web".into(),
            port: 80,
            weight: Some(7),
        };
        newer.set(writer(), "k".into(), next.clone());
        let before = protocol::UNKNOWN
            .value_fields
            .load(std::sync::atomic::Ordering::Relaxed);

        // An older host reads what it knows…
        let older = LwwMap::<String, Today>::decode(&newer.encode()).unwrap();
        let today = older.get(&"k".to_string()).unwrap();
        assert_eq!((today.name.as_str(), today.port), ("web", 80));
        assert!(
            protocol::UNKNOWN
                .value_fields
                .load(std::sync::atomic::Ordering::Relaxed)
                > before
        );
        // …and passes on the writer's bytes: the signature still holds and a
        // newer host behind it reads the appended field.
        let passed_on = older.encode();
        let guarded_admit: Admission<String, Next> = Arc::new(|_, _, _, _| Ok(()));
        let mut behind = LwwMap::guarded("test", guarded_admit);
        assert!(behind.merge(&LwwMap::decode(&passed_on).unwrap()));
        assert_eq!(behind.get(&"k".to_string()), Some(&next));
    }

    #[test]
    fn a_write_replayed_into_another_channel_does_not_verify() {
        let mut services: LwwMap<String, u32> = LwwMap::new();
        services.bind_channel("services");
        let delta = services.set(writer(), "web/x".into(), 7);
        let admit: Admission<String, u32> = Arc::new(|_, _, _, _| Ok(()));
        let mut policies = LwwMap::guarded("policies", admit.clone());
        policies.bind_channel("policies");
        assert!(!policies.merge(&delta));
        let mut same = LwwMap::guarded("services", admit);
        same.bind_channel("services");
        assert!(same.merge(&delta));
    }

    #[test]
    fn an_older_writers_value_reads_with_the_new_field_absent() {
        let mut older: LwwMap<String, Today> = LwwMap::new();
        older.set(
            writer(),
            "k".into(),
            Today {
                name: "db".into(),
                port: 5432,
            },
        );
        let newer = LwwMap::<String, Next>::decode(&older.encode()).unwrap();
        assert_eq!(
            newer.get(&"k".to_string()),
            Some(&Next {
                name: "db".into(),
                port: 5432,
                weight: None
            })
        );
        assert!(newer.entries["k"].signature_verifies("", &"k".to_string()));
    }

    #[test]
    fn an_unreadable_value_is_kept_and_passed_on_not_taken_for_a_removal() {
        // The newer build changed the field's type: nothing this build can read.
        let mut newer: LwwMap<String, (u8, String)> = LwwMap::new();
        newer.set(writer(), "k".into(), (200, "x".into()));
        let older = LwwMap::<String, bool>::decode(&newer.encode()).unwrap();
        let entry = older.entry(&"k".to_string()).unwrap();
        assert_eq!(entry.value, None);
        assert!(!entry.is_tombstone());
        assert!(entry.signature_verifies("", &"k".to_string()));
        assert_eq!(older.get(&"k".to_string()), None);
        let again = LwwMap::<String, (u8, String)>::decode(&older.encode()).unwrap();
        assert_eq!(again.get(&"k".to_string()), Some(&(200, "x".into())));
    }
}
