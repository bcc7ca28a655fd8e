//! Which targets a service has now: the containers its selector matches
//! plus its explicit targets, and which of them are in the rotation of each
//! port. Pure, so every host computes the same answer from the same records.

use mesh_api::{Protocol, ServicePort, TargetHealth};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mesh_model::records::{endpoint_key, EndpointRecord};
use mesh_model::services::spec::DEFAULT_WEIGHT;
use mesh_model::services::{health_key, HealthRecord, LabelRecord, ServiceDef};

/// The replicated facts targets are computed from.
pub struct Facts<'a> {
    pub endpoints: &'a BTreeMap<String, EndpointRecord>,
    pub labels: &'a BTreeMap<String, LabelRecord>,
    pub health: &'a BTreeMap<String, HealthRecord>,
    /// Hosts that are up and not removed (this one included).
    pub live_hosts: &'a BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    /// Explicit port; `None`: the service port's target port.
    pub port: Option<u16>,
    pub weight: u32,
    pub explicit: bool,
    /// Peer id (hex) of the host of the container, if it is one.
    pub host: Option<String>,
    pub name: Option<String>,
}

impl Target {
    pub fn port_for(&self, p: &ServicePort) -> u16 {
        self.port.unwrap_or(p.target_port)
    }
}

/// The labels of the container behind `endpoint`, if still its own.
pub fn labels_of<'a>(
    key: &str,
    endpoint: &EndpointRecord,
    labels: &'a BTreeMap<String, LabelRecord>,
) -> Option<&'a BTreeMap<String, String>> {
    labels
        .get(key)
        .filter(|l| l.mac == endpoint.mac && l.host == endpoint.host)
        .map(|l| &l.labels)
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every target of `def`, ordered by address: the selector's (weight 1)
/// and the explicit ones (an explicit target replaces the selector's entry
/// for the same address).
pub fn targets(def: &ServiceDef, facts: &Facts) -> Vec<Target> {
    let mut out: BTreeMap<(Ipv4Addr, Option<u16>), Target> = BTreeMap::new();
    if !def.selector.is_empty() {
        for (key, e) in facts.endpoints {
            let IpAddr::V4(ip) = e.ip else { continue };
            if e.network != def.network || e.mac.is_empty() {
                continue;
            }
            let Some(labels) = labels_of(key, e, facts.labels) else {
                continue;
            };
            if !matches(&def.selector, labels) {
                continue;
            }
            out.insert(
                (ip, None),
                Target {
                    ip,
                    ip6: e.ip6,
                    port: None,
                    weight: DEFAULT_WEIGHT,
                    explicit: false,
                    host: Some(e.host.clone()),
                    name: e.name.clone(),
                },
            );
        }
    }
    for x in &def.explicit {
        let endpoint = facts
            .endpoints
            .get(&endpoint_key(&def.network, IpAddr::V4(x.ip)));
        out.remove(&(x.ip, None));
        out.insert(
            (x.ip, x.port),
            Target {
                ip: x.ip,
                ip6: endpoint.and_then(|e| e.ip6),
                port: x.port,
                weight: x.weight,
                explicit: true,
                host: endpoint.map(|e| e.host.clone()),
                name: endpoint.and_then(|e| e.name.clone()),
            },
        );
    }
    out.into_values().collect()
}

/// What the target's host last published about it on `port`. UDP ports
/// and addresses that are no container of the mesh are not checked.
pub fn health(network: &str, t: &Target, port: &ServicePort, facts: &Facts) -> TargetHealth {
    if port.protocol == Protocol::Udp || t.host.is_none() {
        return TargetHealth::Unchecked;
    }
    match facts
        .health
        .get(&health_key(network, t.ip, t.port_for(port)))
    {
        Some(h) if Some(&h.host) == t.host.as_ref() && !h.healthy => TargetHealth::Unhealthy,
        Some(h) if Some(&h.host) == t.host.as_ref() => TargetHealth::Healthy,
        // Not checked yet: optimistic, so a new target joins at once.
        _ => TargetHealth::Unchecked,
    }
}

/// In the rotation of `port`: not unhealthy, and on a live host (or no
/// container of the mesh: then nobody can tell).
pub fn active(network: &str, t: &Target, port: &ServicePort, facts: &Facts) -> bool {
    let host_up = t.host.as_ref().is_none_or(|h| facts.live_hosts.contains(h));
    host_up && health(network, t, port, facts) != TargetHealth::Unhealthy
}

