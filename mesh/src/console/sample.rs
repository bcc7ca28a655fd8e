//! A synthetic mesh for measuring the console at scale: the unit test of
//! the snapshot's size and build time, and the browser test that times
//! the pages at 100 hosts, feed it where a lab of that size would not fit
//! on one small machine.

use std::collections::BTreeMap;

use super::view::Inputs;
use crate::api::{
    Attachment, AttachmentStats, DnsRecord, HostStatus, InterfaceCounters, Network, PeerState,
    PeerStatus, PolicyMode, StatusResponse, Traffic,
};

/// Peer `h{i}` with `path` (as `meshctl status` prints it).
pub fn peer(i: usize, path: &str, state: PeerState) -> PeerStatus {
    PeerStatus {
        id: format!("id{i:03}"),
        name: format!("h{i}"),
        address: format!("198.18.0.{i}:7800"),
        data_address: Some(format!("198.18.0.{i}:7801")),
        state,
        path: path.into(),
        control: Some("direct".into()),
        path_mtu: Some(1472),
        path_rtt_ms: Some(0.4),
        path_loss: Some(0.0),
        clock_skew_ms: None,
        version: Some("0.2.0".into()),
        protocol: Some("1-2".into()),
        link_protocol: Some(2),
        rtt_ms: Some(0.5),
        key_generation: Some(3),
        key_age_secs: Some(10.0),
        cipher: Some("chacha20-poly1305".into()),
        tx: Traffic::default(),
        rx: Traffic::default(),
    }
}

/// This host `h0` and `peers`.
pub fn status(peers: Vec<PeerStatus>) -> StatusResponse {
    StatusResponse {
        host: HostStatus {
            id: "id000".into(),
            name: "h0".into(),
            control_address: "198.18.0.100:7800".into(),
            data_address: "198.18.0.100:7801".into(),
            version: Some("0.2.0".into()),
            protocol: None,
            alpn: None,
        },
        mesh_size: peers.len() + 1,
        peers,
        networks: 1,
        attachments: 1,
        drops: BTreeMap::new(),
        host_addresses: vec![],
        probing: Default::default(),
        gossip: Default::default(),
        switch: Default::default(),
        refused_networks: BTreeMap::new(),
        reload: None,
    }
}

/// Network `id` restricted to `hosts` (peer ids; empty: every host).
pub fn network(id: &str, hosts: Vec<String>) -> Network {
    Network {
        id: id.into(),
        subnet: "10.70.0.0/24".into(),
        subnet6: "fd00:70::/64".into(),
        dns: "10.70.0.1".into(),
        dns6: "fd00:70::1".into(),
        labels: BTreeMap::new(),
        hosts,
        wire_id: 7,
        bridge: "msb7".into(),
        mtu: 1400,
        mtu_set: false,
        created_by: "h0".into(),
        policy: PolicyMode::Open,
        egress: false,
    }
}

/// A local container `name` on `blue`, labelled `app=web`.
pub fn attachment(name: &str, ip: &str) -> Attachment {
    serde_json::from_value(serde_json::json!({
        "network": "blue", "netns": "/run/netns/x", "ifname": "eth0",
        "host_ifname": format!("msv-{name}"), "ip": ip, "mac": "02:00:00:00:00:01",
        "name": name, "labels": {"app": "web"}
    }))
    .expect("a sample attachment")
}

/// The counters of [`attachment`] `name`.
pub fn stats(name: &str, tx: u64, rx: u64) -> AttachmentStats {
    let c = |bytes| InterfaceCounters {
        bytes,
        packets: 1,
        drops: 0,
    };
    AttachmentStats {
        network: "blue".into(),
        container: name.into(),
        host_ifname: format!("msv-{name}"),
        ip: "10.70.0.2/24".into(),
        tx: c(tx),
        rx: c(rx),
    }
}

/// One network (`blue`) with one local container (`web1`, sending `tx`
/// bytes so far) and one of h1's (`db`).
pub fn inputs(peers: Vec<PeerStatus>, tx: u64) -> Inputs {
    Inputs {
        status: status(peers),
        networks: vec![network("blue", vec!["id001".into(), "id000".into()])],
        attachments: vec![attachment("web1", "10.70.0.2/24")],
        stats: vec![stats("web1", tx, 2 * tx)],
        dns: vec![
            // Our own container again (skipped) and one of h1's.
            DnsRecord {
                fqdn: "web1.blue".into(),
                ip: "10.70.0.2".into(),
                ip6: None,
                version: None,
                host: "h0".into(),
                live: true,
            },
            DnsRecord {
                fqdn: "db.blue".into(),
                ip: "10.70.0.3".into(),
                ip6: None,
                version: None,
                host: "h1".into(),
                live: false,
            },
        ],
        policies: vec![],
        qos: vec![],
        services: vec![],
        fips: vec![],
        labels: [(
            ("blue".to_string(), "10.70.0.3".to_string()),
            [("tier".to_string(), "db".to_string())].into(),
        )]
        .into(),
    }
}

/// A mesh of `hosts` hosts as its first host sees it: every tenth peer
/// relayed through h1, every tenth down, a container per host on `blue`,
/// 20 services of 5 targets each.
pub fn mesh(hosts: usize) -> Inputs {
    let peers: Vec<PeerStatus> = (1..hosts)
        .map(|i| match i % 10 {
            0 => peer(i, "relayed via h1", PeerState::Up),
            9 => peer(i, "none", PeerState::Down),
            _ => peer(i, "direct", PeerState::Up),
        })
        .collect();
    let mut i = inputs(peers, 0);
    i.dns = (1..hosts)
        .map(|h| DnsRecord {
            fqdn: format!("c{h}.blue"),
            ip: format!("10.70.{}.{}", h / 200, h % 200 + 10),
            ip6: None,
            version: None,
            host: format!("h{h}"),
            live: true,
        })
        .collect();
    i.services = (0..20)
        .map(|s| {
            serde_json::from_value(serde_json::json!({
                "name": format!("svc{s}"), "network": "blue", "vip": format!("10.70.0.{}", 230 + s),
                "vip6": "", "ports": [{"port": 80, "target_port": 8080, "protocol": "tcp"}],
                "selector": {"app": "web"}, "scheduler": "rr", "health_interval_ms": 1000,
                "targets": (1..6).map(|t| serde_json::json!({
                    "ip": format!("10.70.0.{}", t + 10), "host": format!("h{t}"), "name": format!("c{t}"),
                    "weight": 1, "explicit": false, "health": if t == 5 { "unhealthy" } else { "healthy" },
                    "active": t != 5, "connections": 3
                })).collect::<Vec<_>>()
            }))
            .expect("a sample service")
        })
        .collect();
    i
}
