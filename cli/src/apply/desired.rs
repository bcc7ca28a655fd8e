//! The documents checked and turned into what the mesh should hold:
//! the same rules as the daemon's (mesh-model's), so a file that passes
//! here is not refused halfway through for a malformed value.

use ipnet::Ipv4Net;
use mesh_api::{PolicyMode, PolicyRule, Protocol, QosEntry, Scheduler, ServicePort};
use mesh_model::networks as netspec;
use mesh_model::services::spec as svcspec;
use mesh_model::traffic::spec as trafficspec;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::kinds::*;
use super::load::{Invalid, Origin};

#[derive(Debug, Clone)]
pub struct NetWant {
    pub origin: Origin,
    pub id: String,
    pub subnet: Ipv4Net,
    pub subnet6: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub hosts: Vec<String>,
    pub policy: PolicyMode,
    pub egress: bool,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SvcWant {
    pub origin: Origin,
    pub name: String,
    pub network: String,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    pub scheduler: Scheduler,
    pub ip: Option<Ipv4Addr>,
    pub health_interval_ms: u64,
    /// (address, port, weight), sorted.
    pub targets: Vec<(Ipv4Addr, Option<u16>, u32)>,
}

#[derive(Debug, Clone)]
pub struct PolicyWant {
    pub origin: Origin,
    pub rule: PolicyRule,
}

#[derive(Debug, Clone)]
pub struct QosWant {
    pub origin: Origin,
    /// What the file says (a name or an address).
    pub container: Option<String>,
    /// The values, `container` unset.
    pub entry: QosEntry,
}

#[derive(Debug, Clone)]
pub struct PoolWant {
    pub origin: Origin,
    pub cidr: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assoc {
    pub service: String,
    pub network: String,
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct FipWant {
    pub origin: Origin,
    /// None: any address of the pools (a LoadBalancer without an IP).
    pub addr: Option<Ipv4Addr>,
    pub associations: Vec<Assoc>,
    /// A FloatingIP document lists every association; a Kubernetes
    /// Service only its own.
    pub exclusive: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub networks: Vec<NetWant>,
    pub services: Vec<SvcWant>,
    pub policies: Vec<PolicyWant>,
    pub qos: Vec<QosWant>,
    pub pools: Vec<PoolWant>,
    pub fips: Vec<FipWant>,
}

/// `--network`: the network of Kubernetes Services that name none.
pub fn build(docs: Vec<(Origin, Doc)>, default_network: Option<&str>) -> Result<Desired, Invalid> {
    let mut b = Builder {
        out: Desired::default(),
        errors: Vec::new(),
        default_network,
    };
    for (origin, doc) in docs {
        b.add(origin, doc);
    }
    b.duplicates();
    if b.errors.is_empty() {
        Ok(b.out)
    } else {
        Err(Invalid(b.errors))
    }
}

struct Builder<'a> {
    out: Desired,
    errors: Vec<String>,
    default_network: Option<&'a str>,
}

/// `Err("field: message")`.
type Check<T> = Result<T, String>;

fn at<T, E: std::fmt::Display>(field: &str, r: Result<T, E>) -> Check<T> {
    r.map_err(|e| format!("{field}: {e}"))
}

fn ipv4(field: &str, s: &str) -> Check<Ipv4Addr> {
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an IPv4 address"))
}

fn canonical_port(p: &ServicePort) -> String {
    let mut s = p.port.to_string();
    if p.target_port != p.port {
        s = format!("{s}:{}", p.target_port);
    }
    if p.protocol == Protocol::Udp {
        s.push_str("/udp");
    }
    s
}

/// The `--port` text of a service port.
pub fn port_text(p: &ServicePort) -> String {
    canonical_port(p)
}

fn labels(field: &str, m: &BTreeMap<String, String>) -> Check<()> {
    at(field, svcspec::check_labels(m))
}

impl Builder<'_> {
    fn add(&mut self, origin: Origin, doc: Doc) {
        let r = match doc {
            Doc::Network(d) => self.network(&origin, d),
            Doc::Service(d) => self.service(&origin, d),
            Doc::Policy(d) => self.policy(&origin, d),
            Doc::Qos(d) => self.qos(&origin, d),
            Doc::Pool(d) => self.pool(&origin, d),
            Doc::Fip(d) => self.fip(&origin, d),
            Doc::Kube(d) => self.kube(&origin, d),
        };
        if let Err(e) = r {
            self.errors.push(format!("{origin}: {e}"));
        }
    }

