//! The API operations of the edge and their views. Each checks everything
//! first and then writes one record, so bad input changes nothing.

use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::fip::{self, FipError};
use super::{hostaddr, probe, underlay, Edge};
use crate::api;
use crate::error::ApiError;
use crate::netdev::format_mac;
use crate::state::HostAddressState;
use mesh_model::edge::{
    binding_key, fip_key, pool_key, Fip, FipBinding, FipBindingRecord, FipPool, FipRecord,
};
use mesh_model::networks;
use mesh_model::records::{self as rec, NetworkDef};

impl From<FipError> for ApiError {
    fn from(e: FipError) -> ApiError {
        match e {
            FipError::NotInPool(_) => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Conflict(e.to_string()),
        }
    }
}

/// Free addresses `fip create` without an address probes before it gives
/// up (each probe takes [`probe::PROBE_WAIT`]).
const PICK_TRIES: usize = 4;

fn parse_addr(s: &str) -> Result<Ipv4Addr, ApiError> {
    s.trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{s:?} is not an IPv4 address")))
}

fn parse_pool(s: &str) -> Result<Ipv4Net, ApiError> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{s:?} is not an IPv4 CIDR (ADDR/LEN)")))?;
    if net.trunc() != net {
        return Err(ApiError::BadRequest(format!(
            "{net} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

impl Edge {
    fn network_here(&self, id: &str) -> Result<NetworkDef, ApiError> {
        let net =
            rec::get(&self.channels.networks, id).ok_or_else(|| ApiError::network_not_found(id))?;
        if !net.allows_host(&self.me_hex()) {
            return Err(ApiError::BadRequest(format!(
                "network {id} is restricted to other hosts; this host is not one of them"
            )));
        }
        if let Some(why) = self.carried.get().refused.get(id) {
            return Err(ApiError::Conflict(format!(
                "network {id} is not carried on this host: {why}"
            )));
        }
        Ok(net)
    }

    fn address_view(&self, a: &HostAddressState) -> api::HostAddress {
        let len = rec::get(&self.channels.networks, &a.network)
            .map(|n| n.subnet.prefix_len())
            .unwrap_or(32);
        api::HostAddress {
            network: a.network.clone(),
            ip: format!("{}/{len}", a.ip),
            interface: hostaddr::host_ifname(&self.prefix, networks::wire_id(&a.network)),
            exposed: a.exposed,
            gateway: !a.exposed || self.egress(&a.network),
        }
    }

    /// `meshctl status`: this host's addresses on networks.
    pub fn host_addresses(&self) -> Vec<api::HostAddress> {
        self.addresses()
            .iter()
            .map(|a| self.address_view(a))
            .collect()
    }

    fn set_exposed(&self, network: &str, exposed: bool) -> Result<(), ApiError> {
        let mut list = self.addresses();
        if let Some(a) = list.iter_mut().find(|a| a.network == network) {
            a.exposed = exposed;
        }
        self.save_addresses(list).map_err(ApiError::Internal)
    }

    /// `meshctl expose NET`: an address of this host's own on NET.
    pub async fn expose(&self, network: &str) -> Result<api::HostAddress, ApiError> {
        let net = self.network_here(network)?;
        let _ops = self.ops.lock().await;
        if !self.addresses().iter().any(|a| a.network == net.id) {
            let ip = self.allocate(&net).await?;
            let mut list = self.addresses();
            list.push(HostAddressState {
                network: net.id.clone(),
                ip,
                exposed: true,
            });
            self.save_addresses(list).map_err(ApiError::Internal)?;
        } else {
            self.set_exposed(&net.id, true)?;
        }
        self.reconcile_locked().await;
        self.poke();
        let w = networks::wire_id(&net.id);
        let plumbed = self
            .nl
            .link(&hostaddr::host_ifname(&self.prefix, w))
            .await
            .map_err(ApiError::Internal)?
            .is_some();
        let found = self.addresses().into_iter().find(|a| a.network == net.id);
        match found {
            Some(a) if plumbed => Ok(self.address_view(&a)),
            _ => {
                // Undo: the address goes unless a gateway still needs it.
                self.set_exposed(&net.id, false)?;
                self.reconcile_locked().await;
                self.poke();
                Err(ApiError::Internal(anyhow::anyhow!(
                    "network {} has no bridge on this host yet; see the meshd log",
                    net.id
                )))
            }
        }
    }

    /// `meshctl hide NET`.
    pub async fn hide(&self, network: &str) -> Result<api::HostAddress, ApiError> {
        let _ops = self.ops.lock().await;
        let Some(mut a) = self
            .addresses()
            .into_iter()
            .find(|a| a.network == network && a.exposed)
        else {
            return Err(ApiError::NotFound(format!(
                "this host does not expose network {network:?}"
            )));
        };
        self.set_exposed(network, false)?;
        self.reconcile_locked().await;
        self.poke();
        a.exposed = false;
        Ok(self.address_view(&a))
    }

    fn pool_view(&self, p: &FipPool) -> api::FipPool {
        let fips = rec::live(&self.fips)
            .values()
            .filter(|f| p.cidr.contains(&f.addr))
            .count();
        let cands = self.candidates();
        api::FipPool {
            cidr: p.cidr.to_string(),
            fips,
            hosts: fip::candidates(p, &cands)
                .iter()
                .map(|c| self.host_name(&c.id))
                .collect(),
        }
    }

    fn host_name(&self, id: &str) -> String {
        let hosts = (self.hosts)();
        if hosts.this_host().id == id {
            return hosts.this_host().name.clone();
        }
        hosts
            .peer(id)
            .map(|h| h.name.clone())
            .unwrap_or_else(|| mesh_model::hosts::short_id(id).to_string())
    }

    pub fn list_pools(&self) -> Vec<api::FipPool> {
        rec::live(&self.pools)
            .values()
            .map(|p| self.pool_view(p))
            .collect()
    }

    pub fn add_pool(&self, cidr: &str) -> Result<api::FipPool, ApiError> {
        let cidr = parse_pool(cidr)?;
        fip::check_pool(cidr, &rec::live(&self.pools))?;
        let p = FipPool {
            cidr,
            created_by: self.me_hex(),
        };
        rec::put(&self.pools, self.me, &pool_key(&cidr), p.clone());
        Ok(self.pool_view(&p))
    }

    pub fn remove_pool(&self, cidr: &str) -> Result<api::FipPool, ApiError> {
        let cidr = parse_pool(cidr)?;
        let p = rec::get(&self.pools, &pool_key(&cidr))
            .ok_or_else(|| ApiError::NotFound(format!("no floating-IP pool {cidr}")))?;
        let view = self.pool_view(&p);
        if view.fips > 0 {
            return Err(ApiError::Conflict(format!(
                "pool {cidr} has {} floating IP(s); release them first",
                view.fips
            )));
        }
        rec::remove(&self.pools, self.me, &pool_key(&cidr));
        Ok(view)
    }

    fn fip_view(
        &self,
        f: &Fip,
        holders: &BTreeMap<Ipv4Addr, Result<String, fip::NoHolder>>,
    ) -> api::Fip {
        let pools = rec::live(&self.pools);
        let decided = match holders.get(&f.addr) {
            // The holder probed and found the address in use: it does not
            // answer.
            Some(Ok(h)) => match self.in_use(h, f.addr) {
                // Refused without a probe (see `Edge::protected_addresses`).
                Some([0, 0, 0, 0, 0, 0]) => Err(fip::NoHolder::Protected {
                    prober: self.host_name(h),
                }),
                Some(mac) => Err(fip::NoHolder::InUse {
                    mac: format_mac(&mac),
                    prober: self.host_name(h),
                }),
                None => Ok(self.host_name(h)),
            },
            Some(Err(e)) => Err(e.clone()),
            None => Err(fip::NoHolder::NoPool(f.addr)),
        };
        let (holder, reason) = match decided {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(e.to_string())),
        };
        api::Fip {
            addr: f.addr.to_string(),
            pool: fip::pool_of(&pools, f.addr).map(|p| p.cidr.to_string()),
            holder,
            reason,
            bindings: f
                .bindings
                .iter()
                .map(|b| {
                    let port = self
                        .services
                        .find(&b.service, Some(&b.network))
                        .ok()
                        .and_then(|d| d.ports.first().cloned());
                    api::FipBinding {
                        service: b.service.clone(),
                        network: b.network.clone(),
                        public_port: b.public_port,
                        service_port: port.as_ref().map(|p| p.port),
                        protocol: port.map(|p| p.protocol),
                    }
                })
                .collect(),
        }
    }

    pub fn list_fips(&self) -> Vec<api::Fip> {
        let holders = self.holders();
        self.effective()
            .values()
            .map(|f| self.fip_view(f, &holders))
            .collect()
    }

    fn get_fip(&self, addr: &str) -> Result<Fip, ApiError> {
        let a = parse_addr(addr)?;
        self.effective().remove(&fip_key(a)).ok_or_else(|| {
            ApiError::NotFound(format!("no floating IP {a} (see `meshctl fip list`)"))
        })
    }

    fn view_of(&self, addr: Ipv4Addr) -> api::Fip {
        let f = self.effective().remove(&fip_key(addr)).unwrap_or(Fip {
            addr,
            bindings: Vec::new(),
        });
        self.fip_view(&f, &self.holders())
    }

    /// Refuses `addr` if a machine that is not a mesh host answers ARP for
    /// it on this host's LAN (no probe if the address is not on link here).
    async fn check_unused(&self, addr: Ipv4Addr) -> Result<(), ApiError> {
        let mesh = self.mesh_macs();
        let found = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let ifs = underlay::interfaces()?;
            let Some(link) = underlay::on_link(&ifs, &Ipv4Net::from(addr)) else {
                return Ok(None);
            };
            let in_use = probe::probe(link, &[addr].into(), &mesh)?;
            Ok(in_use.get(&addr).copied())
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(ApiError::Internal)?;
        match found {
            Some(mac) => Err(FipError::Taken {
                addr,
                mac: format_mac(&mac),
            }
            .into()),
            None => Ok(()),
        }
    }

    /// The lowest free address of the pools that no machine on the LAN
    /// answers for (of the first [`PICK_TRIES`]).
    async fn pick_unused(
        &self,
        pools: &BTreeMap<String, FipPool>,
        fips: &BTreeMap<String, Fip>,
        hosts: &[fip::Candidate],
    ) -> Result<Ipv4Addr, ApiError> {
        let free: Vec<Ipv4Addr> = fip::free(pools, fips, hosts).take(PICK_TRIES).collect();
        let mut last = None;
        for a in free {
            match self.check_unused(a).await {
                Ok(()) => return Ok(a),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            ApiError::Conflict(if pools.is_empty() {
                "no floating-IP pool (see `meshctl fip pool add`)".into()
            } else {
                "every address of the floating-IP pools is taken".into()
            })
        }))
    }

    pub async fn create_fip(&self, req: &api::CreateFipRequest) -> Result<api::Fip, ApiError> {
        let pools = rec::live(&self.pools);
        let fips = self.effective();
        let hosts = self.candidates();
        let addr = match req.addr.as_deref() {
            Some(a) => {
                let a = parse_addr(a)?;
                fip::check_new(a, &pools, &fips, &hosts)?;
                self.check_unused(a).await?;
                a
            }
            None => self.pick_unused(&pools, &fips, &hosts).await?,
        };
        let f = FipRecord {
            addr,
            updated_by: self.me_hex(),
        };
        rec::put(&self.fips, self.me, &fip_key(addr), f);
        Ok(self.view_of(addr))
    }

    pub fn associate(
        &self,
        addr: &str,
        req: &api::FipAssociateRequest,
    ) -> Result<api::Fip, ApiError> {
        let f = self.get_fip(addr)?;
        let def = self.services.find(&req.service, req.network.as_deref())?;
        let port = match (req.port, def.ports.first()) {
            (Some(0), _) => return Err(ApiError::BadRequest("port 0 is not a port".into())),
            (Some(p), _) => p,
            (None, Some(p)) => p.port,
            (None, None) => {
                return Err(ApiError::BadRequest(format!(
                    "service {} has no port; pass --port",
                    def.name
                )))
            }
        };
        let binding = FipBinding {
            network: def.network.clone(),
            service: def.name.clone(),
            public_port: port,
        };
        fip::check_binding(&f, &binding, &self.effective())?;
        let key = binding_key(f.addr, &def.network, &def.name);
        let record = FipBindingRecord {
            addr: f.addr,
            binding,
            updated_by: self.me_hex(),
        };
        rec::put(&self.bindings, self.me, &key, record);
        Ok(self.view_of(f.addr))
    }

    /// The stored associations of `addr` (in effect or not).
    fn stored_bindings(&self, addr: Ipv4Addr) -> Vec<(String, FipBindingRecord)> {
        rec::live(&self.bindings)
            .into_iter()
            .filter(|(_, b)| b.addr == addr)
            .collect()
    }

    pub fn dissociate(
        &self,
        addr: &str,
        req: &api::FipAssociateRequest,
    ) -> Result<api::Fip, ApiError> {
        let f = self.get_fip(addr)?;
        let matching: Vec<(String, FipBindingRecord)> = self
            .stored_bindings(f.addr)
            .into_iter()
            .filter(|(_, b)| {
                b.binding.service == req.service
                    && req
                        .network
                        .as_deref()
                        .is_none_or(|n| n == b.binding.network)
            })
            .collect();
        let networks: std::collections::BTreeSet<&str> = matching
            .iter()
            .map(|(_, b)| b.binding.network.as_str())
            .collect();
        match networks.len() {
            0 => {
                return Err(ApiError::NotFound(format!(
                    "floating IP {} does not front service {:?}",
                    f.addr, req.service
                )))
            }
            1 => {}
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "floating IP {} fronts several services named {:?}; pass --network",
                    f.addr, req.service
                )))
            }
        }
        for (key, _) in &matching {
            rec::remove(&self.bindings, self.me, key);
        }
        Ok(self.view_of(f.addr))
    }

    pub fn release(&self, addr: &str, force: bool) -> Result<api::Fip, ApiError> {
        let f = self.get_fip(addr)?;
        if !f.bindings.is_empty() && !force {
            let names: Vec<&str> = f.bindings.iter().map(|b| b.service.as_str()).collect();
            return Err(ApiError::Conflict(format!(
                "floating IP {} fronts {} ({}); dissociate first or pass --force",
                f.addr,
                if names.len() == 1 {
                    "a service"
                } else {
                    "services"
                },
                names.join(", ")
            )));
        }
        let view = self.fip_view(&f, &self.holders());
        for (key, _) in self.stored_bindings(f.addr) {
            rec::remove(&self.bindings, self.me, &key);
        }
        rec::remove(&self.fips, self.me, &fip_key(f.addr));
        Ok(view)
    }
}
