//! Channel snapshots in the state directory: loaded at start, saved on
//! change, so a restart serves what it knew before the mesh answers.

use tracing::warn;

use crate::state::StateDir;
use mesh_model::records::{self, Records};

pub(super) fn load_snapshot<S: gossip::Mergeable + Default>(state: &StateDir, name: &str) -> S {
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
