//! Endpoint records of this host that nothing here backs: left by a crash
//! between two steps of attach/detach, or brought back by a host that
//! missed their removal after the removal expired (`gossip::state::expiry`).
//! Labels and health follow (they are kept only for live endpoint records).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use tracing::info;

use super::Daemon;
use mesh_model::records;

impl Daemon {
    /// Keys of the endpoint records this host's own state backs: its
    /// attachments, reservations, services' VIPs and host addresses.
    async fn backed_endpoint_keys(&self) -> BTreeSet<String> {
        self.attacher
            .records()
            .iter()
            .filter_map(|a| {
                let ip = a.ip().ok()?;
                Some(records::endpoint_key(&a.attachment.network, IpAddr::V4(ip)))
            })
            .chain(self.reservations.keys().await)
            .chain(self.services.vip_keys())
            .chain(self.edge.endpoint_keys())
            .collect()
    }

    /// Removes this host's endpoint records stamped before `before` (Unix
    /// ms) that nothing backs, except those in `judged` (key → stamp of a
    /// record found backed before). Returns the keys of the records it
    /// judged backed now.
    pub(super) async fn remove_stray_endpoints(
        &self,
        before: u64,
        judged: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        let me = self.id();
        let hex = me.to_hex();
        let candidates: Vec<(String, u64)> = self.channels.endpoints.read(|map| {
            map.entries()
                .filter(|(_, e)| e.stamp.writer == me && e.stamp.timestamp < before)
                .filter(|(_, e)| e.value.as_ref().is_some_and(|r| r.host == hex))
                .map(|(k, e)| (k.clone(), e.stamp.timestamp))
                .collect()
        });
        if candidates.iter().all(|(k, at)| judged.get(k) == Some(at)) {
            return candidates.into_iter().collect();
        }
        let backed = self.backed_endpoint_keys().await;
        let mut kept = BTreeMap::new();
        for (key, at) in candidates {
            if backed.contains(&key) {
                kept.insert(key, at);
            } else {
                info!(record = %key, "removing an endpoint record of this host that nothing here backs");
                records::remove(&self.channels.endpoints, me, &key);
            }
        }
        kept
    }

    /// Keeps removing strays written before `started` (Unix ms, before this
    /// run wrote anything: a record written since may belong to an attach
    /// still under way) whenever endpoint records change: one that comes
    /// back is removed again.
    pub(super) fn follow_strays(self: Arc<Self>, started: u64) {
        let mut changes = self.channels.endpoints.subscribe();
        tokio::spawn(async move {
            let mut judged = BTreeMap::new();
            loop {
                judged = self.remove_stray_endpoints(started, &judged).await;
                if changes.changed().await.is_err() {
                    break;
                }
            }
        });
    }
}
