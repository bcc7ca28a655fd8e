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
    let expiry = guarded.expiry();
    let ch = node.channel(name, guarded);
    let mut snapshot = load_records(state, name, node.id());
    if let (Some(expiry), Some(away)) = (expiry, node.away()) {
        set_aside_if_away(&mut snapshot, name, node.id(), away, expiry.horizon());
    }
    gossip::journal::unrecorded(|| ch.update(snapshot));
    ch
}

/// A host away longer than an expiring channel's horizon keeps only its
/// own writes of it: removals it missed may have been forgotten by now, so
/// the others' values it holds could come back from the dead (see
/// `gossip::state::expiry`). Their hosts still hold what is current.
fn set_aside_if_away<V: records::Record>(
    snapshot: &mut gossip::LwwMap<String, V>,
    name: &str,
    own: gossip::PeerId,
    away: std::time::Duration,
    horizon: std::time::Duration,
) {
    if away <= horizon {
        return;
    }
    let set_aside = snapshot.retain(|_, e| e.stamp.writer == own);
    info!(
        channel = name,
        away_hours = away.as_secs() / 3600,
        horizon_hours = horizon.as_secs() / 3600,
        set_aside,
        "away from the mesh for longer than the channel's horizon: other hosts' records come back from them"
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_host_away_past_the_horizon_keeps_only_its_own_records() {
        let own = gossip::Identity::from_seed([51; 32]).unwrap().peer_id();
        let other = gossip::Identity::from_seed([52; 32]).unwrap().peer_id();
        let mut snapshot: gossip::LwwMap<String, u32> = Default::default();
        snapshot.set(own, "net/10.0.0.2".into(), 1);
        snapshot.remove(own, "net/10.0.0.3".into());
        snapshot.set(other, "net/10.0.1.2".into(), 2);
        let horizon = mesh_model::validate::OWNED_RECORDS_HORIZON;
        let day = Duration::from_secs(24 * 3600);

        let mut back_soon = snapshot.clone();
        set_aside_if_away(&mut back_soon, "endpoints", own, 6 * day, horizon);
        assert_eq!(back_soon, snapshot, "away less than the horizon: all kept");

        let mut back_late = snapshot.clone();
        set_aside_if_away(&mut back_late, "endpoints", own, 8 * day, horizon);
        let keys: Vec<&String> = back_late.entries().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["net/10.0.0.2", "net/10.0.0.3"],
            "own writes, removals too"
        );
    }
}
