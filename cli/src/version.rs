//! `meshctl version`: this client's version, the daemon's, and every
//! peer's software and protocol versions (PROTOCOL.md says how they meet).

use anyhow::Result;
use mesh_api::{Client, PeerStatus, StatusResponse};
use serde::Serialize;

use crate::print;

/// This client's version.
pub const CLIENT: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct Report<'a> {
    client: &'a str,
    daemon: Option<&'a str>,
    /// `mesh/2`: the major version.
    alpn: Option<&'a str>,
    /// Protocol versions the daemon speaks, `MIN-MAX`.
    protocol: Option<&'a str>,
    peers: Vec<PeerVersion<'a>>,
}

#[derive(Serialize)]
struct PeerVersion<'a> {
    name: &'a str,
    id: &'a str,
    state: String,
    version: Option<&'a str>,
    protocol: Option<&'a str>,
    /// The version a link speaks; `None`: the ranges do not meet.
    link: Option<u32>,
}

pub async fn run(c: &Client, json: bool) -> Result<()> {
    let status = match c.status().await {
        Ok(s) => s,
        Err(e) => {
            // The client's own version is worth printing even so.
            println!("client  {CLIENT}");
            return Err(anyhow::Error::from(e).context("cannot ask meshd for its version"));
        }
    };
    let report = report(&status);
    if json {
        return print::json(&report);
    }
    print!("{}", render(&report));
    Ok(())
}

fn peer(p: &PeerStatus) -> PeerVersion<'_> {
    PeerVersion {
        name: &p.name,
        id: &p.id,
        state: p.state.to_string(),
        version: p.version.as_deref(),
        protocol: p.protocol.as_deref(),
        link: p.link_protocol,
    }
}

fn report(s: &StatusResponse) -> Report<'_> {
    Report {
        client: CLIENT,
        daemon: s.host.version.as_deref(),
        alpn: s.host.alpn.as_deref(),
        protocol: s.host.protocol.as_deref(),
        peers: s.peers.iter().map(peer).collect(),
    }
}

fn render(r: &Report) -> String {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let mut out = format!("client  {}\n", r.client);
    out.push_str(&format!(
        "daemon  {}  protocol {} {}\n",
        dash(r.daemon),
        dash(r.alpn),
        dash(r.protocol)
    ));
    if r.peers.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "\n{:<16} {:<10} {:<9} {:<9} {:<5} {}\n",
        "HOST", "ID", "VERSION", "PROTOCOL", "LINK", "STATE"
    ));
    for p in &r.peers {
        let link = match (p.link, p.protocol) {
            (Some(v), _) => v.to_string(),
            (None, Some(_)) => "none".into(),
            (None, None) => "-".into(),
        };
        out.push_str(&format!(
            "{:<16} {:<10} {:<9} {:<9} {:<5} {}\n",
            p.name,
            p.id.get(..8).unwrap_or(p.id),
            dash(p.version),
            dash(p.protocol),
            link,
            p.state
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_without_a_common_version_say_none() {
        let s: StatusResponse = serde_json::from_value(serde_json::json!({
            "host": {"id": "a", "name": "h1", "control_address": "x", "data_address": "y",
                     "version": "0.2.0", "protocol": "1-1", "alpn": "mesh/2"},
            "mesh_size": 3, "networks": 0, "attachments": 0, "drops": {},
            "peers": [
                {"id": "0123456789", "name": "h2", "address": "x", "state": "up", "path": "direct",
                 "version": "0.2.0", "protocol": "1-2", "link_protocol": 1,
                 "tx": {"bytes": 0, "packets": 0}, "rx": {"bytes": 0, "packets": 0}},
                {"id": "abcdef", "name": "h3", "address": "x", "state": "down", "path": "none",
                 "version": "0.4.0", "protocol": "3-4",
                 "tx": {"bytes": 0, "packets": 0}, "rx": {"bytes": 0, "packets": 0}}
            ]
        }))
        .unwrap();
        let text = render(&report(&s));
        assert!(
            text.contains("daemon  0.2.0  protocol mesh/2 1-1"),
            "{text}"
        );
        let h2 = text.lines().find(|l| l.starts_with("h2")).unwrap();
        assert!(
            h2.contains("01234567") && h2.contains("1-2") && h2.contains(" 1 "),
            "{h2}"
        );
        let h3 = text.lines().find(|l| l.starts_with("h3")).unwrap();
        assert!(
            h3.contains("3-4") && h3.contains("none") && h3.ends_with("down"),
            "{h3}"
        );
    }
}
