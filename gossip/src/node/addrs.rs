//! This host's own control addresses: what it advertises and what happens
//! when the underlay address changes.
//!
//! - Reflexive addresses: every handshake tells us where the other side
//!   saw us (`observed` in hello/ack). An address that is not one of ours
//!   means a NAT in between: we advertise it as seen (the NAT's port, not
//!   ours), so that members dial it — and when two NATed hosts dial each
//!   other's reflexive address at once from their one QUIC socket, each
//!   NAT sees outgoing traffic to the other first and lets the answer in
//!   (simultaneous open). A host on a wildcard address also learns its own
//!   addresses this way.
//! - Roaming (wildcard listeners only; a specific one cannot change): the
//!   interface addresses, re-read when the kernel announces a change of
//!   addresses or links (a 1 s poll where it cannot). When an address we advertise is
//!   gone, the learned addresses are dropped, the own record gets a new
//!   incarnation (so every peer takes the new links over the old ones,
//!   `Peers::admit`) and every member is dialed again at once; the
//!   handshakes of those dials teach us the new address to advertise.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use super::{dial, lock, Inner};
use crate::state::now_millis;
use crate::PeerId;

/// Where the kernel's announcements cannot be followed.
const POLL: Duration = Duration::from_secs(1);

impl Inner {
    /// Adopts `observed` (where a peer saw us) as an advertised address if
    /// it is reflexive, or ours and we listen on a wildcard address.
    pub(super) fn learn_own_address(&self, observed: SocketAddr) {
        if observed.ip().is_unspecified() {
            return;
        }
        let ours = lock(&self.local_ips).contains(&observed.ip());
        let observed = if ours {
            if !self.listen_unspecified {
                return; // the listen address is advertised already
            }
            // With one UDP socket per host the port seen is the listen port.
            SocketAddr::new(observed.ip(), self.local_addr.port())
        } else {
            observed
        }
        .to_string();
        let changed = {
            let mut peers = lock(&self.peers);
            if peers.table.local().addrs.contains(&observed) {
                return;
            }
            let configured = &self.configured_addrs;
            peers.table.update_local(|own| {
                if own.addrs.len() >= crate::membership::MAX_ADDRS {
                    // The oldest learned one goes; configured ones stay.
                    match own.addrs.iter().position(|a| !configured.contains(a)) {
                        Some(oldest) => {
                            own.addrs.remove(oldest);
                        }
                        None => return,
                    }
                }
                own.addrs.push(observed.clone());
            })
        };
        let kind = if ours { "own" } else { "reflexive" };
        info!(addr = %observed, kind, "advertising an address peers reached us at");
        self.after_merge(vec![changed], None);
    }

    /// The interface addresses are now `now`: roam if an advertised one left.
    fn local_ips_changed(self: &Arc<Self>, now: BTreeSet<IpAddr>) {
        let before = std::mem::replace(&mut *lock(&self.local_ips), now.clone());
        if !self.listen_unspecified {
            return;
        }
        let lost: Vec<IpAddr> = {
            let peers = lock(&self.peers);
            peers
                .table
                .local()
                .addrs
                .iter()
                .filter_map(|a| a.parse::<SocketAddr>().ok())
                .map(|a| a.ip())
                .filter(|ip| before.contains(ip) && !now.contains(ip))
                .collect()
        };
        if lost.is_empty() {
            return;
        }
        let changed = {
            let configured = &self.configured_addrs;
            lock(&self.peers).table.update_local(|own| {
                own.incarnation = now_millis().max(own.incarnation + 1);
                own.addrs.retain(|a| configured.contains(a));
            })
        };
        info!(
            ?lost,
            incarnation = changed.incarnation,
            "underlay address changed; re-dialing every member"
        );
        self.after_merge(vec![changed], None);
        self.redial_all();
    }

    /// One dial to every member, links up or not: from the new address,
    /// each replaces the link it finds (the new incarnation wins).
    fn redial_all(self: &Arc<Self>) {
        let targets: Vec<(PeerId, Vec<String>)> = {
            let peers = lock(&self.peers);
            peers
                .table
                .others()
                .filter(|r| !peers.is_blocked(&r.id))
                .map(|r| {
                    let slot = peers.slots.get(&r.id);
                    let mut candidates: Vec<String> = slot
                        .and_then(|s| s.last_remote)
                        .map(|a| a.to_string())
                        .into_iter()
                        .collect();
                    for addr in &r.addrs {
                        if !candidates.contains(addr) {
                            candidates.push(addr.clone());
                        }
                    }
                    (r.id, candidates)
                })
                .collect()
        };
        for (peer, candidates) in targets {
            let node = self.clone();
            self.spawn(async move {
                for candidate in candidates {
                    let Ok(addrs) = dial::resolve(&candidate).await else {
                        continue;
                    };
                    for addr in addrs {
                        match node.clone().dial_addr(addr, Some(peer)).await {
                            Ok(id) if id == peer => return,
                            Ok(_) => {}
                            Err(e) => debug!(peer = %peer, %addr, error = %e, "re-dial after roaming failed"),
                        }
                    }
                }
            });
        }
    }
}

pub(super) async fn addrs_loop(node: Arc<Inner>) {
    use mesh_sys::netwatch::{Changes, Groups};
    // The kernel announces address and link changes; the poll is only for
    // a host where the subscription cannot be made.
    let mut changes = Changes::new(
        Groups::ADDRESSES.with(Groups::LINKS),
        POLL,
        "the interface addresses' changes",
    );
    // Read once subscribed (a change before that would be missed), and
    // again a poll later after a failed read.
    let mut read_now = true;
    let mut last_read = tokio::time::Instant::now();
    loop {
        if !read_now {
            changes.next().await;
            // A burst of changes (containers starting) is one read a POLL.
            tokio::time::sleep_until(last_read + POLL).await;
        }
        last_read = tokio::time::Instant::now();
        if node.is_shutting_down() {
            return;
        }
        match mesh_sys::ifaddrs::local_ips() {
            Ok(now) => {
                read_now = false;
                if now != *lock(&node.local_ips) {
                    node.local_ips_changed(now);
                }
            }
            Err(e) => {
                debug!("cannot read the interface addresses (trying again): {e}");
                read_now = true;
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
