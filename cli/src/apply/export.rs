//! `meshctl export`: the mesh's networks, services, policies, QoS,
//! floating-IP pools and floating IPs as `mesh/v1` documents that
//! `meshctl apply` takes back (pools first, as apply orders them).

use anyhow::Result;
use serde::Serialize;

use super::current::{bare, Current};
use super::desired::port_text;
use super::kinds::*;

fn named<S>(kind: &str, name: &str, spec: S) -> Named<S> {
    Named {
        api_version: MESH_API.into(),
        kind: kind.into(),
        metadata: Meta { name: name.into() },
        spec,
    }
}

fn unnamed<S>(kind: &str, spec: S) -> Unnamed<S> {
    Unnamed {
        api_version: MESH_API.into(),
        kind: kind.into(),
        spec,
    }
}

/// Milliseconds as `--delay` takes them.
fn ms(v: Option<f64>) -> Option<Amount> {
    v.map(|v| Amount::Text(format!("{v}ms")))
}

/// The whole mesh as one multi-document YAML text.
pub fn render(cur: &Current) -> Result<String> {
    let mut docs: Vec<String> = Vec::new();
    let mut push = |d: String| docs.push(d);
    for p in &cur.pools {
        push(yaml(&unnamed(
            "FloatingIPPool",
            PoolSpec {
                cidr: p.cidr.clone(),
            },
        ))?);
    }
    for n in &cur.networks {
        let hosts = n
            .hosts
            .iter()
            .map(|id| cur.hosts.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect();
        push(yaml(&named(
            "Network",
            &n.id,
            NetworkSpec {
                subnet: n.subnet.clone(),
                subnet6: Some(n.subnet6.clone()),
                labels: n.labels.clone(),
                hosts,
                policy: n.policy,
                egress: n.egress,
                mtu: n.mtu_set.then_some(n.mtu),
            },
        ))?);
    }
    for s in &cur.services {
        let targets = s
            .targets
            .iter()
            .filter(|t| t.explicit)
            .map(|t| TargetSpec {
                addr: match t.port {
                    Some(p) => format!("{}:{p}", bare(&t.ip)),
                    None => bare(&t.ip).to_string(),
                },
                weight: Some(t.weight),
            })
            .collect();
        let health = s.health_interval_ms;
        push(yaml(&named(
            "Service",
            &s.name,
            ServiceSpec {
                network: s.network.clone(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| PortText::from_text(port_text(p)))
                    .collect(),
                selector: s.selector.clone(),
                scheduler: s.scheduler,
                ip: Some(bare(&s.vip).to_string()),
                health_interval_ms: (health
                    != mesh_model::services::spec::DEFAULT_HEALTH_INTERVAL_MS)
                    .then_some(health),
                targets,
            },
        ))?);
    }
    for r in &cur.policies {
        push(yaml(&named(
            "Policy",
            &r.name,
            PolicySpec {
                network: r.network.clone(),
                from: r.from.clone(),
                to: r.to.clone(),
                ports: r
                    .ports
                    .iter()
                    .map(|p| PortText::from_text(p.to_string()))
                    .collect(),
            },
        ))?);
    }
    for q in &cur.qos {
        push(yaml(&unnamed(
            "Qos",
            QosSpec {
                network: q.network.clone(),
                container: q.container.clone(),
                rate: q.rate_kbit,
                ceiling: q.ceiling_kbit,
                delay: ms(q.delay_ms),
                jitter: ms(q.jitter_ms),
                loss: q.loss_percent.map(Amount::Number),
            },
        ))?);
    }
    for f in &cur.fips {
        push(yaml(&unnamed(
            "FloatingIP",
            FipSpec {
                address: bare(&f.addr).to_string(),
                associations: f
                    .bindings
                    .iter()
                    .map(|b| AssociationSpec {
                        service: b.service.clone(),
                        network: b.network.clone(),
                        port: Some(b.public_port),
                    })
                    .collect(),
            },
        ))?);
    }
    Ok(docs.join("---\n"))
}

fn yaml<T: Serialize>(d: &T) -> Result<String> {
    Ok(yaml_serde::to_string(d)?)
}
