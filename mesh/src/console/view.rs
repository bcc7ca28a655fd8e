//! The JSON the console's pages draw: one snapshot of what the local API
//! serves (status, networks, attachments, services, floating IPs, policy,
//! QoS), built from the same [`Daemon`] methods its handlers call, plus
//! what a page would otherwise recompute in every browser (link kinds,
//! container traffic rates).

use axum::body::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::{
    self, AttachmentStats, DnsRecord, Fip, HostStatus, Network, PeerState, PeerStatus, PolicyMode,
    PolicyRule, QosEntry, Service, StatusResponse,
};
use crate::daemon::Daemon;

/// How a link between this host and a peer carries frames, as the
/// topology page colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Direct,
    Relayed,
    /// A path over the TCP fallback (a peer's path reads `tcp…`), which
    /// the page colours apart from UDP ones.
    Tcp,
    Down,
}

/// One edge of the topology: this host and one peer.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub peer: String,
    pub peer_id: String,
    pub kind: LinkKind,
    /// The host relaying, for [`LinkKind::Relayed`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The path as `meshctl status` prints it (`direct`, `relayed via h3`).
    pub path: String,
    pub state: PeerState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Which kind of link a peer's status describes.
pub fn link_kind(p: &PeerStatus) -> (LinkKind, Option<String>) {
    if p.state == PeerState::Down {
        return (LinkKind::Down, None);
    }
    let path = p.path.trim();
    if path == "direct" {
        (LinkKind::Direct, None)
    } else if let Some(via) = path.strip_prefix("relayed via ") {
        (LinkKind::Relayed, Some(via.to_string()))
    } else if path == "tcp" || path.starts_with("tcp ") {
        (LinkKind::Tcp, None)
    } else {
        // `none`, `connecting` and anything newer this build cannot name.
        (LinkKind::Down, None)
    }
}

/// A container on a network: local ones with their labels and traffic,
/// others as the mesh's DNS records show them.
#[derive(Debug, Clone, Serialize)]
pub struct Container {
    pub name: String,
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    pub host: String,
    pub live: bool,
    pub labels: BTreeMap<String, String>,
    /// Bytes per second the container sent and received (local ones, from
    /// the second snapshot on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bps: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkView {
    pub id: String,
    pub subnet: String,
    pub subnet6: String,
    pub labels: BTreeMap<String, String>,
    /// Host names it is restricted to; empty: every host.
    pub hosts: Vec<String>,
    pub mtu: u32,
    pub egress: bool,
    pub policy: PolicyMode,
    pub rules: Vec<PolicyRule>,
    pub qos: Vec<QosEntry>,
    pub containers: Vec<Container>,
}

/// `GET /api/view`.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub generated_unix_ms: u64,
    pub host: HostStatus,
    pub mesh_size: usize,
    pub links: Vec<Link>,
    pub networks: Vec<NetworkView>,
    pub services: Vec<Service>,
    pub fips: Vec<Fip>,
    pub drops: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload: Option<api::ReloadStatus>,
}

