//! Request and response bodies of every route (JSON).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// `host:port` of any member of the mesh to join (its control port).
    pub address: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The peer we reached.
    pub peer: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Connecting,
    Up,
    Down,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            PeerState::Connecting => "connecting",
            PeerState::Up => "up",
            PeerState::Down => "down",
        })
    }
}

/// Traffic counters of one direction.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Traffic {
    pub bytes: u64,
    pub packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: String,
    pub name: String,
    /// Control (QUIC) address of the peer.
    pub address: String,
    /// Data-plane (UDP) address frames are sent to, once known.
    pub data_address: Option<String>,
    pub state: PeerState,
    /// Data path: `direct`, `relayed via <host>`, or `none` (no working
    /// path found yet).
    pub path: String,
    /// Control connection: `direct`, `relayed via <host>`, or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Largest sealed datagram (UDP payload) that reaches the peer on the
    /// data path, from the path MTU probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u32>,
    /// Round trip and loss of the data path's probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_loss: Option<f64>,
    /// The peer's wall clock minus ours, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<f64>,
    /// The peer's meshd version, as it advertises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Protocol versions the peer speaks, `MIN-MAX` (within the major of
    /// its ALPN), as it advertises them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The protocol version a link with the peer speaks (the highest in
    /// both ranges); absent when the ranges do not meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_protocol: Option<u32>,
    pub rtt_ms: Option<f64>,
    pub key_generation: Option<u64>,
    pub key_age_secs: Option<f64>,
    /// Data-plane AEAD of the current keys (`aes-256-gcm`,
    /// `chacha20-poly1305`); absent before keys or from older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    pub tx: Traffic,
    pub rx: Traffic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    pub id: String,
    pub name: String,
    pub control_address: String,
    pub data_address: String,
    /// This meshd's version and protocol range (`MIN-MAX`); absent from
    /// daemons before 0.2.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The protocol's major version, as its ALPN id (`mesh/2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub host: HostStatus,
    /// Hosts in the mesh, this one included.
    pub mesh_size: usize,
    pub peers: Vec<PeerStatus>,
    pub networks: usize,
    pub attachments: usize,
    /// Data-plane datagrams dropped, by reason.
    pub drops: BTreeMap<String, u64>,
    /// This host's own addresses on networks (`meshctl expose`, gateways).
    #[serde(default)]
    pub host_addresses: Vec<HostAddress>,
    /// What the data plane's path probing costs (see docs/paths.md, "Paths").
    #[serde(default)]
    pub probing: ProbingStatus,
    /// The data plane's switch: pinned and learned MACs, spoofs.
    #[serde(default)]
    pub switch: SwitchStatus,
    /// Networks of the mesh this host does not carry, with why (an
    /// overlap with another network, the LAN or a route of this host, a
    /// global IPv6 prefix it does not permit, its `max_networks`).
    #[serde(default)]
    pub refused_networks: BTreeMap<String, RefusedNetwork>,
    /// The last reload of meshd.toml (`systemctl reload meshd`), if any
    /// since meshd started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadStatus>,
    /// What the control plane floods on change (None from daemons that
    /// predate the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip: Option<GossipStatus>,
}

/// What the control plane has flooded since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStatus {
    /// Member records (this host's and others') taken as news and sent on
    /// every link: they move on joins, leaves and changes of a host's
    /// addresses or metadata, never while the mesh is idle.
    pub member_updates: u64,
}

/// Why this host does not carry a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedNetwork {
    /// `overlaps_network`, `wire_id`, `overlaps_underlay`,
    /// `overlaps_route`, `global_ipv6` or `max_networks`.
    pub reason: String,
    pub detail: String,
}

/// The data plane's MAC switching on this host, every network summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchStatus {
    /// MACs of attachments pinned to their hosts (from the endpoint records).
    pub pinned_macs: usize,
    /// MACs learned from frames (those no attachment claims).
    pub learned_macs: usize,
    /// New or moved MACs not learned: their peer or network had its share.
    pub learn_refused: u64,
    /// Frames dropped because their source MAC is pinned to another host,
    /// by the peer (host name) they came from; non-zero ones only. Spoofs
    /// from this host's own TAP count in `drops.spoofed_source` only.
    #[serde(default)]
    pub spoofed_from: BTreeMap<String, u64>,
}

/// Data-path probing on this host: only active peers are probed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbingStatus {
    /// Peers whose path is probed now (traffic within 30 s, or new).
    pub active_peers: usize,
    /// Probes (pings and answers) sent directly since the start.
    pub probes_direct: u64,
    /// Probes sent in relay envelopes since the start.
    pub probes_relayed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    pub id: String,
    /// IPv4 subnet in CIDR form, e.g. `10.40.0.0/24`.
    pub subnet: String,
    /// IPv6 prefix; default: a ULA /64 derived from the id.
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Restrict the network to these hosts (names or peer ids); empty = all.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Default `open`.
    #[serde(default)]
    pub policy: Option<PolicyMode>,
    /// Containers reach outside the mesh through their host.
    #[serde(default)]
    pub egress: bool,
    /// Interface MTU of the network's bridge, TAP and veths; default: what
    /// the smallest known path between the hosts allows.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// Whether a network passes everything (`open`) or only what a policy
