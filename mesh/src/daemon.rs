//! The daemon: the parts wired together. Gossip replicates the
//! [`records`]; the [`Allocator`] hands out addresses; the [`Fabric`]
//! carries networks on bridges and TAPs; the [`Attacher`] plugs containers
//! in and reaps those that vanish; the [`PeerTable`] feeds the data plane.
//! This file starts them, follows replicated state, and answers the API.

use anyhow::{Context, Result};
use dataplane::{Dataplane, IpVersion};
use gossip::{Identity, MeshSecret, Node, PeerId};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::alloc::Allocator;
use crate::api;
use crate::attach::Attacher;
use crate::config::Settings;
use crate::edge::{Edge, EdgeParts};
use crate::error::ApiError;
use crate::fabric::{Fabric, Realized};
use crate::isolation;
use crate::liveness::Liveness;
use crate::netdev::Netlink;
use crate::netsecret::{self, HostKey};
use crate::peers::{PeerTable, META_DATA_PORT};
use crate::reserve::Reservations;
use crate::resolvconf::NetnsEtc;
use crate::roster::Roster;
use crate::services::Services;
use crate::state::{AttachmentStore, StateDir};
use crate::traffic::Traffic;
use mesh_dns::{RecordSource, Resolver};
use mesh_model::edge::{BINDINGS_CHANNEL, FIPS_CHANNEL, POOLS_CHANNEL};
use mesh_model::hosts::{HostSet, LookupError, Scope};
use mesh_model::networks::{self, DefinitionError};
use mesh_model::records::{self, Channels, EndpointRecord, NetworkDef, RemovedPeer};
use mesh_model::services::{ServiceChannels, HEALTH_CHANNEL, LABELS_CHANNEL, SERVICES_CHANNEL};
use mesh_model::traffic::{TrafficChannels, POLICY_CHANNEL, QOS_CHANNEL};
use mesh_model::validate::Guards;
use mesh_model::views;

mod cleanup;
mod landing;
mod live;
mod mtu_sync;
mod network_ops;
mod observe;
mod runtime;
mod snapshots;
mod status;
mod strays;
mod wireguard;

pub use cleanup::cleanup;
pub use live::Reloads;
use snapshots::{keep_snapshot, open_channel};

pub struct Daemon {
    pub settings: Settings,
    state: StateDir,
    node: Node,
    dp: Dataplane,
    peers: Arc<PeerTable>,
    channels: Channels,
    alloc: Arc<Allocator>,
    attacher: Arc<Attacher>,
    fabric: Fabric,
    host_key: Arc<HostKey>,
    reservations: Reservations,
    services: Arc<Services>,
    traffic: Arc<Traffic>,
    edge: Arc<Edge>,
    roster: Arc<Roster>,
    /// The audit trail of replicated writes (`meshctl log`).
    pub(crate) journal: Arc<crate::journal::Journal>,
    isolation: Arc<isolation::Isolation>,
    /// Which networks this host carries, and why not the others.
    carried: crate::carried::Carried,
    /// Serialises every change to this host's devices: network set-up and
    /// teardown, and attaching (which needs the network's bridge to stay).
    devices: Mutex<Realized>,
    /// What the reloads of meshd.toml did (see [`crate::reload`]).
    reloads: Reloads,
    /// The WireGuard gateway (see [`crate::wireguard`]).
    wg: Arc<crate::wireguard::Gateway>,
    /// When this host's interfaces, addresses or routes changed.
    host_changes: crate::kernel::changes::HostChanges,
}

/// What the DNS server reads: live records, minus those of hosts that are
/// down or removed.
struct MeshRecords {
    channels: Channels,
    services: ServiceChannels,
    node: Node,
    roster: Arc<Roster>,
}

impl RecordSource for MeshRecords {
    fn records(&self, network: &str) -> Vec<EndpointRecord> {
        let mut records = self
            .channels
            .serving_records(network, &self.roster.hosts().live());
        // Services answer as NAME.<network> with their VIPs.
        records.extend(crate::services::dns_records(
            &self.services,
            network,
            &self.node.id().to_hex(),
        ));
        records
    }

    fn networks(&self) -> Vec<NetworkDef> {
        records::live(&self.channels.networks)
            .into_values()
            .collect()
    }
}

