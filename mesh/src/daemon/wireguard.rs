//! The WireGuard gateway's daemon side (see [`crate::wireguard`]): opening
//! its channel, key and port; the API operations (`meshctl wg …`); and the
//! loop that keeps the clients plumbed here in line with the records that
//! name this host as their gateway (after `wg add`, `wg rm`, `wg move` on
//! any host, and after a restart).

use anyhow::{Context, Result};
use gossip::Node;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

use super::snapshots::{keep_snapshot, open_channel};
use super::Daemon;
use crate::api::{self, WgAddRequest, WgClient};
use crate::config::Settings;
use crate::error::ApiError;
use crate::state::StateDir;
use crate::wireguard::keys::GatewayKey;
use crate::wireguard::netns::{self, ClientNetns};
use crate::wireguard::tunnel::{ClientAddrs, Tunnels};
use crate::wireguard::view::{self, GatewayInfo};
use crate::wireguard::{Gateway, Running};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
use mesh_model::hosts::{LookupError, Scope};
use mesh_model::records::{self, NetworkDef, Records};
use mesh_model::validate::Guards;
use mesh_model::wireguard::{
    decode_key, encode_key, WgClientRecord, META_WG_ENDPOINT, META_WG_KEY, WG_CLIENTS_CHANNEL,
};

/// How long `wg add --host H` waits for H to plumb the client.
const REMOTE_ADD_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the plumbed clients are checked against the records.
const RETRY: Duration = Duration::from_secs(5);
/// How often a client that could not be plumbed yet is tried again.
const RETRY_PENDING: Duration = Duration::from_secs(1);
/// How long a starting gateway waits for a peer before plumbing alone.
const PEER_WAIT: Duration = Duration::from_secs(10);

/// Opens the clients' channel, the gateway's key and (unless `wg_port` is
/// 0) its UDP port, and advertises its key and endpoint.
pub(super) async fn open_gateway(
    node: &Node,
    state: &StateDir,
    settings: &Settings,
    networks: Records<NetworkDef>,
) -> Result<Arc<Gateway>> {
    let records = open_channel(
        node,
        state,
        WG_CLIENTS_CHANNEL,
        Guards::wg_clients(networks),
    );
    keep_snapshot(state, WG_CLIENTS_CHANNEL, &records);
    // A bad key file costs this host its gateway, not its start.
    let (key, key_ok) = match GatewayKey::load_or_create(&state.file("wg.key")) {
        Ok(k) => (k, true),
        Err(e) if settings.wg_port != 0 => {
            warn!("no WireGuard gateway on this host: the gateway's key: {e:#}");
            (GatewayKey::ephemeral(), false)
        }
        Err(_) => (GatewayKey::ephemeral(), false),
    };
    let mut tunnels = None;
    let mut endpoint = None;
    if settings.wg_port != 0 && key_ok {
        let bind = SocketAddr::new(settings.listen.ip(), settings.wg_port);
        match Tunnels::start(bind, key.secret.clone(), state.file("wg-endpoints.json")).await {
            Ok(t) => {
                let bound = t.local_addr().unwrap_or(bind);
                let ep =
                    Gateway::endpoint_for(settings.wg_endpoint.as_deref(), settings.listen, bound);
                info!(port = bound.port(), endpoint = %ep, "WireGuard gateway up");
                node.set_meta(META_WG_KEY, Some(key.public_base64()));
                node.set_meta(META_WG_ENDPOINT, Some(ep.clone()));
                tunnels = Some(t);
                endpoint = Some(ep);
            }
            Err(e) => warn!("no WireGuard gateway on this host: cannot bind udp {bind}: {e}"),
        }
    }
    Ok(Arc::new(Gateway {
        records,
        key,
        tunnels,
        endpoint,
        running: Default::default(),
        errors: Default::default(),
    }))
}

/// Whether the client plumbed as `have` is still what `want` asks for.
fn same(want: &WgClientRecord, have: &WgClientRecord) -> bool {
    want.network == have.network
        && want.public_key == have.public_key
        && want.labels == have.labels
        && want.ip.is_none_or(|ip| Some(ip) == have.ip)
}

