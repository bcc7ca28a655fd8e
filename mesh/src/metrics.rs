//! Prometheus metrics, served as `GET /metrics` on the API socket.
//!
//! The counters live where they are counted (atomics in the data plane,
//! gossip's member table); a scrape copies a snapshot into a fresh
//! registry, so nothing on the packet path knows about Prometheus.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{AttachmentStats, PeerState, StatusResponse};

type Labels = Vec<(String, String)>;

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Renders a status snapshot and the attachments' counters in the
/// Prometheus text format.
pub fn render(status: &StatusResponse, attachments: &[AttachmentStats]) -> String {
    let mut reg = Registry::with_prefix("mesh");
    let drops = Family::<Labels, Counter>::default();
    for (reason, n) in &status.drops {
        drops
            .get_or_create(&vec![("reason".into(), reason.clone())])
            .inc_by(*n);
    }
    reg.register(
        "dataplane_dropped_datagrams",
        "Datagrams and frames dropped by the data plane, by reason",
        drops,
    );
    let probes = Family::<Labels, Counter>::default();
    for (via, n) in [
        ("direct", status.probing.probes_direct),
        ("relay", status.probing.probes_relayed),
    ] {
        probes
            .get_or_create(&vec![("via".into(), via.into())])
            .inc_by(n);
    }
    reg.register(
        "path_probes_sent",
        "Data-path probes (pings and answers) sent, directly or through a relay",
        probes,
    );
    if let Some(gossip) = &status.gossip {
        let member_updates = Counter::<u64>::default();
        member_updates.inc_by(gossip.member_updates);
        reg.register(
            "gossip_member_updates",
            "Member records taken as news and flooded to every link (joins, leaves, address or metadata changes)",
            member_updates,
        );
    }
    let active = Gauge::<i64>::default();
    active.set(status.probing.active_peers as i64);
    reg.register(
        "paths_active",
        "Peers whose data path is probed now (traffic within 30 s)",
        active,
    );
    let bytes = Family::<Labels, Counter>::default();
    let packets = Family::<Labels, Counter>::default();
    let up = Family::<Labels, Gauge>::default();
    let rtt = Family::<Labels, F64Gauge>::default();
    let key_age = Family::<Labels, F64Gauge>::default();
    for p in &status.peers {
        let peer = |extra: Option<(&str, &str)>| {
            let mut l: Labels = vec![
                ("peer".into(), p.name.clone()),
                ("peer_id".into(), p.id.clone()),
            ];
            if let Some((k, v)) = extra {
                l.push((k.into(), v.into()));
            }
            l
        };
        bytes
            .get_or_create(&peer(Some(("direction", "tx"))))
            .inc_by(p.tx.bytes);
        bytes
            .get_or_create(&peer(Some(("direction", "rx"))))
            .inc_by(p.rx.bytes);
        packets
            .get_or_create(&peer(Some(("direction", "tx"))))
            .inc_by(p.tx.packets);
        packets
            .get_or_create(&peer(Some(("direction", "rx"))))
            .inc_by(p.rx.packets);
        up.get_or_create(&peer(None))
            .set(i64::from(p.state == PeerState::Up));
        if let Some(ms) = p.rtt_ms {
            rtt.get_or_create(&peer(None)).set(ms / 1e3);
        }
        if let Some(age) = p.key_age_secs {
            key_age.get_or_create(&peer(None)).set(age);
        }
    }
    reg.register(
        "peer_bytes",
        "Overlay bytes sent to / received from a peer",
        bytes,
    );
    reg.register(
        "peer_packets",
        "Overlay packets sent to / received from a peer",
        packets,
    );
    reg.register(
        "peer_up",
        "1 if the peer is connected and authenticated",
        up,
    );
    reg.register(
        "peer_rtt_seconds",
        "Control-connection round-trip time",
        rtt,
    );
    reg.register(
        "peer_key_age_seconds",
        "Age of the current data-plane session key",
        key_age,
    );
    register_paths(&mut reg, status);
    register_switch(&mut reg, status);
    register_attachments(&mut reg, &status.host.name, attachments);
    let size = Gauge::<i64>::default();
    size.set(status.mesh_size as i64);
    reg.register("hosts", "Hosts in the mesh, this one included", size);
    let nets = Gauge::<i64>::default();
    nets.set(status.networks as i64);
    reg.register("networks", "Networks defined in the mesh", nets);
    let refused = Family::<Vec<(String, String)>, Gauge<i64>>::default();
    for (id, why) in &status.refused_networks {
        refused
            .get_or_create(&vec![
                ("network".into(), id.clone()),
                ("reason".into(), why.reason.clone()),
            ])
            .set(1);
    }
    reg.register(
        "network_refused",
        "1 for each network of the mesh this host refuses to carry, by reason",
        refused,
    );
    if let Some(r) = &status.reload {
        let ok = Gauge::<i64>::default();
        ok.set(i64::from(r.ok));
        reg.register(
            "config_last_reload_successful",
            "1 if the last reload of meshd.toml (SIGHUP) took effect whole",
            ok,
        );
        let at = Gauge::<i64>::default();
        at.set(r.at_unix as i64);
        reg.register(
            "config_last_reload_timestamp_seconds",
            "When meshd.toml was last reloaded (Unix time)",
            at,
        );
        let restart = Gauge::<i64>::default();
        restart.set(r.needs_restart.len() as i64);
        reg.register(
            "config_keys_needing_restart",
            "Keys changed in meshd.toml that only a restart applies",
            restart,
        );
    }
    let atts = Gauge::<i64>::default();
    atts.set(status.attachments as i64);
    reg.register("attachments", "Containers attached on this host", atts);
    let rejected = Counter::<u64>::default();
    rejected.inc_by(gossip::signed::rejected_total());
    reg.register(
        "gossip_rejected_records",
        "Member records and replicated writes dropped: bad signature, future stamp, or not admitted (see the log, once per author)",
        rejected,
    );
    let quota = Counter::<u64>::default();
    quota.inc_by(gossip::state::quota::refused_total());
    reg.register(
        "gossip_quota_refused_writes",
        "Replicated writes refused because their writer was over its per-writer channel quota (local and remote; remote ones are also in gossip_rejected_records)",
        quota,
    );
    let expired = Counter::<u64>::default();
    expired.inc_by(gossip::state::expiry::expired_total());
    reg.register(
        "gossip_tombstones_expired",
        "Removals of per-host records (endpoints, labels, health) forgotten past their horizon",
        expired,
    );
    let retried = Counter::<u64>::default();
    retried.inc_by(gossip::node::admission::retried_total());
    reg.register(
        "gossip_handshakes_retried",
        "Incoming QUIC handshakes from unvalidated addresses answered with a Retry (handshake slots a quarter full)",
        retried,
    );
    let refused = Counter::<u64>::default();
    refused.inc_by(gossip::node::admission::refused_total());
    reg.register(
        "gossip_handshakes_refused",
        "Incoming QUIC handshakes refused: all handshake slots, or those of their source address, taken",
        refused,
    );
    for (name, help, n) in [
        (
            "tcp_fallback_datagrams_dropped",
            "Sealed datagrams not queued on a TCP fallback connection because its writer fell behind",
            gossip::tcp::datagrams_dropped_total(),
        ),
        (
            "tcp_fallback_datagrams_refused",
            "Datagrams received on a TCP fallback connection before its peer proved the mesh secret",
            gossip::tcp::datagrams_refused_total(),
        ),
        (
            "tcp_fallback_malformed",
            "TCP fallback connections closed for a malformed record",
            gossip::tcp::malformed_total(),
        ),
        (
            "tcp_fallback_shim_refused",
            "Datagrams a TCP fallback shim refused: not from the data plane's own socket",
            crate::tcp_shim::refused_total(),
        ),
        (
            "tcp_fallback_undelivered",
            "Datagrams from TCP fallback links dropped: the data plane's socket was full",
            crate::tcp_shim::undelivered_total(),
        ),
    ] {
        let counter = Counter::<u64>::default();
        counter.inc_by(n);
        reg.register(name, help, counter);
    }
    let unknown = Family::<Vec<(String, String)>, Counter>::default();
    for (kind, n) in gossip::protocol::UNKNOWN.snapshot() {
        unknown
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc_by(n);
    }
    reg.register(
        "protocol_unknown",
        "What newer builds wrote that this one does not know, by kind: frame_fields and value_fields (ignored; values keep them and pass them on), messages (skipped), unreadable_values (refused: not applied, not passed on)",
        unknown,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Per peer, the data path's own measurements (from the path probes).
fn register_paths(reg: &mut Registry, status: &StatusResponse) {
    let rtt = Family::<Labels, F64Gauge>::default();
    let loss = Family::<Labels, F64Gauge>::default();
    let mtu = Family::<Labels, Gauge>::default();
    let relayed = Family::<Labels, Gauge>::default();
    for p in &status.peers {
        let l: Labels = vec![
            ("peer".into(), p.name.clone()),
            ("peer_id".into(), p.id.clone()),
        ];
        if let Some(ms) = p.path_rtt_ms {
            rtt.get_or_create(&l).set(ms / 1e3);
        }
        if let Some(x) = p.path_loss {
            loss.get_or_create(&l).set(x);
        }
        if let Some(m) = p.path_mtu {
            mtu.get_or_create(&l).set(i64::from(m));
        }
        let via = p.path.strip_prefix("relayed via ");
        let mut l = l;
        l.push(("via".into(), via.unwrap_or_default().into()));
        relayed.get_or_create(&l).set(i64::from(via.is_some()));
    }
    reg.register(
        "peer_path_rtt_seconds",
        "Round trip of the data path's probes",
        rtt,
    );
    reg.register(
        "peer_path_loss_ratio",
        "Fraction of the data path's recent probes that got no answer",
        loss,
    );
    reg.register(
        "peer_path_mtu_bytes",
        "Largest sealed datagram (UDP payload) known to reach the peer",
        mtu,
    );
    reg.register(
        "peer_path_relayed",
        "1 if frames to the peer go through another host (label via), 0 if direct",
        relayed,
    );
}

/// The data plane's switch: pinned and learned MACs, refusals, spoofs.
fn register_switch(reg: &mut Registry, status: &StatusResponse) {
    let macs = Family::<Labels, Gauge>::default();
    for (kind, n) in [
        ("pinned", status.switch.pinned_macs),
        ("learned", status.switch.learned_macs),
    ] {
        macs.get_or_create(&vec![("kind".into(), kind.into())])
            .set(n as i64);
    }
    reg.register(
        "dataplane_macs",
        "MACs the switch knows: pinned to their hosts by the control plane, or learned",
        macs,
    );
    let refused = Counter::<u64>::default();
    refused.inc_by(status.switch.learn_refused);
    reg.register(
        "dataplane_mac_learn_refused",
        "New or moved MACs not learned because their peer or network had its share",
        refused,
    );
    let spoofed = Family::<Labels, Counter>::default();
    for (peer, n) in &status.switch.spoofed_from {
        spoofed
            .get_or_create(&vec![("peer".into(), peer.clone())])
            .inc_by(*n);
    }
    reg.register(
        "peer_spoofed_frames",
        "Frames from a peer dropped because their source MAC is pinned to another host",
        spoofed,
    );
}

/// Per attachment, counters in each direction as the container sees them.
fn register_attachments(reg: &mut Registry, host: &str, list: &[AttachmentStats]) {
    let bytes = Family::<Labels, Counter>::default();
    let packets = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    for a in list {
        for (dir, c) in [("tx", &a.tx), ("rx", &a.rx)] {
            let l: Labels = vec![
                ("network".into(), a.network.clone()),
                ("container".into(), a.container.clone()),
                ("host".into(), host.into()),
                ("direction".into(), dir.into()),
            ];
            bytes.get_or_create(&l).inc_by(c.bytes);
            packets.get_or_create(&l).inc_by(c.packets);
            drops.get_or_create(&l).inc_by(c.drops);
        }
    }
    reg.register(
        "attachment_bytes",
        "Bytes a container sent (tx) / received (rx) on a network",
        bytes,
    );
    reg.register(
        "attachment_packets",
        "Packets a container sent (tx) / received (rx) on a network",
        packets,
    );
    reg.register(
        "attachment_dropped_packets",
        "Packets dropped on the host end of a container's interface, by direction",
        drops,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HostStatus, InterfaceCounters, PeerStatus, Traffic};

    #[test]
    fn renders_counters_per_reason_and_peer() {
        let s = StatusResponse {
            host: HostStatus {
                id: "a".into(),
                name: "h1".into(),
                control_address: "x".into(),
                data_address: "y".into(),
                version: None,
                protocol: None,
                alpn: None,
            },
            mesh_size: 2,
            peers: vec![PeerStatus {
                id: "b".into(),
                name: "h2".into(),
                address: "z".into(),
                data_address: None,
                state: PeerState::Up,
                path: "relayed via h3".into(),
                control: None,
                path_mtu: Some(1272),
                path_rtt_ms: Some(2.0),
                path_loss: Some(0.1),
                clock_skew_ms: None,
                version: None,
                protocol: None,
                link_protocol: None,
                rtt_ms: Some(1.5),
                key_generation: Some(3),
                key_age_secs: Some(12.0),
                cipher: Some("aes-256-gcm".into()),
                tx: Traffic {
                    bytes: 100,
                    packets: 2,
                },
                rx: Traffic {
                    bytes: 50,
                    packets: 1,
                },
            }],
            networks: 1,
            attachments: 0,
            drops: [("bad_tag".to_string(), 7u64)].into(),
            host_addresses: Vec::new(),
            gossip: Some(crate::api::GossipStatus { member_updates: 7 }),
            probing: crate::api::ProbingStatus {
                active_peers: 2,
                probes_direct: 40,
                probes_relayed: 3,
            },
            switch: crate::api::SwitchStatus {
                pinned_macs: 4,
                learned_macs: 1,
                learn_refused: 9,
                spoofed_from: [("h2".to_string(), 5u64)].into(),
            },
            refused_networks: [(
                "lan".to_string(),
                crate::api::RefusedNetwork {
                    reason: "overlaps_route".into(),
                    detail: "its prefix overlaps a route".into(),
                },
            )]
            .into(),
            reload: Some(crate::api::ReloadStatus {
                ok: false,
                at_unix: 1_800_000_000,
                needs_restart: vec!["listen".into()],
                ..Default::default()
            }),
        };
        let att = AttachmentStats {
            network: "blue".into(),
            container: "web".into(),
            host_ifname: "msv00000001".into(),
            ip: "10.0.0.2/24".into(),
            tx: InterfaceCounters {
                bytes: 1000,
                packets: 10,
                drops: 1,
            },
            rx: InterfaceCounters {
                bytes: 2000,
                packets: 20,
                drops: 0,
            },
        };
        let text = render(&s, &[att]);
        for line in [
            "mesh_path_probes_sent_total{via=\"direct\"} 40",
            "mesh_path_probes_sent_total{via=\"relay\"} 3",
            "mesh_paths_active 2",
            "mesh_gossip_member_updates_total 7",
            "mesh_dataplane_macs{kind=\"pinned\"} 4",
            "mesh_dataplane_mac_learn_refused_total 9",
            "mesh_peer_spoofed_frames_total{peer=\"h2\"} 5",
            "mesh_attachment_bytes_total{network=\"blue\",container=\"web\",host=\"h1\",direction=\"tx\"} 1000",
            "mesh_attachment_packets_total{network=\"blue\",container=\"web\",host=\"h1\",direction=\"rx\"} 20",
            "mesh_attachment_dropped_packets_total{network=\"blue\",container=\"web\",host=\"h1\",direction=\"tx\"} 1",
            "mesh_peer_path_mtu_bytes{peer=\"h2\",peer_id=\"b\"} 1272",
            "mesh_peer_path_rtt_seconds{peer=\"h2\",peer_id=\"b\"} 0.002",
            "mesh_peer_path_loss_ratio{peer=\"h2\",peer_id=\"b\"} 0.1",
            "mesh_peer_path_relayed{peer=\"h2\",peer_id=\"b\",via=\"h3\"} 1",
            "mesh_config_last_reload_successful 0",
            "mesh_config_last_reload_timestamp_seconds 1800000000",
            "mesh_config_keys_needing_restart 1",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        assert!(
            text.contains("mesh_dataplane_dropped_datagrams_total{reason=\"bad_tag\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("mesh_peer_bytes_total{peer=\"h2\",peer_id=\"b\",direction=\"tx\"} 100"),
            "{text}"
        );
        assert!(
            text.contains("mesh_peer_up{peer=\"h2\",peer_id=\"b\"} 1"),
            "{text}"
        );
        assert!(text.contains("mesh_hosts 2"), "{text}");
        assert!(
            text.contains("mesh_network_refused{network=\"lan\",reason=\"overlaps_route\"} 1"),
            "{text}"
        );
        // Every series the Grafana dashboard queries is one meshd serves.
        let dash: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana/mesh.json")).unwrap();
        assert_eq!(dash["schemaVersion"], 39);
        let mut exprs = 0;
        for panel in dash["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().into_iter().flatten() {
                let e = t["expr"].as_str().unwrap();
                exprs += 1;
                for name in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if name.starts_with("mesh_") {
                        assert!(
                            text.contains(&format!("\n{name}{{"))
                                || text.contains(&format!("\n{name} ")),
                            "the dashboard queries {name}, which meshd does not serve"
                        );
                    }
                }
            }
        }
        assert!(exprs >= 10, "{exprs}");
        assert!(
            text.contains("mesh_gossip_rejected_records_total"),
            "{text}"
        );
    }
}
