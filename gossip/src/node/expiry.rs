//! Tombstone expiry in the running node (see `state::expiry`):
//!
//! - **Digests** leave expired tombstones out towards members whose
//!   advertised protocol reaches [`EXPIRING_TOMBSTONES`] (they do the same)
//!   and hash everything towards older ones, so each pair of hosts hashes
//!   alike whatever either has swept.
//! - **Sweeps** (forgetting, and taking old received removals as absence)
//!   run only while every member not removed speaks it: an older host
//!   would send forgotten removals back, and one away for long would bring
//!   removed values back with nothing to stop them.
//! - **Staleness**: the node notes when anti-entropy last found its state
//!   equal to a peer's (kept in the state dir as `contact`). Before it
//!   offers or hashes its state, a host not in sync for longer than a
//!   channel's horizon keeps only its own writes of that channel, since
//!   removals it missed may have been forgotten everywhere else. This covers
//!   a host that was off ([`super::Node::away`]) and one that ran cut off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{jitter, lock, Inner};
use crate::protocol::{self, EXPIRING_TOMBSTONES, META_PROTOCOL};
use crate::state::now_millis;
use crate::PeerId;

/// How often the contact file is refreshed: horizons are days, so minutes
/// of error do not matter.
const CONTACT_EVERY_MS: u64 = 10 * 60 * 1000;

pub(super) struct ExpiryState {
    interval: Duration,
    on: AtomicBool,
    /// When anti-entropy last found this host's state equal to a peer's
    /// (Unix ms; the start, for a state dir with no record of it).
    compared_ms: AtomicU64,
    /// The last value written to the contact file.
    saved_ms: AtomicU64,
    /// How long before this start the host was last in sync.
    away: Option<Duration>,
}

impl ExpiryState {
    pub(super) fn new(interval: Duration, last_contact_ms: Option<u64>) -> ExpiryState {
        // A state dir with no record holds nothing stale: in sync as of now.
        let last = last_contact_ms.unwrap_or_else(now_millis);
        ExpiryState {
            interval: interval.max(Duration::from_millis(10)),
            on: AtomicBool::new(false),
            compared_ms: AtomicU64::new(last),
            saved_ms: AtomicU64::new(last),
            away: last_contact_ms.map(|at| Duration::from_millis(now_millis().saturating_sub(at))),
        }
    }
}

pub(super) async fn expiry_loop(node: Arc<Inner>) {
    loop {
        tokio::time::sleep(jitter(node.expiry.interval)).await;
        node.sweep_tombstones();
    }
}

/// Whether a member record advertises a range reaching expiry.
fn expires(meta: &std::collections::BTreeMap<String, String>) -> bool {
    meta.get(META_PROTOCOL)
        .and_then(|range| protocol::parse_range(range))
        .is_some_and(|range| protocol::meets(range, EXPIRING_TOMBSTONES))
}

impl Inner {
    /// Where digests towards `remote` cut tombstones (`None`: nowhere, an
    /// older host or one not known yet).
    pub(super) fn digest_cut_towards(&self, remote: &PeerId) -> Option<u64> {
        let peers = lock(&self.peers);
        let reaches = peers.table.get(remote).is_some_and(|r| expires(&r.meta));
        reaches.then(now_millis)
    }

    fn sweep_tombstones(&self) {
        let on = self.members_expire();
        if self.expiry.on.swap(on, Ordering::Relaxed) != on {
            debug!(
                on,
                "tombstone expiry turned {}",
                if on { "on" } else { "off" }
            );
        }
        let now = on.then(now_millis);
        let channels = lock(&self.channels).for_digest();
        for (name, channel) in channels {
            let forgotten = channel.expire(now);
            if forgotten > 0 {
                debug!(
                    channel = name,
                    forgotten, "forgot tombstones past their horizon"
                );
            }
        }
    }

    /// Whether every member not removed (blocked) advertises a protocol
    /// range reaching [`EXPIRING_TOMBSTONES`], this host included.
    fn members_expire(&self) -> bool {
        let peers = lock(&self.peers);
        let all = peers
            .table
            .records()
            .filter(|r| !peers.is_blocked(&r.id))
            .all(|r| expires(&r.meta));
        all
    }

    /// Keeps only this host's own writes of expiring channels whose horizon
    /// is shorter than the time since its state was last in sync.
    pub(super) fn set_aside_if_stale(&self) {
        let last = self.expiry.compared_ms.load(Ordering::Relaxed);
        let away_ms = now_millis().saturating_sub(last);
        let channels = lock(&self.channels).for_digest();
        let mut applied = false;
        for (name, channel) in channels {
            let Some(set_aside) = channel.set_aside(self.id, away_ms) else {
                continue;
            };
            applied = true;
            if set_aside > 0 {
                info!(
                    channel = name,
                    set_aside,
                    away_hours = away_ms / 3_600_000,
                    "not in sync with the mesh for longer than the channel's horizon: other hosts' records come back from them"
                );
            }
        }
        // Once: what arrives from now on is the mesh's current state, which
        // must not be set aside again (its hash would never match). Every
        // expiring channel of meshd has the same horizon, so the episode
        // ends for all of them at once.
        if applied {
            self.note_sync();
        }
    }

    pub(super) fn note_sync(&self) {
        self.expiry
            .compared_ms
            .store(now_millis(), Ordering::Relaxed);
    }

    /// Writes when it was last in sync to the state dir, at most every
    /// [`CONTACT_EVERY_MS`] unless `force` (at shutdown).
    pub(super) fn note_contact(&self, force: bool) {
        let Some(dir) = &self.state_dir else { return };
        let compared = self.expiry.compared_ms.load(Ordering::Relaxed);
        let saved = self.expiry.saved_ms.load(Ordering::Relaxed);
        if compared <= saved || (!force && compared - saved < CONTACT_EVERY_MS) {
            return;
        }
        self.expiry.saved_ms.store(compared, Ordering::Relaxed);
        if let Err(e) = crate::persist::save_contact(dir, compared) {
            warn!(error = %e, "cannot note the last contact with the mesh");
        }
    }
}

impl super::Node {
    /// How long before this start anti-entropy last found this host's
    /// state equal to a peer's, as its state dir recorded (`None`: no record,
    /// a first start). A host away longer than an expiring channel's
    /// horizon must not offer its old state of that channel: removals it
    /// missed may have been forgotten.
    pub fn away(&self) -> Option<Duration> {
        self.inner.expiry.away
    }
}
