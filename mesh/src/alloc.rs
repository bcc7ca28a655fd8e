//! The allocator: this host's share of address allocation. It owns the
//! ring and request channels and this host's allocations, asks an owner for
//! space when ours is full, answers such requests, and inherits the ranges
//! of hosts removed for good. The rules are plain functions in
//! [`mesh_model::ipam`]; who is up and what hosts are called comes from a
//! [`Members`].

use gossip::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tracing::{info, warn};

use crate::error::ApiError;
use mesh_model::hosts::Members;
use mesh_model::ipam;
use mesh_model::records::{
    self, Channels, EndpointRecord, NetworkDef, RangeEntry, Records, RemovedPeer, SpaceRequest,
    Want,
};

/// How long an allocation waits for another host to grant space.
pub const GRANT_TIMEOUT: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("address {ip} is not allocatable in network {network}")]
    NotAllocatable { ip: Ipv4Addr, network: String },
    #[error("address {ip} is already in use on network {network}")]
    InUse { ip: Ipv4Addr, network: String },
    #[error("no free address on network {network} that this host may give out: the space belongs to host {owner} which is not reachable now")]
    OwnerUnreachable { network: String, owner: String },
    #[error("network {network} has no free addresses left on any reachable host")]
    Exhausted { network: String },
    #[error("host {owner} did not grant address space on network {network} within {secs}s")]
    NotGranted {
        owner: String,
        network: String,
        secs: u64,
    },
    #[error("network {network} has no address ranges yet")]
    NoRanges { network: String },
}

impl AllocError {
    /// Whether the request itself was wrong (rather than the mesh's state).
    pub fn is_invalid_request(&self) -> bool {
        matches!(self, AllocError::NotAllocatable { .. })
    }
}

/// A wrong request is the caller's error; the rest are conflicts with the
/// mesh's state.
impl From<AllocError> for ApiError {
    fn from(e: AllocError) -> ApiError {
        if e.is_invalid_request() {
            ApiError::BadRequest(e.to_string())
        } else {
            ApiError::Conflict(e.to_string())
        }
    }
}

/// Key of an answered request: network, asking host, sequence number.
type Answered = (String, String, u64);

pub struct Allocator {
    me: PeerId,
    me_hex: String,
    ring: Records<RangeEntry>,
    requests: Records<SpaceRequest>,
    /// Read only: addresses in use on any host.
    endpoints: Records<EndpointRecord>,
    /// Read only: hosts whose ranges are inherited.
    removed: Records<RemovedPeer>,
    /// This host's allocations per network. A sync lock: allocating and
    /// granting never wait while holding it.
    used: Mutex<BTreeMap<String, BTreeSet<u32>>>,
    answered: Mutex<BTreeSet<Answered>>,
    grant_timeout: Duration,
}

impl Allocator {
    pub fn new(me: PeerId, channels: &Channels) -> Allocator {
        Allocator {
            me,
            me_hex: me.to_hex(),
            ring: channels.ring.clone(),
            requests: channels.requests.clone(),
            endpoints: channels.endpoints.clone(),
            removed: channels.removed.clone(),
            used: Mutex::default(),
            answered: Mutex::default(),
            grant_timeout: GRANT_TIMEOUT,
        }
    }

    /// How long [`Allocator::allocate`] waits for a grant.
    pub fn with_grant_timeout(mut self, t: Duration) -> Allocator {
        self.grant_timeout = t;
        self
    }

    /// The ranges of one network, sorted by start.
    pub fn ring_of(&self, network: &str) -> Vec<RangeEntry> {
        ipam::ranges(records::live(&self.ring).values(), network)
    }

