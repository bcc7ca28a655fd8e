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
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::signed::{self, Signature};
use crate::PeerId;

/// Domain of the signature every LWW write carries.
const LWW_DOMAIN: &str = "mesh/lww-entry/1";
/// Admission passes over one batch (see `LwwMap::merge_from`): deep enough
/// for the hand-over chains a full state carries, bounded so a crafted
/// batch cannot make a merge quadratic.
const MAX_ADMISSION_PASSES: usize = 8;
/// How far ahead of our clock a guarded map accepts a stamp: beyond, a
/// write would silently win over every later one (a value nobody can
/// change or remove).
pub const MAX_STAMP_AHEAD_MS: u64 = 10 * 60 * 1000;

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

/// One LWW slot: a value or a tombstone (`None`), signed by the stamp's
/// writer over key, stamp and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwEntry<V> {
    pub stamp: Stamp,
    pub value: Option<V>,
    pub signature: Signature,
}

fn entry_bytes<K: Serialize, V: Serialize>(key: &K, stamp: &Stamp, value: &Option<V>) -> Vec<u8> {
    postcard_encode(&(key, stamp, value))
}

impl<V: Serialize> LwwEntry<V> {
    /// A write, signed as `stamp.writer` if this process holds that key.
    pub fn signed<K: Serialize>(key: &K, stamp: Stamp, value: Option<V>) -> LwwEntry<V> {
        let signature =
            signed::sign_as(&stamp.writer, LWW_DOMAIN, &entry_bytes(key, &stamp, &value))
                .unwrap_or(Signature::NONE);
        LwwEntry {
            stamp,
            value,
            signature,
        }
    }

    /// Whether the signature is the writer's over `key`, stamp and value.
    pub fn signature_verifies<K: Serialize>(&self, key: &K) -> bool {
        signed::verify(
            &self.stamp.writer,
            LWW_DOMAIN,
            &entry_bytes(key, &self.stamp, &self.value),
            &self.signature,
        )
    }

    /// Total order used by merges. Equal stamps with different contents can
    /// only come from a misbehaving writer; comparing encodings keeps merges
    /// commutative even then.
    fn beats(&self, other: &LwwEntry<V>) -> bool {
        match self.stamp.cmp(&other.stamp) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                (postcard_encode(&self.value), self.signature)
                    > (postcard_encode(&other.value), other.signature)
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
/// Tombstones are kept forever (a removed key must not be resurrected by a
/// host that missed the removal); callers with high churn should namespace
/// keys so the set stays bounded.
///
/// A *guarded* map ([`LwwMap::guarded`]) admits a write only if its
/// signature is its writer's, its stamp is at most [`MAX_STAMP_AHEAD_MS`]
/// ahead of our clock and the map's [`Admission`] accepts it; anything else
/// is dropped, counted and logged once per writer (see
/// [`signed::note_rejection`]). The guard is local: it is not encoded, and a
/// decoded map has none (it is merged into a guarded one).
pub struct LwwMap<K, V> {
    entries: BTreeMap<K, LwwEntry<V>>,
    guard: Option<Arc<Guard<K, V>>>,
}

impl<K, V> Default for LwwMap<K, V> {
    fn default() -> Self {
        LwwMap {
            entries: BTreeMap::new(),
            guard: None,
        }
    }
}

impl<K: Clone, V: Clone> Clone for LwwMap<K, V> {
    fn clone(&self) -> Self {
        LwwMap {
            entries: self.entries.clone(),
            guard: self.guard.clone(),
        }
    }
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
            guard: Some(Arc::new(Guard {
                name: name.to_string(),
                admit,
            })),
        }
    }

    /// Sets `key` and returns the one-entry delta to pass to `Channel::update`.
    pub fn set(&mut self, writer: PeerId, key: K, value: V) -> Self {
        self.write(writer, key, Some(value))
    }

    /// Removes `key` (leaves a tombstone) and returns the delta.
    pub fn remove(&mut self, writer: PeerId, key: K) -> Self {
        self.write(writer, key, None)
    }

    fn write(&mut self, writer: PeerId, key: K, value: Option<V>) -> Self {
        let stamp = Stamp::next(writer, self.entries.get(&key).map(|e| e.stamp));
        let entry = LwwEntry::signed(&key, stamp, value);
        self.entries.insert(key.clone(), entry.clone());
        let mut delta = Self::default();
        delta.entries.insert(key, entry);
        delta
    }

