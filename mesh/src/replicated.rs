//! Keyed records on gossip channels: the few operations the daemon needs
//! on a last-writer-wins map, in one place.

use gossip::{Channel, LwwMap, PeerId};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::BTreeMap;

pub type Records<V> = Channel<LwwMap<String, V>>;

/// Values a daemon keeps on a channel.
pub trait Record: Clone + Serialize + DeserializeOwned + Send + Sync + PartialEq + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + PartialEq + 'static> Record for T {}

pub fn put<V: Record>(ch: &Records<V>, me: PeerId, key: &str, value: V) {
    ch.modify(|m| m.set(me, key.to_string(), value));
}

pub fn remove<V: Record>(ch: &Records<V>, me: PeerId, key: &str) {
    ch.modify(|m| m.remove(me, key.to_string()));
}

/// The live (not removed) records.
pub fn live<V: Record>(ch: &Records<V>) -> BTreeMap<String, V> {
    ch.get()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn get<V: Record>(ch: &Records<V>, key: &str) -> Option<V> {
    ch.get().get(&key.to_string()).cloned()
}