    fn lock_used(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<u32>>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_use(&self, network: &str) -> BTreeSet<u32> {
        records::used_addresses(records::live(&self.endpoints).values(), network)
    }

    /// Reserves an address: `want` if given (it must be free; if another
    /// host owns it, that host is asked to hand it over), else the lowest
    /// free address of this host's ranges, asking the live host with the
    /// most free space when ours are full.
    pub async fn allocate(
        &self,
        net: &NetworkDef,
        want: Option<Ipv4Addr>,
        members: &dyn Members,
    ) -> Result<Ipv4Addr, AllocError> {
        let me = self.me_hex.clone();
        let network = net.id.clone();
        let mut changes = self.ring.subscribe();
        let deadline = tokio::time::Instant::now() + self.grant_timeout;
        let mut asked: Option<String> = None;
        let result = loop {
            let ring = self.ring_of(&network);
            let in_use = self.in_use(&network);
            let donor = {
                let mut used = self.lock_used();
                let mine = used.entry(network.clone()).or_default();
                match want {
                    None => {
                        let taken: BTreeSet<u32> = mine.union(&in_use).copied().collect();
                        if let Some(a) = ipam::pick_free(&ring, &me, &taken) {
                            mine.insert(a);
                            break Ok(Ipv4Addr::from(a));
                        }
                        best_donor(&ring, &in_use, &me, members)
                    }
                    Some(ip) => {
                        let a = u32::from(ip);
                        match ipam::owner_of(&ring, a) {
                            None if ring.is_empty() => None,
                            None => break Err(AllocError::NotAllocatable { ip, network }),
                            Some(_) if mine.contains(&a) || in_use.contains(&a) => {
                                break Err(AllocError::InUse { ip, network })
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
            if asked.is_none() && !ring.is_empty() {
                let Some(donor) = donor else {
                    break Err(AllocError::Exhausted { network });
                };
                if !members.is_live(&donor) {
                    break Err(AllocError::OwnerUnreachable {
                        network,
                        owner: members.name_of(&donor),
                    });
                }
                let req = SpaceRequest {
                    network: network.clone(),
                    from: me.clone(),
                    to: donor.clone(),
                    want: want
                        .map(|ip| Want::Addr(u32::from(ip)))
                        .unwrap_or(Want::Space),
                    seq: gossip::state::now_millis(),
                };
                records::put(
                    &self.requests,
                    self.me,
                    &records::request_key(&network, &me),
                    req,
                );
                asked = Some(donor);
            }
            // Else the network's first range is still on its way here.
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    break Err(match &asked {
                        Some(d) => AllocError::NotGranted {
                            owner: members.name_of(d),
                            network,
                            secs: self.grant_timeout.as_secs(),
                        },
                        None => AllocError::NoRanges { network },
                    })
                }
            }
        };
        if asked.is_some() {
            records::remove(&self.requests, self.me, &records::request_key(&net.id, &me));
        }
        result
    }

    pub fn release(&self, network: &str, ip: Ipv4Addr) {
        if let Some(set) = self.lock_used().get_mut(network) {
            set.remove(&u32::from(ip));
        }
    }

    /// Records an allocation made before (at start: attachments and
    /// reservations found on disk).
    pub fn note_allocated(&self, network: &str, ip: Ipv4Addr) {
        self.lock_used()
            .entry(network.to_string())
            .or_default()
            .insert(u32::from(ip));
    }

    pub fn is_allocated(&self, network: &str, ip: Ipv4Addr) -> bool {
        self.lock_used()
            .get(network)
            .is_some_and(|s| s.contains(&u32::from(ip)))
    }

    /// Answers requests addressed to this host, and takes over the ranges
    /// this host inherits from removed hosts. Run whenever the ring, the
    /// requests or the removals change.
    pub fn serve(&self, members: &dyn Members) {
        let me = &self.me_hex;
        for req in records::live(&self.requests).into_values() {
            if req.to != *me {
                continue;
            }
            let tag = (req.network.clone(), req.from.clone(), req.seq);
            if !self
                .answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tag)
            {
                continue;
            }
            let ring = self.ring_of(&req.network);
            // Hold our allocations while splitting, so an allocation here
            // cannot take an address we are giving away.
            let used = self.lock_used();
            let mut keep = used.get(&req.network).cloned().unwrap_or_default();
            // And every address a record names: a service VIP or an
            // attachment from before a restart is in the records, not in
            // `used`, and must stay in a range this host owns.
            keep.extend(self.in_use(&req.network));
            match ipam::plan_grant(&ring, me, &keep, &req.from, req.want) {
                Some(entries) => {
                    self.write_ranges(entries);
                    info!(network = %req.network, to = %members.name_of(&req.from), "granted address space");
                }
                None => {
                    warn!(network = %req.network, from = %members.name_of(&req.from), "cannot grant the address space asked for")
                }
            }
            drop(used);
        }

        let gone: BTreeSet<String> = records::live(&self.removed).into_keys().collect();
        if gone.is_empty() {
            return;
        }
        let fallback = fallback_heir(members, &gone);
        let networks: BTreeSet<String> = records::live(&self.ring)
            .values()
            .map(|r| r.network.clone())
            .collect();
        for network in networks {
            let ring = self.ring_of(&network);
            let inherited: Vec<RangeEntry> = ipam::heirs(&ring, &gone, &fallback)
                .into_iter()
                .filter(|(_, heir)| heir == me)
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

    /// Writes ring entries as one delta, so no host sees half a split.
    fn write_ranges(&self, entries: Vec<RangeEntry>) {
        let me = self.me;
        self.ring.modify(|m| {
            let mut delta = gossip::LwwMap::new();
            for e in entries {
                gossip::Mergeable::merge(&mut delta, &m.set(me, e.key(), e));
            }
            delta
        });
    }

    /// The first range of a network this host creates: all of its space.
    pub fn init_ring(&self, net: &NetworkDef) {
        self.write_ranges(vec![ipam::initial_range(&net.id, net.subnet, &self.me_hex)]);
    }

    pub fn drop_ring(&self, network: &str) {
        for key in records::live(&self.ring)
            .iter()
            .filter(|(_, r)| r.network == network)
            .map(|(k, _)| k.clone())
        {
            records::remove(&self.ring, self.me, &key);
        }
    }
}

/// The live host (not us) with the most free addresses; else an
/// unreachable one, so the error can say who has the space.
fn best_donor(
    ring: &[RangeEntry],
    in_use: &BTreeSet<u32>,
    me: &str,
    members: &dyn Members,
) -> Option<String> {
    let free = ipam::free_by_owner(ring, in_use);
    let most = |live_only: bool| {
        free.iter()
            .filter(|(owner, n)| *owner != me && **n > 0 && (!live_only || members.is_live(owner)))
            .max_by_key(|(_, n)| **n)
            .map(|(owner, _)| owner.clone())
    };
    most(true).or_else(|| most(false))
}

/// The heir of last resort when a removed host owned a whole ring: the
/// lowest id among hosts not removed, as every host computes it.
fn fallback_heir(members: &dyn Members, gone: &BTreeSet<String>) -> String {
    members
        .all()
        .into_iter()
        .filter(|id| !gone.contains(id))
        .min()
        .unwrap_or_else(|| members.me().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_model::hosts::{Host, HostSet};
    use std::sync::Arc;

    fn id(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    fn net() -> NetworkDef {
        NetworkDef {
            id: "blue".into(),
            subnet: "10.40.0.0/29".parse().unwrap(),
            subnet6: mesh_model::networks::derive_ula("blue"),
            created_by: id(1).to_hex(),
            labels: BTreeMap::new(),
            hosts: vec![],
            sealed_secrets: BTreeMap::new(),
        }
    }

    fn host(n: u8, up: bool) -> Host {
        Host {
            id: id(n).to_hex(),
            name: format!("h{n}"),
            up,
            meta: BTreeMap::new(),
        }
    }

    /// Host `me`'s view: the others with the given liveness.
    fn view(me: u8, others: &[(u8, bool)]) -> HostSet {
        HostSet::new(
            host(me, true),
            others.iter().map(|(n, up)| host(*n, *up)).collect(),
        )
    }

    struct Mesh {
        hosts: Vec<(Channels, Arc<Allocator>)>,
    }

    impl Mesh {
        fn new(n: u8) -> Mesh {
            Mesh {
                hosts: (1..=n)
                    .map(|i| {
                        let ch = Channels::detached();
                        let a =
                            Allocator::new(id(i), &ch).with_grant_timeout(Duration::from_secs(5));
                        (ch, Arc::new(a))
                    })
                    .collect(),
            }
        }

        fn sync(&self) {
            for a in &self.hosts {
                for b in &self.hosts {
                    a.0.sync_with(&b.0);
                }
            }
        }

        fn alloc(&self, i: usize) -> &Arc<Allocator> {
            &self.hosts[i].1
        }

        /// Host 2 allocates with its ranges empty; host 1 (the owner)
        /// serves, and gossip is played until the grant arrives.
        async fn allocate_granted_to_host_2(&self) -> Ipv4Addr {
            let (a, b) = (self.alloc(0).clone(), self.alloc(1).clone());
            let waiting =
                tokio::spawn(async move { b.allocate(&net(), None, &view(2, &[(1, true)])).await });
            loop {
                self.sync();
                a.serve(&view(1, &[(2, true)]));
                self.sync();
                if waiting.is_finished() {
                    return waiting.await.unwrap().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    #[tokio::test]
    async fn the_creator_allocates_lowest_first_and_reuses_released_addresses() {
        let m = Mesh::new(1);
        let a = m.alloc(0);
        a.init_ring(&net());
        let me = view(1, &[]);
        let first = a.allocate(&net(), None, &me).await.unwrap();
        let second = a.allocate(&net(), None, &me).await.unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 40, 0, 1));
        assert_eq!(second, Ipv4Addr::new(10, 40, 0, 2));
        a.release("blue", first);
        assert!(!a.is_allocated("blue", first));
        assert_eq!(a.allocate(&net(), None, &me).await.unwrap(), first);
        let e = a.allocate(&net(), Some(second), &me).await.unwrap_err();
        assert!(matches!(e, AllocError::InUse { .. }), "{e}");
        let outside = Ipv4Addr::new(10, 40, 0, 6); // the DNS service address
        let e = a.allocate(&net(), Some(outside), &me).await.unwrap_err();
        assert!(e.is_invalid_request(), "{e}");
    }

    #[tokio::test]
    async fn a_full_host_is_granted_space_by_the_owner() {
        let m = Mesh::new(2);
        m.alloc(0).init_ring(&net());
        m.sync();
        let a = m.alloc(0).clone();
        let got = m.allocate_granted_to_host_2().await;
        let ring = m.alloc(1).ring_of("blue");
        let owner = ipam::owner_of(&ring, u32::from(got)).unwrap();
        assert_eq!(owner.owner, id(2).to_hex(), "{ring:?}");
        // The request is withdrawn once answered.
        m.sync();
        assert!(records::live(&m.hosts[1].0.requests).is_empty());
        // The owner knows it gave the address away, and allocates elsewhere.
        let ring = a.ring_of("blue");
        assert_eq!(
            ipam::owner_of(&ring, u32::from(got)).unwrap().owner,
            id(2).to_hex()
        );
        let mine = a
            .allocate(&net(), None, &view(1, &[(2, true)]))
            .await
            .unwrap();
        assert_ne!(mine, got);
    }

    #[tokio::test]
    async fn a_grant_keeps_addresses_records_name_that_were_not_noted() {
        // Host 1 restarted: its service VIP is in the records, not in
        // `used`. Host 2's request for space must not take it.
        let m = Mesh::new(2);
        m.alloc(0).init_ring(&net());
        let vip = Ipv4Addr::new(10, 40, 0, 5);
        records::put(
            &m.hosts[0].0.endpoints,
            id(1),
            &records::endpoint_key("blue", vip.into()),
            EndpointRecord {
                network: "blue".into(),
                ip: vip.into(),
                ip6: Some(net().ipv6_for(vip)),
                mac: String::new(),
                host: id(1).to_hex(),
                name: None,
                version: Some("vip:web".into()),
            },
        );
        m.sync();
        let a = m.alloc(0).clone();
        let got = m.allocate_granted_to_host_2().await;
        assert_ne!(got, vip);
        let ring = a.ring_of("blue");
        let owner = ipam::owner_of(&ring, u32::from(vip)).unwrap();
        assert_eq!(owner.owner, id(1).to_hex(), "{ring:?}");
    }

    #[tokio::test]
    async fn space_owned_by_a_host_that_is_down_is_an_error_naming_it() {
        let m = Mesh::new(2);
        m.alloc(0).init_ring(&net());
        m.sync();
        let e = m
            .alloc(1)
            .allocate(&net(), None, &view(2, &[(1, false)]))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            AllocError::OwnerUnreachable {
                network: "blue".into(),
                owner: "h1".into()
            }
        );
        assert!(e.to_string().contains("h1"), "{e}");
    }

    #[tokio::test]
    async fn an_exhausted_network_says_so() {
        let m = Mesh::new(1);
        let a = m.alloc(0);
        a.init_ring(&net());
        let me = view(1, &[]);
        // A /29 has 5 allocatable addresses (.1-.5; .6 serves DNS).
        for _ in 0..5 {
            a.allocate(&net(), None, &me).await.unwrap();
        }
        let e = a.allocate(&net(), None, &me).await.unwrap_err();
        assert!(matches!(e, AllocError::Exhausted { .. }), "{e}");
    }

    #[tokio::test]
    async fn no_ring_yet_times_out_with_a_clear_error() {
        let ch = Channels::detached();
        let a = Allocator::new(id(1), &ch).with_grant_timeout(Duration::from_millis(50));
        let e = a.allocate(&net(), None, &view(1, &[])).await.unwrap_err();
        assert!(matches!(e, AllocError::NoRanges { .. }), "{e}");
    }

    #[test]
    fn the_ranges_of_a_removed_host_go_to_one_heir() {
        let m = Mesh::new(2);
        m.alloc(0).init_ring(&net());
        m.sync();
        records::put(
            &m.hosts[1].0.removed,
            id(2),
            &id(1).to_hex(),
            RemovedPeer {
                id: id(1).to_hex(),
                name: "h1".into(),
                removed_by: id(2).to_hex(),
            },
        );
        m.alloc(1).serve(&view(2, &[(1, false)]));
        let ring = m.alloc(1).ring_of("blue");
        assert!(!ring.is_empty());
        assert!(ring.iter().all(|r| r.owner == id(2).to_hex()), "{ring:?}");
    }

    #[test]
    fn dropping_a_ring_removes_every_range() {
        let m = Mesh::new(1);
        m.alloc(0).init_ring(&net());
        assert_eq!(m.alloc(0).ring_of("blue").len(), 1);
        m.alloc(0).drop_ring("blue");
        assert!(m.alloc(0).ring_of("blue").is_empty());
    }

    #[test]
    fn allocation_errors_keep_their_kind() {
        let bad = ApiError::from(AllocError::NotAllocatable {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            network: "n".into(),
        });
        assert!(matches!(bad, ApiError::BadRequest(_)));
        let busy = ApiError::from(AllocError::Exhausted {
            network: "n".into(),
        });
        assert!(matches!(busy, ApiError::Conflict(_)));
    }
}