impl Daemon {
    /// Follows the clients' records: plumbs this host's, unplumbs the rest.
    pub(super) fn spawn_wireguard(self: Arc<Self>) {
        tokio::spawn(async move {
            self.wg_wait_for_peers().await;
            let mut changes = self.wg.records.subscribe();
            // A moved client's address is free here once the old
            // gateway's endpoint record is gone.
            let mut endpoints = self.channels.endpoints.subscribe();
            loop {
                // Soon while a client waits (for its network's bridge, its
                // address), else on changes and now and then.
                let wait = match self.wg_reconcile().await {
                    true => RETRY_PENDING,
                    false => RETRY,
                };
                tokio::select! {
                    r = changes.changed() => if r.is_err() { break },
                    r = endpoints.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// A client removed while this host was down is still in its saved
    /// records: plumb nothing until a peer has had the chance to tell
    /// (the first exchange with one, or [`PEER_WAIT`] alone).
    async fn wg_wait_for_peers(&self) {
        let known = || !self.node.members().is_empty();
        let up = || {
            self.node
                .members()
                .iter()
                .any(|m| m.state == gossip::PeerState::Up)
        };
        let deadline = tokio::time::Instant::now() + PEER_WAIT;
        while known() && !up() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if up() {
            // A connection's first anti-entropy round carries the state.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether a client of this host's is still waiting to be plumbed.
    async fn wg_reconcile(&self) -> bool {
        let me = self.id().to_hex();
        let mut running = self.wg.running.lock().await;
        let desired: std::collections::BTreeMap<String, WgClientRecord> =
            records::live(&self.wg.records)
                .into_iter()
                .filter(|(_, r)| r.gateway == me)
                .collect();
        // Gone or changed; or its attachment is (a `meshctl detach`, its
        // network taken down): plumbed again below if still wanted.
        let attached: std::collections::BTreeSet<String> = self
            .attacher
            .list()
            .into_iter()
            .map(|a| a.host_ifname)
            .collect();
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, run)| {
                desired.get(*name).is_none_or(|r| !same(r, &run.record))
                    || !attached.contains(&run.attachment.host_ifname)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(run) = running.remove(&name) {
                self.wg_unplumb(run).await;
            }
        }
        // Networks whose bridge is up here (at a start, they land shortly
        // after): a client of another network waits, quietly.
        let bridged: Vec<String> = self.devices.lock().await.wires.keys().cloned().collect();
        let mut pending = false;
        for (name, rec) in &desired {
            if !running.contains_key(name) && self.wg.tunnels.is_some() {
                pending = true;
                if bridged.contains(&rec.network) {
                    match self.wg_plumb(rec).await {
                        Ok(run) => {
                            lock(&self.wg.errors).remove(name);
                            running.insert(name.clone(), run);
                        }
                        Err(e) => {
                            // Said once per client and cause, not each retry.
                            let text = e.to_string();
                            if lock(&self.wg.errors).insert(name.clone(), text.clone())
                                != Some(text)
                            {
                                warn!(client = %name, "cannot plumb WireGuard client (retrying): {e}");
                            }
                        }
                    }
                }
            }
            // The address the gateway got goes into the record.
            if let Some(run) = running.get(name) {
                // Written only over the record as read above, still ours:
                // a `wg rm` or `wg move` that landed while plumbing wins.
                let current = records::get(&self.wg.records, name);
                if rec.ip != run.record.ip && current.as_ref() == Some(rec) {
                    let filled = WgClientRecord {
                        ip: run.record.ip,
                        updated_by: me.clone(),
                        ..rec.clone()
                    };
                    records::put(&self.wg.records, self.id(), name, filled);
                }
            }
        }
        pending && running.len() < desired.len()
    }

    /// Plumbs a client here: its namespace attached to its network (with
    /// the record's address, if any), routed to a TUN, and its tunnel.
    async fn wg_plumb(&self, rec: &WgClientRecord) -> Result<Running, ApiError> {
        let tunnels = self.wg.tunnels.clone().ok_or_else(|| {
            ApiError::Conflict(
                "this host runs no WireGuard gateway (wg_port = 0, or its port could not be bound: see meshd's log)".into(),
            )
        })?;
        let net = self.network_here(&rec.network)?;
        let public_key = decode_key(&rec.public_key).map_err(ApiError::BadRequest)?;
        let ns = tokio::task::spawn_blocking(ClientNetns::create)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("namespace task: {e}")))??;
        let path = ns.path();
        let netns_path = path.display().to_string();
        let a = self
            .attach(api::AttachRequest {
                mode: None,
                parent: None,
                target: netns_path.clone(),
                network: rec.network.clone(),
                ip: rec.ip.map(|ip| ip.to_string()),
                ifname: None,
                container_id: None,
                name: Some(rec.name.clone()),
                version: None,
                labels: rec.labels.clone(),
                origin: api::Origin::Wireguard,
            })
            .await?;
        let ip = records::parse_ipv4(&a.ip).map_err(|e| ApiError::Internal(e.into()));
        let plumbed = async {
            let ip = ip?;
            let ip6 = net.ipv6_for(ip);
            let mtu = self.fabric.mtus().of(&net.id);
            let (ifname, prefix6) = (a.ifname.clone(), net.subnet6);
            tokio::task::spawn_blocking(move || {
                netns::route(&path, &ifname, ip, ip6, prefix6, mtu)
            })
            .await
            .map_err(|e| anyhow::anyhow!("routing task: {e}"))??;
            let addrs = ClientAddrs {
                name: rec.name.clone(),
                network: rec.network.clone(),
                ip,
                ip6,
                public_key,
            };
            tunnels.add(addrs, ns.tun).context("starting the tunnel")?;
            Ok::<_, anyhow::Error>(ip)
        }
        .await;
        let ip = match plumbed {
            Ok(ip) => ip,
            Err(e) => {
                self.wg_detach(&netns_path, &rec.network).await;
                return Err(ApiError::Internal(
                    e.context(format!("plumbing WireGuard client {}", rec.name)),
                ));
            }
        };
        Ok(Running {
            record: WgClientRecord {
                ip: Some(ip),
                ..rec.clone()
            },
            attachment: a,
            netns: ns.ns,
            netns_path,
        })
    }

    /// Ends a client's tunnel at once, then its attachment and namespace.
    async fn wg_unplumb(&self, run: Running) {
        if let Some(t) = &self.wg.tunnels {
            t.remove(&run.record.name);
        }
        self.wg_detach(&run.netns_path, &run.record.network).await;
        info!(client = %run.record.name, ip = %run.attachment.ip, "WireGuard client unplumbed");
        drop(run.netns);
    }

    async fn wg_detach(&self, netns_path: &str, network: &str) {
        let req = api::DetachRequest {
            target: Some(netns_path.to_string()),
            network: network.to_string(),
            container_id: None,
            origin: None,
        };
        if let Err(e) = self.detach(req).await {
            warn!(
                netns = netns_path,
                "cannot detach a WireGuard client's namespace: {e}"
            );
        }
    }

    /// `meshctl wg add`.
    pub async fn wg_add(&self, req: WgAddRequest) -> Result<WgClient, ApiError> {
        if !mesh_model::validate::dns_label(&req.name) {
            return Err(ApiError::BadRequest(format!(
                "name {:?} is not a valid DNS label (1-63 of letters, digits, '-', '_')",
                req.name
            )));
        }
        let key = decode_key(&req.public_key)
            .map_err(|e| ApiError::BadRequest(format!("--public-key: {e}")))?;
        mesh_model::services::spec::check_labels(&req.labels)?;
        let net = self.network(&req.network)?;
        let ip = mesh_model::networks::requested_address(req.ip.as_deref(), &net)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let all = records::live(&self.wg.records);
        if let Some(c) = all.get(&req.name) {
            return Err(ApiError::Conflict(format!(
                "WireGuard client {} exists (on network {})",
                c.name, c.network
            )));
        }
        let public_key = encode_key(&key);
        if let Some(c) = all.values().find(|c| c.public_key == public_key) {
            return Err(ApiError::Conflict(format!(
                "WireGuard client {} has this public key already",
                c.name
            )));
        }
        let gateway = self.wg_host(req.host.as_deref())?;
        let me = self.id().to_hex();
        self.wg_check_gateway(&gateway, &net)?;
        let rec = WgClientRecord {
            name: req.name.clone(),
            network: net.id.clone(),
            ip,
            public_key,
            labels: req.labels,
            gateway,
            updated_by: me.clone(),
        };
        if rec.gateway == me {
            let mut running = self.wg.running.lock().await;
            let run = self.wg_plumb(&rec).await?;
            records::put(&self.wg.records, self.id(), &rec.name, run.record.clone());
            let view = self.wg_view(&run.record);
            running.insert(rec.name.clone(), run);
            return Ok(view);
        }
        records::put(&self.wg.records, self.id(), &rec.name, rec.clone());
        let mut changes = self.wg.records.subscribe();
        let deadline = tokio::time::Instant::now() + REMOTE_ADD_TIMEOUT;
        loop {
            match records::get(&self.wg.records, &rec.name) {
                Some(c) if c.ip.is_some() => return Ok(self.wg_view(&c)),
                Some(_) => {}
                None => {
                    return Err(ApiError::Conflict(format!(
                        "WireGuard client {} was removed meanwhile",
                        rec.name
                    )))
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                records::remove(&self.wg.records, self.id(), &rec.name);
                let gw = self.wg_gateway(&rec.gateway).name;
                return Err(ApiError::BadGateway(format!(
                    "gateway {gw} did not plumb WireGuard client {} within {}s (is it up, with a gateway? see its meshd log)",
                    rec.name,
                    REMOTE_ADD_TIMEOUT.as_secs()
                )));
            }
        }
    }

    /// `meshctl wg rm`: the record goes, and the gateway (this host, or
    /// another once the removal reaches it) drops the tunnel at once.
    pub async fn wg_rm(&self, name: &str) -> Result<WgClient, ApiError> {
        let rec = self.wg_record(name)?;
        let view = self.wg_view(&rec);
        records::remove(&self.wg.records, self.id(), name);
        if rec.gateway == self.id().to_hex() {
            // The session goes now, before waiting for the plumbing lock.
            if let Some(t) = &self.wg.tunnels {
                t.remove(name);
            }
            let mut running = self.wg.running.lock().await;
            if let Some(run) = running.remove(name) {
                self.wg_unplumb(run).await;
            }
        }
        Ok(view)
    }

    /// `meshctl wg move`: another host becomes the client's gateway; the
    /// client keeps its name, address and key.
    pub async fn wg_move(&self, name: &str, host: &str) -> Result<WgClient, ApiError> {
        let rec = self.wg_record(name)?;
        let gateway = self.wg_host(Some(host))?;
        if gateway == rec.gateway {
            return Ok(self.wg_view(&rec));
        }
        let net = records::get(&self.channels.networks, &rec.network)
            .ok_or_else(|| ApiError::network_not_found(&rec.network))?;
        self.wg_check_gateway(&gateway, &net)?;
        let me = self.id().to_hex();
        let moved = WgClientRecord {
            gateway,
            updated_by: me.clone(),
            ..rec.clone()
        };
        records::put(&self.wg.records, self.id(), name, moved.clone());
        if rec.gateway == me || moved.gateway == me {
            let _ = self.wg_reconcile().await;
        }
        Ok(self.wg_view(&moved))
    }

    /// Whether host `gateway` can serve a client of `net`: it runs a
    /// gateway, and the network is not restricted to other hosts.
    fn wg_check_gateway(&self, gateway: &str, net: &NetworkDef) -> Result<(), ApiError> {
        let gw = self.wg_gateway(gateway);
        if gw.public_key.is_none() {
            return Err(ApiError::Conflict(format!(
                "host {} runs no WireGuard gateway (its wg_port is 0, its port could not be bound, or its meshd is older)",
                gw.name
            )));
        }
        if !net.allows_host(gateway) {
            return Err(ApiError::BadRequest(format!(
                "network {} is restricted to other hosts; gateway {} is not one of them",
                net.id, gw.name
            )));
        }
        Ok(())
    }

    /// `meshctl wg list`.
    pub fn wg_list(&self) -> Vec<WgClient> {
        records::live(&self.wg.records)
            .values()
            .map(|r| self.wg_view(r))
            .collect()
    }

    /// The per-client metrics of the tunnels here.
    pub fn wg_metrics(&self) -> String {
        let me = self.id().to_hex();
        let here: Vec<WgClient> = self
            .wg_list()
            .into_iter()
            .filter(|c| c.gateway_id == me)
            .collect();
        let unmatched = self
            .wg
            .tunnels
            .as_ref()
            .map_or(0, |t| t.unknown.load(std::sync::atomic::Ordering::Relaxed));
        view::metrics(&here, unmatched)
    }

    fn wg_record(&self, name: &str) -> Result<WgClientRecord, ApiError> {
        records::get(&self.wg.records, name)
            .ok_or_else(|| ApiError::NotFound(format!("no WireGuard client named {name:?}")))
    }

    /// The peer id of the host `--host` names (default: this one).
    fn wg_host(&self, host: Option<&str>) -> Result<String, ApiError> {
        let Some(host) = host else {
            return Ok(self.id().to_hex());
        };
        let hosts = self.hosts();
        let h = hosts.resolve(host, Scope::Everyone).map_err(|e| match e {
            LookupError::Unknown(_) => {
                ApiError::NotFound(format!("no host named or with id {host:?}"))
            }
            ambiguous => ApiError::BadRequest(ambiguous.to_string()),
        })?;
        Ok(h.id.clone())
    }

    /// Where gateway `id` is and its key, as this host knows.
    fn wg_gateway(&self, id: &str) -> GatewayInfo {
        if id == self.id().to_hex() {
            // Only a port (listening on every address): at the address
            // peers see this host's datagrams come from; none known, none
            // (`wg_endpoint` says it).
            let endpoint = self
                .wg
                .endpoint
                .clone()
                .and_then(|ep| match ep.strip_prefix(':') {
                    Some(port) => {
                        let port = port.parse::<u16>().ok()?;
                        let seen = self.dp.reflexive_addrs().into_iter().next()?;
                        Some(SocketAddr::new(seen.ip(), port).to_string())
                    }
                    None => Some(ep),
                });
            return GatewayInfo {
                name: self.settings.name.clone(),
                endpoint,
                public_key: self
                    .wg
                    .tunnels
                    .as_ref()
                    .map(|_| self.wg.key.public_base64()),
            };
        }
        let Some(m) = self
            .node
            .members()
            .into_iter()
            .find(|m| m.id.to_hex() == id)
        else {
            return GatewayInfo {
                name: id.chars().take(12).collect(),
                endpoint: None,
                public_key: None,
            };
        };
        let endpoint = m
            .meta
            .get(META_WG_ENDPOINT)
            .map(|ep| match ep.strip_prefix(':') {
                // Only the port: at the address this host knows the gateway by.
                Some(port) => match port.parse::<u16>() {
                    Ok(p) if !m.addr.ip().is_unspecified() => {
                        SocketAddr::new(m.addr.ip(), p).to_string()
                    }
                    _ => ep.clone(),
                },
                None => ep.clone(),
            });
        GatewayInfo {
            name: m.name.clone(),
            endpoint,
            public_key: m.meta.get(META_WG_KEY).cloned(),
        }
    }

    fn wg_view(&self, rec: &WgClientRecord) -> WgClient {
        let net = records::get(&self.channels.networks, &rec.network);
        let mtu = net.as_ref().map(|n| self.fabric.mtus().of(&n.id));
        let stats = match (rec.gateway == self.id().to_hex(), &self.wg.tunnels) {
            (true, Some(t)) => t.get(&rec.name).map(|p| p.stats()),
            _ => None,
        };
        view::client(rec, net.as_ref(), self.wg_gateway(&rec.gateway), mtu, stats)
    }
}
