//! WireGuard clients (laptops, phones) put on a network through a gateway
//! host: one replicated record per client, keyed by its name (unique in the
//! mesh, `meshctl wg rm NAME` needs no network). Any member may write one
//! (`wg add --host H` and `wg move` work from any host); the gateway it
//! names plumbs it, and fills in the address it got when none was asked
//! for. The client's private key is never in a record.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// WireGuard clients, keyed by name.
pub const WG_CLIENTS_CHANNEL: &str = "wg-clients";
/// Member metadata: a gateway's WireGuard public key (base64).
pub const META_WG_KEY: &str = "wg-key";
/// Member metadata: the `host:port` clients dial (the configured
/// endpoint), else just the UDP port (at the member's address).
pub const META_WG_ENDPOINT: &str = "wg-endpoint";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgClientRecord {
    pub name: String,
    pub network: String,
    /// The client's address; `None` until its gateway allocated one.
    pub ip: Option<Ipv4Addr>,
    /// The client's WireGuard public key (32 bytes, base64).
    pub public_key: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Peer id (hex) of the host that runs the client's tunnel.
    pub gateway: String,
    /// Peer id (hex) of the host that wrote this version.
    pub updated_by: String,
}

/// Decodes a WireGuard key (standard base64 of 32 bytes).
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("key {text:?} is not base64: {e}"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("key {text:?} is {} bytes, not 32", b.len()))?;
    // A low-order point (all zeros, and the handful like it) gives every
    // handshake the same all-zero shared secret: whoever knows the
    // gateway's public key could then be that client.
    let probe = x25519_dalek::StaticSecret::from([1u8; 32]);
    if !probe
        .diffie_hellman(&x25519_dalek::PublicKey::from(key))
        .was_contributory()
    {
        return Err(format!(
            "key {text:?} is a low-order point, not a usable public key"
        ));
    }
    Ok(key)
}

/// Encodes a WireGuard key as `wg` prints it.
pub fn encode_key(key: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_ones_are_named() {
        let k = [7u8; 32];
        assert_eq!(decode_key(&encode_key(&k)).unwrap(), k);
        assert!(decode_key("not base64!")
            .unwrap_err()
            .contains("not base64"));
        assert!(decode_key("AAAA").unwrap_err().contains("3 bytes"));
        // All zeros, and u = 1 (order 4): no handshake secret from them.
        let mut one = [0u8; 32];
        one[0] = 1;
        for weak in [[0u8; 32], one] {
            let e = decode_key(&encode_key(&weak)).unwrap_err();
            assert!(e.contains("low-order"), "{e}");
        }
    }
}
