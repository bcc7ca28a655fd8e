//! What meshctl prints: JSON for `--json`, else the text tables.

use anyhow::Result;
use mesh_api::{
    Attachment, DnsRecord, IpamNetwork, Network, PeerState, PeerStatus, ReloadStatus,
    StatusResponse,
};
use serde::Serialize;

pub fn json<T: Serialize + ?Sized>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn status(s: &StatusResponse) {
    println!("host     {} ({})", s.host.name, s.host.id);
    println!(
        "control  {}  data {}",
        s.host.control_address, s.host.data_address
    );
    let up = s.peers.iter().filter(|p| p.state == PeerState::Up).count();
    println!(
        "mesh     {} host(s), {} peer(s) up, {} network(s), {} attachment(s) here",
        s.mesh_size, up, s.networks, s.attachments
    );
    println!("{}", encryption_line(&s.peers));
    for (id, why) in &s.refused_networks {
        println!("refused  network {id} is not carried here: {}", why.detail);
    }
    if let Some(r) = &s.reload {
        for line in reload_lines(r, now_unix()) {
            println!("{line}");
        }
    }
    for a in &s.host_addresses {
        let role = match (a.exposed, a.gateway) {
            (true, true) => "exposed, gateway",
            (true, false) => "exposed",
            _ => "gateway",
        };
        println!(
            "address  {} on {} ({}, {role})",
            a.ip, a.network, a.interface
        );
    }
    peers(&s.peers);
    let drops: u64 = s.drops.values().sum();
    if drops > 0 {
        let list: Vec<String> = s
            .drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("dropped  {}", list.join(" "));
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The last reload of meshd.toml: how it went, and what waits for a
/// restart.
fn reload_lines(r: &ReloadStatus, now_unix: u64) -> Vec<String> {
    let ago = now_unix.saturating_sub(r.at_unix);
    let file = if r.file.is_empty() {
        String::new()
    } else {
        format!(" of {}", r.file)
    };
    let mut out = vec![match &r.error {
        // The error names the file.
        Some(e) => format!("reload   #{} {ago}s ago FAILED: {e}", r.count),
        None if r.applied.is_empty() => {
            format!(
                "reload   #{} {ago}s ago{file} ok, nothing changed live",
                r.count
            )
        }
        None => format!(
            "reload   #{} {ago}s ago{file} ok, changed {}",
            r.count,
            r.applied.join(", ")
        ),
    }];
    if !r.overridden.is_empty() {
        out.push(format!(
            "reload   not changed, set by a command-line flag: {}",
            r.overridden.join(", ")
        ));
    }
    if !r.needs_restart.is_empty() {
        out.push(format!(
            "restart  needed to apply {} (changed in the config file)",
            r.needs_restart.join(", ")
        ));
    }
    out
}

/// The ciphers the peers' session keys actually use, most used first
/// (a pair uses AES-256-GCM only when both CPUs have AES hardware).
fn encryption_line(peers: &[PeerStatus]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for cipher in peers.iter().filter_map(|p| p.cipher.as_deref()) {
        *counts.entry(cipher).or_default() += 1;
    }
    if counts.is_empty() {
        return "encryption no session keys yet (x25519, per peer)".to_string();
    }
    let mut used: Vec<(&str, usize)> = counts.into_iter().collect();
    used.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let list: Vec<String> = used
        .iter()
        .map(|(cipher, n)| {
            let peers = if *n == 1 { "peer" } else { "peers" };
            format!("{cipher} ({n} {peers})")
        })
        .collect();
    format!("encryption {}, x25519 session keys", list.join(", "))
}

pub fn peers(peers: &[PeerStatus]) {
    if peers.is_empty() {
        println!("no peers (join one with `meshctl join HOST:PORT --token TOKEN`)");
        return;
    }
    println!(
        "{:<14} {:<12} {:<22} {:<11} {:<7} {:>8} {:>8} {:<17} {:>12} {:>12}",
        "PEER", "NAME", "ADDRESS", "STATE", "PATH", "RTT", "KEY-AGE", "CIPHER", "TX", "RX"
    );
    for p in peers {
        let rtt = p
            .rtt_ms
            .map(|r| format!("{r:.2}ms"))
            .unwrap_or_else(|| "-".into());
        let age = p
            .key_age_secs
            .map(|a| format!("{a:.0}s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:<12} {:<22} {:<11} {:<7} {:>8} {:>8} {:<17} {:>12} {:>12}",
            p.id,
            p.name,
            p.address,
            p.state,
            p.path,
            rtt,
            age,
            p.cipher.as_deref().unwrap_or("-"),
            format!("{}/{}p", human_bytes(p.tx.bytes), p.tx.packets),
            format!("{}/{}p", human_bytes(p.rx.bytes), p.rx.packets),
        );
    }
}

pub fn networks(ns: &[Network]) {
    println!(
        "{:<12} {:<18} {:<24} {:<15} {:<6} {:<12} {:<6} {:<6} HOSTS",
        "NETWORK", "SUBNET", "SUBNET6", "DNS", "MTU", "BRIDGE", "POLICY", "EGRESS"
    );
    for n in ns {
        let hosts = if n.hosts.is_empty() {
            "all".to_string()
        } else {
            n.hosts.len().to_string()
        };
        println!(
            "{:<12} {:<18} {:<24} {:<15} {:<6} {:<12} {:<6} {:<6} {}",
            n.id,
            n.subnet,
            n.subnet6,
            n.dns,
            n.mtu,
            n.bridge,
            n.policy,
            if n.egress { "on" } else { "off" },
            hosts
        );
    }
}

pub fn attachments(list: &[Attachment]) {
    println!(
        "{:<12} {:<18} {:<14} {:<19} {:<12} NETNS",
        "NETWORK", "ADDRESS", "IFNAME", "MAC", "ORIGIN"
    );
    for a in list {
        println!(
            "{:<12} {:<18} {:<14} {:<19} {:<12} {}",
            a.network, a.ip, a.ifname, a.mac, a.origin, a.netns
        );
    }
}

pub fn ipam(nets: &[IpamNetwork]) {
    for n in nets {
        println!("network {} ({})", n.network, n.subnet);
        println!(
            "  {:<16} {:<16} {:>6} {:>6}  OWNER",
            "FROM", "TO", "SIZE", "USED"
        );
        for r in &n.ranges {
            println!(
                "  {:<16} {:<16} {:>6} {:>6}  {}",
                r.start, r.end, r.size, r.used, r.owner_name
            );
        }
        for a in &n.allocations {
            println!(
                "  allocated {:<16} on {:<12} {}",
                a.ip,
                a.host,
                a.name.as_deref().unwrap_or("")
            );
        }
    }
}

pub fn dns(recs: &[DnsRecord]) {
    println!(
        "{:<28} {:<16} {:<28} {:<8} {:<12} LIVE",
        "NAME", "A", "AAAA", "VERSION", "HOST"
    );
    for r in recs {
        println!(
            "{:<28} {:<16} {:<28} {:<8} {:<12} {}",
            r.fqdn,
            r.ip,
            r.ip6.as_deref().unwrap_or("-"),
            r.version.as_deref().unwrap_or("-"),
            r.host,
            if r.live { "yes" } else { "no" }
        );
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

pub fn services(list: &[mesh_api::Service], details: bool) {
    if list.is_empty() {
        println!("no services (create one with `meshctl service create`)");
        return;
    }
    println!(
        "{:<16} {:<12} {:<16} {:<24} {:<5} {:>8}",
        "NAME", "NETWORK", "VIP", "PORTS", "SCHED", "TARGETS"
    );
    for s in list {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| format!("{}:{}/{}", p.port, p.target_port, p.protocol))
            .collect();
        let active = s.targets.iter().filter(|t| t.active).count();
        println!(
            "{:<16} {:<12} {:<16} {:<24} {:<5} {:>8}",
            s.name,
            s.network,
            s.vip,
            ports.join(","),
            s.scheduler,
            format!("{active}/{}", s.targets.len())
        );
        if !details {
            continue;
        }
        if !s.selector.is_empty() {
            let sel: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  selector {}  vip6 {}", sel.join(","), s.vip6);
        }
        for t in &s.targets {
            let addr = match t.port {
                Some(p) => format!("{}:{p}", t.ip),
                None => t.ip.clone(),
            };
            println!(
                "  {:<22} host {:<12} weight {:<3} {:<9} {:<8} {} conns {}",
                addr,
                t.host.as_deref().unwrap_or("-"),
                t.weight,
                t.health,
                if t.active { "active" } else { "inactive" },
                if t.explicit { "explicit" } else { "selector" },
                t.connections
            );
        }
    }
}

pub fn fips(list: &[mesh_api::Fip]) {
    if list.is_empty() {
        println!("no floating IPs (see `meshctl fip create`)");
        return;
    }
    println!("{:<16} {:<20} {:<12} SERVICES", "FIP", "POOL", "HOLDER");
    for f in list {
        let holder = holder_cell(f);
        let services: Vec<String> = f
            .bindings
            .iter()
            .map(|b| match b.service_port {
                Some(p) => format!(
                    "{}:{} -> {}.{}:{p}",
                    f.addr, b.public_port, b.service, b.network
                ),
                None => format!(
                    "{}:{} -> {}.{} (no such service)",
                    f.addr, b.public_port, b.service, b.network
                ),
            })
            .collect();
        println!(
            "{:<16} {:<20} {:<12} {}",
            f.addr,
            f.pool.as_deref().unwrap_or("-"),
            holder,
            if services.is_empty() {
                "-".to_string()
            } else {
                services.join(", ")
            }
        );
    }
}

/// The holder, or why there is none (older meshd give no reason).
fn holder_cell(f: &mesh_api::Fip) -> String {
    match (&f.holder, &f.reason) {
        (Some(h), _) => h.clone(),
        (None, Some(why)) => format!("(none: {why})"),
        (None, None) => "(none)".to_string(),
    }
}

pub fn fip_pools(list: &[mesh_api::FipPool]) {
    if list.is_empty() {
        println!("no floating-IP pools (see `meshctl fip pool add`)");
        return;
    }
    println!("{:<20} {:>5} HOSTS", "POOL", "FIPS");
    for p in list {
        let hosts = if p.hosts.is_empty() {
            "(none: no host's underlay subnet contains it)".to_string()
        } else {
            p.hosts.join(", ")
        };
        println!("{:<20} {:>5} {hosts}", p.cidr, p.fips);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reload_shows_what_it_changed_and_what_waits_for_a_restart() {
        let mut r = mesh_api::ReloadStatus {
            ok: true,
            at_unix: 1000,
            count: 2,
            file: "/etc/mesh/meshd.toml".into(),
            applied: vec!["log".into(), "dns_upstreams".into()],
            needs_restart: vec!["max_networks".into()],
            ..Default::default()
        };
        assert_eq!(
            super::reload_lines(&r, 1012),
            [
                "reload   #2 12s ago of /etc/mesh/meshd.toml ok, changed log, dns_upstreams",
                "restart  needed to apply max_networks (changed in the config file)",
            ]
        );
        r.ok = false;
        r.error = Some("/etc/mesh/meshd.toml line 3, column 8: invalid string".into());
        r.needs_restart.clear();
        assert_eq!(
            super::reload_lines(&r, 1000),
            ["reload   #2 0s ago FAILED: /etc/mesh/meshd.toml line 3, column 8: invalid string"]
        );
    }

    #[test]
    fn the_holder_column_says_why_there_is_none() {
        let fip = |v: serde_json::Value| -> mesh_api::Fip { serde_json::from_value(v).unwrap() };
        // From an older meshd: no reason field.
        let old = fip(serde_json::json!({
            "addr": "192.168.1.241", "pool": "192.168.1.240/28",
            "holder": null, "bindings": []
        }));
        assert_eq!(super::holder_cell(&old), "(none)");
        let mut f = old.clone();
        f.reason = Some("no host's underlay subnet contains 192.168.1.240/28".into());
        assert_eq!(
            super::holder_cell(&f),
            "(none: no host's underlay subnet contains 192.168.1.240/28)"
        );
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("reason").is_none(), "absent when none: {json}");
        f.holder = Some("h2".into());
        f.reason = None;
        assert_eq!(super::holder_cell(&f), "h2");
    }

    #[test]
    fn the_encryption_line_names_the_ciphers_in_use() {
        let peer = |cipher: Option<&str>| -> PeerStatus {
            let mut p: PeerStatus = serde_json::from_value(serde_json::json!({
                "id": "a", "name": "h", "address": "x", "state": "up",
                "path": "direct", "tx": {"bytes": 0, "packets": 0},
                "rx": {"bytes": 0, "packets": 0}
            }))
            .unwrap();
            p.cipher = cipher.map(str::to_string);
            p
        };
        assert_eq!(
            encryption_line(&[
                peer(Some("aes-256-gcm")),
                peer(Some("chacha20-poly1305")),
                peer(Some("aes-256-gcm")),
                peer(None),
            ]),
            "encryption aes-256-gcm (2 peers), chacha20-poly1305 (1 peer), x25519 session keys"
        );
        assert_eq!(
            encryption_line(&[peer(None)]),
            "encryption no session keys yet (x25519, per peer)"
        );
    }

    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1536), "1.5K");
        assert_eq!(human_bytes(3 << 30), "3.0G");
    }
}
