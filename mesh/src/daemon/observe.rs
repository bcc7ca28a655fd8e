//! The daemon's side of `meshctl doctor` and `meshctl top`: gathers the
//! facts [`crate::doctor`] judges and the per-attachment counters.

use std::net::IpAddr;

use super::Daemon;
use crate::api::{self, AttachmentStats, DoctorReport, InterfaceCounters, PeerDiagnosis};
use crate::doctor::{self, host, PeerContext};
use crate::error::ApiError;
use crate::linkstats;
use mesh_model::hosts::{LookupError, Scope};

impl Daemon {
    /// Every peer's checks (or `peer`'s only) and this host's own.
    pub async fn doctor(&self, peer: Option<&str>) -> Result<DoctorReport, ApiError> {
        let only = match peer {
            Some(q) => Some(
                self.hosts()
                    .resolve(q, Scope::Peers)
                    .map_err(|e| match e {
                        LookupError::Unknown(_) => {
                            ApiError::NotFound(format!("no peer named or with id {q:?}"))
                        }
                        ambiguous => ApiError::BadRequest(ambiguous.to_string()),
                    })?
                    .id
                    .clone(),
            ),
            None => None,
        };
        let status = self.status();
        let networks = self.list_networks();
        let links = linkstats::links().await.unwrap_or_default();
        let here: Vec<&api::Network> = networks
            .iter()
            .filter(|n| links.contains_key(&n.bridge))
            .collect();
        let largest = here.iter().max_by_key(|n| n.mtu);
        let peer_ips: Vec<IpAddr> = self
            .node
            .members()
            .iter()
            .map(|m| m.addr.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let listen = self.settings.listen.ip();
        let underlay = match linkstats::underlay(listen, &peer_ips).await {
            Ok(u) => u.map(|(dev, mtu)| {
                let v6 = if listen.is_unspecified() {
                    peer_ips.first().is_some_and(IpAddr::is_ipv6)
                } else {
                    listen.is_ipv6()
                };
                (dev, mtu, v6)
            }),
            Err(e) => {
                tracing::debug!("doctor: underlay device: {e:#}");
                None
            }
        };
        let facts = host::gather(
            &format!("{}c%d", self.settings.link_prefix),
            status.host_addresses.iter().any(|a| a.gateway),
            &here.iter().map(|n| n.bridge.clone()).collect::<Vec<_>>(),
            underlay,
            here.iter().map(|n| (n.id.clone(), n.mtu)).collect(),
            status
                .refused_networks
                .iter()
                .map(|(id, why)| (id.clone(), why.detail.clone()))
                .collect(),
        )
        .await;

        let selected: Vec<&api::PeerStatus> = status
            .peers
            .iter()
            .filter(|p| only.as_ref().is_none_or(|id| *id == p.id))
            .collect();
        // Bursts to every peer at once: a run takes one burst's time.
        let probes = futures::future::join_all(selected.iter().map(|p| self.probe(&p.id))).await;
        let mut peers = Vec::new();
        for (p, probe) in selected.into_iter().zip(probes) {
            let cx = PeerContext {
                version: doctor::VERSION,
                rekey: gossip::Config::DEFAULT_REKEY_INTERVAL,
                largest_network: largest.map(|n| (n.id.as_str(), n.mtu)),
                probe: probe.as_ref(),
            };
            peers.push(PeerDiagnosis {
                name: p.name.clone(),
                id: p.id.clone(),
                checks: doctor::peer_checks(p, &cx),
            });
        }
        Ok(DoctorReport {
            host: self.settings.name.clone(),
            version: doctor::VERSION.into(),
            checks: host::checks(&facts),
            peers,
        })
    }

    /// A short probe burst over the data path to the peer whose id reads
    /// `id` (as [`api::PeerStatus::id`]); `None` without a data-plane peer.
    async fn probe(&self, id: &str) -> Option<dataplane::BurstReport> {
        let member = self
            .node
            .members()
            .into_iter()
            .find(|m| m.id.to_string() == id)?;
        let idx = self.peers.handle(&member.id)?;
        Some(
            self.dp
                .probe_burst(idx, doctor::PROBE_COUNT, doctor::PROBE_INTERVAL)
                .await,
        )
    }

    /// Each attachment's counters, from the host end of its veth.
    pub async fn attachment_stats(&self) -> Vec<AttachmentStats> {
        let links = match linkstats::links().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot read link counters: {e:#}");
                return Vec::new();
            }
        };
        self.attacher
            .list()
            .into_iter()
            .filter_map(|a| {
                let l = links.get(&a.host_ifname)?;
                // The host end receives what the container sends.
                Some(AttachmentStats {
                    container: container_label(&a),
                    tx: InterfaceCounters {
                        bytes: l.rx_bytes,
                        packets: l.rx_packets,
                        drops: l.rx_dropped,
                    },
                    rx: InterfaceCounters {
                        bytes: l.tx_bytes,
                        packets: l.tx_packets,
                        drops: l.tx_dropped,
                    },
                    network: a.network,
                    host_ifname: a.host_ifname,
                    ip: a.ip,
                })
            })
            .collect()
    }
}

/// What an attachment is called in metrics and `top`: its DNS name, else
/// its runtime id (short), else its namespace.
fn container_label(a: &api::Attachment) -> String {
    a.name
        .clone()
        .or_else(|| {
            a.container_id
                .as_ref()
                .map(|c| c.chars().take(12).collect())
        })
        .unwrap_or_else(|| a.netns.clone())
}