    fn network(&mut self, origin: &Origin, d: Named<NetworkSpec>) -> Check<()> {
        let id = d.metadata.name;
        at("metadata.name", netspec::validate_network_id(&id))?;
        let s = d.spec;
        let subnet = at("spec.subnet", netspec::parse_subnet(&s.subnet))?;
        if let Some(s6) = &s.subnet6 {
            at("spec.subnet6", netspec::parse_subnet6(s6))?;
        }
        labels("spec.labels", &s.labels)?;
        if let Some(m) = s.mtu {
            at("spec.mtu", netspec::validate_mtu(m))?;
        }
        self.out.networks.push(NetWant {
            origin: origin.clone(),
            id,
            subnet,
            subnet6: s.subnet6,
            labels: s.labels,
            hosts: s.hosts,
            policy: s.policy,
            egress: s.egress,
            mtu: s.mtu,
        });
        Ok(())
    }

    fn service(&mut self, origin: &Origin, d: Named<ServiceSpec>) -> Check<()> {
        let s = d.spec;
        let mut targets = Vec::new();
        for (i, t) in s.targets.iter().enumerate() {
            let (ip, port) = at(
                &format!("spec.targets[{i}].addr"),
                svcspec::parse_target(&t.addr),
            )?;
            let w = at(
                &format!("spec.targets[{i}].weight"),
                svcspec::check_weight(t.weight),
            )?;
            targets.push((ip, port, w));
        }
        let ip = s.ip.as_deref().map(|t| ipv4("spec.ip", t)).transpose()?;
        let want = SvcWant {
            origin: origin.clone(),
            name: d.metadata.name,
            network: s.network,
            ports: Vec::new(),
            selector: s.selector,
            scheduler: s.scheduler,
            ip,
            health_interval_ms: 0,
            targets,
        };
        let ports: Vec<String> = s.ports.iter().map(PortText::text).collect();
        self.push_service(want, &ports, s.health_interval_ms)
    }

    /// Checks what both service kinds share; `ports` and the health
    /// interval are filled in from `--port` texts and the optional value.
    fn push_service(&mut self, mut w: SvcWant, ports: &[String], health: Option<u64>) -> Check<()> {
        at("metadata.name", svcspec::check_name(&w.name))?;
        at("spec.network", netspec::validate_network_id(&w.network))?;
        w.ports = at("spec.ports", svcspec::parse_ports(ports))?;
        labels("spec.selector", &w.selector)?;
        w.health_interval_ms = at(
            "spec.healthIntervalMs",
            svcspec::check_health_interval(health),
        )?;
        w.targets.sort();
        self.out.services.push(w);
        Ok(())
    }

    fn policy(&mut self, origin: &Origin, d: Named<PolicySpec>) -> Check<()> {
        let s = d.spec;
        at("spec.network", netspec::validate_network_id(&s.network))?;
        let mut ports = Vec::new();
        for (i, p) in s.ports.iter().enumerate() {
            ports.push(at(
                &format!("spec.ports[{i}]"),
                trafficspec::parse_port(&p.text()),
            )?);
        }
        ports.sort();
        ports.dedup();
        let rule = PolicyRule {
            network: s.network,
            name: d.metadata.name,
            from: s.from,
            to: s.to,
            ports,
        };
        at("spec", trafficspec::check_rule(&rule))?;
        self.out.policies.push(PolicyWant {
            origin: origin.clone(),
            rule,
        });
        Ok(())
    }

    fn qos(&mut self, origin: &Origin, d: Unnamed<QosSpec>) -> Check<()> {
        let s = d.spec;
        at("spec.network", netspec::validate_network_id(&s.network))?;
        let duration = |field: &str, a: &Option<Amount>| -> Check<Option<f64>> {
            match a {
                None => Ok(None),
                Some(Amount::Number(n)) if n.is_finite() && *n >= 0.0 => Ok(Some(*n)),
                Some(Amount::Number(n)) => Err(format!("{field}: {n} is not a duration")),
                Some(Amount::Text(t)) => at(field, crate::args::parse_duration_ms(t)).map(Some),
            }
        };
        let loss = match &s.loss {
            None => None,
            Some(Amount::Number(n)) => {
                Some(at("spec.loss", crate::args::parse_percent(&n.to_string()))?)
            }
            Some(Amount::Text(t)) => Some(at("spec.loss", crate::args::parse_percent(t))?),
        };
        let entry = QosEntry {
            network: s.network,
            container: None,
            rate_kbit: s.rate,
            ceiling_kbit: s.ceiling,
            delay_ms: duration("spec.delay", &s.delay)?,
            jitter_ms: duration("spec.jitter", &s.jitter)?,
            loss_percent: loss,
        };
        at("spec", trafficspec::check_qos(&entry))?;
        self.out.qos.push(QosWant {
            origin: origin.clone(),
            container: s.container,
            entry,
        });
        Ok(())
    }

