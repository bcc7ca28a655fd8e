//! `meshctl top`: traffic rates per container and per peer, from two
//! samples of the counters an interval apart, redrawn in place (ANSI home
//! and clear) when stdout is a terminal.

use anyhow::Result;
use mesh_api::{AttachmentStats, Client, PeerStatus, StatusResponse};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::print::{self, human_bytes};

/// The counters at one instant.
struct Sample {
    at: Instant,
    status: StatusResponse,
    attachments: Vec<AttachmentStats>,
}

async fn sample(c: &Client) -> Result<Sample> {
    let (status, attachments) = tokio::try_join!(c.status(), c.attachment_stats())?;
    Ok(Sample {
        at: Instant::now(),
        status,
        attachments,
    })
}

/// Rates of one direction, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    pub bytes: f64,
    pub packets: f64,
}

fn rate(prev: (u64, u64), cur: (u64, u64), secs: f64) -> Rate {
    // A counter that went back (re-attached, restarted) counts from zero.
    let d = |a: u64, b: u64| if b >= a { (b - a) as f64 } else { b as f64 };
    Rate {
        bytes: d(prev.0, cur.0) / secs,
        packets: d(prev.1, cur.1) / secs,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerRates {
    pub network: String,
    pub container: String,
    pub ip: String,
    pub tx: Rate,
    pub rx: Rate,
    /// Drops in both directions during the interval.
    pub drops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRates {
    pub name: String,
    pub state: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    pub tx: Rate,
    pub rx: Rate,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub host: String,
    pub interval_secs: f64,
    pub containers: Vec<ContainerRates>,
    pub peers: Vec<PeerRates>,
}

fn rates(prev: &Sample, cur: &Sample) -> Rates {
    let secs = cur.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let containers = cur
        .attachments
        .iter()
        .map(|a| {
            let before = prev
                .attachments
                .iter()
                .find(|b| b.host_ifname == a.host_ifname && b.network == a.network);
            let (ptx, prx) = before.map(|b| (b.tx, b.rx)).unwrap_or((a.tx, a.rx));
            let drops = |p: u64, c: u64| c.saturating_sub(p);
            ContainerRates {
                network: a.network.clone(),
                container: a.container.clone(),
                ip: a.ip.clone(),
                tx: rate((ptx.bytes, ptx.packets), (a.tx.bytes, a.tx.packets), secs),
                rx: rate((prx.bytes, prx.packets), (a.rx.bytes, a.rx.packets), secs),
                drops: drops(ptx.drops, a.tx.drops) + drops(prx.drops, a.rx.drops),
            }
        })
        .collect();
    let peers = cur
        .status
        .peers
        .iter()
        .map(|p| {
            let before: &PeerStatus = prev.status.peers.iter().find(|b| b.id == p.id).unwrap_or(p);
            PeerRates {
                name: p.name.clone(),
                state: p.state.to_string(),
                path: p.path.clone(),
                rtt_ms: p.path_rtt_ms.or(p.rtt_ms),
                tx: rate(
                    (before.tx.bytes, before.tx.packets),
                    (p.tx.bytes, p.tx.packets),
                    secs,
                ),
                rx: rate(
                    (before.rx.bytes, before.rx.packets),
                    (p.rx.bytes, p.rx.packets),
                    secs,
                ),
            }
        })
        .collect();
    Rates {
        host: cur.status.host.name.clone(),
        interval_secs: secs,
        containers,
        peers,
    }
}

fn per_sec(r: Rate) -> String {
    format!("{}/s {:.0}p/s", human_bytes(r.bytes as u64), r.packets)
}

/// The table `top` draws.
pub fn render(r: &Rates) -> String {
    let mut out = format!(
        "meshctl top — {} — rates over {:.1} s\n\n{:<12} {:<20} {:<18} {:>20} {:>20} {:>6}\n",
        r.host, r.interval_secs, "NETWORK", "CONTAINER", "IP", "TX", "RX", "DROPS"
    );
    for c in &r.containers {
        out.push_str(&format!(
            "{:<12} {:<20} {:<18} {:>20} {:>20} {:>6}\n",
            c.network,
            c.container,
            c.ip,
            per_sec(c.tx),
            per_sec(c.rx),
            c.drops
        ));
    }
    out.push_str(&format!(
        "\n{:<12} {:<11} {:<20} {:>9} {:>20} {:>20}\n",
        "PEER", "STATE", "PATH", "RTT", "TX", "RX"
    ));
    for p in &r.peers {
        let rtt = p
            .rtt_ms
            .map(|v| format!("{v:.1}ms"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<12} {:<11} {:<20} {:>9} {:>20} {:>20}\n",
            p.name,
            p.state,
            p.path,
            rtt,
            per_sec(p.tx),
            per_sec(p.rx)
        ));
    }
    out
}

pub async fn run(c: &Client, args: meshctl::args::TopArgs) -> Result<()> {
    let interval = Duration::from_secs_f64(args.interval);
    let tty = std::io::stdout().is_terminal();
    let mut prev = sample(c).await?;
    loop {
        tokio::time::sleep(interval).await;
        let cur = sample(c).await?;
        let r = rates(&prev, &cur);
        if args.json {
            if args.once {
                print::json(&r)?;
            } else {
                // One document per line, for a pipe.
                println!("{}", serde_json::to_string(&r)?);
            }
        } else {
            let mut out = std::io::stdout().lock();
            if tty && !args.once {
                // Home and clear: redraw in place.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{}", render(&r))?;
            out.flush()?;
        }
        if args.once {
            return Ok(());
        }
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::{HostStatus, InterfaceCounters, PeerState, Traffic};

    fn at(at: Instant, tx: u64, peer_rx: u64) -> Sample {
        let att = AttachmentStats {
            network: "blue".into(),
            container: "web".into(),
            host_ifname: "msv1".into(),
            ip: "10.0.0.2/24".into(),
            tx: InterfaceCounters {
                bytes: tx,
                packets: tx / 1000,
                drops: tx / 10_000,
            },
            rx: InterfaceCounters::default(),
        };
        let json = serde_json::json!({
            "id": "b", "name": "h2", "address": "x", "data_address": null,
            "state": "up", "path": "direct", "rtt_ms": 0.5, "key_generation": null,
            "key_age_secs": null, "tx": {"bytes": 0, "packets": 0},
            "rx": {"bytes": peer_rx, "packets": 1}
        });
        let mut peer: PeerStatus = serde_json::from_value(json).unwrap();
        peer.state = PeerState::Up;
        peer.tx = Traffic::default();
        Sample {
            at,
            status: StatusResponse {
                host: HostStatus {
                    id: "a".into(),
                    name: "h1".into(),
                    control_address: String::new(),
                    data_address: String::new(),
                    version: None,
                    protocol: None,
                    alpn: None,
                },
                mesh_size: 2,
                peers: vec![peer],
                networks: 1,
                attachments: 1,
                drops: Default::default(),
                host_addresses: Vec::new(),
                probing: Default::default(),
                gossip: Default::default(),
                switch: Default::default(),
                refused_networks: Default::default(),
                reload: None,
            },
            attachments: vec![att],
        }
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let t0 = Instant::now();
        let r = rates(
            &at(t0, 10_000, 0),
            &at(t0 + Duration::from_secs(2), 30_000, 4_000),
        );
        let c = &r.containers[0];
        assert_eq!(c.tx.bytes, 10_000.0);
        assert_eq!(c.tx.packets, 10.0);
        assert_eq!(c.drops, 2);
        assert_eq!(r.peers[0].rx.bytes, 2_000.0);
        assert_eq!(r.peers[0].rtt_ms, Some(0.5));
        let text = render(&r);
        assert!(text.contains("web") && text.contains("h2"), "{text}");
    }

    #[test]
    fn a_counter_that_went_back_counts_from_zero() {
        let t0 = Instant::now();
        let r = rates(
            &at(t0, 50_000, 0),
            &at(t0 + Duration::from_secs(1), 3_000, 0),
        );
        assert_eq!(r.containers[0].tx.bytes, 3_000.0);
    }
}
