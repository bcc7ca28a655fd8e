//! What `meshctl status` shows: this host, its peers with their paths,
//! and the data plane's drop counters.

use crate::api::{self, PeerStatus, StatusResponse};

use super::Daemon;
use mesh_model::records;

impl Daemon {
    pub fn status(&self) -> StatusResponse {
        let stats = self.dp.stats();
        let removed = self.channels.removed_hosts();
        let members = self.node.members();
        // Relays are named by their host name in `path`.
        let names: std::collections::HashMap<dataplane::PeerIdx, String> = members
            .iter()
            .filter_map(|m| Some((self.peers.handle(&m.id)?, m.name.clone())))
            .collect();
        let peers: Vec<PeerStatus> = members
            .iter()
            .filter(|m| !removed.contains(&m.id.to_hex()))
            .map(|m| {
                let traffic = self
                    .peers
                    .handle(&m.id)
                    .and_then(|idx| stats.peers.get(&idx).cloned())
                    .unwrap_or_default();
                peer(m, &traffic, self.peers.data_endpoint(&m.id), |idx| {
                    names.get(&idx).cloned()
                })
            })
            .collect();
        StatusResponse {
            host: api::HostStatus {
                id: self.id().to_string(),
                name: self.settings.name.clone(),
                control_address: self.node.local_addr().to_string(),
                data_address: self.dp.local_addr().to_string(),
                version: Some(crate::version::VERSION.into()),
                protocol: Some(crate::version::protocol_range()),
                alpn: Some(String::from_utf8_lossy(gossip::ALPN).into_owned()),
            },
            mesh_size: 1 + peers.len(),
            peers,
            networks: records::live(&self.channels.networks).len(),
            // Read without waiting for an attach in progress.
            attachments: self.attacher.count(),
            drops: stats
                .drops
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            host_addresses: self.edge.host_addresses(),
            switch: api::SwitchStatus {
                pinned_macs: stats.switch.pinned,
                learned_macs: stats.switch.learned,
                learn_refused: stats.switch.learn_refused,
                spoofed_from: stats
                    .peers
                    .iter()
                    .filter(|(_, p)| p.spoofed_rx > 0)
                    .map(|(idx, p)| {
                        let name = names.get(idx).cloned();
                        (name.unwrap_or_else(|| format!("peer {idx}")), p.spoofed_rx)
                    })
                    .collect(),
            },
            refused_networks: self
                .carried
                .get()
                .refused
                .iter()
                .map(|(id, why)| {
                    let r = api::RefusedNetwork {
                        reason: why.reason().into(),
                        detail: why.to_string(),
                    };
                    (id.clone(), r)
                })
                .collect(),
            probing: {
                let sent = self.dp.probes_sent();
                api::ProbingStatus {
                    active_peers: self.dp.active_paths(),
                    probes_direct: sent.direct,
                    probes_relayed: sent.relayed,
                }
            },
            reload: self.reloads.get(),
            gossip: Some(api::GossipStatus {
                member_updates: self.node.member_updates(),
            }),
        }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.status().peers
    }
}

/// One peer as `meshctl status` shows it.
/// `data_address` is the endpoint the control plane gave; the one in use
/// (after roaming, or the relay's) wins. `name_of` names a relay.
pub fn peer(
    m: &gossip::Member,
    traffic: &dataplane::PeerStats,
    data_address: Option<std::net::SocketAddr>,
    name_of: impl Fn(dataplane::PeerIdx) -> Option<String>,
) -> api::PeerStatus {
    let path = &traffic.path;
    api::PeerStatus {
        id: m.id.to_string(),
        name: m.name.clone(),
        address: m.addr.to_string(),
        data_address: path.endpoint.or(data_address).map(|a| a.to_string()),
        state: match m.state {
            gossip::PeerState::Connecting => api::PeerState::Connecting,
            gossip::PeerState::Up => api::PeerState::Up,
            gossip::PeerState::Down => api::PeerState::Down,
        },
        path: match path.mode {
            dataplane::PathMode::Direct => "direct".into(),
            dataplane::PathMode::Relayed(via) => format!(
                "relayed via {}",
                name_of(via).unwrap_or_else(|| format!("peer {via}"))
            ),
            dataplane::PathMode::Tcp => "tcp".into(),
            dataplane::PathMode::Unknown => "none".into(),
        },
        control: Some(match (&m.relay_name, m.state) {
            (Some(relay), _) => format!("relayed via {relay}"),
            (None, gossip::PeerState::Up) if m.tcp => "tcp".into(),
            (None, gossip::PeerState::Up) => "direct".into(),
            (None, _) => "none".into(),
        }),
        path_mtu: path.mtu,
        path_rtt_ms: path.rtt.map(|d| d.as_secs_f64() * 1e3),
        path_loss: path.loss,
        clock_skew_ms: path.clock_skew_ms,
        version: m.meta.get(crate::version::META_VERSION).cloned(),
        protocol: m.meta.get(gossip::protocol::META_PROTOCOL).cloned(),
        link_protocol: crate::version::peer_range(&m.meta)
            .and_then(|theirs| gossip::protocol::negotiate(gossip::protocol::supported(), theirs)),
        rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1e3),
        key_generation: m.key_generation,
        key_age_secs: m.key_age.map(|d| d.as_secs_f64()),
        cipher: traffic.cipher.map(|c| c.name().to_string()),
        tx: api::Traffic {
            bytes: traffic.tx_bytes,
            packets: traffic.tx_packets,
        },
        rx: api::Traffic {
            bytes: traffic.rx_bytes,
            packets: traffic.rx_packets,
        },
    }
}
