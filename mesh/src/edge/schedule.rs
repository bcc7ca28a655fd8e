//! When the edge reconciles: on changes of what it reads, on pokes, at its
//! own deadlines, and on a slow tick ([`crate::reconcile::follow`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Edge;

/// A pass also runs this often for what no record or verdict announces:
/// a device or namespace that was not there yet. Hosts going up, down or
/// silent come from the failure detector
/// ([`crate::liveness::Liveness::subscribe`]) and the roster, the floating
/// IPs' timers from [`crate::reconcile::Reconciler::next_wake`].
const TICK: Duration = Duration::from_secs(5);
/// How often this host looks whether its underlay interface (subnet, MAC)
/// may have changed; it is re-read only when the kernel announced a change.
const ADVERT_INTERVAL: Duration = Duration::from_secs(5);

impl Edge {
    /// Asks for a pass soon: a network's devices were realised, this
    /// host's underlay advert changed, or an API operation set a deadline
    /// ([`crate::reconcile::Reconciler::next_wake`]) outside the loop.
    pub fn poke(&self) {
        self.pokes.send_modify(|v| *v += 1);
    }

    /// Follows the records for as long as the daemon runs.
    pub fn spawn(self: Arc<Self>, mut host_changes: crate::kernel::changes::Follower) {
        let me = self.clone();
        tokio::spawn(async move {
            // A failed read is tried again at the next look.
            let mut stale = false;
            loop {
                stale |= host_changes.take();
                if stale {
                    stale = !me.refresh_advert().await;
                }
                tokio::time::sleep(ADVERT_INTERVAL).await;
            }
        });
        let channels = vec![
            self.fips.subscribe(),
            self.bindings.subscribe(),
            self.channels.networks.subscribe(),
            self.services.ch.services.subscribe(),
            self.services.ch.health.subscribe(),
            self.channels.settings.subscribe(),
            self.carried.subscribe(),
            self.liveness.subscribe(),
            self.roster.subscribe(),
            // Who may hold (removed hosts), and where a floating IP's
            // forwards lead (endpoints and labels of the targets).
            self.channels.removed.subscribe(),
            self.channels.endpoints.subscribe(),
            self.services.ch.labels.subscribe(),
            self.pokes.subscribe(),
        ];
        crate::reconcile::follow(self, channels, TICK);
    }
}

impl crate::reconcile::Reconciler for Edge {
    async fn reconcile(self: Arc<Self>) {
        Edge::reconcile(&self).await;
    }

    /// A floating IP given to this host is answered for after the
    /// handover wait; one found in use is probed again after its backoff.
    fn next_wake(&self, after: Instant) -> Option<Instant> {
        let handover = self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_due(after);
        let retry = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_retry(after);
        handover.into_iter().chain(retry).min()
    }
}