/// rule allows (`deny`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Open,
    Deny,
}

impl std::fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            PolicyMode::Open => "open",
            PolicyMode::Deny => "deny",
        })
    }
}

impl std::str::FromStr for PolicyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(PolicyMode::Open),
            "deny" => Ok(PolicyMode::Deny),
            other => Err(format!("policy {other:?} is neither open nor deny")),
        }
    }
}

/// `PATCH /v1/networks/{id}`: change what any member may change; absent
/// fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateNetworkRequest {
    #[serde(default)]
    pub policy: Option<PolicyMode>,
    #[serde(default)]
    pub egress: Option<bool>,
    /// Some(0): back to the default (the smallest known path's).
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    pub subnet: String,
    pub subnet6: String,
    /// Address of the DNS server on this network (on every host).
    pub dns: String,
    pub dns6: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Peer ids the network is restricted to; empty = every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Identifier carried on the wire (derived from `id`).
    pub wire_id: u32,
    /// Bridge on this host.
    pub bridge: String,
    /// The interface MTU in use on this host.
    pub mtu: u32,
    /// Whether `mtu` was set for the network (else it is the default).
    #[serde(default)]
    pub mtu_set: bool,
    /// Host that created it.
    pub created_by: String,
    #[serde(default)]
    pub policy: PolicyMode,
    #[serde(default)]
    pub egress: bool,
}

/// What `attach`/`detach` act on: a process (its network namespace) or a
/// network namespace file such as `/run/netns/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachRequest {
    /// A PID or a path to a network namespace.
    pub target: String,
    pub network: String,
    /// `ADDR/LEN`; required until address allocation lands.
    pub ip: Option<String>,
    /// Interface name inside the container; default `eth-<network>`.
    pub ifname: Option<String>,
    /// The runtime's container id (CNI, OCI hooks): lets a later detach find
    /// the attachment after the namespace is gone.
    #[serde(default)]
    pub container_id: Option<String>,
    /// DNS name of the container on the network.
    #[serde(default)]
    pub name: Option<String>,
    /// Deployment version label, for version-aware DNS answers.
    #[serde(default)]
    pub version: Option<String>,
    /// Labels (`app=nginx`) that service selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `bridge` (a veth on the overlay, the default) or `macvlan`.
    #[serde(default)]
    pub mode: Option<AttachMode>,
    /// For `macvlan`: the host's NIC the interface sits on.
    #[serde(default)]
    pub parent: Option<String>,
    /// Which runtime asks (`cni:<config name>`, `hook`, `cli`); absent:
    /// `unknown`.
    #[serde(default)]
    pub origin: crate::Origin,
}

/// How a container is attached: on the overlay, or on the host's NIC.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    #[default]
    Bridge,
    Macvlan,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bridge" => Ok(AttachMode::Bridge),
            "macvlan" => Ok(AttachMode::Macvlan),
            other => Err(format!("mode {other:?} is neither bridge nor macvlan")),
        }
    }
}

/// Detach by namespace (`target`) or by `container_id`; one must be given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DetachRequest {
    #[serde(default)]
    pub target: Option<String>,
    pub network: String,
    #[serde(default)]
    pub container_id: Option<String>,
    /// Only an attachment this runtime made (CNI GC never detaches
    /// another runtime's container that happens to share an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<crate::Origin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    /// Namespace file the attachment was made into.
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    /// `ADDR/LEN`.
    pub ip: String,
    /// `ADDR/LEN` (derived from the network's IPv6 prefix).
    #[serde(default)]
    pub ip6: Option<String>,
    pub mac: String,
    /// Resolver for the container: the network's DNS address.
    #[serde(default)]
    pub dns_server: Option<String>,
    /// Search domain: the network id, so `name` resolves as `name.<network>`.
    #[serde(default)]
    pub dns_search: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Labels that service selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Which runtime made it; `unknown` for records older than origins.
    #[serde(default)]
    pub origin: crate::Origin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovePeerResponse {
    pub removed: String,
}

