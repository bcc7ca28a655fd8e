//! Channel snapshots in the state directory: loaded at start, saved after
//! changes (at most every [`SAVE_GAP`], and at shutdown), so a restart
//! serves what it knew before the mesh answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
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

fn save_snapshot<V: records::Record>(state: &StateDir, name: &str, ch: &Records<V>) {
    use gossip::Mergeable;
    let bytes = ch.get().encode();
    // One save at a time: the shutdown's last save must not race a
    // keeper's write of the same file (one temporary name per file).
    let _one = SAVING.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = state.save_channel(name, &bytes) {
        warn!(channel = name, "cannot save snapshot: {e:#}");
    }
}

static SAVING: Mutex<()> = Mutex::new(());

/// A channel's snapshot is saved at most this often. While hosts join, a
/// channel changes tens of times a second on every host, and each save is
/// a write and two fsyncs: at 50 hosts the saves were about a ninth of a
/// daemon's CPU through the joins (docs/scale.md §12). The first change
/// after a quiet spell is saved at once; those within the gap are saved
/// together at its end; [`StateDir::save_kept`] saves all at shutdown. What a
/// `SIGKILL` inside a gap loses is the last quarter second of changes,
/// which the other members still hold.
const SAVE_GAP: Duration = Duration::from_millis(250);

/// Saves the channel's snapshot after its changes, off the runtime's
/// threads, at most every [`SAVE_GAP`]; the state directory saves it once
/// more at shutdown ([`StateDir::save_kept`]).
pub(super) fn keep_snapshot<V: records::Record>(
    state: &StateDir,
    name: &'static str,
    ch: &Records<V>,
) {
    let save: Arc<dyn Fn(&StateDir) + Send + Sync> = {
        let ch = ch.clone();
        Arc::new(move |state| save_snapshot(state, name, &ch))
    };
    state.keep(save.clone());
    let state = state.clone();
    let mut changes = ch.subscribe();
    tokio::spawn(async move {
        let mut last_save: Option<Instant> = None;
        while changes.changed().await.is_ok() {
            if let Some(last) = last_save {
                tokio::time::sleep_until(last + SAVE_GAP).await;
            }
            changes.borrow_and_update();
            last_save = Some(Instant::now());
            let (state, save) = (state.clone(), save.clone());
            if tokio::task::spawn_blocking(move || save(&state))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_model::records::RemovedPeer;

    fn removed(n: u32) -> RemovedPeer {
        RemovedPeer {
            id: format!("{n:064x}"),
            name: format!("h{n}"),
            removed_by: "h0".into(),
        }
    }

    #[tokio::test]
    async fn changes_are_saved_together_after_the_first_and_all_at_shutdown() {
        let dir = std::env::temp_dir().join(format!("meshsnap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let own = gossip::Identity::from_seed([53; 32]).unwrap().peer_id();
        let ch: Records<RemovedPeer> =
            gossip::Channel::detached(records::REMOVED_CHANNEL, Default::default());
        keep_snapshot(&state, records::REMOVED_CHANNEL, &ch);
        let saved = || {
            load_records::<RemovedPeer>(&state, records::REMOVED_CHANNEL, own)
                .entries()
                .count()
        };
        let add = |n: u32| ch.modify(|m| m.set(own, format!("k{n}"), removed(n)));
        // The first change after a quiet spell: saved at once.
        add(1);
        let start = std::time::Instant::now();
        while saved() < 1 {
            assert!(start.elapsed() < Duration::from_secs(5), "never saved");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A burst inside the gap: held back, then saved together.
        for n in 2..=20 {
            add(n);
        }
        assert!(saved() < 20, "a burst is not saved change by change");
        while saved() < 20 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "burst never saved"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // At shutdown nothing waits for the gap.
        add(21);
        state.save_kept();
        assert_eq!(saved(), 21);
        let _ = std::fs::remove_dir_all(&dir);
    }

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
