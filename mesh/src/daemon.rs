//! The daemon: gossip and data plane wired together, networks realised as
//! bridges and TAPs, containers attached by veth pairs.

use anyhow::{Context, Result};
use dataplane::{Dataplane, IpVersion, NetworkId};
use gossip::{Identity, MeshSecret, Node, PeerId};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::alloc::RemovedPeer;
use crate::api::{self, PeerState, PeerStatus, StatusResponse, Traffic};
use crate::config::Settings;
use crate::dns::{RecordSource, Resolver};
use crate::error::ApiError;
use crate::ipam::{self, RangeEntry, SpaceRequest};
use crate::netdev::{Netlink, NetnsTarget};
use crate::networks::{self, EndpointRecord, NetworkDef};
use crate::peers::{NetworkScope, PeerTable, META_DATA_PORT};
use crate::replicated::{self, Records};
use crate::state::{write_atomic, AttachmentRecord, StateDir};

const NETWORKS_CHANNEL: &str = "networks";
const ENDPOINTS_CHANNEL: &str = "endpoints";
const RING_CHANNEL: &str = "ipam";
const REQUESTS_CHANNEL: &str = "ipam-requests";
const REMOVED_CHANNEL: &str = "removed-peers";
/// Underlay MTU assumed for the overlay MTU (an Ethernet LAN).
const UNDERLAY_MTU: u32 = 1500;

pub struct Daemon {
    pub settings: Settings,
    pub(crate) state: StateDir,
    pub(crate) node: Node,
    pub(crate) dp: Dataplane,
    pub(crate) nl: Netlink,
    pub(crate) peers: Arc<PeerTable>,
    pub(crate) networks: Records<NetworkDef>,
    pub(crate) endpoints: Records<EndpointRecord>,
    /// Address ranges and their owners ([`crate::ipam`]).
    pub(crate) ring: Records<RangeEntry>,
    pub(crate) requests: Records<SpaceRequest>,
    pub(crate) removed: Records<RemovedPeer>,
    /// This host's allocations per network (a sync lock: allocating and
    /// granting space never wait while holding it).
    pub(crate) used: std::sync::Mutex<BTreeMap<String, BTreeSet<u32>>>,
    pub(crate) resolver: Arc<Resolver>,
    /// Receives the secrets of restricted networks this host is in.
    pub(crate) host_key: crate::netsecret::HostKey,
    /// Addresses reserved without an attachment.
    pub(crate) reservations: Mutex<Vec<crate::state::Reservation>>,
    /// Serialises every change to this host's devices and attachment list.
    pub(crate) local: Mutex<Local>,
    pub(crate) mtu: u32,
}

#[derive(Default)]
pub(crate) struct Local {
    pub(crate) attachments: Vec<AttachmentRecord>,
    /// Networks that have a bridge and TAP here, by id → wire id.
    pub(crate) realized: BTreeMap<String, u32>,
    /// The DNS server task of each realised network.
    dns_tasks: BTreeMap<String, Vec<tokio::task::JoinHandle<()>>>,
}

/// What the DNS server reads: live records, minus those of hosts that are
/// down or removed.
struct MeshRecords {
    endpoints: Records<EndpointRecord>,
    removed: Records<RemovedPeer>,
    node: Node,
    me: String,
}

impl RecordSource for MeshRecords {
    fn records(&self, network: &str) -> Vec<EndpointRecord> {
        let up: BTreeSet<String> = self
            .node
            .members()
            .iter()
            .filter(|m| m.state == gossip::PeerState::Up)
            .map(|m| m.id.to_hex())
            .chain(std::iter::once(self.me.clone()))
            .collect();
        let removed = replicated::live(&self.removed);
        replicated::live(&self.endpoints)
            .into_values()
            .filter(|e| {
                e.network == network && up.contains(&e.host) && !removed.contains_key(&e.host)
            })
            .collect()
    }
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
        let host_key = crate::netsecret::HostKey::load_or_create(&state.file("network.key"))
            .context("loading the host's network key")?;