    fn pool(&mut self, origin: &Origin, d: Unnamed<PoolSpec>) -> Check<()> {
        let cidr: Ipv4Net = d
            .spec
            .cidr
            .parse()
            .map_err(|_| format!("spec.cidr: {:?} is not ADDR/LEN (IPv4)", d.spec.cidr))?;
        self.out.pools.push(PoolWant {
            origin: origin.clone(),
            cidr,
        });
        Ok(())
    }

    fn fip(&mut self, origin: &Origin, d: Unnamed<FipSpec>) -> Check<()> {
        let addr = ipv4("spec.address", &d.spec.address)?;
        let mut associations: Vec<Assoc> = Vec::new();
        for (i, a) in d.spec.associations.iter().enumerate() {
            if a.port == Some(0) {
                return Err(format!("spec.associations[{i}].port: 0 is not a port"));
            }
            let assoc = Assoc {
                service: a.service.clone(),
                network: a.network.clone(),
                port: a.port,
            };
            if associations
                .iter()
                .any(|x| x.service == assoc.service && x.network == assoc.network)
            {
                return Err(format!(
                    "spec.associations[{i}]: service {}.{} is listed twice",
                    a.service, a.network
                ));
            }
            associations.push(assoc);
        }
        self.out.fips.push(FipWant {
            origin: origin.clone(),
            addr: Some(addr),
            associations,
            exclusive: true,
        });
        Ok(())
    }

    /// Kubernetes `v1/Service`: selector and ports as a mesh service; a
    /// `LoadBalancer` gets a floating IP (`loadBalancerIP`, or any).
    fn kube(&mut self, origin: &Origin, d: KubeService) -> Check<()> {
        let m = &d.metadata;
        let network = self.kube_network(m)?;
        let s = d.spec;
        let lb = match s.kind.as_deref() {
            None | Some("ClusterIP") => false,
            Some("LoadBalancer") => true,
            Some(other) => {
                return Err(format!(
                    "spec.type: {other:?} is not supported (ClusterIP or LoadBalancer)"
                ))
            }
        };
        if !lb && s.load_balancer_ip.is_some() {
            return Err("spec.loadBalancerIP: needs spec.type: LoadBalancer".into());
        }
        let mut ports = Vec::new();
        for (i, p) in s.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            let target = match &p.target_port {
                None => p.port,
                Some(yaml_serde::Value::Number(n)) => match n.as_u64() {
                    Some(t @ 1..=65535) => t as u16,
                    _ => return Err(format!("{field}.targetPort: {n} is not a port")),
                },
                Some(other) => {
                    return Err(format!(
                    "{field}.targetPort: {other:?}: named ports are not supported, give the number"
                ))
                }
            };
            let proto = match p.protocol.as_deref() {
                None | Some("TCP") => "tcp",
                Some("UDP") => "udp",
                Some(other) => {
                    return Err(format!(
                        "{field}.protocol: {other:?} is neither TCP nor UDP"
                    ))
                }
            };
            if p.port == 0 {
                return Err(format!("{field}.port: 0 is not a port"));
            }
            ports.push(format!("{}:{target}/{proto}", p.port));
        }
        let ip = s
            .cluster_ip
            .as_deref()
            .map(|t| ipv4("spec.clusterIP", t))
            .transpose()?;
        let public = s.ports.first().map(|p| p.port);
        let want = SvcWant {
            origin: origin.clone(),
            name: m.name.clone(),
            network: network.clone(),
            ports: Vec::new(),
            selector: s.selector,
            scheduler: Scheduler::Rr,
            ip,
            health_interval_ms: 0,
            targets: Vec::new(),
        };
        self.push_service(want, &ports, None)?;
        if lb {
            let addr = s
                .load_balancer_ip
                .as_deref()
                .map(|t| ipv4("spec.loadBalancerIP", t))
                .transpose()?;
            self.out.fips.push(FipWant {
                origin: origin.clone(),
                addr,
                associations: vec![Assoc {
                    service: m.name.clone(),
                    network,
                    port: public,
                }],
                exclusive: false,
            });
        }
        Ok(())
    }

