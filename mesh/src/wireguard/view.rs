//! The API's view of a WireGuard client (what `wg add` prints a
//! configuration from, and `wg list` shows), and its metrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::api::{WgClient, WgStats};
use mesh_model::records::NetworkDef;
use mesh_model::wireguard::WgClientRecord;

use super::tunnel::PeerStats;

/// Where the gateway is, as far as the answering host knows.
pub struct GatewayInfo {
    pub name: String,
    pub endpoint: Option<String>,
    pub public_key: Option<String>,
}

pub fn client(
    rec: &WgClientRecord,
    net: Option<&NetworkDef>,
    gw: GatewayInfo,
    mtu: Option<u32>,
    stats: Option<PeerStats>,
) -> WgClient {
    let (dns, allowed_ips, ip6) = match net {
        Some(n) => (
            mesh_model::ipam::service_address(n.subnet).to_string(),
            vec![n.subnet.to_string(), n.subnet6.to_string()],
            rec.ip.map(|ip| format!("{}/128", n.ipv6_for(ip))),
        ),
        None => (String::new(), Vec::new(), None),
    };
    WgClient {
        name: rec.name.clone(),
        network: rec.network.clone(),
        ip: rec.ip.map(|ip| format!("{ip}/32")),
        ip6,
        public_key: rec.public_key.clone(),
        labels: rec.labels.clone(),
        gateway: gw.name,
        gateway_id: rec.gateway.clone(),
        endpoint: gw.endpoint,
        gateway_public_key: gw.public_key,
        dns,
        allowed_ips,
        mtu,
        stats: stats.map(|s| WgStats {
            last_handshake_ms: s.last_handshake_ms,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            spoofed: s.spoofed,
            endpoint: s.endpoint.map(|e| e.to_string()),
        }),
    }
}

/// Per client tunnelled here: bytes each way, spoofed packets dropped,
/// the last handshake; and datagrams that matched no client.
pub fn metrics(clients: &[WgClient], unmatched: u64) -> String {
    let mut reg = Registry::with_prefix("mesh");
    let rx = Family::<Vec<(String, String)>, Counter>::default();
    let tx = Family::<Vec<(String, String)>, Counter>::default();
    let spoofed = Family::<Vec<(String, String)>, Counter>::default();
    let handshake = Family::<Vec<(String, String)>, Gauge>::default();
    for c in clients {
        let Some(s) = &c.stats else { continue };
        let l = vec![
            ("client".to_string(), c.name.clone()),
            ("network".to_string(), c.network.clone()),
        ];
        rx.get_or_create(&l).inc_by(s.rx_bytes);
        tx.get_or_create(&l).inc_by(s.tx_bytes);
        spoofed.get_or_create(&l).inc_by(s.spoofed);
        if let Some(ms) = s.last_handshake_ms {
            handshake.get_or_create(&l).set((ms / 1000) as i64);
        }
    }
    reg.register(
        "wg_client_received_bytes",
        "IP bytes from a WireGuard client into its network",
        rx,
    );
    reg.register(
        "wg_client_sent_bytes",
        "IP bytes from the network to a WireGuard client",
        tx,
    );
    reg.register(
        "wg_client_spoofed_packets",
        "Packets from a WireGuard client with a source not its own (dropped)",
        spoofed,
    );
    reg.register(
        "wg_client_last_handshake_seconds",
        "Unix time of a WireGuard client's last handshake",
        handshake,
    );
    let unknown = Counter::<u64>::default();
    unknown.inc_by(unmatched);
    reg.register(
        "wg_unmatched_datagrams",
        "Datagrams on the WireGuard port that matched no client",
        unknown,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}