        let data_bind = SocketAddr::new(settings.listen.ip(), settings.data_port);
        let mut dp_options =
            crate::config::dataplane_options(|name| std::env::var_os(name).is_some());
        if let Some(workers) = settings.dp_workers {
            dp_options.workers = workers;
        }
        let dp = Dataplane::start(data_bind, dp_options)
            .with_context(|| format!("starting the data plane on udp {data_bind}"))?;
        let peers = PeerTable::new(dp.clone());

        let mut cfg = gossip::Config::new(identity, secret, settings.listen, peers.clone());
        cfg.name = settings.name.clone();
        cfg.state_dir = Some(settings.state_dir.clone());
        cfg.meta
            .insert(META_DATA_PORT.into(), dp.local_addr().port().to_string());
        let ciphers = settings.cipher.offer();
        info!(ciphers = %ciphers.to_meta(), "data-plane ciphers offered");
        cfg.meta
            .insert(gossip::cipher::META_CIPHERS.into(), ciphers.to_meta());
        cfg.meta.insert(
            crate::netsecret::META_NETWORK_KEY.into(),
            host_key.public_hex(),
        );
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting the control plane on udp {}", settings.listen))?;

        let networks = node.channel(NETWORKS_CHANNEL, load_snapshot(&state, NETWORKS_CHANNEL));
        let endpoints = node.channel(ENDPOINTS_CHANNEL, load_snapshot(&state, ENDPOINTS_CHANNEL));
        let ring = node.channel(RING_CHANNEL, load_snapshot(&state, RING_CHANNEL));
        let requests = node.channel(REQUESTS_CHANNEL, Default::default());
        let removed = node.channel(REMOVED_CHANNEL, load_snapshot(&state, REMOVED_CHANNEL));
        let resolver = Resolver::new(
            Arc::new(MeshRecords {
                endpoints: endpoints.clone(),
                removed: removed.clone(),
                node: node.clone(),
                me: node.id().to_hex(),
            }),
            settings.dns_upstreams.clone(),
        );
        let nl = Netlink::connect()?;
        let mtu = dataplane::overlay_mtu(
            UNDERLAY_MTU,
            if settings.listen.is_ipv6() {
                IpVersion::V6
            } else {
                IpVersion::V4
            },
        );
        let attachments = state.load_attachments()?;
        let reservations = state.load_reservations()?;
        let daemon = Arc::new(Daemon {
            settings,
            state,
            node,
            dp,
            nl,
            peers,
            networks,
            endpoints,
            ring,
            requests,
            removed,
            used: Default::default(),
            resolver,
            host_key,
            reservations: Mutex::new(reservations),
            local: Mutex::new(Local {
                attachments,
                ..Local::default()
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
                [
                    networks::bridge_name(prefix, w),
                    networks::tap_name(prefix, w),
                ]
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
            if veth.is_some() && ns.still_exists() && desired.contains_key(&rec.attachment.network)
            {
                kept.push(rec);
            } else {
                info!(network = %rec.attachment.network, netns = %rec.attachment.netns, "dropping stale attachment");
                self.nl.delete(&rec.attachment.host_ifname).await?;
                self.forget_endpoint(&rec);
            }
        }
        local.attachments = kept;
        self.state.save_attachments(&local.attachments)?;
        for rec in &local.attachments {
            if let IpAddr::V4(v4) = ip_of(&rec.attachment.ip) {
                self.note_allocated(&rec.attachment.network, v4);
            }
        }

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
        let reservations = self.reservations.lock().await.clone();
        for r in &reservations {
            self.note_allocated(&r.network, r.ip);
        }
        for (key, rec) in replicated::live(&self.endpoints) {
            if rec.host == me
                && !local.attachments.iter().any(|a| {
                    networks::endpoint_key(&a.attachment.network, ip_of(&a.attachment.ip)) == key
                })
                && !reservations
                    .iter()
                    .any(|r| networks::endpoint_key(&r.network, IpAddr::V4(r.ip)) == key)
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
        for (name, ch) in [
            (ENDPOINTS_CHANNEL, SnapshotOf::Endpoints),
            (RING_CHANNEL, SnapshotOf::Ring),
            (REMOVED_CHANNEL, SnapshotOf::Removed),
        ] {
            let d = self.clone();
            let mut rx = match ch {
                SnapshotOf::Endpoints => d.endpoints.subscribe(),
                SnapshotOf::Ring => d.ring.subscribe(),
                SnapshotOf::Removed => d.removed.subscribe(),
            };
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    match ch {
                        SnapshotOf::Endpoints => save_snapshot(&d.state, name, &d.endpoints),
                        SnapshotOf::Ring => save_snapshot(&d.state, name, &d.ring),
                        SnapshotOf::Removed => save_snapshot(&d.state, name, &d.removed),
                    }
                }
            });
        }
        // Address space: answer requests, inherit from removed hosts.
        let d = self;
        let (mut a, mut b, mut c) = (
            d.requests.subscribe(),
            d.ring.subscribe(),
            d.removed.subscribe(),
        );
        tokio::spawn(async move {
            let mut answered = BTreeSet::new();
            loop {
                d.serve_ipam(&mut answered);
                tokio::select! {
                    r = a.changed() => if r.is_err() { break },
                    r = b.changed() => if r.is_err() { break },
                    r = c.changed() => if r.is_err() { break },
                }
            }
        });
    }

