//! The edge of the mesh: how traffic gets in and out.
//!
//! - what is replicated (pools, floating IPs) is [`mesh_model::edge`],
//!   and its guards are in [`mesh_model::validate`],
//! - [`fip`]: who holds a floating IP and what may be associated (pure),
//! - [`hostaddr`]: this host's own address on a network (a veth on the
//!   bridge), and containers' default routes through it,
//! - [`table`]: the host's `<prefix>_edge` table (DNAT, masquerade),
//! - [`arp`]: answering ARP for the floating IPs held here,
//! - [`probe`]: probing an address before answering for it (a machine that
//!   is not a mesh host may own it),
//! - [`underlay`]: the underlay interfaces, and what this host advertises
//!   about its own (subnet, MAC),
//! - [`ops`]: the API operations,
//! - `schedule`: when the edge reconciles.
//!
//! [`Edge`] keeps the kernel in line with the records: on every change of
//! them, of the failure detector's verdicts and of the members, when a
//! network's devices are realised, at its own deadlines (a handover, a
//! re-probe) and on a slow tick.
//!
//! A host address exists on a network when this host exposes it, when the
//! network has egress (the containers' gateway), or when a floating IP
//! this host may hold fronts a service on it (the holder reaches the
//! targets from it, and SNATs to it so replies come back).

pub mod arp;
mod candidacy;
pub mod fip;
pub mod hostaddr;
pub mod ops;
pub mod probe;
mod schedule;
pub mod table;
pub mod underlay;

use gossip::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{info, warn};

use crate::alloc::Allocator;
use crate::attach::Attacher;
use crate::isolation::{EdgeOpenings, Isolation};
use crate::liveness::{Liveness, STALE_AFTER};
use crate::netdev::{format_mac, Netlink};
use crate::roster::Roster;
use crate::services::{HostsFn, Services};
use crate::state::{HostAddressState, StateDir};
use mesh_model::edge::{Fip, FipBindingRecord, FipPool, FipRecord, HOST_ADDRESS_MARK};
use mesh_model::networks;
use mesh_model::records::{self as rec, Channels, EndpointRecord, NetworkDef, Records};

pub use crate::liveness::HOLD_WINDOW;

pub use crate::roster::Member;

/// Sets (`Some`) or removes (`None`) an entry of this host's member
/// metadata.
pub type AdvertiseFn = Arc<dyn Fn(&str, Option<String>) + Send + Sync>;

/// What was installed last, so unchanged state costs nothing.
#[derive(Default)]
struct Programmed {
    nft: Option<String>,
    /// (namespace, interface) → gateway of the default route set there.
    routes: BTreeMap<(PathBuf, String), Ipv4Addr>,
    responders: BTreeMap<String, arp::Responder>,
}

pub struct Edge {
    me: PeerId,
    prefix: String,
    mtu: std::sync::Arc<crate::mtu::Mtus>,
    nl: Netlink,
    state: StateDir,
    underlay: Option<IpAddr>,
    pub pools: Records<FipPool>,
    pub fips: Records<FipRecord>,
    pub bindings: Records<FipBindingRecord>,
    channels: Channels,
    services: Arc<Services>,
    attacher: Arc<Attacher>,
    alloc: Arc<Allocator>,
    hosts: HostsFn,
    roster: Arc<Roster>,
    isolation: Arc<Isolation>,
    liveness: Arc<Liveness>,
    /// This host's addresses on networks, as in `host-addresses.json`.
    addresses: Mutex<Vec<HostAddressState>>,
    programmed: Mutex<Programmed>,
    handover: Mutex<fip::Handover>,
    /// This host's underlay interface, as last read.
    advert: Mutex<Vec<underlay::Advert>>,
    advertise: AdvertiseFn,
    /// Floating IPs this host would hold but found in use on the LAN.
    refusals: Mutex<probe::Refusals>,
    /// Where this host's operator permits floating IPs (`fip_pools`);
    /// a reload replaces it ([`Edge::set_fip_permits`]).
    fip_permits: Mutex<Vec<ipnet::Ipv4Net>>,
    /// The networks this host carries.
    carried: crate::carried::Carried,
    /// Serialises reconciling and the API operations.
    ops: tokio::sync::Mutex<()>,
    /// Moved by [`Edge::poke`]: a pass is due for a reason no channel
    /// carries.
    pokes: tokio::sync::watch::Sender<u64>,
}

