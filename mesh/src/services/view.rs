//! API views of services and their Prometheus metrics.

use mesh_api::TargetHealth;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};

use super::lb::counter_name;
use super::targets::{self, Facts};
use super::Services;
use crate::api;
use mesh_model::hosts::{HostSet, Members};
use mesh_model::records::{self as rec, EndpointRecord};
use mesh_model::services::{HealthRecord, LabelRecord, ServiceDef};

/// The replicated facts at one moment, owned.
pub struct Snapshot {
    pub endpoints: BTreeMap<String, EndpointRecord>,
    pub labels: BTreeMap<String, LabelRecord>,
    pub health: BTreeMap<String, HealthRecord>,
    pub live_hosts: BTreeSet<String>,
    pub hosts: std::sync::Arc<HostSet>,
}

impl Snapshot {
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            endpoints: &self.endpoints,
            labels: &self.labels,
            health: &self.health,
            live_hosts: &self.live_hosts,
        }
    }
}

/// Worst health over the ports: unhealthy on one is unhealthy.
fn overall(healths: impl IntoIterator<Item = TargetHealth>) -> TargetHealth {
    let mut out = TargetHealth::Unchecked;
    for h in healths {
        match h {
            TargetHealth::Unhealthy => return h,
            TargetHealth::Healthy => out = h,
            TargetHealth::Unchecked => {}
        }
    }
    out
}

impl Services {
    pub fn snapshot(&self) -> Snapshot {
        let hosts = (self.hosts)();
        Snapshot {
            endpoints: rec::live(&self.channels.endpoints),
            labels: rec::live(&self.ch.labels),
            health: rec::live(&self.ch.health),
            live_hosts: self.live_hosts(&hosts),
            hosts,
        }
    }

    pub(crate) fn view(&self, def: &ServiceDef) -> api::Service {
        self.view_in(def, &self.snapshot())
    }

    fn view_in(&self, def: &ServiceDef, snap: &Snapshot) -> api::Service {
        let facts = snap.facts();
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let targets = targets::targets(def, &facts)
            .into_iter()
            .map(|t| api::ServiceTarget {
                ip: t.ip.to_string(),
                ip6: t.ip6.map(|a| a.to_string()),
                port: t.port,
                host: t.host.as_ref().map(|h| snap.hosts.name_of(h)),
                name: t.name.clone(),
                weight: t.weight,
                explicit: t.explicit,
                health: overall(
                    def.ports
                        .iter()
                        .map(|p| targets::health(&def.network, &t, p, &facts)),
                ),
                active: def
                    .ports
                    .iter()
                    .all(|p| targets::active(&def.network, &t, p, &facts)),
                connections: counters
                    .get(&counter_name(&def.key(), t.ip))
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        api::Service {
            name: def.name.clone(),
            network: def.network.clone(),
            vip: def.vip.to_string(),
            vip6: def.vip6.to_string(),
            ports: def.ports.clone(),
            selector: def.selector.clone(),
            scheduler: def.scheduler,
            health_interval_ms: def.health_interval_ms,
            targets,
        }
    }
}

type Labels = Vec<(String, String)>;

/// Per service and target: new connections from this host's containers,
/// health (1 healthy, 0 unhealthy, -1 unchecked) and whether in rotation.
pub fn render(services: &[api::Service]) -> String {
    let mut reg = Registry::with_prefix("mesh_service");
    let conns = Family::<Labels, Counter>::default();
    let health = Family::<Labels, Gauge>::default();
    let active = Family::<Labels, Gauge>::default();
    let count = Family::<Labels, Gauge>::default();
    for s in services {
        let svc: Labels = vec![
            ("service".into(), s.name.clone()),
            ("network".into(), s.network.clone()),
        ];
        count
            .get_or_create(&svc)
            .set(s.targets.iter().filter(|t| t.active).count() as i64);
        for t in &s.targets {
            let mut l = svc.clone();
            l.push(("target".into(), t.ip.clone()));
            conns.get_or_create(&l).inc_by(t.connections);
            health.get_or_create(&l).set(match t.health {
                TargetHealth::Healthy => 1,
                TargetHealth::Unhealthy => 0,
                TargetHealth::Unchecked => -1,
            });
            active.get_or_create(&l).set(i64::from(t.active));
        }
    }
    reg.register(
        "connections",
        "New connections to a target from containers on this host",
        conns,
    );
    reg.register(
        "target_health",
        "1 healthy, 0 unhealthy, -1 not checked",
        health,
    );
    reg.register("target_active", "1 if the target is in rotation", active);
    reg.register("active_targets", "Targets in rotation", count);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// `base` (an OpenMetrics text ending in `# EOF`) followed by `more`.
pub fn append(base: &str, more: &str) -> String {
    let head = base.strip_suffix("# EOF\n").unwrap_or(base);
    format!("{head}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::{Protocol, Scheduler, ServicePort};

    #[test]
    fn metrics_per_service_and_target() {
        let s = api::Service {
            name: "web".into(),
            network: "blue".into(),
            vip: "10.0.0.9".into(),
            vip6: "fd00::9".into(),
            ports: vec![ServicePort {
                port: 80,
                target_port: 80,
                protocol: Protocol::Tcp,
            }],
            selector: BTreeMap::new(),
            scheduler: Scheduler::Rr,
            health_interval_ms: 1000,
            targets: vec![api::ServiceTarget {
                ip: "10.0.0.2".into(),
                ip6: None,
                port: None,
                host: Some("h1".into()),
                name: None,
                weight: 1,
                explicit: false,
                health: TargetHealth::Unhealthy,
                active: false,
                connections: 42,
            }],
        };
        let text = append("# HELP x y\n# EOF\n", &render(&[s]));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.contains(
            r#"mesh_service_connections_total{service="web",network="blue",target="10.0.0.2"} 42"#
        ), "{text}");
        assert!(text.contains(
            r#"mesh_service_target_health{service="web",network="blue",target="10.0.0.2"} 0"#
        ));
        assert!(text.contains(r#"mesh_service_active_targets{service="web",network="blue"} 0"#));
    }

    #[test]
    fn unhealthy_on_one_port_is_unhealthy() {
        use TargetHealth::*;
        assert_eq!(overall([Healthy, Unhealthy]), Unhealthy);
        assert_eq!(overall([Unchecked, Healthy]), Healthy);
        assert_eq!(overall([]), Unchecked);
    }
}
