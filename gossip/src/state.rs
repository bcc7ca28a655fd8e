//! Replicated state: mergeable values on named channels, and reusable CRDTs.
//!
//! A channel carries one [`Mergeable`] value. `merge` must be commutative,
//! associative and idempotent; then it does not matter in which order, how
//! often or through whom updates arrive — every host that has seen the same
//! set of updates holds the same value. The transport only moves opaque bytes
//! (`encode`/`decode`); it never knows what a channel carries.
//!
//! `encode` should be canonical (equal values → equal bytes): anti-entropy
//! compares hashes of encodings, and a non-canonical encoding only costs extra
//! full-state transfers, never correctness.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::journal::{self, JournalSink};
use crate::wire::MAX_PART_LEN;
use crate::PeerId;

pub mod expiry;
mod lww;
mod prerelease;
pub mod quota;

pub use lww::{Admission, LwwEntry, LwwMap, MAX_STAMP_AHEAD_MS};
pub use prerelease::Migrated;
pub use quota::{Quota, QuotaError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode channel state: {0}")]
pub struct DecodeError(pub String);

/// A state-based CRDT.
pub trait Mergeable: Clone + Send + Sync + 'static {
    /// Merges `other` into `self`; returns whether `self` changed.
    fn merge(&mut self, other: &Self) -> bool;
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>
    where
        Self: Sized;
    /// The value as encodings of about `max` bytes each, every one a value
    /// of its own whose merge with the others is this one — so a state of
    /// any size travels as frames under the limit and a receiver merges
    /// each part as it comes. Values that stay small keep the default (one
    /// part).
    fn encode_parts(&self, _max: usize) -> Vec<Vec<u8>> {
        vec![self.encode()]
    }
    /// Starts refusing writes that take a writer past `quota` on `channel`
    /// (see [`quota`]); values without per-writer entries ignore it.
    fn limit_writers(&mut self, _channel: &str, _quota: Quota) {}
    /// Names the channel this value lives in: values whose writes are
    /// signed sign (and check) the channel's name with them, so a write
    /// cannot be replayed into another channel under the same key.
    fn bind_channel(&mut self, _channel: &str) {}
    /// Tombstone expiry ([`expiry`]): with `now_ms`, forgets removals past
    /// the value's horizon and returns how many; `None` turns it off.
    /// Values without expiry ignore it.
    fn expire(&mut self, _now_ms: Option<u64>) -> usize {
        0
    }
    /// What anti-entropy hashes: the encoding, less what expiry leaves out
    /// of digests at `now_ms` (`None`: expiry off, the whole encoding).
    fn encode_for_digest(&self, _now_ms: Option<u64>) -> Vec<u8> {
        self.encode()
    }
    /// A host whose state was last in sync with the mesh `away_ms` ago:
    /// values with expiry keep only `own` writes if that is past their
    /// horizon, and return how many others they dropped (`None`: not past
    /// it, or no expiry).
    fn set_aside(&mut self, _own: PeerId, _away_ms: u64) -> Option<usize> {
        None
    }
}

fn postcard_encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain maps/integers/strings into a Vec cannot fail.
    postcard::to_stdvec(value).unwrap_or_default()
}

fn postcard_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    crate::wire::decode_body(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Version of a last-writer-wins value: later timestamp wins, the writer id
/// breaks ties between hosts writing in the same millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub timestamp: u64,
    pub writer: PeerId,
}

impl Stamp {
    /// A stamp for a new write by `writer` that supersedes `previous` even if
    /// the wall clock went backwards.
    pub fn next(writer: PeerId, previous: Option<Stamp>) -> Stamp {
        let floor = previous.map(|p| p.timestamp.saturating_add(1)).unwrap_or(0);
        Stamp {
            timestamp: now_millis().max(floor),
            writer,
        }
    }
}

/// A single last-writer-wins value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwwRegister<V> {
    entry: Option<LwwEntry<V>>,
}

impl<V> Default for LwwRegister<V> {
    fn default() -> Self {
        LwwRegister { entry: None }
    }
}

