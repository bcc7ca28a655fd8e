//! The daemon: gossip and data plane wired together, networks realised as
//! bridges and TAPs, containers attached by veth pairs.

use anyhow::{Context, Result};
use dataplane::{Dataplane, IpVersion, NetworkId};
use gossip::{Identity, MeshSecret, Node, PeerId};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::api::{self, Attachment, PeerState, PeerStatus, StatusResponse, Traffic};
use crate::config::Settings;
use crate::error::ApiError;
use crate::netdev::{format_mac, in_netns, NetnsTarget, Netlink};
use crate::networks::{self, EndpointRecord, NetworkDef};
use crate::peers::{PeerTable, META_DATA_PORT};
use crate::replicated::{self, Records};
use crate::state::{write_atomic, AttachmentRecord, StateDir};

const NETWORKS_CHANNEL: &str = "networks";
const ENDPOINTS_CHANNEL: &str = "endpoints";
/// Underlay MTU assumed for the overlay MTU (an Ethernet LAN).
const UNDERLAY_MTU: u32 = 1500;

pub struct Daemon {
    pub settings: Settings,
    state: StateDir,
    node: Node,
    dp: Dataplane,
    nl: Netlink,
    peers: Arc<PeerTable>,
    networks: Records<NetworkDef>,
    endpoints: Records<EndpointRecord>,
    /// Serialises every change to this host's devices and attachment list.
    local: Mutex<Local>,
    mtu: u32,
}

#[derive(Default)]
struct Local {
    attachments: Vec<AttachmentRecord>,
    /// Networks that have a bridge and TAP here, by id → wire id.
    realized: BTreeMap<String, u32>,
}

