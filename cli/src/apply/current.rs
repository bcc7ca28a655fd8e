//! What the mesh holds now, read through the local API (reads only).

use anyhow::Result;
use mesh_api::{Client, DnsRecord, Fip, FipPool, Network, PolicyRule, QosEntry, Service};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Current {
    pub networks: Vec<Network>,
    pub services: Vec<Service>,
    pub policies: Vec<PolicyRule>,
    pub qos: Vec<QosEntry>,
    pub pools: Vec<FipPool>,
    pub fips: Vec<Fip>,
    /// Host id → name, this host included.
    pub hosts: BTreeMap<String, String>,
    pub dns: Vec<DnsRecord>,
}

impl Current {
    pub async fn fetch(c: &Client) -> Result<Current> {
        let status = c.status().await?;
        let mut hosts: BTreeMap<String, String> = status
            .peers
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect();
        hosts.insert(status.host.id.clone(), status.host.name.clone());
        let mut cur = Current {
            networks: c.networks().await?,
            services: c.services().await?,
            policies: c.policies().await?,
            qos: c.qos().await?,
            pools: c.fip_pools().await?,
            fips: c.fips().await?,
            hosts,
            dns: c.dns().await?,
        };
        cur.sort();
        Ok(cur)
    }

    /// A stable order, so export prints the same file for the same mesh.
    pub fn sort(&mut self) {
        self.networks.sort_by(|a, b| a.id.cmp(&b.id));
        self.services
            .sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
        self.policies
            .sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
        self.qos
            .sort_by(|a, b| (&a.network, &a.container).cmp(&(&b.network, &b.container)));
        self.pools.sort_by(|a, b| a.cidr.cmp(&b.cidr));
        self.fips
            .sort_by_key(|f| f.addr.parse::<std::net::Ipv4Addr>().ok());
        for f in &mut self.fips {
            f.bindings
                .sort_by(|a, b| (&a.network, &a.service).cmp(&(&b.network, &b.service)));
        }
    }

    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }

    pub fn service(&self, name: &str, network: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name && s.network == network)
    }

    /// A host's id from its name or id (or a unique prefix of the id).
    pub fn host_id(&self, name_or_id: &str) -> Option<String> {
        if let Some((id, _)) = self
            .hosts
            .iter()
            .find(|(id, name)| *name == name_or_id || *id == name_or_id)
        {
            return Some(id.clone());
        }
        let mut prefixed = self.hosts.keys().filter(|id| id.starts_with(name_or_id));
        match (prefixed.next(), prefixed.next()) {
            (Some(id), None) if !name_or_id.is_empty() => Some(id.clone()),
            _ => None,
        }
    }

    /// A container's address on `network` from its name (DNS record).
    pub fn container_ip(&self, network: &str, name: &str) -> Option<String> {
        let fqdn = format!("{name}.{network}");
        self.dns
            .iter()
            .find(|r| r.fqdn == fqdn)
            .map(|r| bare(&r.ip).to_string())
    }
}

/// `ADDR/LEN` → `ADDR`.
pub fn bare(addr: &str) -> &str {
    addr.split('/').next().unwrap_or(addr)
}
