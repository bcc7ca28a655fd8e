//! This host's side of [`networks::landing`]: the world a network lands in
//! (its routes, the members' underlay subnets, its configuration) and the
//! verdicts, published to the subsystems that act per network.

use super::*;
use crate::kernel::routes::Route;
use ipnet::IpNet;
use mesh_model::networks::landing::{self, Landing, World};
use std::collections::BTreeSet;
use std::time::Duration;

/// How often a network that could not be set up is retried.
const NETWORK_RETRY: Duration = Duration::from_secs(30);
/// How often the landing may be judged again: routes and members' underlay
/// adverts change without a record changing. It is, when the kernel
/// announced a change here, the members or the removed hosts changed, and
/// at least every [`NETWORK_RETRY`]. Local work only; no message is sent.
const LANDING_TICK: Duration = Duration::from_secs(5);

impl Daemon {
    /// What a network must leave alone on this host.
    pub(super) fn world(&self) -> World {
        let prefix = &self.settings.link_prefix;
        let routes = match crate::kernel::routes::list() {
            Ok(routes) => routes
                .into_iter()
                .filter(|r| capturable(r, prefix))
                .map(|r| (r.dst, r.dev))
                .collect(),
            Err(e) => {
                warn!("cannot read this host's routes, so new networks are not checked against them: {e}");
                Vec::new()
            }
        };
        let removed = self.channels.removed_hosts();
        let underlays = self
            .node
            .members()
            .iter()
            .filter(|m| !removed.contains(&m.id.to_hex()))
            .flat_map(|m| {
                crate::edge::underlay::advertised_nets(&m.meta)
                    .into_iter()
                    .map(|n| (m.name.clone(), n))
            })
            .collect();
        World {
            routes,
            underlays,
            global6: self.settings.global_ipv6.clone(),
            max_networks: self.settings.max_networks,
        }
    }

    /// Every live definition, oldest first (its stamp, then its id).
    fn definitions_by_age(&self) -> Vec<NetworkDef> {
        let map = self.channels.networks.get();
        let mut defs: Vec<(u64, NetworkDef)> = map
            .entries()
            .filter_map(|(_, e)| Some((e.stamp.timestamp, e.value.clone()?)))
            .collect();
        defs.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        defs.into_iter().map(|(_, d)| d).collect()
    }

    /// Decides which networks this host carries and publishes it. Those
    /// it carries now (set up here, or with attachments in its store: at
    /// start nothing is set up yet) are kept unless a rule for every host
    /// refuses them. Called with the devices lock held, so two judgements
    /// never cross.
    pub(super) fn land(&self, devices: &Realized) -> Arc<Landing> {
        let carried_now: BTreeSet<String> = devices
            .wires
            .keys()
            .cloned()
            .chain(
                self.attacher
                    .records()
                    .into_iter()
                    .map(|r| r.attachment.network),
            )
            .collect();
        let defs = self.definitions_by_age();
        let refs: Vec<&NetworkDef> = defs.iter().collect();
        let new = landing::plan(&refs, &self.id().to_hex(), &self.world(), &carried_now);
        let before = self.carried.get();
        for (id, why) in &new.refused {
            if before.refused.get(id) != Some(why) {
                warn!(network = %id, reason = why.reason(), "network not carried on this host: {why}");
            }
        }
        self.carried.set(new)
    }

    /// Follows the networks: the reconcile on every change of the
    /// definitions or of the landing, the landing on a tick.
    pub(super) fn follow_landing(self: Arc<Self>) {
        crate::reconcile::follow(
            self.clone(),
            vec![self.channels.networks.subscribe(), self.carried.subscribe()],
            NETWORK_RETRY,
        );
        let mut host_changes = self.host_changes.follower();
        let mut members = self.roster.subscribe();
        let mut removed = self.channels.removed.subscribe();
        tokio::spawn(async move {
            let mut judged = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(LANDING_TICK).await;
                // What `world` reads besides the records `follow` watches;
                // and now and then all the same (a failed read of the
                // routes, the attachments here).
                let kernel = host_changes.take();
                let adverts = members.has_changed().unwrap_or(true);
                let hosts = removed.has_changed().unwrap_or(true);
                if !(kernel || adverts || hosts) && judged.elapsed() < NETWORK_RETRY {
                    continue;
                }
                judged = tokio::time::Instant::now();
                members.borrow_and_update();
                removed.borrow_and_update();
                let devices = self.devices.lock().await;
                self.land(&devices);
            }
        });
    }

    /// IPv4 space a new network must stay out of here: this host's routes
    /// and the members' LANs (the Docker plugin picks pools around them).
    pub(super) fn occupied_v4(&self) -> Vec<ipnet::Ipv4Net> {
        let w = self.world();
        w.routes
            .iter()
            .filter_map(|(r, _)| match r {
                IpNet::V4(v4) => Some(v4.trunc()),
                IpNet::V6(_) => None,
            })
            .chain(w.underlays.iter().map(|(_, n)| n.trunc()))
            .collect()
    }

    /// The API's check before a new definition is written.
    pub(super) fn check_landing(&self, def: &NetworkDef) -> Result<(), ApiError> {
        let existing = records::live(&self.channels.networks);
        landing::check_new(
            def,
            existing.values(),
            &self.id().to_hex(),
            &self.world(),
            self.carried.get().carried.len(),
        )
        .map_err(|why| ApiError::Conflict(format!("network {:?} is refused: {why}", def.id)))
    }
}

/// Whether a new network could capture `r`: not a default route, not one
/// through meshd's own devices (a carried network's own bridge), not
/// IPv6 link-local or multicast (every interface has those).
fn capturable(r: &Route, link_prefix: &str) -> bool {
    if r.dst.prefix_len() == 0 || networks::is_ours(link_prefix, &r.dev) {
        return false;
    }
    match r.dst {
        IpNet::V4(_) => true,
        IpNet::V6(n) => {
            let link_local: ipnet::Ipv6Net = "fe80::/10".parse().expect("a valid prefix");
            let multicast: ipnet::Ipv6Net = "ff00::/8".parse().expect("a valid prefix");
            !link_local.contains(&n) && !multicast.contains(&n)
        }
    }
}

/// The networks of this host: set up what lands here, tear down the rest.
impl crate::reconcile::Reconciler for Daemon {
    async fn reconcile(self: Arc<Self>) {
        let mut devices = self.devices.lock().await;
        self.reconcile_networks_locked(&mut devices).await;
    }
}