/// The (address, port) pairs of `def` that `host` must health-check: its
/// own containers, on the TCP ports.
pub fn checks_of(def: &ServiceDef, facts: &Facts, host: &str) -> BTreeSet<(Ipv4Addr, u16)> {
    let mut out = BTreeSet::new();
    for t in targets(def, facts) {
        if t.host.as_deref() != Some(host) {
            continue;
        }
        for p in def.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
            out.insert((t.ip, t.port_for(p)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::Scheduler;
    use mesh_model::services::ExplicitTarget;

    fn endpoint(ip: &str, host: &str, mac: &str) -> EndpointRecord {
        EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: mac.into(),
            host: host.into(),
            name: Some(format!("c{mac}")),
            version: None,
        }
    }

    fn label(ip: &str, host: &str, mac: &str, app: &str) -> LabelRecord {
        LabelRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            mac: mac.into(),
            host: host.into(),
            labels: [("app".to_string(), app.to_string())].into(),
        }
    }

    fn service(selector: &[(&str, &str)], explicit: Vec<ExplicitTarget>) -> ServiceDef {
        ServiceDef {
            network: "blue".into(),
            name: "web".into(),
            vip: "10.0.0.200".parse().unwrap(),
            vip6: "fd00::c8".parse().unwrap(),
            ports: vec![ServicePort {
                port: 80,
                target_port: 8080,
                protocol: Protocol::Tcp,
            }],
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scheduler: Scheduler::Rr,
            explicit,
            health_interval_ms: 1000,
            created_by: "a".into(),
        }
    }

    struct World {
        endpoints: BTreeMap<String, EndpointRecord>,
        labels: BTreeMap<String, LabelRecord>,
        health: BTreeMap<String, HealthRecord>,
        live: BTreeSet<String>,
    }

    impl World {
        fn new() -> World {
            let mut w = World {
                endpoints: BTreeMap::new(),
                labels: BTreeMap::new(),
                health: BTreeMap::new(),
                live: ["a", "b"].map(String::from).into(),
            };
            for (ip, host, mac, app) in [
                ("10.0.0.2", "a", "m2", "web"),
                ("10.0.0.3", "b", "m3", "web"),
                ("10.0.0.4", "b", "m4", "db"),
            ] {
                let key = endpoint_key("blue", ip.parse().unwrap());
                w.endpoints.insert(key.clone(), endpoint(ip, host, mac));
                w.labels.insert(key, label(ip, host, mac, app));
            }
            w
        }

        fn facts(&self) -> Facts<'_> {
            Facts {
                endpoints: &self.endpoints,
                labels: &self.labels,
                health: &self.health,
                live_hosts: &self.live,
            }
        }
    }

    fn ips(ts: &[Target]) -> Vec<String> {
        ts.iter().map(|t| t.ip.to_string()).collect()
    }

    #[test]
    fn selector_finds_matching_containers_only() {
        let w = World::new();
        let ts = targets(&service(&[("app", "web")], vec![]), &w.facts());
        assert_eq!(ips(&ts), ["10.0.0.2", "10.0.0.3"]);
        assert!(ts.iter().all(|t| !t.explicit && t.weight == 1));
        assert!(targets(&service(&[], vec![]), &w.facts()).is_empty());
    }

    #[test]
    fn stale_labels_do_not_follow_a_reused_address() {
        let mut w = World::new();
        let key = endpoint_key("blue", "10.0.0.3".parse().unwrap());
        // The address went to another container (another veth, another mac).
        w.endpoints.insert(key, endpoint("10.0.0.3", "b", "other"));
        let ts = targets(&service(&[("app", "web")], vec![]), &w.facts());
        assert_eq!(ips(&ts), ["10.0.0.2"]);
    }

    #[test]
    fn explicit_targets_add_and_override_weights() {
        let w = World::new();
        let def = service(
            &[("app", "web")],
            vec![
                ExplicitTarget {
                    ip: "10.0.0.3".parse().unwrap(),
                    port: None,
                    weight: 3,
                },
                ExplicitTarget {
                    ip: "192.168.9.9".parse().unwrap(),
                    port: Some(81),
                    weight: 1,
                },
            ],
        );
        let ts = targets(&def, &w.facts());
        assert_eq!(ips(&ts), ["10.0.0.2", "10.0.0.3", "192.168.9.9"]);
        assert_eq!(ts[1].weight, 3);
        assert!(ts[1].explicit);
        assert_eq!(ts[1].host.as_deref(), Some("b"));
        assert_eq!(ts[2].host, None);
        assert_eq!(ts[2].port_for(&def.ports[0]), 81);
        assert_eq!(ts[0].port_for(&def.ports[0]), 8080);
    }

    #[test]
    fn unhealthy_or_dead_host_targets_leave_the_rotation() {
        let mut w = World::new();
        let def = service(&[("app", "web")], vec![]);
        let p = def.ports[0];
        let ts = targets(&def, &w.facts());
        assert!(ts.iter().all(|t| active("blue", t, &p, &w.facts())));
        let key = health_key("blue", "10.0.0.2".parse().unwrap(), 8080);
        let rec = |healthy, host: &str| HealthRecord {
            network: "blue".into(),
            ip: "10.0.0.2".parse().unwrap(),
            port: 8080,
            healthy,
            host: host.into(),
        };
        w.health.insert(key.clone(), rec(false, "a"));
        assert_eq!(
            health("blue", &ts[0], &p, &w.facts()),
            TargetHealth::Unhealthy
        );
        assert!(!active("blue", &ts[0], &p, &w.facts()));
        // Only the target's own host is believed.
        w.health.insert(key.clone(), rec(false, "b"));
        assert!(active("blue", &ts[0], &p, &w.facts()));
        w.health.insert(key, rec(true, "a"));
        assert_eq!(
            health("blue", &ts[0], &p, &w.facts()),
            TargetHealth::Healthy
        );
        w.live.remove("b");
        assert!(!active("blue", &ts[1], &p, &w.facts()));
        // UDP is not checked.
        let udp = ServicePort {
            protocol: Protocol::Udp,
            ..p
        };
        assert_eq!(
            health("blue", &ts[0], &udp, &w.facts()),
            TargetHealth::Unchecked
        );
    }

    #[test]
    fn each_host_checks_only_its_own_targets() {
        let w = World::new();
        let def = service(&[("app", "web")], vec![]);
        assert_eq!(
            checks_of(&def, &w.facts(), "a"),
            [("10.0.0.2".parse().unwrap(), 8080)].into()
        );
        assert_eq!(checks_of(&def, &w.facts(), "b").len(), 1);
        assert!(checks_of(&def, &w.facts(), "c").is_empty());
    }
}