    /// `metadata.namespace`, the `mesh/network` annotation, or
    /// `--network`; those given must agree.
    fn kube_network(&self, m: &KubeMeta) -> Check<String> {
        let mut named: Vec<(&str, &str)> = Vec::new();
        if let Some(n) = m.namespace.as_deref() {
            named.push(("metadata.namespace", n));
        }
        if let Some(n) = m.annotations.get(NETWORK_ANNOTATION) {
            named.push(("metadata.annotations[mesh/network]", n));
        }
        if let Some(n) = self.default_network {
            named.push(("--network", n));
        }
        let Some(&(_, first)) = named.first() else {
            return Err(format!(
                "metadata.namespace: no network: set it, the {NETWORK_ANNOTATION} annotation, or pass --network"
            ));
        };
        if let Some((field, other)) = named.iter().find(|(_, n)| *n != first) {
            return Err(format!(
                "{field}: network {other:?} disagrees with {} ({first:?})",
                named[0].0
            ));
        }
        Ok(first.to_string())
    }

    /// The same object twice; floating IPs named by several documents
    /// are merged (a FloatingIP and the LoadBalancers in front of it).
    fn duplicates(&mut self) {
        let mut seen: BTreeMap<String, Origin> = BTreeMap::new();
        let mut dup = |key: String, o: &Origin, errors: &mut Vec<String>| {
            if let Some(first) = seen.get(&key) {
                errors.push(format!("{o}: {key} is also defined by {first}"));
            } else {
                seen.insert(key, o.clone());
            }
        };
        let out = &self.out;
        for n in &out.networks {
            dup(format!("network {}", n.id), &n.origin, &mut self.errors);
        }
        for s in &out.services {
            dup(
                format!("service {}.{}", s.name, s.network),
                &s.origin,
                &mut self.errors,
            );
        }
        for p in &out.policies {
            dup(
                format!("policy {}.{}", p.rule.name, p.rule.network),
                &p.origin,
                &mut self.errors,
            );
        }
        for q in &out.qos {
            let key = match &q.container {
                Some(c) => format!("qos {c}.{}", q.entry.network),
                None => format!("qos {}", q.entry.network),
            };
            dup(key, &q.origin, &mut self.errors);
        }
        for p in &out.pools {
            dup(format!("fip-pool {}", p.cidr), &p.origin, &mut self.errors);
        }
        for (i, a) in out.pools.iter().enumerate() {
            for b in &out.pools[i + 1..] {
                if netspec::overlaps(a.cidr, b.cidr) && a.cidr != b.cidr {
                    self.errors.push(format!(
                        "{}: spec.cidr: {} overlaps {} of {}",
                        b.origin, b.cidr, a.cidr, a.origin
                    ));
                }
            }
        }
        self.merge_fips();
    }

    fn merge_fips(&mut self) {
        let mut merged: Vec<FipWant> = Vec::new();
        for f in std::mem::take(&mut self.out.fips) {
            let same = merged
                .iter_mut()
                .find(|m| f.addr.is_some() && m.addr == f.addr);
            let Some(m) = same else {
                merged.push(f);
                continue;
            };
            if m.exclusive && f.exclusive {
                let addr = f.addr.map(|a| a.to_string()).unwrap_or_default();
                self.errors.push(format!(
                    "{}: fip {addr} is also defined by {}",
                    f.origin, m.origin
                ));
                continue;
            }
            for a in f.associations {
                match m
                    .associations
                    .iter()
                    .find(|x| x.service == a.service && x.network == a.network)
                {
                    Some(x) if x.port.is_some() && a.port.is_some() && x.port != a.port => {
                        self.errors.push(format!(
                            "{}: service {}.{} is put behind {} on port {} here and on port {} by {}",
                            f.origin,
                            a.service,
                            a.network,
                            m.addr.map(|a| a.to_string()).unwrap_or_default(),
                            a.port.unwrap_or_default(),
                            x.port.unwrap_or_default(),
                            m.origin
                        ));
                    }
                    Some(_) => {}
                    None => m.associations.push(a),
                }
            }
            if f.exclusive {
                m.exclusive = true;
                m.origin = f.origin;
            }
        }
        // A service behind two floating IPs: the daemon refuses it.
        let mut behind: BTreeMap<(String, String), &FipWant> = BTreeMap::new();
        for f in &merged {
            for a in &f.associations {
                let key = (a.service.clone(), a.network.clone());
                if let Some(other) = behind.get(&key) {
                    self.errors.push(format!(
                        "{}: service {}.{} is already behind a floating IP of {}",
                        f.origin, a.service, a.network, other.origin
                    ));
                } else {
                    behind.insert(key, f);
                }
            }
        }
        self.out.fips = merged;
    }
}