    pub(crate) async fn reconcile_networks_locked(&self, local: &mut Local) {
        let me = self.id().to_hex();
        let all = replicated::live(&self.networks);
        let desired: BTreeMap<String, NetworkDef> = all
            .iter()
            .filter(|(_, n)| n.allows_host(&me))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
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
        self.peers.set_networks(
            local
                .realized
                .iter()
                .map(|(id, w)| NetworkScope {
                    id: NetworkId(*w),
                    hosts: desired.get(id).map(|n| n.hosts.clone()).unwrap_or_default(),
                })
                .collect(),
        );
        for id in local.realized.keys().cloned().collect::<Vec<_>>() {
            if local.dns_tasks.contains_key(&id) {
                continue;
            }
            if let Some(def) = desired.get(&id) {
                match self.start_dns(def) {
                    Ok(tasks) => {
                        local.dns_tasks.insert(id, tasks);
                    }
                    Err(e) => warn!(network = %id, "cannot serve DNS: {e:#}"),
                }
            }
        }
    }

    /// One DNS socket per address family on the network's bridge.
    fn start_dns(&self, def: &NetworkDef) -> Result<Vec<tokio::task::JoinHandle<()>>> {
        let bridge = networks::bridge_name(&self.settings.link_prefix, networks::wire_id(&def.id));
        let v4 = IpAddr::V4(ipam::service_address(def.subnet));
        let v6 = IpAddr::V6(def.ipv6_for(ipam::service_address(def.subnet)));
        let mut tasks = Vec::new();
        for addr in [v4, v6] {
            let sock = crate::dns::bind_on_device(addr, &bridge)
                .with_context(|| format!("binding DNS on {addr}:53 ({bridge})"))?;
            tasks.push(tokio::spawn(crate::dns::serve(
                self.resolver.clone(),
                def.id.clone(),
                sock,
            )));
        }
        Ok(tasks)
    }