/// One range of a network's address space and its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamRange {
    pub start: String,
    pub end: String,
    pub size: u64,
    pub used: u64,
    pub owner: String,
    pub owner_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamAllocation {
    pub ip: String,
    pub host: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamNetwork {
    pub network: String,
    pub subnet: String,
    pub ranges: Vec<IpamRange>,
    pub allocations: Vec<IpamAllocation>,
}

/// Take an address without attaching anything (for a service, a VM, or a
/// runtime that plumbs the interface itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub network: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub network: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub network: String,
    pub ip: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsRecord {
    /// `<name>.<network>`
    pub fqdn: String,
    pub ip: String,
    pub ip6: Option<String>,
    pub version: Option<String>,
    pub host: String,
    /// False while the container's host is down: not served then.
    pub live: bool,
}

// ---- Services ----------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// `meshctl policy add`: allow traffic to the containers `to` selects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyAddRequest {
    pub network: String,
    /// Default: derived from the rule.
    #[serde(default)]
    pub name: Option<String>,
    /// `KEY=VALUE[,KEY=VALUE…]` or `any`.
    pub from: String,
    /// `KEY=VALUE[,KEY=VALUE…]`.
    pub to: String,
    /// `PORT[/tcp|/udp]`; none: every port and protocol.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// One allow rule of a network's policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyRule {
    pub network: String,
    pub name: String,
    /// Empty: any container of the network.
    #[serde(default)]
    pub from: BTreeMap<String, String>,
    pub to: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyPort {
    pub port: u16,
    /// `None`: TCP and UDP.
    #[serde(default)]
    pub protocol: Option<Protocol>,
}

impl std::fmt::Display for PolicyPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protocol {
            Some(p) => write!(f, "{}/{}", self.port, p),
            None => write!(f, "{}", self.port),
        }
    }
}

/// `meshctl network qos set`: absent fields are not shaped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QosSetRequest {
    pub network: String,
    /// A container of the network (PID, netns path, name or address);
    /// none: every container of the network.
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub rate_kbit: Option<u64>,
    #[serde(default)]
    pub ceiling_kbit: Option<u64>,
    /// Milliseconds (fractions allowed).
    #[serde(default)]
    pub delay_ms: Option<f64>,
    #[serde(default)]
    pub jitter_ms: Option<f64>,
    /// Percent of frames dropped, 0-100.
    #[serde(default)]
    pub loss_percent: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QosResetRequest {
    pub network: String,
    #[serde(default)]
    pub container: Option<String>,
}

/// What one network (or one container of it) is shaped to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QosEntry {
    pub network: String,
    /// The container's address on the network; none: the whole network.
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub rate_kbit: Option<u64>,
    #[serde(default)]
    pub ceiling_kbit: Option<u64>,
    #[serde(default)]
    pub delay_ms: Option<f64>,
    #[serde(default)]
    pub jitter_ms: Option<f64>,
    #[serde(default)]
    pub loss_percent: Option<f64>,
}

// ---- The edge: host addresses, floating IPs --------------------------------

/// `meshctl expose NET` / `hide NET`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExposeRequest {
    pub network: String,
}

/// This host's own address on a network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostAddress {
    pub network: String,
    /// `ADDR/LEN`.
    pub ip: String,
    /// The host interface that carries it.
    pub interface: String,
    /// `meshctl expose`: containers may reach the host here.
    pub exposed: bool,
    /// Kept for the network's egress or floating IPs (a gateway only).
    pub gateway: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FipPoolRequest {
    /// `ADDR/LEN` of the hosts' underlay.
    pub cidr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FipPool {
    pub cidr: String,
    /// Floating IPs taken from it.
    pub fips: usize,
    /// Names of the hosts whose underlay subnet contains it (who may hold
    /// its addresses).
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateFipRequest {
    /// An address inside a pool; default: the lowest free one.
    #[serde(default)]
    pub addr: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FipAssociateRequest {
    pub service: String,
    /// Needed only when the service name exists on several networks.
    #[serde(default)]
    pub network: Option<String>,
    /// Default: the service's (first) port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// One service behind a floating IP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FipBinding {
    pub service: String,
    pub network: String,
    pub public_port: u16,
    /// The service port it forwards to (absent if the service is gone).
    pub service_port: Option<u16>,
    pub protocol: Option<Protocol>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fip {
    pub addr: String,
    pub pool: Option<String>,
    /// The host answering for it, as this host sees the mesh.
    pub holder: Option<String>,
    /// Why nobody answers for it, when `holder` is none (e.g. "no majority
    /// of candidates reachable …"). Absent from older meshd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub bindings: Vec<FipBinding>,
}

/// What the last reload of meshd.toml (SIGHUP) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// The file was read and every change it makes live took effect.
    pub ok: bool,
    /// When, in seconds since the Unix epoch.
    pub at_unix: u64,
    /// Reloads since meshd started, this one included.
    pub count: u64,
    /// The file re-read.
    pub file: String,
    /// Why it failed: for a bad file the file and line; nothing of it
    /// took effect then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys this reload changed live.
    #[serde(default)]
    pub applied: Vec<String>,
    /// Keys whose new value in the file only a restart applies (since
    /// meshd started, not only in this reload).
    #[serde(default)]
    pub needs_restart: Vec<String>,
    /// Keys the file changed that a command-line flag overrides.
    #[serde(default)]
    pub overridden: Vec<String>,
}