/// What [`Edge::new`] needs from the daemon.
pub struct EdgeParts {
    pub me: PeerId,
    pub prefix: String,
    pub mtu: std::sync::Arc<crate::mtu::Mtus>,
    pub nl: Netlink,
    pub state: StateDir,
    /// This host's underlay address (its control address), if specific.
    pub underlay: Option<IpAddr>,
    pub pools: Records<FipPool>,
    pub fips: Records<FipRecord>,
    pub bindings: Records<FipBindingRecord>,
    pub channels: Channels,
    pub services: Arc<Services>,
    pub attacher: Arc<Attacher>,
    pub alloc: Arc<Allocator>,
    pub hosts: HostsFn,
    pub roster: Arc<Roster>,
    pub advertise: AdvertiseFn,
    /// This host's underlay interface as read at start.
    pub underlay_advert: Vec<underlay::Advert>,
    pub isolation: Arc<Isolation>,
    pub liveness: Arc<Liveness>,
    /// `fip_pools` from meshd.toml.
    pub fip_permits: Vec<ipnet::Ipv4Net>,
    pub carried: crate::carried::Carried,
}

impl Edge {
    pub fn new(p: EdgeParts) -> anyhow::Result<Arc<Edge>> {
        let addresses = p.state.load_host_addresses()?;
        for a in &addresses {
            p.alloc.note_allocated(&a.network, a.ip);
        }
        Ok(Arc::new(Edge {
            me: p.me,
            prefix: p.prefix,
            mtu: p.mtu,
            nl: p.nl,
            state: p.state,
            underlay: p.underlay,
            pools: p.pools,
            fips: p.fips,
            bindings: p.bindings,
            channels: p.channels,
            services: p.services,
            attacher: p.attacher,
            alloc: p.alloc,
            hosts: p.hosts,
            roster: p.roster,
            isolation: p.isolation,
            liveness: p.liveness,
            addresses: Mutex::new(addresses),
            programmed: Mutex::new(Programmed::default()),
            handover: Mutex::new(fip::Handover::default()),
            advert: Mutex::new(p.underlay_advert),
            advertise: p.advertise,
            refusals: Mutex::new(probe::Refusals::default()),
            fip_permits: Mutex::new(p.fip_permits),
            carried: p.carried,
            ops: tokio::sync::Mutex::new(()),
            pokes: tokio::sync::watch::channel(0).0,
        }))
    }

    fn me_hex(&self) -> String {
        self.me.to_hex()
    }

    /// Whether `network` has egress (`network create --egress`, `network set`).
    fn egress(&self, network: &str) -> bool {
        self.channels.settings_of(network).egress
    }

    /// The device names host addresses use here (kept at start).
    pub fn device_names(&self) -> Vec<String> {
        self.addresses()
            .iter()
            .flat_map(|a| {
                let w = networks::wire_id(&a.network);
                [
                    hostaddr::host_ifname(&self.prefix, w),
                    hostaddr::bridge_port_name(&self.prefix, w),
                ]
            })
            .collect()
    }

    /// Endpoint keys of this host's addresses (backed, not stale).
    pub fn endpoint_keys(&self) -> Vec<String> {
        self.addresses()
            .iter()
            .map(|a| rec::endpoint_key(&a.network, IpAddr::V4(a.ip)))
            .collect()
    }

    /// The default gateway of containers on `network` here, if it has
    /// egress and this host's gateway address is up.
    pub fn egress_gateway(&self, network: &str) -> Option<Ipv4Addr> {
        if !self.egress(network) {
            return None;
        }
        self.addresses()
            .iter()
            .find(|a| a.network == network)
            .map(|a| a.ip)
    }