impl<V: Clone + Serialize + PartialEq> LwwRegister<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the value and returns the delta (the register itself).
    pub fn set(&mut self, writer: PeerId, value: V) -> Self {
        let stamp = Stamp::next(writer, self.entry.as_ref().map(|e| e.stamp));
        self.entry = Some(LwwEntry::signed("", &(), stamp, Some(value)));
        self.clone()
    }

    pub fn set_at(&mut self, stamp: Stamp, value: V) -> bool {
        let other = LwwRegister {
            entry: Some(LwwEntry::signed("", &(), stamp, Some(value))),
        };
        self.merge_from(&other)
    }

    pub fn get(&self) -> Option<&V> {
        self.entry.as_ref().and_then(|e| e.value.as_ref())
    }

    pub fn stamp(&self) -> Option<Stamp> {
        self.entry.as_ref().map(|e| e.stamp)
    }

    fn merge_from(&mut self, other: &Self) -> bool {
        match (&self.entry, &other.entry) {
            (_, None) => false,
            (Some(ours), Some(theirs)) if !theirs.beats(ours) => false,
            (_, Some(theirs)) => {
                self.entry = Some(theirs.clone());
                true
            }
        }
    }
}

impl<V> Mergeable for LwwRegister<V>
where
    V: Clone + Serialize + DeserializeOwned + PartialEq + Send + Sync + 'static,
{
    fn merge(&mut self, other: &Self) -> bool {
        self.merge_from(other)
    }
    fn encode(&self) -> Vec<u8> {
        postcard_encode(&self.entry)
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(LwwRegister {
            entry: postcard_decode(bytes)?,
        })
    }
}

/// Grow-only counter: one monotonic count per writer, value = sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounter {
    counts: BTreeMap<PeerId, u64>,
}

impl GCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `by` to `writer`'s count; returns the delta (that writer's slot).
    pub fn increment(&mut self, writer: PeerId, by: u64) -> Self {
        let mut delta = GCounter::default();
        // Zero slots are never stored, so equal counters encode equally.
        if by == 0 && !self.counts.contains_key(&writer) {
            return delta;
        }
        let slot = self.counts.entry(writer).or_insert(0);
        *slot = slot.saturating_add(by);
        delta.counts.insert(writer, *slot);
        delta
    }

    pub fn value(&self) -> u64 {
        self.counts.values().fold(0u64, |a, b| a.saturating_add(*b))
    }

    pub fn count_of(&self, writer: &PeerId) -> u64 {
        self.counts.get(writer).copied().unwrap_or(0)
    }

    /// Sets a writer's slot directly (merged like a remote update).
    pub fn observe(&mut self, writer: PeerId, count: u64) -> bool {
        let mut other = GCounter::default();
        other.counts.insert(writer, count);
        self.merge(&other)
    }
}

impl Mergeable for GCounter {
    fn merge(&mut self, other: &Self) -> bool {
        let mut changed = false;
        for (writer, theirs) in &other.counts {
            if *theirs > self.count_of(writer) {
                self.counts.insert(*writer, *theirs);
                changed = true;
            }
        }
        changed
    }
    fn encode(&self) -> Vec<u8> {
        postcard_encode(&self.counts)
    }
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut counts: BTreeMap<PeerId, u64> = postcard_decode(bytes)?;
        counts.retain(|_, count| *count > 0);
        Ok(GCounter { counts })
    }
}

/// Where a channel sends its local deltas (implemented by the node).
pub(crate) trait DeltaSink: Send + Sync {
    /// Sends each part (see [`Mergeable::encode_parts`]) as one delta.
    fn broadcast_delta(&self, channel: &str, parts: Vec<Vec<u8>>);
    /// Where merges into the channel report writes (see [`journal`]).
    fn journal(&self) -> Option<Arc<dyn JournalSink>> {
        None
    }
}

/// Type-erased view the node uses for remote updates and anti-entropy.
pub(crate) trait ErasedChannel: Send + Sync {
    /// Decodes and merges; returns whether local state changed.
    fn merge_encoded(&self, bytes: &[u8]) -> Result<bool, DecodeError>;
    fn encoded(&self) -> Vec<u8>;
    /// The state in parts of about `max` bytes ([`Mergeable::encode_parts`]).
    fn encoded_parts(&self, max: usize) -> Vec<Vec<u8>>;
    /// See [`Mergeable::encode_for_digest`].
    fn encoded_for_digest(&self, now_ms: Option<u64>) -> Vec<u8>;
    /// See [`Mergeable::expire`]; subscribers hear of forgotten tombstones
    /// (the snapshot shrinks).
    fn expire(&self, now_ms: Option<u64>) -> usize;
    /// See [`Mergeable::set_aside`]; subscribers hear of it (the snapshot
    /// is saved without what was set aside).
    fn set_aside(&self, own: PeerId, away_ms: u64) -> Option<usize>;
}

pub(crate) struct ChannelInner<S> {
    name: Arc<str>,
    state: Mutex<S>,
    changes: watch::Sender<u64>,
    sink: Weak<dyn DeltaSink>,
}