    async fn realize_network(&self, def: &NetworkDef) -> Result<u32> {
        let prefix = &self.settings.link_prefix;
        let w = networks::wire_id(&def.id);
        // The same MAC and service addresses on every host: a container
        // always reaches its own host's bridge for DNS, never a remote one.
        let bridge_name = networks::bridge_name(prefix, w);
        let bridge = self
            .nl
            .ensure_bridge(&bridge_name, self.mtu, networks::service_mac(w))
            .await?;
        let svc = ipam::service_address(def.subnet);
        self.nl
            .add_address(&bridge_name, IpAddr::V4(svc), 32, false)
            .await?;
        // IPv6 needs the on-link prefix for replies to leave through the
        // bridge (IPv4 assumes on-link when the socket is bound to it).
        self.nl
            .add_address(
                &bridge_name,
                IpAddr::V6(def.ipv6_for(svc)),
                def.subnet6.prefix_len(),
                true,
            )
            .await?;
        let tap = networks::tap_name(prefix, w);
        self.dp
            .add_network(NetworkId(w), &tap)
            .with_context(|| format!("opening TAP {tap}"))?;
        self.nl.enslave(&tap, &bridge, self.mtu).await?;
        let secret = if def.hosts.is_empty() {
            None
        } else {
            let me = self.id().to_hex();
            let sealed = def
                .sealed_secrets
                .get(&me)
                .context("the network's secret was not sealed to this host")?;
            Some(self.host_key.open(&def.id, sealed)?)
        };
        self.dp.set_network_secret(NetworkId(w), secret);
        info!(network = %def.id, bridge = %bridge.name, %tap, mtu = self.mtu, "network ready");
        Ok(w)
    }

