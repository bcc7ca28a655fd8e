//! The DNS server's request path: any bytes as a query over UDP and TCP,
//! asked on a network with records (forward and reverse zones, versions,
//! truncation), with no upstreams (so names outside the mesh are refused
//! without touching the network).

use mesh_dns::wire::Transport;
use mesh_dns::{RecordSource, Resolver};
use mesh_model::records::{EndpointRecord, NetworkDef};
use std::sync::{Arc, OnceLock};

struct Fixed;

impl RecordSource for Fixed {
    fn records(&self, network: &str) -> Vec<EndpointRecord> {
        if network != "blue" {
            return Vec::new();
        }
        (2..40u8)
            .map(|i| EndpointRecord {
                network: "blue".into(),
                ip: std::net::IpAddr::V4([10, 0, 0, i].into()),
                ip6: Some(format!("fd00::{i}").parse().unwrap()),
                mac: "02:00:00:00:00:01".into(),
                host: "h".into(),
                name: Some(if i % 2 == 0 {
                    "web".into()
                } else {
                    format!("c{i}")
                }),
                version: (i % 3 == 0).then(|| "v2".into()),
            })
            .collect()
    }

    fn networks(&self) -> Vec<NetworkDef> {
        vec![NetworkDef {
            id: "blue".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            subnet6: "fd00::/64".parse().unwrap(),
            created_by: "h".into(),
            labels: Default::default(),
            hosts: vec![],
            sealed_secrets: Default::default(),
        }]
    }
}

fn resolver() -> &'static Arc<Resolver> {
    static R: OnceLock<Arc<Resolver>> = OnceLock::new();
    R.get_or_init(|| Resolver::new(Arc::new(Fixed), Vec::new()))
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let client = "10.0.0.6".parse().unwrap();
    let _ = resolver().step("blue", data, client, Transport::Udp);
    let _ = resolver().step("blue", data, client, Transport::Tcp);
}