impl Daemon {
    pub async fn start(settings: Settings) -> Result<Arc<Daemon>> {
        // Before this run writes anything (see `follow_strays`).
        let started_ms = gossip::state::now_millis();
        crate::version::apply_test_env();
        let host_changes = crate::kernel::changes::HostChanges::spawn();
        let state = StateDir::open(&settings.state_dir)?;
        let identity = Identity::load_or_create(&state.file("identity.key"))
            .context("loading the host identity")?;
        // The mesh secret is gossip's file: it keeps the saved one, or
        // saves this fresh one.
        let new_mesh = !state.file("secret").exists();
        let host_key = Arc::new(
            HostKey::load_or_create(&state.file("network.key"))
                .context("loading the host's network key")?,
        );

        let data_bind = SocketAddr::new(settings.listen.ip(), settings.data_port);
        let mut dp_options =
            crate::config::dataplane_options(|name| std::env::var_os(name).is_some());
        if let Some(workers) = settings.dp_workers {
            dp_options.workers = workers;
        }
        let dp = Dataplane::start(data_bind, dp_options)
            .with_context(|| format!("starting the data plane on udp {data_bind}"))?;
        let peers = PeerTable::new(dp.clone());
        peers.enable_tcp_fallback(dp.local_addr());

        let mut cfg = gossip::Config::new(
            identity,
            MeshSecret::generate(),
            settings.listen,
            peers.clone(),
        );
        cfg.name = settings.name.clone();
        cfg.state_dir = Some(settings.state_dir.clone());
        cfg.rekey_interval = settings.rekey_interval;
        cfg.tcp_fallback = settings.tcp_fallback;
        cfg.tcp_extra_ports = settings.tcp_extra_port.into_iter().collect();
        cfg.channel_quota = settings.channel_quota;
        cfg.meta
            .insert(META_DATA_PORT.into(), dp.local_addr().port().to_string());
        let underlay_mtu = crate::mtu::underlay_mtu(settings.listen.ip()).unwrap_or_else(|| {
            warn!("cannot tell the underlay interface's MTU; assuming 1500");
            crate::mtu::ASSUMED_UNDERLAY_MTU
        });
        info!(underlay_mtu, "underlay MTU");
        cfg.meta.insert(
            crate::mtu::META_UNDERLAY_MTU.into(),
            underlay_mtu.to_string(),
        );
        let ciphers = settings.cipher.offer();
        info!(ciphers = %ciphers.to_meta(), "data-plane ciphers offered");
        cfg.meta
            .insert(gossip::cipher::META_CIPHERS.into(), ciphers.to_meta());
        cfg.meta.insert(
            crate::netsecret::META_NETWORK_KEY.into(),
            host_key.public_hex(),
        );
        crate::version::advertise(&mut cfg.meta);
        // The underlay subnet decides which floating-IP pools this host may
        // hold: advertised from the first record on (the edge keeps it current).
        let listen_v4 = match settings.listen.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        // A host on an IPv6 address holds no (IPv4) floating IPs.
        let v6_only = matches!(settings.listen.ip(), IpAddr::V6(ip) if !ip.is_unspecified());
        let underlay_advert = match v6_only {
            true => Vec::new(),
            false => crate::edge::underlay::adverts_for(listen_v4, &settings.link_prefix)
                .unwrap_or_else(|e| {
                    warn!("cannot read the underlay interfaces: {e:#}");
                    Vec::new()
                }),
        };
        if let Some((k, v)) = crate::edge::underlay::permits_meta(&settings.fip_pools) {
            cfg.meta.insert(k.to_string(), v);
        }
        if !underlay_advert.is_empty() {
            cfg.meta.extend(
                crate::edge::underlay::meta(&underlay_advert)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
        }
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting the control plane on udp {}", settings.listen))?;
        if new_mesh {
            info!("created a new one-host mesh");
        }
        let journal = crate::journal::Journal::open(&settings.state_dir, node.id(), &settings.name);
        node.set_journal(journal.clone());

        // Channels other channels' rules read come first.
        let networks = open_channel(&node, &state, records::NETWORKS_CHANNEL, Guards::networks());
        let removed = open_channel(&node, &state, records::REMOVED_CHANNEL, Guards::removed());
        let channels = Channels {
            endpoints: open_channel(
                &node,
                &state,
                records::ENDPOINTS_CHANNEL,
                Guards::endpoints(networks.clone(), removed.clone()),
            ),
            ring: open_channel(
                &node,
                &state,
                records::RING_CHANNEL,
                Guards::ring(networks.clone(), removed.clone()),
            ),
            requests: node.channel(
                records::REQUESTS_CHANNEL,
                Guards::requests(networks.clone()),
            ),
            settings: open_channel(
                &node,
                &state,
                records::NETWORK_SETTINGS_CHANNEL,
                Guards::network_settings(networks.clone()),
            ),
            networks,
            removed,
        };
        let service_channels = ServiceChannels {
            services: open_channel(
                &node,
                &state,
                SERVICES_CHANNEL,
                Guards::services(channels.networks.clone()),
            ),
            labels: open_channel(&node, &state, LABELS_CHANNEL, Guards::labels()),
            health: open_channel(&node, &state, HEALTH_CHANNEL, Guards::health()),
        };
        keep_snapshot(&state, SERVICES_CHANNEL, &service_channels.services);
        keep_snapshot(&state, LABELS_CHANNEL, &service_channels.labels);
        keep_snapshot(&state, HEALTH_CHANNEL, &service_channels.health);
        let traffic_channels = TrafficChannels {
            policies: open_channel(
                &node,
                &state,
                POLICY_CHANNEL,
                Guards::policies(channels.networks.clone()),
            ),
            qos: open_channel(
                &node,
                &state,
                QOS_CHANNEL,
                Guards::qos(channels.networks.clone()),
            ),
        };
        keep_snapshot(&state, POLICY_CHANNEL, &traffic_channels.policies);
        keep_snapshot(&state, QOS_CHANNEL, &traffic_channels.qos);
        let labels = service_channels.labels.clone();
        let roster = Arc::new(Roster::new(
            &node.id().to_hex(),
            &settings.name,
            &node.members(),
        ));
        journal.follow(roster.clone());
        let resolver = Resolver::new(
            Arc::new(MeshRecords {
                services: service_channels.clone(),
                channels: channels.clone(),
                node: node.clone(),
                roster: roster.clone(),
            }),
            settings.dns_upstreams.clone(),
        );
        let nl = Netlink::connect()?;
        let mtu = Arc::new(crate::mtu::Mtus::new(
            underlay_mtu,
            if settings.listen.is_ipv6() {
                IpVersion::V6
            } else {
                IpVersion::V4
            },
            channels.settings.clone(),
        ));
        let me = node.id();
        let alloc = Arc::new(Allocator::new(me, &channels));
        let (store, dropped) = AttachmentStore::load(state.clone())?;
        if dropped > 0 {
            warn!(
                dropped,
                "dropped attachment records with unparsable addresses"
            );
        }
        let attacher = Arc::new(Attacher::new(
            nl.clone(),
            settings.link_prefix.clone(),
            mtu.clone(),
            me,
            store,
            alloc.clone(),
            channels.endpoints.clone(),
            NetnsEtc::default(),
        ));
        let fabric = Fabric::new(
            nl,
            dp.clone(),
            settings.link_prefix.clone(),
            mtu.clone(),
            resolver,
            host_key.clone(),
            me.to_hex(),
        );
        let reservations =
            Reservations::load(state.clone(), alloc.clone(), channels.endpoints.clone(), me)?;
        let traffic = Traffic::new(
            me,
            settings.link_prefix.clone(),
            traffic_channels,
            channels.clone(),
            labels,
            attacher.clone(),
            dp.clone(),
        );
        // The last known policy before any bridge or container is (re)set
        // up: a restart never opens a deny network.
        traffic.install();
        let liveness = Arc::new(Liveness::default());
        let services = {
            let roster = roster.clone();
            Services::new(
                me,
                service_channels,
                channels.clone(),
                alloc.clone(),
                attacher.clone(),
                Arc::new(move || roster.hosts()),
                liveness.clone(),
            )
        };
        let isolation = Arc::new(isolation::Isolation::new(&settings.link_prefix));
        let carried = crate::carried::Carried::default();
        let pools = open_channel(&node, &state, POOLS_CHANNEL, Guards::fip_pools());
        let fips = open_channel(&node, &state, FIPS_CHANNEL, Guards::fips(pools.clone()));
        keep_snapshot(&state, POOLS_CHANNEL, &pools);
        keep_snapshot(&state, FIPS_CHANNEL, &fips);
        let bindings = open_channel(
            &node,
            &state,
            BINDINGS_CHANNEL,
            Guards::fip_bindings(pools.clone()),
        );
        keep_snapshot(&state, BINDINGS_CHANNEL, &bindings);
        let edge = {
            let (r1, n3) = (roster.clone(), node.clone());
            Edge::new(EdgeParts {
                me,
                prefix: settings.link_prefix.clone(),
                mtu,
                nl: fabric.nl.clone(),
                state: state.clone(),
                underlay: Some(settings.listen.ip()).filter(|ip| !ip.is_unspecified()),
                pools,
                fips,
                bindings,
                channels: channels.clone(),
                services: services.clone(),
                attacher: attacher.clone(),
                alloc: alloc.clone(),
                hosts: Arc::new(move || r1.hosts()),
                roster: roster.clone(),
                advertise: Arc::new(move |k, v| n3.set_meta(k, v)),
                underlay_advert,
                fip_permits: settings.fip_pools.clone(),
                carried: carried.clone(),
                isolation: isolation.clone(),
                liveness: liveness.clone(),
            })?
        };
        let wg =
            wireguard::open_gateway(&node, &state, &settings, channels.networks.clone()).await?;
        let daemon = Arc::new(Daemon {
            wg,
            settings,
            state,
            node,
            dp,
            peers,
            channels,
            alloc,
            attacher,
            fabric,
            host_key,
            reservations,
            services,
            traffic,
            edge,
            roster,
            journal,
            isolation,
            carried,
            devices: Mutex::new(Realized::default()),
            reloads: Reloads::default(),
            host_changes,
        });
        daemon.reconcile_at_start().await?;
        daemon.clone().watch_channels();
        daemon.clone().follow_strays(started_ms);
        crate::macpins::spawn(
            daemon.channels.clone(),
            daemon.attacher.clone(),
            daemon.peers.clone(),
            daemon.dp.clone(),
            daemon.id().to_hex(),
        );
        daemon.clone().spawn_mtu_sync();
        tokio::spawn(daemon.attacher.clone().reap_forever());
        daemon.clone().spawn_wireguard();
        crate::liveness::spawn_observer(
            liveness,
            daemon.roster.clone(),
            daemon.node.clone(),
            daemon.peers.clone(),
            daemon.dp.clone(),
        );
        daemon.services.clone().spawn();
        daemon.traffic.clone().spawn();
        daemon.edge.clone().spawn(daemon.host_changes.follower());
        crate::paths::spawn(
            daemon.node.clone(),
            daemon.peers.clone(),
            daemon.dp.clone(),
            daemon.host_changes.follower(),
        );
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

    /// The mesh's hosts now, this one included.
    fn hosts(&self) -> HostSet {
        HostSet::from_members(
            &self.id().to_hex(),
            &self.settings.name,
            &self.node.members(),
        )
    }

    /// Brings the kernel in line with the state directory after a start:
    /// re-adopts live bridges and attachments, removes only what is stale.
    async fn reconcile_at_start(&self) -> Result<()> {
        let mut devices = self.devices.lock().await;
        let desired = records::live(&self.channels.networks);
        self.attacher.adopt(&desired).await?;
        let attachments = self.attacher.records();
        let mut keep = self.fabric.device_names(desired.values());
        keep.extend(self.edge.device_names());
        let nl = &self.fabric.nl;
        for link in nl.links().await? {
            if !networks::is_ours(&self.settings.link_prefix, &link.name) {
                continue;
            }
            let attached = attachments
                .iter()
                .any(|a| a.attachment.host_ifname == link.name);
            if !attached && !keep.contains(&link.name) {
                info!(link = %link.name, "removing stale device");
                nl.delete(&link.name).await?;
            }
        }

        // Endpoint records of ours that nothing backs (a crash between two
        // steps of attach/detach); `follow_strays` keeps at it.
        self.remove_stray_endpoints(u64::MAX, &Default::default())
            .await;

        self.reconcile_networks_locked(&mut devices).await;
        for rec in attachments.iter().filter(|a| !crate::attach::is_macvlan(a)) {
            let w = networks::wire_id(&rec.attachment.network);
            if let Some(bridge) = nl.link(&self.fabric.bridge_of(w)).await? {
                let mtu = self.fabric.mtus().of(&rec.attachment.network);
                nl.enslave(&rec.attachment.host_ifname, &bridge, mtu)
                    .await?;
            }
        }
        Ok(())
    }

    /// Follows replicated state: realises networks that land here, keeps
    /// snapshots on disk, serves address space and applies removals.
    fn watch_channels(self: Arc<Self>) {
        keep_snapshot(
            &self.state,
            records::NETWORKS_CHANNEL,
            &self.channels.networks,
        );
        self.clone().follow_landing();
        keep_snapshot(
            &self.state,
            records::ENDPOINTS_CHANNEL,
            &self.channels.endpoints,
        );
        keep_snapshot(&self.state, records::RING_CHANNEL, &self.channels.ring);
        keep_snapshot(
            &self.state,
            records::NETWORK_SETTINGS_CHANNEL,
            &self.channels.settings,
        );
        keep_snapshot(
            &self.state,
            records::REMOVED_CHANNEL,
            &self.channels.removed,
        );
        let d = self;
        let (mut a, mut b, mut c) = (
            d.channels.requests.subscribe(),
            d.channels.ring.subscribe(),
            d.channels.removed.subscribe(),
        );
        tokio::spawn(async move {
            loop {
                d.apply_removals();
                // The roster's set: this runs tens of times a second in joins.
                d.alloc.serve(&*d.roster.hosts());
                tokio::select! {
                    r = a.changed() => if r.is_err() { break },
                    r = b.changed() => if r.is_err() { break },
                    r = c.changed() => if r.is_err() { break },
                }
            }
        });
    }

    /// A removed host stays out: its connections are refused, it is no
    /// longer dialed (it may rejoin only with a new identity), and it
    /// leaves the data plane.
    fn apply_removals(&self) {
        let ids: Vec<PeerId> = self
            .channels
            .removed_hosts()
            .iter()
            .filter_map(|h| h.parse().ok())
            .collect();
        if ids.is_empty() {
            return;
        }
        self.node.block_peers(&ids);
        for id in &ids {
            self.peers.forget(id);
        }
        // Its containers are gone with it, on every host: what `peer rm`'s
        // host did not hold would otherwise stay here while the others
        // refuse it (the endpoints guard), and the hashes never agree.
        let gone: std::collections::BTreeSet<String> = ids.iter().map(|id| id.to_hex()).collect();
        for (key, e) in records::live(&self.channels.endpoints) {
            if gone.contains(&e.host) {
                records::remove(&self.channels.endpoints, self.id(), &key);
            }
        }
    }

    async fn reconcile_networks_locked(&self, devices: &mut Realized) {
        let desired = self.land(devices).carried.clone();
        for (id, w) in self.fabric.realize_missing(devices, &desired).await {
            if let Err(e) = self.attacher.drop_network(&id).await {
                warn!(network = %id, "cannot detach the network's containers: {e:#}");
            }
            if let Err(e) = self.fabric.teardown(devices, &id, w).await {
                warn!(network = %id, "cannot remove network: {e:#}");
            }
        }
        self.peers
            .set_networks(self.fabric.finish(devices, &desired));
        self.apply_isolation(devices, &desired);
        // Bridges exist now: host addresses on them can be set up.
        self.edge.poke();
    }

    /// Rebuilds the host's isolation table for the networks realised here
    /// (see [`crate::isolation`]). A failure is logged, not fatal: the
    /// networks themselves still work.
    fn apply_isolation(&self, devices: &Realized, desired: &BTreeMap<String, NetworkDef>) {
        let bridges: Vec<isolation::Bridge> = devices
            .wires
            .iter()
            .filter_map(|(id, w)| {
                let def = desired.get(id)?;
                let svc = mesh_model::ipam::service_address(def.subnet);
                Some(isolation::Bridge {
                    name: self.fabric.bridge_of(*w),
                    service4: svc,
                    service6: def.ipv6_for(svc),
                })
            })
            .collect();
        if let Err(e) = self.isolation.set_bridges(bridges) {
            warn!("networks are NOT isolated on this host: {e:#}");
        }
    }

    // ---- API operations ------------------------------------------------

    pub fn token(&self) -> String {
        self.node.token()
    }

    /// `meshctl token rotate` (and `peer rm`): revokes the current secret.
    pub fn rotate_token(&self) -> Result<String, ApiError> {
        self.node
            .rotate_secret()
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("rotating the mesh secret: {e}")))
    }