fn load_or_create_secret(state: &StateDir) -> Result<MeshSecret> {
    let path = state.file("secret");
    match std::fs::read_to_string(&path) {
        Ok(text) => MeshSecret::from_str(text.trim())
            .map_err(|e| anyhow::anyhow!("{} holds no valid mesh secret: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = MeshSecret::generate();
            write_atomic(&path, secret.to_token().as_bytes(), 0o600)?;
            info!("created a new one-host mesh");
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

impl Daemon {
    pub async fn start(settings: Settings) -> Result<Arc<Daemon>> {
        let state = StateDir::open(&settings.state_dir)?;
        let identity = Identity::load_or_create(&state.file("identity.key"))
            .context("loading the host identity")?;
        let secret = load_or_create_secret(&state)?;

        let data_bind = SocketAddr::new(settings.listen.ip(), settings.data_port);
        let dp = Dataplane::start(data_bind)
            .with_context(|| format!("starting the data plane on udp {data_bind}"))?;
        let peers = PeerTable::new(dp.clone());

        let mut cfg = gossip::Config::new(identity, secret, settings.listen, peers.clone());
        cfg.name = settings.name.clone();
        cfg.state_dir = Some(settings.state_dir.clone());
        cfg.meta
            .insert(META_DATA_PORT.into(), dp.local_addr().port().to_string());
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting the control plane on udp {}", settings.listen))?;

        let networks = node.channel(NETWORKS_CHANNEL, load_snapshot(&state, NETWORKS_CHANNEL));
        let endpoints = node.channel(ENDPOINTS_CHANNEL, load_snapshot(&state, ENDPOINTS_CHANNEL));
        let nl = Netlink::connect()?;
        let mtu = dataplane::overlay_mtu(
            UNDERLAY_MTU,
            if settings.listen.is_ipv6() { IpVersion::V6 } else { IpVersion::V4 },
        );
        let attachments = state.load_attachments()?;
        let daemon = Arc::new(Daemon {
            settings,
            state,
            node,
            dp,
            nl,
            peers,
            networks,
            endpoints,
            local: Mutex::new(Local {
                attachments,
                realized: BTreeMap::new(),
            }),
            mtu,
        });
        daemon.reconcile_at_start().await?;
        daemon.clone().watch_channels();
        info!(
            id = %daemon.node.id(),
            control = %daemon.node.local_addr(),
            data = %daemon.dp.local_addr(),
            "meshd up"
        );
        Ok(daemon)
    }

    pub fn id(&self) -> PeerId {
        self.node.id()
    }

    pub async fn shutdown(&self) {
        self.node.shutdown().await;
        self.dp.shutdown();
    }

    /// Brings the kernel in line with the state directory after a start:
    /// re-adopts live bridges and attachments, removes only what is stale.
    async fn reconcile_at_start(&self) -> Result<()> {
        let mut local = self.local.lock().await;
        let desired = replicated::live(&self.networks);
        let prefix = &self.settings.link_prefix;
        let keep_bridges: Vec<String> = desired
            .values()
            .flat_map(|n| {
                let w = networks::wire_id(&n.id);
                [networks::bridge_name(prefix, w), networks::tap_name(prefix, w)]
            })
            .collect();

        // Attachments whose namespace or veth is gone are stale.
        let mut kept = Vec::new();
        for rec in std::mem::take(&mut local.attachments) {
            let ns = NetnsTarget {
                path: rec.attachment.netns.clone().into(),
                dev: rec.netns_dev,
                ino: rec.netns_ino,
            };
            let veth = self.nl.link(&rec.attachment.host_ifname).await?;
            if veth.is_some() && ns.still_exists() && desired.contains_key(&rec.attachment.network) {
                kept.push(rec);
            } else {
                info!(network = %rec.attachment.network, netns = %rec.attachment.netns, "dropping stale attachment");
                self.nl.delete(&rec.attachment.host_ifname).await?;
                self.forget_endpoint(&rec);
            }
        }
        local.attachments = kept;
        self.state.save_attachments(&local.attachments)?;

        for link in self.nl.links().await? {
            if !networks::is_ours(prefix, &link.name) {
                continue;
            }
            let attached = local
                .attachments
                .iter()
                .any(|a| a.attachment.host_ifname == link.name);
            if !attached && !keep_bridges.contains(&link.name) {
                info!(link = %link.name, "removing stale device");
                self.nl.delete(&link.name).await?;
            }
        }

        // Endpoint records of ours that no attachment backs (a crash between
        // two steps of attach/detach).
        let me = self.id().to_hex();
        for (key, rec) in replicated::live(&self.endpoints) {
            if rec.host == me
                && !local
                    .attachments
                    .iter()
                    .any(|a| networks::endpoint_key(&a.attachment.network, ip_of(&a.attachment.ip)) == key)
            {
                replicated::remove(&self.endpoints, self.id(), &key);
            }
        }

        self.reconcile_networks_locked(&mut local).await;
        for rec in &local.attachments {
            let w = networks::wire_id(&rec.attachment.network);
            if let Some(bridge) = self.nl.link(&networks::bridge_name(prefix, w)).await? {
                self.nl
                    .enslave(&rec.attachment.host_ifname, &bridge, self.mtu)
                    .await?;
            }
        }
        Ok(())
    }

    /// Follows replicated state: realises networks created elsewhere and
    /// keeps snapshots on disk.
    fn watch_channels(self: Arc<Self>) {
        let d = self.clone();
        let mut rx = self.networks.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                save_snapshot(&d.state, NETWORKS_CHANNEL, &d.networks);
                let mut local = d.local.lock().await;
                d.reconcile_networks_locked(&mut local).await;
            }
        });
        let d = self;
        let mut rx = d.endpoints.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                save_snapshot(&d.state, ENDPOINTS_CHANNEL, &d.endpoints);
            }
        });
    }

    async fn reconcile_networks_locked(&self, local: &mut Local) {
        let desired = replicated::live(&self.networks);
        for (id, def) in &desired {
            if local.realized.contains_key(id) {
                continue;
            }
            match self.realize_network(def).await {
                Ok(w) => {
                    local.realized.insert(id.clone(), w);
                }
                Err(e) => warn!(network = %id, "cannot set up network: {e:#}"),
            }
        }
        let gone: Vec<(String, u32)> = local
            .realized
            .iter()
            .filter(|(id, _)| !desired.contains_key(*id))
            .map(|(id, w)| (id.clone(), *w))
            .collect();
        for (id, w) in gone {
            if let Err(e) = self.teardown_network(local, &id, w).await {
                warn!(network = %id, "cannot remove network: {e:#}");
            }
            local.realized.remove(&id);
        }
        self.peers
            .set_networks(local.realized.values().map(|w| NetworkId(*w)).collect());
    }

    async fn realize_network(&self, def: &NetworkDef) -> Result<u32> {
        let prefix = &self.settings.link_prefix;
        let w = networks::wire_id(&def.id);
        let bridge = self
            .nl
            .ensure_bridge(&networks::bridge_name(prefix, w), self.mtu)
            .await?;
        let tap = networks::tap_name(prefix, w);
        self.dp
            .add_network(NetworkId(w), &tap)
            .with_context(|| format!("opening TAP {tap}"))?;
        self.nl.enslave(&tap, &bridge, self.mtu).await?;
        info!(network = %def.id, bridge = %bridge.name, %tap, mtu = self.mtu, "network ready");
        Ok(w)
    }

    async fn teardown_network(&self, local: &mut Local, id: &str, w: u32) -> Result<()> {
        let prefix = &self.settings.link_prefix;
        self.dp.remove_network(NetworkId(w));
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut local.attachments)
            .into_iter()
            .partition(|a| a.attachment.network == id);
        local.attachments = kept;
        for rec in gone {
            self.nl.delete(&rec.attachment.host_ifname).await?;
            self.forget_endpoint(&rec);
        }
        self.state.save_attachments(&local.attachments)?;
        self.nl.delete(&networks::tap_name(prefix, w)).await?;
        self.nl.delete(&networks::bridge_name(prefix, w)).await?;
        info!(network = %id, "network removed");
        Ok(())
    }

    fn forget_endpoint(&self, rec: &AttachmentRecord) {
        let key = networks::endpoint_key(&rec.attachment.network, ip_of(&rec.attachment.ip));
        replicated::remove(&self.endpoints, self.id(), &key);
    }

    // ---- API operations ------------------------------------------------

    pub fn token(&self) -> String {
        self.node.token()
    }

    pub async fn join(&self, req: api::JoinRequest) -> Result<api::JoinResponse, ApiError> {
        let secret = MeshSecret::from_str(req.token.trim())
            .map_err(|e| ApiError::BadRequest(format!("invalid token: {e}")))?;
        let peer = self
            .node
            .join(&req.address, &secret)
            .await
            .map_err(|e| match e {
                gossip::Error::AuthRejected { .. } => ApiError::Forbidden(format!("join {}: {e}", req.address)),
                other => ApiError::BadGateway(format!("join {}: {other}", req.address)),
            })?;
        // The secret now in force is the joined mesh's: keep it for restarts.
        write_atomic(&self.state.file("secret"), self.node.token().as_bytes(), 0o600)?;
        Ok(api::JoinResponse {
            peer: peer.to_string(),
        })
    }

    pub fn status(&self) -> StatusResponse {
        let stats = self.dp.stats();
        let members = self.node.members();
        let peers: Vec<PeerStatus> = members
            .iter()
            .map(|m| {
                let traffic = self
                    .peers
                    .handle(&m.id)
                    .and_then(|idx| stats.peers.get(&idx).cloned());
                PeerStatus {
                    id: m.id.to_string(),
                    name: m.name.clone(),
                    address: m.addr.to_string(),
                    data_address: self.peers.data_endpoint(&m.id).map(|a| a.to_string()),
                    state: match m.state {
                        gossip::PeerState::Connecting => PeerState::Connecting,
                        gossip::PeerState::Up => PeerState::Up,
                        gossip::PeerState::Down => PeerState::Down,
                    },
                    path: "direct".into(),
                    rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1e3),
                    key_generation: m.key_generation,
                    key_age_secs: m.key_age.map(|d| d.as_secs_f64()),
                    tx: traffic
                        .as_ref()
                        .map(|t| Traffic {
                            bytes: t.tx_bytes,
                            packets: t.tx_packets,
                        })
                        .unwrap_or_default(),
                    rx: traffic
                        .as_ref()
                        .map(|t| Traffic {
                            bytes: t.rx_bytes,
                            packets: t.rx_packets,
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        StatusResponse {
            host: api::HostStatus {
                id: self.id().to_string(),
                name: self.settings.name.clone(),
                control_address: self.node.local_addr().to_string(),
                data_address: self.dp.local_addr().to_string(),
            },
            mesh_size: 1 + peers.len(),
            peers,
            networks: replicated::live(&self.networks).len(),
            attachments: self.local.try_lock().map(|l| l.attachments.len()).unwrap_or(0),
            drops: stats
                .drops
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.status().peers
    }

    fn network_view(&self, def: &NetworkDef) -> api::Network {
        let w = networks::wire_id(&def.id);
        api::Network {
            id: def.id.clone(),
            subnet: def.subnet.to_string(),
            wire_id: w,
            bridge: networks::bridge_name(&self.settings.link_prefix, w),
            mtu: self.mtu,
            created_by: def.created_by.clone(),
        }
    }

    pub fn list_networks(&self) -> Vec<api::Network> {
        replicated::live(&self.networks)
            .values()
            .map(|d| self.network_view(d))
            .collect()
    }

    fn network(&self, id: &str) -> Result<NetworkDef, ApiError> {
        replicated::get(&self.networks, id).ok_or_else(|| {
            ApiError::NotFound(format!(
                "network {id:?} does not exist (see `meshctl network list`)"
            ))
        })
    }

    pub async fn create_network(
        &self,
        req: api::CreateNetworkRequest,
    ) -> Result<api::Network, ApiError> {
        networks::validate_network_id(&req.id).map_err(ApiError::bad)?;
        let subnet = networks::parse_subnet(&req.subnet).map_err(ApiError::bad)?;
        let existing = replicated::live(&self.networks);
        if existing.contains_key(&req.id) {
            return Err(ApiError::Conflict(format!("network {:?} already exists", req.id)));
        }
        let w = networks::wire_id(&req.id);
        if let Some(other) = existing.values().find(|n| networks::wire_id(&n.id) == w) {
            return Err(ApiError::Conflict(format!(
                "network id {:?} collides on the wire with network {:?}; choose another id",
                req.id, other.id
            )));
        }
        let def = NetworkDef {
            id: req.id.clone(),
            subnet,
            created_by: self.id().to_hex(),
        };
        replicated::put(&self.networks, self.id(), &req.id, def.clone());
        let mut local = self.local.lock().await;
        self.reconcile_networks_locked(&mut local).await;
        if !local.realized.contains_key(&req.id) {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "network {} was recorded but its bridge could not be set up on this host; see the meshd log",
                req.id
            )));
        }
        Ok(self.network_view(&def))
    }

    pub async fn remove_network(&self, id: &str, force: bool) -> Result<api::Network, ApiError> {
        let def = self.network(id)?;
        let in_use: Vec<EndpointRecord> = replicated::live(&self.endpoints)
            .into_values()
            .filter(|e| e.network == id)
            .collect();
        if !in_use.is_empty() && !force {
            return Err(ApiError::Conflict(format!(
                "network {id:?} has {} container(s) attached; detach them first or pass --force",
                in_use.len()
            )));
        }
        replicated::remove(&self.networks, self.id(), id);
        for e in in_use {
            replicated::remove(&self.endpoints, self.id(), &networks::endpoint_key(id, e.ip));
        }
        let mut local = self.local.lock().await;
        self.reconcile_networks_locked(&mut local).await;
        Ok(self.network_view(&def))
    }

    pub async fn list_attachments(&self) -> Vec<Attachment> {
        self.local
            .lock()
            .await
            .attachments
            .iter()
            .map(|a| a.attachment.clone())
            .collect()
    }

    pub async fn attach(&self, req: api::AttachRequest) -> Result<Attachment, ApiError> {
        let net = self.network(&req.network)?;
        let ip_text = req.ip.as_deref().ok_or_else(|| {
            ApiError::BadRequest(
                "--ip ADDR/LEN is required: automatic address allocation is not available yet".into(),
            )
        })?;
        let (ip, prefix_len) = networks::parse_member_address(ip_text, &net).map_err(ApiError::bad)?;
        let target = NetnsTarget::resolve(&req.target).map_err(|e| {
            let msg = format!("{e:#}");
            if msg.contains("no process") {
                ApiError::NotFound(msg)
            } else {
                ApiError::BadRequest(msg)
            }
        })?;
        if target.is_current() {
            return Err(ApiError::BadRequest(format!(
                "{} is meshd's own network namespace, not a container's",
                target.path.display()
            )));
        }
        let ifname = req
            .ifname
            .clone()
            .unwrap_or_else(|| networks::default_ifname(&net.id));
        networks::validate_ifname(&ifname).map_err(ApiError::bad)?;

        let mut local = self.local.lock().await;
        if let Some(a) = local.attachments.iter().find(|a| {
            a.attachment.network == net.id && a.netns_dev == target.dev && a.netns_ino == target.ino
        }) {
            return Err(ApiError::Conflict(format!(
                "{} is already attached to network {} as {}",
                req.target, net.id, a.attachment.ip
            )));
        }
        let key = networks::endpoint_key(&net.id, ip);
        if let Some(owner) = replicated::get(&self.endpoints, &key) {
            return Err(ApiError::Conflict(format!(
                "address {ip} is already in use on network {} (host {})",
                net.id,
                &owner.host[..owner.host.len().min(12)]
            )));
        }
        let Some(&w) = local.realized.get(&net.id) else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "network {} has no bridge on this host; see the meshd log",
                net.id
            )));
        };

        let suffix: u32 = rand::random();
        let prefix = &self.settings.link_prefix;
        let host_if = format!("{prefix}v{suffix:08x}");
        let peer_if = format!("{prefix}c{suffix:08x}");
        let result = self
            .plumb_veth(&target, w, &host_if, &peer_if, &ifname, ip, prefix_len)
            .await;
        let mac = match result {
            Ok(mac) => mac,
            Err(e) => {
                // Undo: deleting the host end removes the pair, wherever the
                // other end went.
                if let Err(e2) = self.nl.delete(&host_if).await {
                    warn!("cleanup of {host_if} after a failed attach: {e2:#}");
                }
                return Err(ApiError::Internal(e.context(format!(
                    "attaching {} to network {}",
                    req.target, net.id
                ))));
            }
        };
        let attachment = Attachment {
            network: net.id.clone(),
            netns: target.path.display().to_string(),
            ifname,
            host_ifname: host_if,
            ip: format!("{ip}/{prefix_len}"),
            mac: format_mac(&mac),
            container_id: req.container_id.clone(),
            name: req.name.clone(),
            version: req.version.clone(),
        };
        local.attachments.push(AttachmentRecord {
            attachment: attachment.clone(),
            netns_dev: target.dev,
            netns_ino: target.ino,
        });
        self.state.save_attachments(&local.attachments)?;
        replicated::put(
            &self.endpoints,
            self.id(),
            &key,
            EndpointRecord {
                network: net.id.clone(),
                ip,
                mac: attachment.mac.clone(),
                host: self.id().to_hex(),
            },
        );
        info!(network = %net.id, netns = %attachment.netns, ip = %attachment.ip, "attached");
        Ok(attachment)
    }

    #[allow(clippy::too_many_arguments)]
    async fn plumb_veth(
        &self,
        target: &NetnsTarget,
        wire: u32,
        host_if: &str,
        peer_if: &str,
        ifname: &str,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<[u8; 6]> {
        let bridge = self
            .nl
            .link(&networks::bridge_name(&self.settings.link_prefix, wire))
            .await?
            .context("the network's bridge is missing")?;
        self.nl.create_veth(host_if, peer_if, self.mtu).await?;
        self.nl.enslave(host_if, &bridge, self.mtu).await?;
        self.nl.move_to_netns(peer_if, &target.open()?).await?;
        let (peer_if, ifname, mtu) = (peer_if.to_string(), ifname.to_string(), self.mtu);
        in_netns(target, move || async move {
            let nl = Netlink::connect()?;
            nl.configure_interface(&peer_if, &ifname, mtu, ip, prefix_len)
                .await
        })
        .await
    }

    pub async fn detach(&self, req: api::DetachRequest) -> Result<Attachment, ApiError> {
        let net = self.network(&req.network)?;
        // The namespace may be gone already (the container exited): then
        // match the path we recorded, or the container id.
        let target = req.target.as_deref().and_then(|t| NetnsTarget::resolve(t).ok());
        if req.target.is_none() && req.container_id.is_none() {
            return Err(ApiError::BadRequest(
                "detach needs a target (PID or netns path) or a container id".into(),
            ));
        }
        let mut local = self.local.lock().await;
        let pos = local.attachments.iter().position(|a| {
            a.attachment.network == net.id
                && match (&req.container_id, &target, &req.target) {
                    (Some(id), _, _) => a.attachment.container_id.as_deref() == Some(id.as_str()),
                    (None, Some(t), _) => a.netns_dev == t.dev && a.netns_ino == t.ino,
                    (None, None, Some(path)) => &a.attachment.netns == path,
                    (None, None, None) => false,
                }
        });
        let Some(pos) = pos else {
            let what = req
                .container_id
                .as_deref()
                .map(|c| format!("container {c}"))
                .or(req.target.clone())
                .unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "{what} is not attached to network {}",
                net.id
            )));
        };
        let rec = local.attachments[pos].clone();
        self.nl.delete(&rec.attachment.host_ifname).await?;
        local.attachments.remove(pos);
        self.state.save_attachments(&local.attachments)?;
        self.forget_endpoint(&rec);
        info!(network = %net.id, netns = %rec.attachment.netns, "detached");
        Ok(rec.attachment)
    }
}