    async fn teardown_network(&self, local: &mut Local, id: &str, w: u32) -> Result<()> {
        let prefix = &self.settings.link_prefix;
        for t in local.dns_tasks.remove(id).unwrap_or_default() {
            t.abort();
        }
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

    pub(crate) fn forget_endpoint(&self, rec: &AttachmentRecord) {
        let ip = ip_of(&rec.attachment.ip);
        let key = networks::endpoint_key(&rec.attachment.network, ip);
        replicated::remove(&self.endpoints, self.id(), &key);
        if let IpAddr::V4(v4) = ip {
            self.release(&rec.attachment.network, v4);
        }
    }

    /// A fresh secret for a restricted network, sealed to each member's
    /// advertised key; empty for a network of every host.
    fn seal_network_secret(
        &self,
        network: &str,
        hosts: &[String],
    ) -> Result<BTreeMap<String, String>, ApiError> {
        if hosts.is_empty() {
            return Ok(BTreeMap::new());
        }
        let secret: [u8; 32] = rand::random();
        let me = self.id().to_hex();
        let members = self.node.members();
        let mut out = BTreeMap::new();
        for h in hosts {
            let key = if *h == me {
                self.host_key.public_hex()
            } else {
                members
                    .iter()
                    .find(|m| m.id.to_hex() == *h)
                    .and_then(|m| m.meta.get(crate::netsecret::META_NETWORK_KEY).cloned())
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "host {} advertises no network key (not up, or an older meshd)",
                            self.peer_name(h)
                        ))
                    })?
            };
            let sealed =
                crate::netsecret::seal_for(&key, network, &secret).map_err(ApiError::Internal)?;
            out.insert(h.clone(), sealed);
        }
        Ok(out)
    }

    /// Host names or peer ids → peer ids (hex); this host counts too.
    fn resolve_hosts(&self, hosts: &[String]) -> Result<Vec<String>, ApiError> {
        let members = self.node.members();
        let mut out = Vec::new();
        for h in hosts {
            let me = self.id().to_hex();
            if *h == self.settings.name || me.starts_with(h.as_str()) {
                out.push(me);
                continue;
            }
            let found: Vec<String> = members
                .iter()
                .filter(|m| m.name == *h || m.id.to_hex().starts_with(h.as_str()))
                .map(|m| m.id.to_hex())
                .collect();
            match found.as_slice() {
                [one] => out.push(one.clone()),
                [] => {
                    return Err(ApiError::BadRequest(format!(
                        "unknown host {h:?} in --hosts"
                    )))
                }
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "host {h:?} in --hosts is ambiguous"
                    )))
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub fn dns_view(&self) -> Vec<api::DnsRecord> {
        let live_hosts: BTreeSet<String> = self
            .node
            .members()
            .iter()
            .filter(|m| m.state == gossip::PeerState::Up)
            .map(|m| m.id.to_hex())
            .chain(std::iter::once(self.id().to_hex()))
            .collect();
        let removed = self.removed_peers();
        replicated::live(&self.endpoints)
            .into_values()
            .filter(|e| !removed.contains(&e.host))
            .filter_map(|e| {
                let name = e.name.clone()?;
                Some(api::DnsRecord {
                    fqdn: format!("{name}.{}", e.network),
                    ip: e.ip.to_string(),
                    ip6: e.ip6.map(|v| v.to_string()),
                    version: e.version.clone(),
                    host: if e.host == self.id().to_hex() {
                        self.settings.name.clone()
                    } else {
                        self.peer_name(&e.host)
                    },
                    live: live_hosts.contains(&e.host),
                })
            })
            .collect()
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
                gossip::Error::AuthRejected { .. } => {
                    ApiError::Forbidden(format!("join {}: {e}", req.address))
                }
                other => ApiError::BadGateway(format!("join {}: {other}", req.address)),
            })?;
        // The secret now in force is the joined mesh's: keep it for restarts.
        write_atomic(
            &self.state.file("secret"),
            self.node.token().as_bytes(),
            0o600,
        )?;
        Ok(api::JoinResponse {
            peer: peer.to_string(),
        })
    }

    pub fn status(&self) -> StatusResponse {
        let stats = self.dp.stats();
        let removed = self.removed_peers();
        let members = self.node.members();
        let peers: Vec<PeerStatus> = members
            .iter()
            .filter(|m| !removed.contains(&m.id.to_hex()))
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
                    cipher: traffic
                        .as_ref()
                        .and_then(|t| t.cipher)
                        .map(|c| c.name().to_string()),
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
            attachments: self
                .local
                .try_lock()
                .map(|l| l.attachments.len())
                .unwrap_or(0),
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
        let svc = ipam::service_address(def.subnet);
        api::Network {
            id: def.id.clone(),
            subnet: def.subnet.to_string(),
            subnet6: def.subnet6.to_string(),
            dns: svc.to_string(),
            dns6: def.ipv6_for(svc).to_string(),
            labels: def.labels.clone(),
            hosts: def.hosts.clone(),
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

    pub(crate) fn network(&self, id: &str) -> Result<NetworkDef, ApiError> {
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
            return Err(ApiError::Conflict(format!(
                "network {:?} already exists",
                req.id
            )));
        }
        let w = networks::wire_id(&req.id);
        if let Some(other) = existing.values().find(|n| networks::wire_id(&n.id) == w) {
            return Err(ApiError::Conflict(format!(
                "network id {:?} collides on the wire with network {:?}; choose another id",
                req.id, other.id
            )));
        }
        let subnet6 = match &req.subnet6 {
            Some(s) => networks::parse_subnet6(s).map_err(ApiError::bad)?,
            None => networks::derive_ula(&req.id),
        };
        let hosts = self.resolve_hosts(&req.hosts)?;
        for k in req.labels.keys() {
            if k.is_empty() {
                return Err(ApiError::BadRequest(
                    "a label needs a key (key=value)".into(),
                ));
            }
        }
        let sealed_secrets = self.seal_network_secret(&req.id, &hosts)?;
        let def = NetworkDef {
            id: req.id.clone(),
            subnet,
            subnet6,
            created_by: self.id().to_hex(),
            labels: req.labels.clone(),
            hosts,
            sealed_secrets,
        };
        // The ring first: a host that learns the network can allocate at once.
        self.init_ring(&def);
        replicated::put(&self.networks, self.id(), &req.id, def.clone());
        if !def.allows_host(&self.id().to_hex()) {
            return Ok(self.network_view(&def));
        }
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
        self.drop_ring(id);
        for e in in_use {
            replicated::remove(
                &self.endpoints,
                self.id(),
                &networks::endpoint_key(id, e.ip),
            );
        }
        let mut local = self.local.lock().await;
        self.reconcile_networks_locked(&mut local).await;
        Ok(self.network_view(&def))
    }
}

#[derive(Clone, Copy)]
enum SnapshotOf {
    Endpoints,
    Ring,
    Removed,
}

pub(crate) fn ip_of(addr_len: &str) -> IpAddr {
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