    pub async fn join(&self, req: api::JoinRequest) -> Result<api::JoinResponse, ApiError> {
        let secret = MeshSecret::from_str(req.token.trim())
            .map_err(|e| ApiError::BadRequest(format!("invalid token: {e}")))?;
        // Gossip keeps the joined mesh's secret for restarts.
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
        Ok(api::JoinResponse {
            peer: peer.to_string(),
        })
    }

    pub fn dns_view(&self) -> Vec<api::DnsRecord> {
        views::dns(
            &records::live(&self.channels.endpoints),
            &self.channels.removed_hosts(),
            &self.hosts(),
        )
    }

    pub fn ipam_view(&self) -> Vec<api::IpamNetwork> {
        let ring: Vec<_> = records::live(&self.channels.ring).into_values().collect();
        views::ipam(
            &records::live(&self.channels.networks),
            &ring,
            &records::live(&self.channels.endpoints),
            &self.hosts(),
        )
    }

    pub async fn list_attachments(&self) -> Vec<api::Attachment> {
        self.attacher.list()
    }

    pub async fn attach(&self, req: api::AttachRequest) -> Result<api::Attachment, ApiError> {
        let net = self.network_here(&req.network)?;
        let devices = self.devices.lock().await;
        let Some(&wire) = devices.wires.get(&net.id) else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "network {} has no bridge on this host; see the meshd log",
                net.id
            )));
        };
        let result = self.attacher.attach(&net, wire, &req, &self.hosts()).await;
        drop(devices);
        let a = result?;
        self.services.note_attachment(&a);
        if let Err(e) = self.ready(&a, true).await {
            // Fail closed: a container whose port is not checked is no
            // attachment (its veth passes nothing meanwhile).
            let undo = api::DetachRequest {
                target: Some(a.netns.clone()),
                network: a.network.clone(),
                container_id: None,
                origin: None,
            };
            if let Err(d) = self.detach(undo).await {
                warn!(netns = %a.netns, "cannot undo the attachment: {d}");
            }
            return Err(ApiError::Internal(anyhow::anyhow!(e)));
        }
        Ok(a)
    }

    /// What a container needs before its attach returns (a container that
    /// connects out at start must find it there): its port security (an
    /// error if that failed) and policy, its services' rules and, with
    /// `routes`, on an egress
    /// network its default route (a runtime that moves the interface in
    /// itself sets that route from the gateway the plugin names).
    pub(crate) async fn ready(&self, a: &api::Attachment, routes: bool) -> Result<(), String> {
        let traffic = self.traffic.clone();
        let ports = tokio::task::spawn_blocking(move || traffic.install_checked())
            .await
            .map_err(|e| e.to_string())?;
        self.services.sync_once().await;
        if routes && self.channels.settings_of(&a.network).egress {
            self.edge.reconcile().await;
        }
        ports
    }

    pub async fn detach(&self, req: api::DetachRequest) -> Result<api::Attachment, ApiError> {
        let net = self.network(&req.network)?;
        self.attacher.detach(&net, &req).await
    }

    pub async fn reserve(&self, req: api::ReserveRequest) -> Result<api::Reservation, ApiError> {
        let net = self.network_here(&req.network)?;
        self.reservations.reserve(&net, &req, &self.hosts()).await
    }

    pub async fn release_reservation(
        &self,
        req: api::ReleaseRequest,
    ) -> Result<api::Reservation, ApiError> {
        self.reservations.release(&req).await
    }

    /// `meshctl peer rm`: the host is gone for good. Safe on any number of
    /// hosts at once: the removal is a mesh-wide fact, and who inherits its
    /// ranges is computed the same way everywhere.
    pub async fn remove_peer(&self, which: &str) -> Result<api::RemovePeerResponse, ApiError> {
        let hosts = self.hosts();
        let m = hosts.resolve(which, Scope::Peers).map_err(|e| match e {
            LookupError::Unknown(_) => {
                ApiError::NotFound(format!("no peer named or with id {which:?}"))
            }
            ambiguous => ApiError::BadRequest(ambiguous.to_string()),
        })?;
        if m.up {
            return Err(ApiError::Conflict(format!(
                "peer {} is up; stop its meshd before removing it for good",
                m.name
            )));
        }
        records::put(
            &self.channels.removed,
            self.id(),
            &m.id,
            RemovedPeer {
                id: m.id.clone(),
                name: m.name.clone(),
                removed_by: self.id().to_hex(),
            },
        );
        // Its containers go with it (`apply_removals`, on every host).
        self.apply_removals();
        // Removal revokes: the removed host holds the current secret, and
        // with it could come back under a fresh identity.
        self.rotate_token()?;
        Ok(api::RemovePeerResponse {
            removed: m.name.clone(),
        })
    }

    /// Policy and QoS (see [`crate::traffic`]); the API calls it directly.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The edge (see [`crate::edge`]); the API calls it directly.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// Services (see [`crate::services`]); the API calls it directly.
    pub fn services(&self) -> &Services {
        &self.services
    }
}
