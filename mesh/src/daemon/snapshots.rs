//! Channel snapshots in the state directory: loaded at start, saved on
//! change, so a restart serves what it knew before the mesh answers —
//! unless this host was out of contact for longer than tombstones live
//! ([`gossip::TOMBSTONE_HORIZON`]): removals made meanwhile may have
//! expired everywhere, and its old snapshot would bring the removed keys
//! back. Such a host starts empty and takes the mesh's state; its own
//! containers' records are written again from the attachment store.

use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

use crate::roster::Roster;

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

/// How often "another host is live" is noted on disk: a small part of the
/// horizon.
const CONTACT_EVERY: Duration = Duration::from_secs(600);

/// Whether snapshots saved by a host last in contact at `last_ms` may be
/// loaded at `now_ms`.
pub(super) fn snapshots_usable(last_ms: Option<u64>, now_ms: u64) -> bool {
    // Never noted (first start, or an older version): nothing says the
    // host was away.
    last_ms.is_none_or(|last| {
        now_ms.saturating_sub(last) < gossip::TOMBSTONE_HORIZON.as_millis() as u64
    })
}

/// At start, before any channel opens: drops the snapshots of a host
/// that was away past the horizon.
pub(super) fn resync_after_absence(state: &StateDir) {
    let (last, now) = (state.last_contact(), gossip::state::now_millis());
    if snapshots_usable(last, now) {
        return;
    }
    let days = now.saturating_sub(last.unwrap_or(0)) as f64 / 86_400_000.0;
    match state.drop_channel_snapshots() {
        Ok(n) => warn!(
            snapshots = n,
            "last in contact with the mesh {days:.1} days ago, longer than removals are \
             remembered ({} h): starting without replicated state, taking the mesh's",
            gossip::TOMBSTONE_HORIZON.as_secs() / 3600
        ),
        Err(e) => warn!("cannot drop stale channel snapshots: {e:#}"),
    }
}

/// Notes on disk, now and then, that another host is live.
pub(super) fn keep_contact(state: &StateDir, roster: Arc<Roster>) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut noted = false;
        loop {
            if roster.hosts().live().len() > 1 {
                match state.save_contact(gossip::state::now_millis()) {
                    Ok(()) if !noted => {
                        info!("in contact with the mesh");
                        noted = true;
                    }
                    Ok(()) => {}
                    Err(e) => warn!("cannot note contact with the mesh: {e:#}"),
                }
            }
            tokio::time::sleep(CONTACT_EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_of_a_host_away_past_the_horizon_are_not_loaded() {
        let horizon = gossip::TOMBSTONE_HORIZON.as_millis() as u64;
        let now = 10 * horizon;
        assert!(snapshots_usable(None, now), "never noted: keep");
        assert!(snapshots_usable(Some(now - horizon + 1), now));
        assert!(!snapshots_usable(Some(now - horizon), now));
    }

    #[test]
    fn dropping_snapshots_leaves_the_rest_of_the_state() {
        let dir = std::env::temp_dir().join(format!("mesh-snapshots-{}", std::process::id()));
        let state = StateDir::open(&dir).unwrap();
        state.save_channel("networks", b"x").unwrap();
        state.save_channel("endpoints", b"y").unwrap();
        state.save_contact(5).unwrap();
        assert_eq!(state.drop_channel_snapshots().unwrap(), 2);
        assert_eq!(state.load_channel("networks").unwrap(), None);
        assert_eq!(state.last_contact(), Some(5));
        resync_after_absence(&state);
        assert_eq!(state.drop_channel_snapshots().unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
