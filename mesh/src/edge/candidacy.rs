//! Which hosts may hold floating IPs: the members with the underlay
//! subnets they advertise, this host's own adverts (re-read from the
//! kernel), and the MACs and refusals the ARP probe weighs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use tracing::{info, warn};

use super::fip::Candidate;
use super::{probe, underlay, Edge};
use crate::netdev::format_mac;

impl Edge {
    /// Where this host's operator permits floating IPs now.
    pub fn fip_permits(&self) -> Vec<ipnet::Ipv4Net> {
        self.fip_permits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// New `fip_pools` (a reload): advertised to the mesh, whose hosts
    /// weigh this host's candidacy by them, and a pass is due here.
    pub fn set_fip_permits(&self, permits: Vec<ipnet::Ipv4Net>) {
        let meta = underlay::permits_meta(&permits).map(|(_, v)| v);
        *self.fip_permits.lock().unwrap_or_else(|p| p.into_inner()) = permits;
        (self.advertise)(underlay::META_FIP_POOLS, meta);
        self.poke();
    }

    /// Every host that is not removed, with its underlay address and
    /// subnet.
    pub(super) fn candidates(&self) -> Vec<Candidate> {
        let removed = self.channels.removed_hosts();
        let mut out: Vec<Candidate> = self
            .roster
            .members()
            .iter()
            .filter(|m| !removed.contains(&m.id))
            .filter_map(|m| {
                let subnets = underlay::advertised_nets(&m.meta);
                let permits = underlay::advertised_permits(&m.meta);
                let underlay = match m.addr {
                    IpAddr::V4(v4) => v4,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                };
                // Without subnets only the address can tell (older hosts).
                (!subnets.is_empty() || !underlay.is_unspecified()).then_some(Candidate {
                    id: m.id.clone(),
                    underlay,
                    subnets,
                    permits,
                })
            })
            .collect();
        let own = self.own_advert();
        let me = match self.underlay {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => own.first().map(|a| a.net.addr()),
        };
        if let Some(me) = me {
            out.push(Candidate {
                id: self.me_hex(),
                underlay: me,
                subnets: own.iter().map(|a| a.net).collect(),
                permits: self.fip_permits(),
            });
        }
        out
    }

    /// Addresses this host never answers for as floating IPs, with what
    /// each is: its gateways, its own interfaces' addresses, and every mesh
    /// host's underlay address.
    pub(super) fn protected_addresses(
        &self,
        ifs: &[underlay::Interface],
    ) -> BTreeMap<Ipv4Addr, &'static str> {
        let mut out = BTreeMap::new();
        for c in self.candidates() {
            out.insert(c.underlay, "a mesh host's address");
            for net in c.subnets {
                out.insert(net.addr(), "a mesh host's address");
            }
        }
        for i in ifs {
            for a in &i.addrs {
                out.insert(a.addr(), "this host's own address");
            }
        }
        match crate::kernel::routes::gateways() {
            Ok(gws) => {
                for gw in gws {
                    if let IpAddr::V4(v4) = gw {
                        out.insert(v4, "this host's gateway");
                    }
                }
            }
            Err(e) => warn!(
                "cannot read the routes, so gateways are not protected from floating IPs: {e}"
            ),
        }
        out.remove(&Ipv4Addr::UNSPECIFIED);
        out
    }

    pub(super) fn own_advert(&self) -> Vec<underlay::Advert> {
        self.advert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The underlay MACs of the mesh's hosts: their ARP answers are no
    /// conflict when probing.
    pub(super) fn mesh_macs(&self) -> BTreeSet<[u8; 6]> {
        self.roster
            .members()
            .iter()
            .flat_map(|m| underlay::advertised_macs(&m.meta))
            .chain(self.own_advert().iter().map(|a| a.mac))
            .collect()
    }

    /// The MAC that host `id` found answering for `addr` when it probed,
    /// if it refused to hold it.
    pub(super) fn in_use(&self, id: &str, addr: Ipv4Addr) -> Option<[u8; 6]> {
        if id == self.me_hex() {
            let r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            return r.get(addr).map(|r| r.mac);
        }
        let members = self.roster.members();
        let m = members.iter().find(|m| m.id == id)?;
        probe::parse_meta(m.meta.get(probe::META_FIPS_IN_USE)?)
            .get(&addr)
            .copied()
    }

    /// Re-reads this host's underlay interface and advertises its subnet
    /// and MAC when they changed. Returns whether it could be read.
    pub(super) async fn refresh_advert(&self) -> bool {
        let ip = match self.underlay {
            Some(IpAddr::V4(ip)) => Some(ip),
            Some(IpAddr::V6(_)) => return true, // floating IPs are IPv4
            None => None,                       // a wildcard listen address
        };
        let prefix = self.prefix.clone();
        let read = move || underlay::adverts_for(ip, &prefix);
        let adverts = match tokio::task::spawn_blocking(read).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                warn!("cannot read the underlay interfaces: {e:#}");
                return false;
            }
            Err(e) => {
                warn!("underlay task failed: {e}");
                return false;
            }
        };
        let old = std::mem::replace(
            &mut *self.advert.lock().unwrap_or_else(|p| p.into_inner()),
            adverts.clone(),
        );
        if old == adverts {
            return true;
        }
        if adverts.is_empty() {
            warn!(?ip, "no underlay interface found to advertise");
        }
        for a in &adverts {
            info!(subnet = %a.net, mac = %format_mac(&a.mac), "underlay interface");
        }
        for (k, v) in underlay::meta(&adverts) {
            (self.advertise)(k, (!adverts.is_empty()).then_some(v));
        }
        // This host's own candidacy changed.
        self.poke();
        true
    }
}