    /// Inserts an entry with an explicit stamp, merging it like a remote write.
    pub fn apply(&mut self, key: K, stamp: Stamp, value: Option<V>) -> bool {
        let mut single = Self::default();
        let entry = LwwEntry::signed(&key, stamp, value);
        single.entries.insert(key, entry);
        self.merge_from(&single)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
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
            } else if !theirs.signature_verifies(key) {
                Some("signature is not the writer's".to_string())
            } else {
                None
            };
            match bad {
                Some(reason) => signed::note_rejection(theirs.stamp.writer, &guard.name, &reason),
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
                for (_, theirs, reason) in refused {
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
        for (key, theirs) in incoming {
            match self.entries.get_mut(key) {
                Some(ours) if !theirs.beats(ours) => {}
                Some(ours) => {
                    *ours = theirs.clone();
                    changed = true;
                }
                None => {
                    self.entries.insert(key.clone(), theirs.clone());
                    changed = true;
                }
            }
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
            guard: None,
        })
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
        self.entry = Some(LwwEntry::signed(&(), stamp, Some(value)));
        self.clone()
    }

    pub fn set_at(&mut self, stamp: Stamp, value: V) -> bool {
        let other = LwwRegister {
            entry: Some(LwwEntry::signed(&(), stamp, Some(value))),
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
    fn broadcast_delta(&self, channel: &str, data: Vec<u8>);
}

/// Type-erased view the node uses for remote updates and anti-entropy.
pub(crate) trait ErasedChannel: Send + Sync {
    /// Decodes and merges; returns whether local state changed.
    fn merge_encoded(&self, bytes: &[u8]) -> Result<bool, DecodeError>;
    fn encoded(&self) -> Vec<u8>;
}

pub(crate) struct ChannelInner<S> {
    name: String,
    state: Mutex<S>,
    changes: watch::Sender<u64>,
    sink: Weak<dyn DeltaSink>,
}

impl<S: Mergeable> ChannelInner<S> {
    pub(crate) fn new(name: &str, initial: S, sink: Weak<dyn DeltaSink>) -> Self {
        ChannelInner {
            name: name.to_string(),
            state: Mutex::new(initial),
            changes: watch::channel(0).0,
            sink,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        // A panic inside a user's merge must not wedge the channel forever.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl<S: Mergeable> ErasedChannel for ChannelInner<S> {
    fn merge_encoded(&self, bytes: &[u8]) -> Result<bool, DecodeError> {
        let remote = S::decode(bytes)?;
        let changed = self.lock().merge(&remote);
        if changed {
            self.bump();
        }
        Ok(changed)
    }

    fn encoded(&self) -> Vec<u8> {
        self.lock().encode()
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
    fn broadcast_delta(&self, _: &str, _: Vec<u8>) {}
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

    /// Merges `delta` locally and, if that changed anything, sends it to
    /// every connected member.
    pub fn update(&self, delta: S) {
        let changed = self.inner.lock().merge(&delta);
        if changed {
            self.inner.bump();
            if let Some(sink) = self.inner.sink.upgrade() {
                sink.broadcast_delta(&self.inner.name, delta.encode());
            }
        }
    }

    /// Computes a delta from the current value under the channel lock (so
    /// concurrent writers on this host do not race) and applies it.
    pub fn modify(&self, make_delta: impl FnOnce(&mut S) -> S) {
        let delta = {
            let mut state = self.inner.lock();
            let mut scratch = state.clone();
            let delta = make_delta(&mut scratch);
            if !state.merge(&delta) {
                return;
            }
            delta
        };
        self.inner.bump();
        if let Some(sink) = self.inner.sink.upgrade() {
            sink.broadcast_delta(&self.inner.name, delta.encode());
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
        assert!(remote.entries["future"].signature_verifies(&"future".to_string()));

        assert!(guarded.merge(&remote));
        let keys: Vec<&String> = guarded.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["ok"]);
        assert!(signed::rejected_total() - before >= 4);
        // Later writes to the key a future stamp would have captured still land.
        guarded.set(writer, "future".into(), 8);
        assert_eq!(guarded.get(&"future".into()), Some(&8));
        // Round trip: the guard is not encoded, the signatures are.
        let decoded = LwwMap::<String, u32>::decode(&guarded.encode()).unwrap();
        assert!(decoded.entries["ok"].signature_verifies(&"ok".to_string()));
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