    fn addresses(&self) -> Vec<HostAddressState> {
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn save_addresses(&self, list: Vec<HostAddressState>) -> anyhow::Result<()> {
        self.state.save_host_addresses(&list)?;
        *self.addresses.lock().unwrap_or_else(|p| p.into_inner()) = list;
        Ok(())
    }

    /// Hosts heard from within [`STALE_AFTER`] (live) and within
    /// [`HOLD_WINDOW`] (supporting a holder); this host is both.
    fn views(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let now = Instant::now();
        let fresh = |within| {
            let mut s = self.liveness.fresh(within, now);
            s.insert(self.me_hex());
            s
        };
        (fresh(STALE_AFTER), fresh(HOLD_WINDOW))
    }

    /// The floating IPs with the associations in effect.
    fn effective(&self) -> BTreeMap<String, Fip> {
        fip::effective(&rec::live(&self.fips), &rec::live(&self.bindings))
    }

    /// Each floating IP and who holds it (or why nobody), as this host
    /// sees the mesh.
    fn holders(&self) -> BTreeMap<Ipv4Addr, Result<String, fip::NoHolder>> {
        self.holders_and_live().0
    }

    #[allow(clippy::type_complexity)]
    fn holders_and_live(
        &self,
    ) -> (
        BTreeMap<Ipv4Addr, Result<String, fip::NoHolder>>,
        BTreeSet<String>,
    ) {
        let pools = rec::live(&self.pools);
        let cands = self.candidates();
        let (live, support) = self.views();
        let holders = rec::live(&self.fips)
            .into_values()
            .map(|f| {
                (
                    f.addr,
                    fip::resolve(f.addr, &pools, &cands, &live, &support),
                )
            })
            .collect();
        (holders, live)
    }

    pub async fn reconcile(&self) {
        let _ops = self.ops.lock().await;
        self.reconcile_locked().await;
    }

    async fn reconcile_locked(&self) {
        // Only the networks that land here: a refused one has no bridge,
        // and an address on it would be the capture its refusal avoids.
        let networks: BTreeMap<String, NetworkDef> = self.carried.get().carried.clone();
        let me = self.me_hex();
        let (holders, live) = self.holders_and_live();
        let holders: BTreeMap<Ipv4Addr, Option<String>> =
            holders.into_iter().map(|(a, h)| (a, h.ok())).collect();
        let chosen = self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .step(&me, &holders, &live, Instant::now());
        let pools = rec::live(&self.pools);
        let (held, links) = self.probe_new(&pools, chosen).await;
        let fips = self.effective();
        // Networks behind a floating IP this host may hold.
        let cands = self.candidates();
        let fip_networks: BTreeSet<String> = fips
            .values()
            .filter(|f| {
                fip::pool_of(&pools, f.addr)
                    .is_some_and(|p| fip::candidates(p, &cands).iter().any(|c| c.id == me))
            })
            .flat_map(|f| f.bindings.iter().map(|b| b.network.clone()))
            .collect();
        let gateway = |n: &str| self.egress(n) || fip_networks.contains(n);
        self.sync_addresses(&networks, &gateway).await;

        let addresses = self.addresses();
        let ifname = |a: &HostAddressState| {
            hostaddr::host_ifname(&self.prefix, networks::wire_id(&a.network))
        };
        let egress: Vec<String> = addresses
            .iter()
            .filter(|a| self.egress(&a.network))
            .map(ifname)
            .collect();
        let openings = EdgeOpenings {
            egress: egress.clone(),
            exposed: addresses.iter().filter(|a| a.exposed).map(ifname).collect(),
        };
        if let Err(e) = self.isolation.set_edge(openings) {
            warn!("cannot open the isolation table for the edge: {e:#}");
        }
        if !held.is_empty() || !egress.is_empty() {
            if let Err(e) = hostaddr::enable_forwarding(&self.state) {
                warn!("cannot enable forwarding: {e:#}");
            }
        }
        let forwards = self.forwards(&fips, &held);
        let script = table::ruleset(
            &self.prefix,
            &held.iter().copied().collect::<Vec<_>>(),
            &forwards,
            &egress,
        );
        let changed = {
            let p = self.programmed.lock().unwrap_or_else(|p| p.into_inner());
            p.nft.as_ref() != Some(&script)
        };
        if changed {
            let text = script.clone();
            let ok = match tokio::task::spawn_blocking(move || table::apply(&text)).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    warn!("cannot install the edge table: {e:#}");
                    false
                }
                Err(e) => {
                    warn!("edge table task failed: {e}");
                    false
                }
            };
            self.programmed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .nft = ok.then_some(script);
        }
        self.answer_arp(&held, &links);
        self.sync_routes(&addresses).await;
    }

    /// Of the addresses the handover gives this host (`chosen`), those it
    /// answers for: the ones answered already, and the new ones an ARP
    /// probe finds free (see [`probe`]); with the interface of each.
    async fn probe_new(
        &self,
        pools: &BTreeMap<String, FipPool>,
        chosen: BTreeSet<Ipv4Addr>,
    ) -> (BTreeSet<Ipv4Addr>, BTreeMap<Ipv4Addr, arp::Underlay>) {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(&chosen);
        let mut links = BTreeMap::new();
        if chosen.is_empty() {
            self.advertise_refusals();
            return (chosen, links);
        }
        let ifs = match tokio::task::spawn_blocking(underlay::interfaces).await {
            Ok(Ok(ifs)) => ifs,
            Ok(Err(e)) => {
                warn!("cannot list interfaces: {e:#}");
                Vec::new()
            }
            Err(e) => {
                warn!("interfaces task failed: {e}");
                Vec::new()
            }
        };
        for addr in &chosen {
            let Some(pool) = fip::pool_of(pools, *addr) else {
                continue;
            };
            match underlay::on_link(&ifs, &pool.cidr) {
                Some(u) => {
                    links.insert(*addr, u.clone());
                }
                None => warn!(%addr, "no interface of this host has pool {} on link", pool.cidr),
            }
        }
        let answered: BTreeSet<Ipv4Addr> = {
            let p = self.programmed.lock().unwrap_or_else(|p| p.into_inner());
            p.responders.values().flat_map(|r| r.held()).collect()
        };
        let now = Instant::now();
        let mut held = BTreeSet::new();
        let mut to_probe: BTreeMap<String, (arp::Underlay, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
        // Addresses that are never a floating IP, whatever a replicated
        // pool says: this host's gateways (a gateway may be down when
        // probed) and the mesh hosts' own addresses (the probe ignores the
        // mesh's MACs, so it would not see them).
        let protected = self.protected_addresses(&ifs);
        {
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            for addr in &chosen {
                if let Some(what) = protected.get(addr) {
                    if refusals.get(*addr).is_none() {
                        warn!(%addr, "floating IP is {what}; not answering for it");
                    }
                    refusals.refuse(*addr, [0; 6], now);
                    continue;
                }
                match links.get(addr) {
                    Some(_) if answered.contains(addr) => {
                        held.insert(*addr);
                    }
                    Some(u) if refusals.due(*addr, now) => {
                        to_probe
                            .entry(u.name.clone())
                            .or_insert_with(|| (u.clone(), BTreeSet::new()))
                            .1
                            .insert(*addr);
                    }
                    Some(_) => {} // in use when last probed; not yet due
                    // Not answered on any interface; DNAT it all the same.
                    None => {
                        held.insert(*addr);
                    }
                }
            }
        }
        if !to_probe.is_empty() {
            let mesh = self.mesh_macs();
            let found = tokio::task::spawn_blocking(move || {
                to_probe
                    .into_values()
                    .map(|(u, addrs)| {
                        let r = probe::probe(&u, &addrs, &mesh);
                        (u, addrs, r)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| {
                // Nothing claimed this round; probed again at the next.
                warn!("probe task failed: {e}");
                Vec::new()
            });
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            for (u, addrs, r) in found {
                let in_use = match r {
                    Ok(in_use) => in_use,
                    Err(e) => {
                        // As before probing existed: claim it.
                        warn!(interface = %u.name, "cannot probe for floating IPs; claiming them unprobed: {e:#}");
                        BTreeMap::new()
                    }
                };
                for addr in addrs {
                    match in_use.get(&addr) {
                        Some(mac) => {
                            let retry = refusals.refuse(addr, *mac, now);
                            warn!(%addr, mac = %format_mac(mac), interface = %u.name, ?retry,
                                "floating IP in use on the LAN by a machine that is not a mesh host; not answering for it");
                        }
                        None => {
                            if refusals.clear(addr) {
                                info!(%addr, "floating IP no longer in use on the LAN");
                            }
                            held.insert(addr);
                        }
                    }
                }
            }
        }
        self.advertise_refusals();
        (held, links)
    }

    fn advertise_refusals(&self) {
        let meta = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .meta();
        (self.advertise)(probe::META_FIPS_IN_USE, meta);
    }

    /// Creates the host addresses wanted and missing, removes the others.
    async fn sync_addresses(
        &self,
        networks: &BTreeMap<String, NetworkDef>,
        gateway: &(dyn Fn(&str) -> bool + Sync),
    ) {
        let mut list = self.addresses();
        let before = list.clone();
        // Networks gone, or neither exposed nor needing a gateway.
        let mut keep = Vec::new();
        for a in list.drain(..) {
            if networks.contains_key(&a.network) && (a.exposed || gateway(&a.network)) {
                keep.push(a);
            } else {
                self.drop_address(&a).await;
            }
        }
        list = keep;
        for net in networks.values() {
            if gateway(&net.id) && !list.iter().any(|a| a.network == net.id) {
                match self.allocate(net).await {
                    Ok(ip) => list.push(HostAddressState {
                        network: net.id.clone(),
                        ip,
                        exposed: false,
                    }),
                    Err(e) => warn!(network = %net.id, "no host address for the gateway: {e}"),
                }
            }
        }
        if list != before {
            if let Err(e) = self.save_addresses(list.clone()) {
                warn!("cannot save the host addresses: {e:#}");
            }
        }
        for a in &list {
            if let Some(net) = networks.get(&a.network) {
                if let Err(e) = self.plumb(net, a).await {
                    warn!(network = %a.network, "cannot set up the host address: {e:#}");
                }
            }
        }
    }

    async fn allocate(&self, net: &NetworkDef) -> Result<Ipv4Addr, crate::error::ApiError> {
        let hosts = (self.hosts)();
        Ok(self.alloc.allocate(net, None, &*hosts).await?)
    }

    /// The devices and the endpoint record of one host address.
    async fn plumb(&self, net: &NetworkDef, a: &HostAddressState) -> anyhow::Result<()> {
        let w = networks::wire_id(&net.id);
        let x = hostaddr::host_ifname(&self.prefix, w);
        let key = rec::endpoint_key(&net.id, IpAddr::V4(a.ip));
        let existing = rec::get(&self.channels.endpoints, &key);
        let mac = match self.nl.link(&x).await? {
            Some(l)
                if existing.is_some()
                    && self
                        .nl
                        .link(&hostaddr::bridge_port_name(&self.prefix, w))
                        .await?
                        .is_some() =>
            {
                l.mac
            }
            _ => Some(
                hostaddr::ensure(
                    &self.nl,
                    &self.prefix,
                    w,
                    self.mtu.of(&net.id),
                    a.ip,
                    net.subnet.prefix_len(),
                )
                .await?,
            ),
        };
        let record = EndpointRecord {
            network: net.id.clone(),
            ip: IpAddr::V4(a.ip),
            ip6: None,
            mac: mac.map(|m| format_mac(&m)).unwrap_or_default(),
            host: self.me_hex(),
            name: None,
            version: Some(HOST_ADDRESS_MARK.into()),
        };
        if existing.as_ref() != Some(&record) {
            rec::put(&self.channels.endpoints, self.me, &key, record);
            info!(network = %net.id, ip = %a.ip, "host address ready");
        }
        Ok(())
    }

    async fn drop_address(&self, a: &HostAddressState) {
        if let Err(e) =
            hostaddr::remove(&self.nl, &self.prefix, networks::wire_id(&a.network)).await
        {
            warn!(network = %a.network, "cannot remove the host address's devices: {e:#}");
        }
        rec::remove(
            &self.channels.endpoints,
            self.me,
            &rec::endpoint_key(&a.network, IpAddr::V4(a.ip)),
        );
        self.alloc.release(&a.network, a.ip);
        info!(network = %a.network, ip = %a.ip, "host address removed");
    }

    /// The DNAT of each floating IP held here: per binding, the service's
    /// (first) port and its targets in rotation.
    fn forwards(
        &self,
        fips: &BTreeMap<String, Fip>,
        held: &BTreeSet<Ipv4Addr>,
    ) -> Vec<table::Forward> {
        let snap = self.services.snapshot();
        let facts = snap.facts();
        let mut out = Vec::new();
        for f in fips.values().filter(|f| held.contains(&f.addr)) {
            for b in &f.bindings {
                let Ok(def) = self.services.find(&b.service, Some(&b.network)) else {
                    continue;
                };
                let Some(port) = def.ports.first() else {
                    continue;
                };
                let targets = crate::services::sync::frontends(&def, &facts)
                    .into_iter()
                    .find(|fe| fe.port == port.port && fe.protocol == port.protocol)
                    .map(|fe| fe.backends.iter().map(|be| (be.ip, be.port)).collect())
                    .unwrap_or_default();
                out.push(table::Forward {
                    fip: f.addr,
                    port: b.public_port,
                    protocol: port.protocol,
                    targets,
                });
            }
        }
        out
    }

    /// One ARP responder per underlay interface with addresses held here.
    fn answer_arp(&self, held: &BTreeSet<Ipv4Addr>, links: &BTreeMap<Ipv4Addr, arp::Underlay>) {
        let mut per_if: BTreeMap<String, (arp::Underlay, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
        for addr in held {
            if let Some(u) = links.get(addr) {
                per_if
                    .entry(u.name.clone())
                    .or_insert_with(|| (u.clone(), BTreeSet::new()))
                    .1
                    .insert(*addr);
            }
        }
        let mut p = self.programmed.lock().unwrap_or_else(|p| p.into_inner());
        p.responders
            .retain(|name, r| per_if.get(name).is_some_and(|(u, _)| *u == r.underlay));
        for (name, (u, addrs)) in per_if {
            if !p.responders.contains_key(&name) {
                match arp::Responder::start(u) {
                    Ok(r) => {
                        p.responders.insert(name.clone(), r);
                    }
                    Err(e) => {
                        warn!("cannot answer ARP on {name}: {e:#}");
                        continue;
                    }
                }
            }
            let r = &p.responders[&name];
            let new: Vec<Ipv4Addr> = addrs.difference(&r.held()).copied().collect();
            r.set(addrs);
            for addr in new {
                info!(%addr, interface = %name, "took floating IP over");
            }
        }
    }

    /// Containers on egress networks route by default through their host.
    async fn sync_routes(&self, addresses: &[HostAddressState]) {
        let mut desired: BTreeMap<(PathBuf, String), Ipv4Addr> = BTreeMap::new();
        for r in self.attacher.records() {
            let a = &r.attachment;
            if !self.egress(&a.network) || crate::attach::is_macvlan(&r) {
                continue;
            }
            if let Some(h) = addresses.iter().find(|h| h.network == a.network) {
                desired
                    .entry((PathBuf::from(&a.netns), a.ifname.clone()))
                    .or_insert(h.ip);
            }
        }
        let programmed = self
            .programmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routes
            .clone();
        let mut now = programmed.clone();
        for (k, gw) in &desired {
            if programmed.get(k) == Some(gw) {
                continue;
            }
            let (ns, ifname, gw) = (k.0.clone(), k.1.clone(), *gw);
            match tokio::task::spawn_blocking(move || {
                hostaddr::set_default_route(&ns, &ifname, Some(gw), None)
            })
            .await
            {
                Ok(Ok(())) => {
                    now.insert(k.clone(), gw);
                }
                Ok(Err(e)) => warn!("cannot set a container's default route: {e:#}"),
                Err(e) => warn!("route task failed: {e}"),
            }
        }
        for (k, old) in programmed.iter().filter(|(k, _)| !desired.contains_key(*k)) {
            let (ns, ifname, old) = (k.0.clone(), k.1.clone(), *old);
            // The namespace may be gone with its container: nothing to undo.
            let _ = tokio::task::spawn_blocking(move || {
                hostaddr::set_default_route(&ns, &ifname, None, Some(old))
            })
            .await;
            now.remove(k);
        }
        self.programmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routes = now;
    }
}

/// `meshd --cleanup`: the edge table goes (its devices go with the others).
pub fn cleanup(prefix: &str) -> anyhow::Result<()> {
    table::remove(prefix)
}
