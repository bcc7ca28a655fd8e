//! Guard of the WireGuard clients' channel.

use super::*;
use crate::wireguard::{decode_key, WgClientRecord, WG_CLIENTS_CHANNEL};

/// A client record (see [`crate::wireguard`]): under its own name, a DNS
/// label, on a network known here with its address inside the subnet, a
/// real key, a gateway that is a peer id, written by the host it names as
/// its writer. Any member may write one: the operator works from any host.
impl Guards {
    pub fn wg_clients(networks: Records<NetworkDef>) -> LwwMap<String, WgClientRecord> {
        guard(
            WG_CLIENTS_CHANNEL,
            move |key, c: &WgClientRecord, writer, _, _| {
                wg_client(key, c, writer, records::get(&networks, &c.network).as_ref())
            },
        )
    }
}

pub fn wg_client(
    key: &str,
    c: &WgClientRecord,
    writer: &PeerId,
    net: Option<&NetworkDef>,
) -> Verdict {
    check(key == c.name, || {
        format!("key {key:?} is not the client's name")
    })?;
    check(dns_label(&c.name), || {
        format!("client name {:?} is not a DNS label", c.name)
    })?;
    check(c.updated_by == writer_hex(writer), || {
        format!("client {key:?} names another host as its writer")
    })?;
    check(is_peer_hex(&c.gateway), || {
        "gateway is not a peer id".into()
    })?;
    decode_key(&c.public_key)?;
    check(c.labels.len() <= 64, || "too many labels".into())?;
    // Labels an attach would refuse would fail the gateway's plumbing on
    // every retry.
    crate::services::spec::check_labels(&c.labels).map_err(|e| e.to_string())?;
    let Some(net) = net else {
        // Retried by anti-entropy once the definition is here.
        return Err(format!("client of network {:?}, unknown here", c.network));
    };
    if let Some(ip) = c.ip {
        check(net.subnet.contains(&ip), || {
            format!("{ip} is outside network {}'s subnet", net.id)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_records_are_checked() {
        let w = PeerId([3; 32]);
        let net = NetworkDef {
            id: "blue".into(),
            subnet: "10.9.0.0/24".parse().unwrap(),
            subnet6: "fd00:9::/64".parse().unwrap(),
            created_by: w.to_hex(),
            labels: Default::default(),
            hosts: vec![],
            sealed_secrets: Default::default(),
        };
        let ok = WgClientRecord {
            name: "laptop".into(),
            network: "blue".into(),
            ip: Some("10.9.0.7".parse().unwrap()),
            public_key: crate::wireguard::encode_key(&[1; 32]),
            labels: Default::default(),
            gateway: w.to_hex(),
            updated_by: w.to_hex(),
        };
        assert!(wg_client("laptop", &ok, &w, Some(&net)).is_ok());
        assert!(wg_client("other", &ok, &w, Some(&net)).is_err());
        assert!(wg_client("laptop", &ok, &PeerId([4; 32]), Some(&net)).is_err());
        assert!(wg_client("laptop", &ok, &w, None).is_err());
        let outside = WgClientRecord {
            ip: Some("10.8.0.7".parse().unwrap()),
            ..ok.clone()
        };
        assert!(wg_client("laptop", &outside, &w, Some(&net)).is_err());
        let bad_key = WgClientRecord {
            public_key: "AAAA".into(),
            ..ok
        };
        assert!(wg_client("laptop", &bad_key, &w, Some(&net)).is_err());
    }
}