/// What one snapshot is built from (the daemon's answers, so a test can
/// feed synthetic ones).
pub struct Inputs {
    pub status: StatusResponse,
    pub networks: Vec<Network>,
    pub attachments: Vec<api::Attachment>,
    pub stats: Vec<AttachmentStats>,
    pub dns: Vec<DnsRecord>,
    pub policies: Vec<PolicyRule>,
    pub qos: Vec<QosEntry>,
    pub services: Vec<Service>,
    pub fips: Vec<Fip>,
    /// Labels of every container of the mesh, by (network, address).
    pub labels: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl Inputs {
    pub async fn gather(d: &Daemon) -> Inputs {
        Inputs {
            status: d.status(),
            networks: d.list_networks(),
            attachments: d.list_attachments().await,
            stats: d.attachment_stats().await,
            dns: d.dns_view(),
            policies: d.traffic().policies(),
            qos: d.traffic().qos(),
            services: d.services().list(),
            fips: d.edge().list_fips(),
            labels: d.services().labels_by_address(),
        }
    }
}

/// The longest gap between two snapshots that still gives a rate.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Counters of the previous snapshot, by host interface: rates are the
/// difference over the time between two snapshots.
#[derive(Default)]
pub struct Counters {
    at: Option<Instant>,
    bytes: HashMap<String, (u64, u64)>,
}

pub fn build(i: Inputs, prev: &mut Counters, now: Instant) -> View {
    // Rates over a longer gap (nobody watched for a while) would be
    // averages of the past, not rates of now.
    let secs = prev
        .at
        .map(|t| now.duration_since(t).as_secs_f64())
        .filter(|s| *s > 0.0 && *s <= RATE_WINDOW.as_secs_f64());
    let mut rates: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut bytes = HashMap::new();
    for s in &i.stats {
        let cur = (s.tx.bytes, s.rx.bytes);
        if let (Some(secs), Some(old)) = (secs, prev.bytes.get(&s.host_ifname)) {
            // A counter that went back (a new veth of the same name) has no rate.
            if cur.0 >= old.0 && cur.1 >= old.1 {
                let r = ((cur.0 - old.0) as f64 / secs, (cur.1 - old.1) as f64 / secs);
                rates.insert(s.host_ifname.as_str(), r);
            }
        }
        bytes.insert(s.host_ifname.clone(), cur);
    }
    *prev = Counters {
        at: Some(now),
        bytes,
    };

    let names: HashMap<&str, &str> = i
        .status
        .peers
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .chain([(i.status.host.id.as_str(), i.status.host.name.as_str())])
        .collect();
    let me = i.status.host.name.clone();
    let mut containers: BTreeMap<&str, Vec<Container>> = BTreeMap::new();
    let mut local_ips = std::collections::HashSet::new();
    for a in &i.attachments {
        let ip = a.ip.split('/').next().unwrap_or(&a.ip).to_string();
        local_ips.insert((a.network.clone(), ip.clone()));
        let rate = rates.get(a.host_ifname.as_str());
        containers.entry(&a.network).or_default().push(Container {
            name: a
                .name
                .clone()
                .or_else(|| {
                    a.container_id
                        .as_ref()
                        .map(|c| c.chars().take(12).collect())
                })
                .unwrap_or_else(|| a.netns.clone()),
            ip,
            ip6: a.ip6.clone(),
            host: me.clone(),
            live: true,
            labels: a.labels.clone(),
            tx_bps: rate.map(|r| r.0),
            rx_bps: rate.map(|r| r.1),
        });
    }
    for r in &i.dns {
        let Some((name, network)) = r.fqdn.split_once('.') else {
            continue;
        };
        if local_ips.contains(&(network.to_string(), r.ip.clone())) {
            continue;
        }
        containers.entry(network).or_default().push(Container {
            name: name.to_string(),
            ip: r.ip.clone(),
            ip6: r.ip6.clone(),
            host: r.host.clone(),
            live: r.live,
            labels: i
                .labels
                .get(&(network.to_string(), r.ip.clone()))
                .cloned()
                .unwrap_or_default(),
            tx_bps: None,
            rx_bps: None,
        });
    }
    let networks = i
        .networks
        .iter()
        .map(|n| {
            let mut cs = containers.remove(n.id.as_str()).unwrap_or_default();
            cs.sort_by(|a, b| (&a.host, &a.name).cmp(&(&b.host, &b.name)));
            NetworkView {
                id: n.id.clone(),
                subnet: n.subnet.clone(),
                subnet6: n.subnet6.clone(),
                labels: n.labels.clone(),
                hosts: n
                    .hosts
                    .iter()
                    .map(|h| names.get(h.as_str()).map_or(h.clone(), |s| s.to_string()))
                    .collect(),
                mtu: n.mtu,
                egress: n.egress,
                policy: n.policy,
                rules: i
                    .policies
                    .iter()
                    .filter(|r| r.network == n.id)
                    .cloned()
                    .collect(),
                qos: i
                    .qos
                    .iter()
                    .filter(|q| q.network == n.id)
                    .cloned()
                    .collect(),
                containers: cs,
            }
        })
        .collect();
    let mut links: Vec<Link> = i
        .status
        .peers
        .iter()
        .map(|p| {
            let (kind, via) = link_kind(p);
            Link {
                peer: p.name.clone(),
                peer_id: p.id.clone(),
                kind,
                via,
                path: p.path.clone(),
                state: p.state,
                // The data path's own; an idle direct path has not been
                // probed lately, and the control link's RTT is the same
                // route's. Nothing for a relayed one, nor a down one.
                rtt_ms: match kind {
                    LinkKind::Down => None,
                    LinkKind::Direct => p.path_rtt_ms.or(p.rtt_ms),
                    _ => p.path_rtt_ms,
                },
                loss: (kind != LinkKind::Down).then_some(p.path_loss).flatten(),
                address: p.address.clone(),
                version: p.version.clone(),
            }
        })
        .collect();
    links.sort_by(|a, b| a.peer.cmp(&b.peer));
    View {
        generated_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        host: i.status.host,
        mesh_size: i.status.mesh_size,
        links,
        networks,
        services: i.services,
        fips: i.fips,
        drops: i.status.drops,
        reload: i.status.reload,
    }
}

/// A serialized answer shared by every viewer until it is `max_age` old:
/// however many pages poll, the daemon builds one per interval.
pub struct Cache {
    max_age: Duration,
    slot: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl Cache {
    pub fn new(max_age: Duration) -> Cache {
        Cache {
            max_age,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached answer, or a new one from `make`; callers arriving while
    /// one is made wait for it rather than make their own.
    pub async fn get<F, Fut, T>(&self, make: F) -> Bytes
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
        T: Serialize,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, json)) = &*slot {
            if at.elapsed() < self.max_age {
                return json.clone();
            }
        }
        let value = make().await;
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_else(|e| {
            tracing::error!("console: serializing an answer: {e}");
            b"{}".to_vec()
        }));
        *slot = Some((Instant::now(), json.clone()));
        json
    }
}

/// This host's snapshot, with the counters of the previous one for rates.
pub async fn snapshot(d: &Daemon, prev: &std::sync::Mutex<Counters>) -> View {
    let inputs = Inputs::gather(d).await;
    let mut prev = prev.lock().unwrap_or_else(|e| e.into_inner());
    build(inputs, &mut prev, Instant::now())
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
