//! The I/O half of address allocation: this host's allocations, asking an
//! owner for space, answering such requests, and inheriting the ranges of
//! hosts removed for good. The rules live in [`crate::ipam`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tracing::{info, warn};

use crate::api;
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::ipam::{self, RangeEntry, SpaceRequest, Want};
use crate::networks::NetworkDef;
use crate::replicated;

/// How long an allocation waits for another host to grant space.
const GRANT_TIMEOUT: Duration = Duration::from_secs(6);

/// A host removed for good (`meshctl peer rm`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemovedPeer {
    pub id: String,
    pub name: String,
    pub removed_by: String,
}

impl Daemon {
    pub(crate) fn ring_of(&self, network: &str) -> Vec<RangeEntry> {
        let all = replicated::live(&self.ring);
        ipam::ranges(all.values(), network)
    }

    pub(crate) fn removed_peers(&self) -> BTreeSet<String> {
        replicated::live(&self.removed).into_keys().collect()
    }

    fn used_by_anyone(&self, network: &str) -> BTreeSet<u32> {
        replicated::live(&self.endpoints)
            .values()
            .filter(|e| e.network == network)
            .filter_map(|e| match e.ip {
                IpAddr::V4(v4) => Some(u32::from(v4)),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<u32>>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an address for a new attachment: `want` if given (it must
    /// be free; if another host owns it, that host is asked to hand it
    /// over), else the lowest free address of this host's ranges, asking
    /// the host with the most free space when ours are full.
    pub(crate) async fn allocate(
        &self,
        net: &NetworkDef,
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, ApiError> {
        let me = self.id().to_hex();
        let mut changes = self.ring.subscribe();
        let deadline = tokio::time::Instant::now() + GRANT_TIMEOUT;
        let mut asked: Option<String> = None;
        let result = loop {
            let ring = self.ring_of(&net.id);
            let in_use = self.used_by_anyone(&net.id);
            let donor = {
                let mut used = self.lock_used();
                let mine = used.entry(net.id.clone()).or_default();
                match want {
                    None => {
                        let taken: BTreeSet<u32> = mine.union(&in_use).copied().collect();
                        if let Some(a) = ipam::pick_free(&ring, &me, &taken) {
                            mine.insert(a);
                            break Ok(Ipv4Addr::from(a));
                        }
                        self.best_donor(&ring, &in_use, &me)
                    }
                    Some(ip) => {
                        let a = u32::from(ip);
                        match ipam::owner_of(&ring, a) {
                            None if ring.is_empty() => None,
                            None => {
                                break Err(ApiError::BadRequest(format!(
                                    "address {ip} is not allocatable in network {}",
                                    net.id
                                )))
                            }
                            Some(_) if mine.contains(&a) || in_use.contains(&a) => {
                                break Err(ApiError::Conflict(format!(
                                    "address {ip} is already in use on network {}",
                                    net.id
                                )))
                            }
                            Some(r) if r.owner == me => {
                                mine.insert(a);
                                break Ok(ip);
                            }
                            Some(r) => Some(r.owner.clone()),
                        }
                    }
                }
            };
            if asked.is_none() {
                if ring.is_empty() {
                    // The network's first range is still on its way here.
                } else if let Some(donor) = donor {
                    if !self.is_live(&donor) {
                        break Err(ApiError::Conflict(format!(
                            "no free address on network {} that this host may give out: the space belongs to host {} which is not reachable now",
                            net.id,
                            self.peer_name(&donor)
                        )));
                    }
                    let req = SpaceRequest {
                        network: net.id.clone(),
                        from: me.clone(),
                        to: donor.clone(),
                        want: want
                            .map(|ip| Want::Addr(u32::from(ip)))
                            .unwrap_or(Want::Space),
                        seq: gossip::state::now_millis(),
                    };
                    replicated::put(
                        &self.requests,
                        self.id(),
                        &ipam::request_key(&net.id, &me),
                        req,
                    );
                    asked = Some(donor);
                } else {
                    break Err(ApiError::Conflict(format!(
                        "network {} has no free addresses left on any reachable host",
                        net.id
                    )));
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    break Err(ApiError::Conflict(match &asked {
                        Some(d) => format!(
                            "host {} did not grant address space on network {} within {}s",
                            self.peer_name(d),
                            net.id,
                            GRANT_TIMEOUT.as_secs()
                        ),
                        None => format!("network {} has no address ranges yet", net.id),
                    }))
                }
            }
        };
        if asked.is_some() {
            replicated::remove(&self.requests, self.id(), &ipam::request_key(&net.id, &me));
        }
        result
    }

    pub(crate) fn release(&self, network: &str, ip: Ipv4Addr) {
        if let Some(set) = self.lock_used().get_mut(network) {
            set.remove(&u32::from(ip));
        }
    }

    pub(crate) fn note_allocated(&self, network: &str, ip: Ipv4Addr) {
        self.lock_used()
            .entry(network.to_string())
            .or_default()
            .insert(u32::from(ip));
    }

    /// The live host (not us) with the most free addresses.
    fn best_donor(&self, ring: &[RangeEntry], in_use: &BTreeSet<u32>, me: &str) -> Option<String> {
        ipam::free_by_owner(ring, in_use)
            .into_iter()
            .filter(|(owner, free)| owner != me && *free > 0 && self.is_live(owner))
            .max_by_key(|(_, free)| *free)
            .map(|(owner, _)| owner)
            .or_else(|| {
                // Nobody reachable has space: name an unreachable owner so
                // the error can say who.
                ipam::free_by_owner(ring, in_use)
                    .into_iter()
                    .filter(|(owner, free)| owner != me && *free > 0)
                    .max_by_key(|(_, free)| *free)
                    .map(|(owner, _)| owner)
            })
    }

    pub(crate) fn is_live(&self, peer_hex: &str) -> bool {
        self.node
            .members()
            .iter()
            .any(|m| m.id.to_hex() == peer_hex && m.state == gossip::PeerState::Up)
    }

    pub(crate) fn peer_name(&self, peer_hex: &str) -> String {
        self.node
            .members()
            .iter()
            .find(|m| m.id.to_hex() == peer_hex)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| peer_hex[..peer_hex.len().min(12)].to_string())
    }

    /// Answers requests addressed to this host, and takes over the ranges
    /// this host inherits from removed hosts. Runs whenever the ring, the
    /// requests or the removals change.
    pub(crate) fn serve_ipam(&self, answered: &mut BTreeSet<(String, String, u64)>) {
        let me = self.id().to_hex();
        for req in replicated::live(&self.requests).into_values() {
            if req.to != me {
                continue;
            }
            let tag = (req.network.clone(), req.from.clone(), req.seq);
            if answered.contains(&tag) {
                continue;
            }
            answered.insert(tag);
            let ring = self.ring_of(&req.network);
            // Hold our allocation set while splitting, so an allocation here
            // cannot take an address we are giving away.
            let used = self.lock_used();
            let mine = used.get(&req.network).cloned().unwrap_or_default();
            match ipam::plan_grant(&ring, &me, &mine, &req.from, req.want) {
                Some(entries) => {
                    self.write_ranges(entries);
                    info!(network = %req.network, to = %self.peer_name(&req.from), "granted address space");
                }
                None => {
                    warn!(network = %req.network, from = %self.peer_name(&req.from), "cannot grant the address space asked for")
                }
            }
            drop(used);
        }

        let gone = self.removed_peers();
        if gone.is_empty() {
            return;
        }
        // A removed host stays out: its connections are refused and it is
        // no longer dialed (it may rejoin only with a new identity).
        let ids: Vec<gossip::PeerId> = gone.iter().filter_map(|h| h.parse().ok()).collect();
        self.node.block_peers(&ids);
        let fallback = self.fallback_heir(&gone);
        let networks: BTreeSet<String> = replicated::live(&self.ring)
            .values()
            .map(|r| r.network.clone())
            .collect();
        for network in networks {
            let ring = self.ring_of(&network);
            let inherited: Vec<RangeEntry> = ipam::heirs(&ring, &gone, &fallback)
                .into_iter()
                .filter(|(_, heir)| *heir == me)
                .map(|(r, _)| RangeEntry {
                    owner: me.clone(),
                    ..r
                })
                .collect();
            if !inherited.is_empty() {
                info!(network = %network, ranges = inherited.len(), "inheriting the ranges of a removed host");
                self.write_ranges(inherited);
            }
        }
    }

    /// The heir of last resort when a removed host owned a whole ring: the
    /// lowest peer id among hosts not removed, as every host computes it.
    fn fallback_heir(&self, gone: &BTreeSet<String>) -> String {
        let mut ids: Vec<String> = self
            .node
            .members()
            .iter()
            .map(|m| m.id.to_hex())
            .chain(std::iter::once(self.id().to_hex()))
            .filter(|id| !gone.contains(id))
            .collect();
        ids.sort();
        ids.into_iter().next().unwrap_or_else(|| self.id().to_hex())
    }

    /// Writes ring entries as one delta, so no host sees half a split.
    fn write_ranges(&self, entries: Vec<RangeEntry>) {
        let me = self.id();
        self.ring.modify(|m| {
            let mut delta = gossip::LwwMap::new();
            for e in entries {
                gossip::Mergeable::merge(&mut delta, &m.set(me, e.key(), e));
            }
            delta
        });
    }

    pub(crate) fn init_ring(&self, net: &NetworkDef) {
        let first = ipam::initial_range(&net.id, net.subnet, &self.id().to_hex());
        self.write_ranges(vec![first]);
    }

    pub(crate) fn drop_ring(&self, network: &str) {
        for key in replicated::live(&self.ring)
            .iter()
            .filter(|(_, r)| r.network == network)
            .map(|(k, _)| k.clone())
        {
            replicated::remove(&self.ring, self.id(), &key);
        }
    }

    pub async fn reserve(&self, req: api::ReserveRequest) -> Result<api::Reservation, ApiError> {
        let net = self.network(&req.network)?;
        let me = self.id().to_hex();
        if !net.allows_host(&me) {
            return Err(ApiError::BadRequest(format!(
                "network {} is restricted to other hosts",
                net.id
            )));
        }
        let want = match req.ip.as_deref() {
            Some(t) => Some(
                crate::networks::parse_member_address(t, &net)
                    .map_err(ApiError::bad)?
                    .0,
            ),
            None => None,
        };
        let ip = self.allocate(&net, want).await?;
        let rec = crate::state::Reservation {
            network: net.id.clone(),
            ip,
            label: req.label.clone(),
        };
        let mut all = self.reservations.lock().await;
        all.push(rec);
        if let Err(e) = self.state.save_reservations(&all) {
            all.pop();
            self.release(&net.id, ip);
            return Err(ApiError::Internal(e));
        }
        drop(all);
        replicated::put(
            &self.endpoints,
            self.id(),
            &crate::networks::endpoint_key(&net.id, IpAddr::V4(ip)),
            crate::networks::EndpointRecord {
                network: net.id.clone(),
                ip: IpAddr::V4(ip),
                ip6: Some(net.ipv6_for(ip)),
                mac: String::new(),
                host: me,
                name: None,
                version: None,
            },
        );
        Ok(api::Reservation {
            network: net.id,
            ip: format!("{ip}/{}", net.subnet.prefix_len()),
            label: req.label,
        })
    }

    pub async fn release_reservation(
        &self,
        req: api::ReleaseRequest,
    ) -> Result<api::Reservation, ApiError> {
        let ip: Ipv4Addr = req
            .ip
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("{:?} is not an IPv4 address", req.ip)))?;
        let mut all = self.reservations.lock().await;
        let Some(pos) = all
            .iter()
            .position(|r| r.network == req.network && r.ip == ip)
        else {
            return Err(ApiError::NotFound(format!(
                "{ip} is not reserved on network {} by this host",
                req.network
            )));
        };
        let rec = all.remove(pos);
        self.state.save_reservations(&all)?;
        drop(all);
        replicated::remove(
            &self.endpoints,
            self.id(),
            &crate::networks::endpoint_key(&rec.network, IpAddr::V4(ip)),
        );
        self.release(&rec.network, ip);
        Ok(api::Reservation {
            network: rec.network,
            ip: ip.to_string(),
            label: rec.label,
        })
    }

    pub fn ipam_view(&self) -> Vec<api::IpamNetwork> {
        let endpoints = replicated::live(&self.endpoints);
        replicated::live(&self.networks)
            .values()
            .map(|net| {
                let allocs: Vec<&crate::networks::EndpointRecord> =
                    endpoints.values().filter(|e| e.network == net.id).collect();
                let used: BTreeSet<u32> = allocs
                    .iter()
                    .filter_map(|e| match e.ip {
                        IpAddr::V4(v4) => Some(u32::from(v4)),
                        _ => None,
                    })
                    .collect();
                api::IpamNetwork {
                    network: net.id.clone(),
                    subnet: net.subnet.to_string(),
                    ranges: self
                        .ring_of(&net.id)
                        .iter()
                        .map(|r| api::IpamRange {
                            start: Ipv4Addr::from(r.start).to_string(),
                            end: Ipv4Addr::from(r.end - 1).to_string(),
                            size: u64::from(r.len()),
                            used: used.range(r.start..r.end).count() as u64,
                            owner: r.owner[..r.owner.len().min(12)].to_string(),
                            owner_name: self.peer_name_or_self(&r.owner),
                        })
                        .collect(),
                    allocations: allocs
                        .iter()
                        .map(|e| api::IpamAllocation {
                            ip: e.ip.to_string(),
                            host: self.peer_name_or_self(&e.host),
                            name: e.name.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn peer_name_or_self(&self, hex: &str) -> String {
        if hex == self.id().to_hex() {
            self.settings.name.clone()
        } else {
            self.peer_name(hex)
        }
    }

    /// `meshctl peer rm`: the host is gone for good. Safe on any number of
    /// hosts at once: the removal is a mesh-wide fact, and who inherits its
    /// ranges is computed the same way everywhere.
    pub async fn remove_peer(&self, which: &str) -> Result<api::RemovePeerResponse, ApiError> {
        let members = self.node.members();
        let found: Vec<&gossip::Member> = members
            .iter()
            .filter(|m| m.name == which || m.id.to_hex().starts_with(which))
            .collect();
        let m = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(ApiError::NotFound(format!(
                    "no peer named or with id {which:?}"
                )))
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "{which:?} matches {} peers; give more of the id",
                    found.len()
                )))
            }
        };
        if m.state == gossip::PeerState::Up {
            return Err(ApiError::Conflict(format!(
                "peer {} is up; stop its meshd before removing it for good",
                m.name
            )));
        }
        let hex = m.id.to_hex();
        replicated::put(
            &self.removed,
            self.id(),
            &hex,
            RemovedPeer {
                id: hex.clone(),
                name: m.name.clone(),
                removed_by: self.id().to_hex(),
            },
        );
        // Its containers are gone with it.
        for (key, e) in replicated::live(&self.endpoints) {
            if e.host == hex {
                replicated::remove(&self.endpoints, self.id(), &key);
            }
        }
        Ok(api::RemovePeerResponse {
            removed: m.name.clone(),
        })
    }
}
