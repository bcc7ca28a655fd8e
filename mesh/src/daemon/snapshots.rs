//! Channel snapshots in the state directory: loaded at start, saved on
//! change, so a restart serves what it knew before the mesh answers.

use tracing::{info, warn};

use crate::state::StateDir;
use mesh_model::records::{self, Records};

/// Opens a replicated channel on `node` with its guarded state (see
/// [`mesh_model::validate`]), then merges its snapshot in (checked like any write).
pub(super) fn open_channel<V: records::Record>(
    node: &gossip::Node,
    state: &StateDir,
    name: &str,
    guarded: gossip::LwwMap<String, V>,
) -> Records<V> {
    let ch = node.channel(name, guarded);
    let snapshot = load_records(state, name, node.id());
    gossip::journal::unrecorded(|| ch.update(snapshot));
    ch
}

fn load_snapshot<S: gossip::Mergeable + Default>(state: &StateDir, name: &str) -> S {
    match state.load_channel(name) {
        Ok(Some(bytes)) => S::decode(&bytes).unwrap_or_else(|e| {
            warn!(channel = name, "ignoring unreadable snapshot: {e}");
            S::default()
        }),
        Ok(None) => S::default(),
        Err(e) => {
            warn!(channel = name, "cannot read snapshot: {e:#}");
            S::default()
        }
    }
}

/// A records channel's snapshot; one saved by a build before 0.2.0 keeps
/// this host's own writes, re-signed (gossip's `from_pre_release`).
pub(super) fn load_records<V: records::Record>(
    state: &StateDir,
    name: &str,
    own: gossip::PeerId,
) -> gossip::LwwMap<String, V> {
    if let Ok(Some(bytes)) = state.load_channel(name) {
        if let Some(m) = gossip::LwwMap::from_pre_release(&bytes, name, own) {
            info!(
                channel = name,
                kept = m.map.len(),
                left_to_their_writers = m.dropped,
                "migrated a snapshot saved before 0.2.0: this host's writes re-signed, the others' come back from their hosts"
            );
            return m.map;
        }
    }
    load_snapshot(state, name)
}

pub(super) fn save_snapshot<V: records::Record>(state: &StateDir, name: &str, ch: &Records<V>) {
    use gossip::Mergeable;
    if let Err(e) = state.save_channel(name, &ch.get().encode()) {
        warn!(channel = name, "cannot save snapshot: {e:#}");
    }
}

/// Saves the channel's snapshot on every change.
pub(super) fn keep_snapshot<V: records::Record>(
    state: &StateDir,
    name: &'static str,
    ch: &Records<V>,
) {
    let (state, ch) = (state.clone(), ch.clone());
    let mut rx = ch.subscribe();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            save_snapshot(&state, name, &ch);
        }
    });
}
