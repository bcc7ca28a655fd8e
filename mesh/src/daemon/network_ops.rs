//! The API's network operations: list, create, change settings, remove.

use super::*;

impl Daemon {
    pub(super) fn network_view(&self, def: &NetworkDef) -> api::Network {
        views::network(
            def,
            &self.channels.settings_of(&def.id),
            &self.settings.link_prefix,
            self.fabric.mtus().of(&def.id),
        )
    }

    pub fn list_networks(&self) -> Vec<api::Network> {
        records::live(&self.channels.networks)
            .values()
            .map(|d| self.network_view(d))
            .collect()
    }

    pub(super) fn network(&self, id: &str) -> Result<NetworkDef, ApiError> {
        records::get(&self.channels.networks, id).ok_or_else(|| ApiError::network_not_found(id))
    }

    /// A network this host may carry.
    pub(super) fn network_here(&self, id: &str) -> Result<NetworkDef, ApiError> {
        let net = self.network(id)?;
        if !net.allows_host(&self.id().to_hex()) {
            return Err(ApiError::BadRequest(format!(
                "network {} is restricted to other hosts; this host is not one of them",
                net.id
            )));
        }
        if let Some(why) = self.carried.get().refused.get(id) {
            return Err(ApiError::Conflict(format!(
                "network {id} is not carried on this host: {why}"
            )));
        }
        Ok(net)
    }

    pub async fn create_network(
        &self,
        req: api::CreateNetworkRequest,
    ) -> Result<api::Network, ApiError> {
        let (subnet, subnet6) = networks::check_new_network(
            &req.id,
            &req.subnet,
            req.subnet6.as_deref(),
            &req.labels,
            &records::live(&self.channels.networks),
        )
        .map_err(|e| match e {
            DefinitionError::Invalid(e) => ApiError::bad(e),
            DefinitionError::Conflict(m) => ApiError::Conflict(m),
        })?;
        let mut settings =
            records::NetworkSettings::new(req.policy.unwrap_or_default(), req.egress);
        settings.mtu = req.mtu;
        settings.validate().map_err(ApiError::BadRequest)?;
        let hosts = self.hosts();
        let mut members = Vec::new();
        for h in &req.hosts {
            let host = hosts.resolve(h, Scope::Everyone).map_err(|e| match e {
                LookupError::Unknown(_) => {
                    ApiError::BadRequest(format!("unknown host {h:?} in --hosts"))
                }
                ambiguous => ApiError::BadRequest(format!("in --hosts: {ambiguous}")),
            })?;
            members.push(host.id.clone());
        }
        members.sort();
        members.dedup();
        let sealed_secrets = netsecret::seal_to_members(&req.id, &members, &hosts, &self.host_key)
            .map_err(|e| match e {
                netsecret::SealError::NoKey(_) => ApiError::BadRequest(e.to_string()),
                netsecret::SealError::Seal(e) => ApiError::Internal(e),
            })?;
        let def = NetworkDef {
            id: req.id.clone(),
            subnet,
            subnet6,
            created_by: self.id().to_hex(),
            labels: req.labels.clone(),
            hosts: members,
            sealed_secrets,
        };
        // Held from the check to the set-up: two creates cannot both pass
        // the check, nor a landing tick judge in between.
        let mut devices = self.devices.lock().await;
        self.check_landing(&def)?;
        // The definition first: a host admits a network's first range only
        // once it knows the network (and its creator). A host that learns
        // the network before its range waits for the range to arrive.
        records::put(&self.channels.networks, self.id(), &req.id, def.clone());
        records::put(&self.channels.settings, self.id(), &req.id, settings);
        self.alloc.init_ring(&def);
        if !def.allows_host(&self.id().to_hex()) {
            return Ok(self.network_view(&def));
        }
        self.reconcile_networks_locked(&mut devices).await;
        if !devices.wires.contains_key(&req.id) {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "network {} was recorded but its bridge could not be set up on this host; see the meshd log",
                req.id
            )));
        }
        Ok(self.network_view(&def))
    }

    /// `meshctl network set`: any member may change a network's settings.
    pub fn update_network(
        &self,
        id: &str,
        req: api::UpdateNetworkRequest,
    ) -> Result<api::Network, ApiError> {
        let def = self.network(id)?;
        let mut s = self.channels.settings_of(id);
        if let Some(p) = req.policy {
            s.policy = p;
        }
        if let Some(e) = req.egress {
            s.egress = e;
        }
        if let Some(m) = req.mtu {
            s.mtu = Some(m).filter(|m| *m != 0);
            s.validate().map_err(ApiError::BadRequest)?;
        }
        if records::get(&self.channels.settings, id).as_ref() != Some(&s) {
            records::put(&self.channels.settings, self.id(), id, s);
        }
        Ok(self.network_view(&def))
    }

    pub async fn remove_network(&self, id: &str, force: bool) -> Result<api::Network, ApiError> {
        let def = self.network(id)?;
        self.services.check_network_removal(id, force)?;
        let vips = self.services.vip_keys();
        let in_use: Vec<EndpointRecord> = records::live(&self.channels.endpoints)
            .into_iter()
            .filter(|(key, e)| e.network == id && !vips.contains(key))
            .map(|(_, e)| e)
            .collect();
        if !in_use.is_empty() && !force {
            return Err(ApiError::Conflict(format!(
                "network {id:?} has {} container(s) attached; detach them first or pass --force",
                in_use.len()
            )));
        }
        self.services.remove_network_services(id);
        self.traffic.forget_network(id);
        records::remove(&self.channels.networks, self.id(), id);
        if records::get(&self.channels.settings, id).is_some() {
            records::remove(&self.channels.settings, self.id(), id);
        }
        self.alloc.drop_ring(id);
        for e in in_use {
            records::remove(
                &self.channels.endpoints,
                self.id(),
                &records::endpoint_key(id, e.ip),
            );
        }
        let mut devices = self.devices.lock().await;
        self.reconcile_networks_locked(&mut devices).await;
        Ok(self.network_view(&def))
    }
}
