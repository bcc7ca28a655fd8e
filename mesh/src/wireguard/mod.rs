//! The WireGuard gateway: laptops and phones on a mesh network as
//! first-class members (`meshctl wg …`, README "Laptops and phones
//! (WireGuard)"). Each client is a replicated record
//! ([`mesh_model::wireguard`]); the host it names as gateway plumbs it:
//! - [`netns`]: a namespace per client, attached to the client's network
//!   like a container (address, DNS name, labels, port security, policy
//!   all come from the attachment), routing between its veth and a TUN;
//! - [`tunnel`]: the WireGuard protocol (boringtun's `noise` module) on
//!   one UDP port, a tunnel per client, its source checked;
//! - [`keys`]: the gateway's own key pair;
//! - [`view`]: the API's view of a client, and the metrics.
//!
//! The daemon's side (the API operations and the loop that keeps the
//! plumbed clients in line with the records) is `daemon/wireguard.rs`.

pub mod keys;
pub mod netns;
pub mod tunnel;
pub mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use mesh_model::records::Records;
use mesh_model::wireguard::WgClientRecord;

use crate::api::Attachment;
use keys::GatewayKey;
use tunnel::Tunnels;

/// This host's gateway: the clients' records, its key, its tunnels.
pub struct Gateway {
    pub records: Records<WgClientRecord>,
    pub key: GatewayKey,
    /// `None` when this host runs no gateway (`wg_port = 0`, or its port
    /// could not be bound: logged).
    pub tunnels: Option<Arc<Tunnels>>,
    /// What clients dial (advertised to the other hosts).
    pub endpoint: Option<String>,
    /// The clients plumbed here, by name. The lock serialises plumbing.
    pub running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Why each client waiting here could not be plumbed (logged once).
    pub errors: std::sync::Mutex<BTreeMap<String, String>>,
}

/// A client plumbed on this host.
pub struct Running {
    /// The record as plumbed (with its address filled in).
    pub record: WgClientRecord,
    pub attachment: Attachment,
    /// Holds the client's namespace open: dropping it (with the tunnel)
    /// destroys the namespace.
    pub netns: OwnedFd,
    pub netns_path: String,
}

impl Gateway {
    /// The `host:port` clients dial to reach this gateway: `configured`,
    /// else `listen`'s address (when it is a specific one) and `bound`'s
    /// port; else only `:PORT` (the others complete it with the address
    /// they know this host by).
    pub fn endpoint_for(configured: Option<&str>, listen: SocketAddr, bound: SocketAddr) -> String {
        match configured {
            Some(e) => e.to_string(),
            None if !listen.ip().is_unspecified() => {
                SocketAddr::new(listen.ip(), bound.port()).to_string()
            }
            None => format!(":{}", bound.port()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_configured_or_the_listen_address() {
        let bound: SocketAddr = "0.0.0.0:51820".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7800".parse().unwrap();
        let one: SocketAddr = "192.0.2.4:7800".parse().unwrap();
        assert_eq!(
            Gateway::endpoint_for(Some("vpn.example.com:443"), one, bound),
            "vpn.example.com:443"
        );
        assert_eq!(Gateway::endpoint_for(None, one, bound), "192.0.2.4:51820");
        assert_eq!(Gateway::endpoint_for(None, any, bound), ":51820");
    }
}
