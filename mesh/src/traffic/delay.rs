//! Delay, jitter and loss: what this host tells the data plane (see
//! [`dataplane::impair`]) and the bridge port flags that make local frames
//! pass it.
//!
//! Semantics are per round trip, as users measure them with ping: each
//! frame passes the data plane once per direction, so it is held half the
//! delay (and half the jitter) and lost with the probability that makes a
//! round trip lose `loss` percent.
//!
//! On a shaped network every container port of the bridge is isolated
//! with learning off, and the TAP port does not learn either: a local
//! frame can then only leave through the TAP, and frames coming back from
//! the TAP are flooded to the network's local ports (each container keeps
//! only its own). Networks without delay, jitter or loss keep the plain
//! bridge and the data plane's fast path.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use dataplane::impair::{Impairment, Shaping};
use mesh_api::QosEntry;

use super::plan::Facts;
use crate::kernel::command::{self as kernel, Tool};
pub use crate::netdev::parse_mac;
use mesh_model::networks;

pub type Mac = [u8; 6];

/// One direction's share of a round trip's impairment.
pub fn per_frame(q: &QosEntry) -> Option<Impairment> {
    let delay = q.delay_ms.unwrap_or(0.0);
    let jitter = q.jitter_ms.unwrap_or(0.0);
    let loss = q.loss_percent.unwrap_or(0.0) / 100.0;
    if delay <= 0.0 && jitter <= 0.0 && loss <= 0.0 {
        return None;
    }
    Some(Impairment {
        delay: Duration::from_secs_f64(delay / 2000.0),
        jitter: Duration::from_secs_f64(jitter / 2000.0),
        // 1 - (1 - q)^2 = loss for the two passes of a round trip.
        loss: 1.0 - (1.0 - loss.clamp(0.0, 1.0)).sqrt(),
    })
}

/// What one shaped network is given, comparable so it is pushed only on change.
#[derive(Debug, Clone, PartialEq)]
pub struct NetPlan {
    pub network: String,
    pub wire: u32,
    pub default: Option<Impairment>,
    pub per_mac: BTreeMap<Mac, Impairment>,
    pub local: BTreeSet<Mac>,
}

impl NetPlan {
    pub fn shaping(&self) -> Shaping {
        Shaping::new(
            self.default,
            self.per_mac
                .iter()
                .map(|(m, i)| (*m, *i))
                .collect::<HashMap<_, _>>(),
            self.local.iter().copied().collect::<HashSet<_>>(),
        )
    }
}

/// The shaped networks carried here: those where any entry delays or
/// loses. A container's entry replaces its network's for its frames, also
/// when it only sets a rate (then its frames pass unimpaired).
pub fn plan(f: &Facts) -> BTreeMap<String, NetPlan> {
    let none = Impairment {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
    };
    let shaped: BTreeSet<&str> = f
        .qos
        .values()
        .filter(|q| per_frame(q).is_some())
        .map(|q| q.network.as_str())
        .collect();
    let mut out: BTreeMap<String, NetPlan> = BTreeMap::new();
    for q in f
        .qos
        .values()
        .filter(|q| shaped.contains(q.network.as_str()))
    {
        let Some(def) = f.networks.get(&q.network) else {
            continue;
        };
        if !def.allows_host(&f.me) {
            continue;
        }
        let p = out.entry(q.network.clone()).or_insert_with(|| NetPlan {
            network: q.network.clone(),
            wire: networks::wire_id(&q.network),
            default: None,
            per_mac: BTreeMap::new(),
            // This host's own store: another member's writes cannot
            // change which frames are local here.
            local: f
                .attachments
                .iter()
                .filter(|r| r.attachment.network == q.network)
                .filter_map(|r| parse_mac(&r.attachment.mac))
                .collect(),
        });
        match &q.container {
            None => p.default = per_frame(q),
            Some(ip) => {
                let mac = f.endpoints.values().find(|e| {
                    e.network == q.network
                        && e.ip.to_string() == *ip
                        && matches!(e.ip, IpAddr::V4(_))
                });
                if let Some(mac) = mac.and_then(|e| parse_mac(&e.mac)) {
                    p.per_mac.insert(mac, per_frame(q).unwrap_or(none));
                }
            }
        }
    }
    out
}

/// Sets flags of a bridge port (`bridge link set dev PORT …`).
pub fn port_flags(port: &str, flags: &[&str]) -> Result<()> {
    let args = [&["link", "set", "dev", port][..], flags].concat();
    kernel::run(None, Tool::Bridge, &args)?;
    Ok(())
}

/// A container port of a shaped network: isolated, not learning, and
/// without what it learned before (a learned local MAC would make the
/// bridge send frames port to port, which isolation then drops).
pub fn isolate(port: &str, on: bool) -> Result<()> {
    match on {
        true => {
            port_flags(port, &["isolated", "on", "learning", "off"])?;
            flush_learned(port)
        }
        false => port_flags(port, &["isolated", "off", "learning", "on"]),
    }
}

fn flush_learned(port: &str) -> Result<()> {
    let args = [
        "link",
        "set",
        "dev",
        port,
        "type",
        "bridge_slave",
        "fdb_flush",
    ];
    kernel::run(None, Tool::Ip, &args)
        .with_context(|| format!("flushing what bridge port {port} learned"))?;
    Ok(())
}

/// The TAP port of a shaped network does not learn (hairpinned frames
/// carry local sources).
pub fn tap_learning(tap: &str, on: bool) -> Result<()> {
    port_flags(tap, &["learning", if on { "on" } else { "off" }])?;
    if !on {
        flush_learned(tap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_semantics() {
        let q = QosEntry {
            network: "n".into(),
            container: None,
            rate_kbit: None,
            ceiling_kbit: None,
            delay_ms: Some(50.0),
            jitter_ms: Some(4.0),
            loss_percent: Some(19.0),
        };
        let i = per_frame(&q).unwrap();
        assert_eq!(i.delay, Duration::from_millis(25));
        assert_eq!(i.jitter, Duration::from_millis(2));
        assert!((i.loss - 0.1).abs() < 1e-9, "{}", i.loss);
        let rate_only = QosEntry {
            delay_ms: None,
            jitter_ms: None,
            loss_percent: None,
            rate_kbit: Some(1000),
            ..q
        };
        assert!(per_frame(&rate_only).is_none());
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:07"), None);
    }
}
