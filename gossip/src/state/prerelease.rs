//! Channel states saved by builds before 0.2.0 (wire major `mesh/1`),
//! whose writes were signed over a re-encoding of the value under
//! `mesh/lww-entry/1` and did not name their channel. A host upgraded from
//! such a build re-signs its own writes the new way (it holds its key); the
//! others' come back from their writers once those are upgraded too.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{postcard_encode, LwwEntry, LwwMap, Stamp};
use crate::signed::{self, Signature};
use crate::PeerId;

const DOMAIN: &str = "mesh/lww-entry/1";

#[derive(Deserialize)]
#[serde(bound = "V: DeserializeOwned")]
struct OldEntry<V> {
    stamp: Stamp,
    value: Option<V>,
    signature: Signature,
}

/// What a pre-release state held, migrated.
pub struct Migrated<K, V> {
    /// This host's own writes, signed the current way.
    pub map: LwwMap<K, V>,
    /// Other writers' entries left out.
    pub dropped: usize,
}

impl<K, V> LwwMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned + PartialEq,
{
    /// Reads `bytes` as a pre-release state of `channel`: `None` unless it
    /// is one (every entry must verify the old way, so a current state is
    /// never taken for one). Keeps `own`'s writes, re-signed.
    pub fn from_pre_release(bytes: &[u8], channel: &str, own: PeerId) -> Option<Migrated<K, V>> {
        let (old, rest): (BTreeMap<K, OldEntry<V>>, _) = postcard::take_from_bytes(bytes).ok()?;
        if !rest.is_empty() || old.is_empty() {
            return None;
        }
        let verifies = |key: &K, e: &OldEntry<V>| {
            let body = postcard_encode(&(key, &e.stamp, &e.value));
            signed::verify(&e.stamp.writer, DOMAIN, &body, &e.signature)
        };
        if !old.iter().all(|(k, e)| verifies(k, e)) {
            return None;
        }
        let mut map = LwwMap::new();
        let mut dropped = 0;
        for (key, e) in old {
            if e.stamp.writer != own {
                dropped += 1;
                continue;
            }
            let entry = LwwEntry::signed(channel, &key, e.stamp, e.value);
            map.entries.insert(key, entry);
        }
        Some(Migrated { map, dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Admission, Mergeable};
    use std::sync::Arc;

    #[derive(Serialize)]
    struct OldWire<'a> {
        stamp: Stamp,
        value: Option<&'a String>,
        signature: Signature,
    }

    fn old_state(writers: &[PeerId]) -> Vec<u8> {
        let mut entries = BTreeMap::new();
        for (i, w) in writers.iter().enumerate() {
            let key = format!("k{i}");
            let value = format!("v{i}");
            let stamp = Stamp {
                timestamp: 1000 + i as u64,
                writer: *w,
            };
            let body = postcard_encode(&(&key, &stamp, &Some(&value)));
            let signature = signed::sign_as(w, DOMAIN, &body).unwrap();
            entries.insert(key, (stamp, Some(value), signature));
        }
        let wire: BTreeMap<&String, OldWire> = entries
            .iter()
            .map(|(k, (stamp, v, sig))| {
                (
                    k,
                    OldWire {
                        stamp: *stamp,
                        value: v.as_ref(),
                        signature: *sig,
                    },
                )
            })
            .collect();
        postcard::to_stdvec(&wire).unwrap()
    }

    #[test]
    fn own_writes_are_re_signed_and_others_left_out() {
        let me = crate::Identity::from_seed([51; 32]).unwrap().peer_id();
        let other = crate::Identity::from_seed([52; 32]).unwrap().peer_id();
        let bytes = old_state(&[me, other, me]);
        let migrated = LwwMap::<String, String>::from_pre_release(&bytes, "networks", me).unwrap();
        assert_eq!(migrated.dropped, 1);
        let admit: Admission<String, String> = Arc::new(|_, _, _, _| Ok(()));
        let mut channel = LwwMap::guarded("networks", admit);
        channel.bind_channel("networks");
        assert!(channel.merge(&migrated.map));
        assert_eq!(channel.get(&"k0".to_string()), Some(&"v0".to_string()));
        assert_eq!(channel.get(&"k2".to_string()), Some(&"v2".to_string()));
        assert_eq!(channel.len(), 2);
    }

    #[test]
    fn a_current_state_is_not_taken_for_a_pre_release_one() {
        let me = crate::Identity::from_seed([53; 32]).unwrap().peer_id();
        let mut current: LwwMap<String, String> = LwwMap::new();
        current.bind_channel("networks");
        current.set(me, "k".into(), "v".into());
        let bytes = current.encode();
        assert!(LwwMap::<String, String>::from_pre_release(&bytes, "networks", me).is_none());
        assert!(LwwMap::<String, String>::from_pre_release(&[0xff, 3], "networks", me).is_none());
    }
}
