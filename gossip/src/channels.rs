//! The channels registered on this host, and what peers sent for channels
//! not registered here (yet) — kept within a budget and merged in when the
//! channel is registered, so a value gossiped before this host's daemon
//! asked for the channel is not lost.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tracing::{debug, warn};

use crate::state::{Channel, ChannelInner, DeltaSink, ErasedChannel, Mergeable};

/// Limits on payloads kept for channels nobody registered yet.
const MAX_PENDING_CHANNELS: usize = 64;
const MAX_PENDING_PER_CHANNEL: usize = 16;
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;
/// Channels hashed into one anti-entropy digest.
pub(crate) const MAX_DIGEST_CHANNELS: usize = 1024;

struct Entry {
    any: Arc<dyn Any + Send + Sync>,
    erased: Arc<dyn ErasedChannel>,
}

#[derive(Default)]
pub(crate) struct Channels {
    registered: HashMap<String, Entry>,
    /// Payloads for channels this host has not registered (yet).
    pending: HashMap<String, Vec<Vec<u8>>>,
}

impl Channels {
    /// The channel `name` if it is registered with type `S`.
    pub fn get<S: Mergeable>(&self, name: &str) -> Option<Channel<S>> {
        Channel::<S>::from_any(self.registered.get(name)?.any.clone())
    }

    /// Registers a new channel (replacing one of another type), merging in
    /// what peers sent for it before.
    pub fn register<S: Mergeable>(
        &mut self,
        name: &str,
        initial: S,
        sink: Weak<dyn DeltaSink>,
    ) -> Channel<S> {
        if self.registered.contains_key(name) {
            warn!(
                channel = name,
                "channel re-registered with another type; replacing it"
            );
        }
        let channel = Channel {
            inner: Arc::new(ChannelInner::new(name, initial, sink)),
        };
        for payload in self.pending.remove(name).unwrap_or_default() {
            if let Err(e) = channel.erased().merge_encoded(&payload) {
                warn!(channel = name, error = %e, "dropping undecodable state received earlier");
            }
        }
        self.registered.insert(
            name.to_string(),
            Entry {
                any: channel.as_any(),
                erased: channel.erased(),
            },
        );
        channel
    }

    pub fn named(&self, name: &str) -> Option<Arc<dyn ErasedChannel>> {
        self.registered.get(name).map(|e| e.erased.clone())
    }

    /// The channels a digest covers (encoding them is left to the caller,
    /// outside this registry's lock).
    pub fn for_digest(&self) -> Vec<(String, Arc<dyn ErasedChannel>)> {
        self.registered
            .iter()
            .take(MAX_DIGEST_CHANNELS)
            .map(|(name, entry)| (name.clone(), entry.erased.clone()))
            .collect()
    }

    /// Keeps a payload for unregistered channel `name`; false if the budget
    /// is spent (the oldest payload of a full channel queue makes room).
    pub fn hold(&mut self, name: &str, data: Vec<u8>) -> bool {
        let held: usize = self.pending.values().flatten().map(Vec::len).sum();
        if held + data.len() > MAX_PENDING_BYTES
            || (self.pending.len() >= MAX_PENDING_CHANNELS && !self.pending.contains_key(name))
        {
            debug!(
                channel = name,
                "not keeping state for an unregistered channel: budget exhausted"
            );
            return false;
        }
        let queue = self.pending.entry(name.to_string()).or_default();
        if queue.len() >= MAX_PENDING_PER_CHANNEL {
            queue.remove(0);
        }
        queue.push(data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::GCounter;
    use crate::PeerId;

    struct Nowhere;
    impl DeltaSink for Nowhere {
        fn broadcast_delta(&self, _: &str, _: Vec<Vec<u8>>) {}
    }

    fn sink() -> Weak<dyn DeltaSink> {
        Weak::<Nowhere>::new()
    }

    fn counted(writer: u8, count: u64) -> Vec<u8> {
        let mut counter = GCounter::new();
        counter.increment(PeerId([writer; 32]), count);
        counter.encode()
    }

    #[test]
    fn state_received_before_registration_is_merged_in() {
        let mut channels = Channels::default();
        assert!(channels.hold("hits", counted(1, 3)));
        assert!(
            channels.hold("hits", vec![0xff, 0xff, 0xff]),
            "kept, judged later"
        );
        assert!(channels.hold("hits", counted(2, 4)));
        let hits = channels.register("hits", GCounter::new(), sink());
        assert_eq!(hits.get().value(), 7, "undecodable payloads are dropped");
        assert!(channels.get::<GCounter>("hits").is_some());
        assert!(channels.named("hits").is_some());
        assert_eq!(channels.for_digest().len(), 1);
    }

    #[test]
    fn pending_state_stays_within_its_budget() {
        let mut channels = Channels::default();
        for i in 0..MAX_PENDING_PER_CHANNEL as u64 + 4 {
            assert!(channels.hold("queue", counted(1, i + 1)));
        }
        assert_eq!(channels.pending["queue"].len(), MAX_PENDING_PER_CHANNEL);
        for i in 1..MAX_PENDING_CHANNELS {
            assert!(channels.hold(&format!("c{i}"), vec![1]));
        }
        assert!(!channels.hold("one-too-many", vec![1]));
        assert!(channels.hold("c1", vec![2]), "known channels still queue");
        assert!(!channels.hold("c2", vec![0; MAX_PENDING_BYTES]));
        // The newest payloads were kept: the merged count is the last one.
        let queue = channels.register("queue", GCounter::new(), sink());
        assert_eq!(queue.get().value(), MAX_PENDING_PER_CHANNEL as u64 + 4);
    }

    #[test]
    fn registering_another_type_replaces_the_channel() {
        let mut channels = Channels::default();
        channels.register("x", GCounter::new(), sink());
        assert!(channels.get::<crate::LwwRegister<u8>>("x").is_none());
        channels.register("x", crate::LwwRegister::<u8>::new(), sink());
        assert!(channels.get::<crate::LwwRegister<u8>>("x").is_some());
        assert!(channels.get::<GCounter>("x").is_none());
    }
}
