//! `meshctl wg …`: WireGuard clients. The client's key pair is made here
//! (never sent to meshd: only its public half is), unless the device
//! keeps its own (`--public-key`).

use anyhow::{bail, Result};
use mesh_api::{Client, WgAddRequest, WgClient};
use mesh_model::wireguard::encode_key;
use serde::Serialize;
use std::fmt::Write as _;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::args::WgCommand;
use crate::print;

/// What `wg add --json` prints: the client, and its private key if it
/// was made here (the only copy: meshd never has it).
#[derive(Serialize)]
struct Added<'a> {
    #[serde(flatten)]
    client: &'a WgClient,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    config: String,
}

pub async fn run(c: &Client, cmd: WgCommand) -> Result<()> {
    match cmd {
        WgCommand::Add {
            name,
            network,
            host,
            labels,
            ip,
            public_key,
            qr,
            json,
        } => {
            let (private_key, public_key) = match public_key {
                Some(k) => (None, k),
                None => {
                    let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
                    let public = PublicKey::from(&secret);
                    (
                        Some(encode_key(secret.as_bytes())),
                        encode_key(public.as_bytes()),
                    )
                }
            };
            let req = WgAddRequest {
                name,
                network,
                host,
                labels: labels.into_iter().collect(),
                ip,
                public_key,
            };
            let client = c.wg_add(&req).await?;
            let text = config(&client, private_key.as_deref());
            if json {
                return print::json(&Added {
                    client: &client,
                    private_key,
                    config: text,
                });
            }
            print!("{text}");
            if qr {
                println!("{}", qr_code(&text)?);
            }
        }
        WgCommand::List(out) => {
            let list = c.wg_clients().await?;
            if out.json {
                return print::json(&list);
            }
            list_table(&list);
        }
        WgCommand::Rm { name } => {
            let client = c.wg_rm(&name).await?;
            println!("removed WireGuard client {}", client.name);
        }
        WgCommand::Move { name, host } => {
            let client = c.wg_move(&name, &host).await?;
            println!(
                "# {} now goes through {}: its new [Peer] section",
                client.name, client.gateway
            );
            print!("{}", peer_section(&client));
        }
    }
    Ok(())
}

/// The client's wg-quick configuration.
pub fn config(c: &WgClient, private_key: Option<&str>) -> String {
    let mut out = String::from("[Interface]\n");
    match private_key {
        Some(k) => {
            let _ = writeln!(out, "PrivateKey = {k}");
        }
        None => {
            let _ = writeln!(
                out,
                "# PrivateKey = the device's own (its public key is {})",
                c.public_key
            );
        }
    }
    let addrs: Vec<&str> = [c.ip.as_deref(), c.ip6.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let _ = writeln!(out, "Address = {}", addrs.join(", "));
    // The search domain makes NAME resolve as NAME.<network>.
    let _ = writeln!(out, "DNS = {}, {}", c.dns, c.network);
    if let Some(mtu) = c.mtu {
        let _ = writeln!(out, "MTU = {mtu}");
    }
    out.push('\n');
    out.push_str(&peer_section(c));
    out
}

/// The gateway as the client's one peer.
pub fn peer_section(c: &WgClient) -> String {
    let mut out = String::from("[Peer]\n");
    match &c.gateway_public_key {
        Some(k) => {
            let _ = writeln!(out, "PublicKey = {k}");
        }
        None => {
            eprintln!(
                "meshctl: gateway {} advertises no WireGuard key (is its wg_port 0, or its meshd older?)",
                c.gateway
            );
            let _ = writeln!(out, "# PublicKey = unknown: gateway {} has none", c.gateway);
        }
    }
    match &c.endpoint {
        Some(e) => {
            let _ = writeln!(out, "Endpoint = {e}");
        }
        None => {
            eprintln!(
                "meshctl: gateway {} has no address clients can dial yet: set wg_endpoint in its meshd.toml",
                c.gateway
            );
            let _ = writeln!(
                out,
                "# Endpoint = unknown: set wg_endpoint on gateway {}",
                c.gateway
            );
        }
    }
    let _ = writeln!(out, "AllowedIPs = {}", c.allowed_ips.join(", "));
    // Keeps NAT mappings open so the mesh can reach the client.
    let _ = writeln!(out, "PersistentKeepalive = 25");
    out
}

fn qr_code(text: &str) -> Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code,
        Err(e) => bail!("the configuration does not fit a QR code: {e}"),
    };
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}

fn list_table(list: &[WgClient]) {
    if list.is_empty() {
        println!("no WireGuard clients (add one with `meshctl wg add`)");
        return;
    }
    println!(
        "{:<16} {:<12} {:<18} {:<12} {:<20} {:>9} {:>9}",
        "NAME", "NETWORK", "ADDRESS", "GATEWAY", "HANDSHAKE", "RX", "TX"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for c in list {
        let (handshake, rx, tx) = match &c.stats {
            Some(s) => (
                s.last_handshake_ms
                    .map(|ms| format!("{}s ago", now.saturating_sub(ms) / 1000))
                    .unwrap_or_else(|| "never".into()),
                print::human_bytes(s.rx_bytes),
                print::human_bytes(s.tx_bytes),
            ),
            // Counters live on the gateway: `wg list` there shows them.
            None => (format!("(on {})", c.gateway), "-".into(), "-".into()),
        };
        println!(
            "{:<16} {:<12} {:<18} {:<12} {:<20} {:>9} {:>9}",
            c.name,
            c.network,
            c.ip.as_deref().unwrap_or("-"),
            c.gateway,
            handshake,
            rx,
            tx
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> WgClient {
        WgClient {
            name: "laptop".into(),
            network: "blue".into(),
            ip: Some("10.9.0.7/32".into()),
            ip6: Some("fd00:9::7/128".into()),
            public_key: "PUB".into(),
            labels: Default::default(),
            gateway: "h1".into(),
            gateway_id: "ab".into(),
            endpoint: Some("192.0.2.1:51820".into()),
            gateway_public_key: Some("GW".into()),
            dns: "10.9.0.1".into(),
            allowed_ips: vec!["10.9.0.0/24".into(), "fd00:9::/64".into()],
            mtu: Some(1400),
            stats: None,
        }
    }

    #[test]
    fn the_config_names_addresses_dns_and_the_gateway() {
        let text = config(&client(), Some("PRIV"));
        for line in [
            "PrivateKey = PRIV",
            "Address = 10.9.0.7/32, fd00:9::7/128",
            "DNS = 10.9.0.1, blue",
            "MTU = 1400",
            "PublicKey = GW",
            "Endpoint = 192.0.2.1:51820",
            "AllowedIPs = 10.9.0.0/24, fd00:9::/64",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        let own = config(&client(), None);
        assert!(!own.lines().any(|l| l.starts_with("PrivateKey")), "{own}");
        assert!(qr_code(&text).unwrap().lines().count() > 10);
    }
}