impl<S: Mergeable> ChannelInner<S> {
    pub(crate) fn new(name: &str, mut initial: S, sink: Weak<dyn DeltaSink>) -> Self {
        initial.bind_channel(name);
        ChannelInner {
            name: name.into(),
            state: Mutex::new(initial),
            changes: watch::channel(0).0,
            sink,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        // A panic inside a user's merge must not wedge the channel forever.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journal(&self) -> Option<Arc<dyn JournalSink>> {
        self.sink.upgrade().and_then(|s| s.journal())
    }

    /// Merges `other` into the state, its writes reported to the journal.
    fn merge_in(&self, other: &S) -> bool {
        journal::scoped(self.journal(), &self.name, || self.lock().merge(other))
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl<S: Mergeable> ErasedChannel for ChannelInner<S> {
    fn merge_encoded(&self, bytes: &[u8]) -> Result<bool, DecodeError> {
        let remote = S::decode(bytes)?;
        let changed = self.merge_in(&remote);
        if changed {
            self.bump();
        }
        Ok(changed)
    }

    fn encoded(&self) -> Vec<u8> {
        self.lock().encode()
    }

    fn encoded_parts(&self, max: usize) -> Vec<Vec<u8>> {
        self.lock().encode_parts(max)
    }

    fn encoded_for_digest(&self, now_ms: Option<u64>) -> Vec<u8> {
        self.lock().encode_for_digest(now_ms)
    }

    fn expire(&self, now_ms: Option<u64>) -> usize {
        let forgotten = self.lock().expire(now_ms);
        if forgotten > 0 {
            self.bump();
        }
        forgotten
    }

    fn set_aside(&self, own: PeerId, away_ms: u64) -> Option<usize> {
        let dropped = self.lock().set_aside(own, away_ms);
        if dropped.is_some_and(|n| n > 0) {
            self.bump();
        }
        dropped
    }
}

/// Handle to a replicated value. Cheap to clone.
pub struct Channel<S> {
    pub(crate) inner: Arc<ChannelInner<S>>,
}

impl<S> Clone for Channel<S> {
    fn clone(&self) -> Self {
        Channel {
            inner: self.inner.clone(),
        }
    }
}

/// The sink of a channel that belongs to no node: deltas go nowhere.
struct Detached;

impl DeltaSink for Detached {
    fn broadcast_delta(&self, _: &str, _: Vec<Vec<u8>>) {}
}

impl<S: Mergeable> Channel<S> {
    /// A channel attached to no node: updates merge locally and are sent
    /// nowhere. Lets the logic built on replicated state (IPAM, DNS records,
    /// network definitions) be unit-tested without QUIC: feed one detached
    /// channel another's value with [`Channel::update`] to play a peer.
    pub fn detached(name: &str, initial: S) -> Channel<S> {
        let sink: std::sync::Weak<dyn DeltaSink> = std::sync::Weak::<Detached>::new();
        Channel {
            inner: Arc::new(ChannelInner::new(name, initial, sink)),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A snapshot of the current value.
    pub fn get(&self) -> S {
        self.inner.lock().clone()
    }

    /// What `f` makes of the value, without a copy of all of it (the
    /// channel is locked meanwhile: keep `f` short).
    pub fn read<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.inner.lock())
    }

    /// Merges `delta` locally and, if that changed anything, sends it to
    /// every connected member.
    pub fn update(&self, delta: S) {
        let changed = self.inner.merge_in(&delta);
        if changed {
            self.inner.bump();
            if let Some(sink) = self.inner.sink.upgrade() {
                sink.broadcast_delta(&self.inner.name, delta.encode_parts(MAX_PART_LEN));
            }
        }
    }

    /// Computes a delta from the current value under the channel lock (so
    /// concurrent writers on this host do not race) and applies it.
    pub fn modify(&self, make_delta: impl FnOnce(&mut S) -> S) {
        let journal = self.inner.journal();
        let delta = {
            let mut state = self.inner.lock();
            let mut scratch = state.clone();
            let delta = make_delta(&mut scratch);
            if !journal::scoped(journal, &self.inner.name, || state.merge(&delta)) {
                return;
            }
            delta
        };
        self.inner.bump();
        if let Some(sink) = self.inner.sink.upgrade() {
            sink.broadcast_delta(&self.inner.name, delta.encode_parts(MAX_PART_LEN));
        }
    }

    /// Counter that bumps on every change, local or remote.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    pub(crate) fn erased(&self) -> Arc<dyn ErasedChannel> {
        self.inner.clone()
    }

    pub(crate) fn as_any(&self) -> Arc<dyn Any + Send + Sync> {
        self.inner.clone()
    }

    pub(crate) fn from_any(any: Arc<dyn Any + Send + Sync>) -> Option<Self> {
        any.downcast::<ChannelInner<S>>()
            .ok()
            .map(|inner| Channel { inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed;

    const A: PeerId = PeerId([1; 32]);
    const B: PeerId = PeerId([2; 32]);

    #[test]
    fn lww_map_last_writer_wins_and_tombstones_stick() {
        let mut a: LwwMap<String, u32> = LwwMap::new();
        let mut b: LwwMap<String, u32> = LwwMap::new();
        a.apply(
            "k".into(),
            Stamp {
                timestamp: 5,
                writer: A,
            },
            Some(1),
        );
        b.apply(
            "k".into(),
            Stamp {
                timestamp: 6,
                writer: B,
            },
            Some(2),
        );
        let mut merged = a.clone();
        assert!(merged.merge(&b));
        assert_eq!(merged.get(&"k".into()), Some(&2));
        // A removal stamped later wins over the value, and stays.
        let removal = merged.remove(A, "k".into());
        assert!(!merged.contains_key(&"k".into()));
        assert!(b.merge(&removal));
        assert!(!b.merge(&a));
        assert!(!b.contains_key(&"k".into()));
    }

    #[test]
    fn local_writes_supersede_even_with_clock_behind() {
        let mut map: LwwMap<u8, u8> = LwwMap::new();
        map.apply(
            1,
            Stamp {
                timestamp: u64::MAX / 2,
                writer: B,
            },
            Some(1),
        );
        map.set(A, 1, 2);
        assert_eq!(map.get(&1), Some(&2));
    }

    #[test]
    fn encodings_round_trip() {
        let mut map: LwwMap<String, String> = LwwMap::new();
        map.set(A, "x".into(), "y".into());
        map.remove(A, "z".into());
        assert_eq!(LwwMap::decode(&map.encode()).unwrap(), map);
        let mut counter = GCounter::new();
        counter.increment(A, 3);
        assert_eq!(GCounter::decode(&counter.encode()).unwrap(), counter);
        let mut reg = LwwRegister::new();
        reg.set(B, 7u32);
        assert_eq!(LwwRegister::decode(&reg.encode()).unwrap(), reg);
        assert!(LwwMap::<String, String>::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn guarded_maps_drop_forged_future_and_refused_writes() {
        let writer = crate::Identity::from_seed([41; 32]).unwrap().peer_id();
        let before = signed::rejected_total();
        let only_even: Admission<String, u32> = Arc::new(|_, e, _, _| match e.value {
            Some(v) if v % 2 == 1 => Err("odd".into()),
            _ => Ok(()),
        });
        let mut guarded = LwwMap::guarded("test", only_even);
        let mut remote: LwwMap<String, u32> = LwwMap::new();
        remote.set(writer, "ok".into(), 2);
        remote.set(writer, "odd".into(), 3);
        // A fake writer's entry (no key held: unsigned).
        remote.set(A, "unsigned".into(), 4);
        // Signed by `writer`, then claimed to be `B`'s.
        let mut stolen = remote.entries["ok"].clone();
        stolen.stamp.writer = B;
        remote.entries.insert("stolen".into(), stolen);
        // A stamp far in the future, validly signed.
        let future = Stamp {
            timestamp: u64::MAX,
            writer,
        };
        remote.apply("future".into(), future, Some(6));
        assert!(remote.entries["future"].signature_verifies("", &"future".to_string()));

        assert!(guarded.merge(&remote));
        let keys: Vec<&String> = guarded.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["ok"]);
        assert!(signed::rejected_total() - before >= 4);
        // Later writes to the key a future stamp would have captured still land.
        guarded.set(writer, "future".into(), 8);
        assert_eq!(guarded.get(&"future".into()), Some(&8));
        // Round trip: the guard is not encoded, the signatures are.
        let decoded = LwwMap::<String, u32>::decode(&guarded.encode()).unwrap();
        assert!(decoded.entries["ok"].signature_verifies("", &"ok".to_string()));
        assert_eq!(decoded, guarded);
    }

    #[test]
    fn gcounter_sums_writers() {
        let mut a = GCounter::new();
        let mut b = GCounter::new();
        a.increment(A, 2);
        b.increment(B, 5);
        a.merge(&b);
        b.merge(&a);
        assert_eq!(a.value(), 7);
        assert_eq!(a, b);
    }
}