fn ip_of(addr_len: &str) -> IpAddr {
    addr_len
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn load_snapshot<S: gossip::Mergeable + Default>(state: &StateDir, name: &str) -> S {
    match state.load_channel(name) {
        Ok(Some(bytes)) => S::decode(&bytes).unwrap_or_else(|e| {
            warn!(channel = name, "ignoring unreadable snapshot: {e}");
            S::default()
        }),
        Ok(None) => S::default(),
        Err(e) => {
            warn!(channel = name, "cannot read snapshot: {e:#}");
            S::default()
        }
    }
}

fn save_snapshot<V: replicated::Record>(state: &StateDir, name: &str, ch: &Records<V>) {
    use gossip::Mergeable;
    if let Err(e) = state.save_channel(name, &ch.get().encode()) {
        warn!(channel = name, "cannot save snapshot: {e:#}");
    }
}

/// `meshd --cleanup`: remove every device this daemon creates, and forget
/// the attachments (their veths are gone with the host ends).
pub async fn cleanup(settings: &Settings) -> Result<usize> {
    let nl = Netlink::connect()?;
    let mut removed = 0;
    for link in nl.links().await? {
        if networks::is_ours(&settings.link_prefix, &link.name) {
            nl.delete(&link.name).await?;
            removed += 1;
        }
    }
    if settings.state_dir.exists() {
        let state = StateDir::open(&settings.state_dir)?;
        state.save_attachments(&[])?;
    }
    Ok(removed)
}
