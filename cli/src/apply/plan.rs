//! The diff: for every object of the files, what the mesh holds against
//! what the file says, as one line (`create`, `change (fields)`,
//! `unchanged`) and the API calls that close the gap. All of it is
//! decided before the first call, so a file the mesh cannot take changes
//! nothing.

use ipnet::{Ipv4Net, Ipv6Net};
use mesh_api::{
    CreateNetworkRequest, CreateServiceRequest, FipAssociateRequest, PolicyAddRequest, QosEntry,
    QosResetRequest, QosSetRequest, Service, ServiceTargetRequest, UpdateNetworkRequest,
    UpdateServiceRequest,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use super::current::{bare, Current};
use super::desired::*;
use super::load::Invalid;

/// One API call.
#[derive(Debug, Clone)]
pub enum Step {
    CreateNetwork(CreateNetworkRequest),
    UpdateNetwork(String, UpdateNetworkRequest),
    RemoveNetwork(String),
    AddPool(String),
    RemovePool(String),
    CreateService(CreateServiceRequest),
    UpdateService(String, UpdateServiceRequest),
    DeleteService {
        name: String,
        network: String,
    },
    AddTarget(String, ServiceTargetRequest),
    RemoveTarget(String, ServiceTargetRequest),
    AddPolicy(PolicyAddRequest),
    RemovePolicy {
        network: String,
        name: String,
    },
    SetQos(QosSetRequest),
    ResetQos(QosResetRequest),
    /// `None`: the lowest free address; later steps of the item use it.
    CreateFip(Option<String>),
    /// `None`: the address the item's `CreateFip` got.
    Associate(Option<String>, FipAssociateRequest),
    Dissociate(String, FipAssociateRequest),
    ReleaseFip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    Create,
    /// The fields (or associations) that differ.
    Change(Vec<String>),
    Unchanged,
    Delete,
    /// `delete -f`: nothing of that name to delete.
    Absent,
}

/// One object of the files and what to do about it.
#[derive(Debug, Clone)]
pub struct Item {
    pub verb: Verb,
    /// `network web`, `service nginx.web`, `fip 198.18.0.241`.
    pub what: String,
    pub steps: Vec<Step>,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verb {
            Verb::Create => write!(f, "create {}", self.what),
            Verb::Change(fields) => write!(f, "change {} ({})", self.what, fields.join(", ")),
            Verb::Unchanged => write!(f, "unchanged {}", self.what),
            Verb::Delete => write!(f, "delete {}", self.what),
            Verb::Absent => write!(f, "absent {}", self.what),
        }
    }
}

fn item(what: String, verb: Verb, steps: Vec<Step>) -> Item {
    Item { verb, what, steps }
}

/// `k=v,k=v` (or `any` for an empty `from`).
pub fn selector_text(m: &BTreeMap<String, String>, empty: &str) -> String {
    if m.is_empty() {
        return empty.to_string();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub struct Planner<'a> {
    pub cur: &'a Current,
    pub want: &'a Desired,
    pub errors: Vec<String>,
}

impl<'a> Planner<'a> {
    pub fn new(cur: &'a Current, want: &'a Desired) -> Self {
        Planner {
            cur,
            want,
            errors: Vec::new(),
        }
    }

    /// Everything `apply` does, in dependency order.
    pub fn apply(mut self) -> Result<Vec<Item>, Invalid> {
        let mut out = Vec::new();
        for p in &self.want.pools {
            out.extend(self.pool(p));
        }
        for n in &self.want.networks {
            out.extend(self.network(n));
        }
        for s in &self.want.services {
            out.extend(self.service(s));
        }
        for p in &self.want.policies {
            out.extend(self.policy(p));
        }
        for q in &self.want.qos {
            out.extend(self.qos(q));
        }
        for f in &self.want.fips {
            out.extend(self.fip(f));
        }
        if self.errors.is_empty() {
            Ok(out)
        } else {
            Err(Invalid(self.errors))
        }
    }

    pub fn fail(&mut self, origin: &super::load::Origin, msg: String) -> Option<Item> {
        self.errors.push(format!("{origin}: {msg}"));
        None
    }

    fn network_known(&self, id: &str) -> bool {
        self.cur.network(id).is_some() || self.want.networks.iter().any(|n| n.id == id)
    }

    fn pool(&mut self, p: &PoolWant) -> Option<Item> {
        let what = format!("fip-pool {}", p.cidr);
        let pools: Vec<Ipv4Net> = self
            .cur
            .pools
            .iter()
            .filter_map(|x| x.cidr.parse().ok())
            .collect();
        if pools.contains(&p.cidr) {
            return Some(item(what, Verb::Unchanged, vec![]));
        }
        if let Some(o) = pools
            .iter()
            .find(|o| mesh_model::networks::overlaps(**o, p.cidr))
        {
            return self.fail(
                &p.origin,
                format!("spec.cidr: {} overlaps pool {o}", p.cidr),
            );
        }
        Some(item(
            what,
            Verb::Create,
            vec![Step::AddPool(p.cidr.to_string())],
        ))
    }

    fn network(&mut self, n: &NetWant) -> Option<Item> {
        let what = format!("network {}", n.id);
        let mut hosts = BTreeSet::new();
        for h in &n.hosts {
            match self.cur.host_id(h) {
                Some(id) => {
                    hosts.insert(id);
                }
                None => {
                    return self.fail(&n.origin, format!("spec.hosts: no host {h:?} in the mesh"))
                }
            }
        }
        let Some(c) = self.cur.network(&n.id) else {
            let req = CreateNetworkRequest {
                id: n.id.clone(),
                subnet: n.subnet.to_string(),
                subnet6: n.subnet6.clone(),
                labels: n.labels.clone(),
                hosts: n.hosts.clone(),
                policy: Some(n.policy),
                egress: n.egress,
                mtu: n.mtu,
            };
            return Some(item(what, Verb::Create, vec![Step::CreateNetwork(req)]));
        };
        // What cannot change once the network exists.
        let fixed = |field: &str, now: &str| {
            format!(
                "spec.{field}: network {} has {field} {now}, which cannot change (delete the network first)",
                n.id
            )
        };
        if c.subnet.parse::<Ipv4Net>().ok() != Some(n.subnet) {
            return self.fail(&n.origin, fixed("subnet", &c.subnet));
        }
        if let Some(s6) = &n.subnet6 {
            if c.subnet6.parse::<Ipv6Net>().ok() != s6.parse::<Ipv6Net>().ok() {
                return self.fail(&n.origin, fixed("subnet6", &c.subnet6));
            }
        }
        if c.labels != n.labels {
            return self.fail(&n.origin, fixed("labels", &format!("{:?}", c.labels)));
        }
        let now: BTreeSet<String> = c.hosts.iter().cloned().collect();
        if now != hosts {
            let names: Vec<&str> = c
                .hosts
                .iter()
                .map(|id| self.cur.hosts.get(id).map_or(id.as_str(), String::as_str))
                .collect();
            return self.fail(&n.origin, fixed("hosts", &format!("{names:?}")));
        }
        let mut req = UpdateNetworkRequest::default();
        let mut changed = Vec::new();
        if c.policy != n.policy {
            req.policy = Some(n.policy);
            changed.push("policy".to_string());
        }
        if c.egress != n.egress {
            req.egress = Some(n.egress);
            changed.push("egress".to_string());
        }
        match n.mtu {
            None if c.mtu_set => req.mtu = Some(0),
            Some(m) if !c.mtu_set || c.mtu != m => req.mtu = Some(m),
            _ => {}
        }
        if req.mtu.is_some() {
            changed.push("mtu".to_string());
        }
        if changed.is_empty() {
            return Some(item(what, Verb::Unchanged, vec![]));
        }
        Some(item(
            what,
            Verb::Change(changed),
            vec![Step::UpdateNetwork(n.id.clone(), req)],
        ))
    }

    fn create_service(s: &SvcWant, ip: Option<String>) -> Vec<Step> {
        let req = CreateServiceRequest {
            name: s.name.clone(),
            network: s.network.clone(),
            ports: s.ports.iter().map(port_text).collect(),
            selector: s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            scheduler: Some(s.scheduler.to_string()),
            ip,
            health_interval_ms: Some(s.health_interval_ms),
        };
        let mut steps = vec![Step::CreateService(req)];
        for (ip, port, weight) in &s.targets {
            steps.push(Step::AddTarget(
                s.name.clone(),
                target_req(s, *ip, *port, *weight),
            ));
        }
        steps
    }

    fn service(&mut self, s: &SvcWant) -> Option<Item> {
        let what = format!("service {}.{}", s.name, s.network);
        if !self.network_known(&s.network) {
            return self.fail(
                &s.origin,
                format!("spec.network: no network {:?}", s.network),
            );
        }
        let Some(c) = self.cur.service(&s.name, &s.network) else {
            let steps = Self::create_service(s, s.ip.map(|i| i.to_string()));
            return Some(item(what, Verb::Create, steps));
        };
        let mut changed = Vec::new();
        if c.ports != s.ports {
            changed.push("ports");
        }
        if c.selector != s.selector {
            changed.push("selector");
        }
        if c.scheduler != s.scheduler {
            changed.push("scheduler");
        }
        if c.health_interval_ms != s.health_interval_ms {
            changed.push("healthIntervalMs");
        }
        if s.ip.is_some_and(|ip| bare(&c.vip) != ip.to_string()) {
            changed.push("ip");
        }
        if !changed.is_empty() {
            // Changed in place: the VIP, explicit targets and floating-IP
            // associations stay.
            let req = UpdateServiceRequest {
                network: Some(s.network.clone()),
                ports: changed
                    .contains(&"ports")
                    .then(|| s.ports.iter().map(port_text).collect()),
                selector: changed
                    .contains(&"selector")
                    .then(|| s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                scheduler: changed
                    .contains(&"scheduler")
                    .then(|| s.scheduler.to_string()),
                ip: changed
                    .contains(&"ip")
                    .then(|| s.ip.map(|i| i.to_string()))
                    .flatten(),
                health_interval_ms: changed
                    .contains(&"healthIntervalMs")
                    .then_some(s.health_interval_ms),
            };
            let targets = Self::target_steps(s, c);
            if !targets.is_empty() {
                changed.push("targets");
            }
            let mut steps = vec![Step::UpdateService(s.name.clone(), req)];
            steps.extend(targets);
            let fields = changed.iter().map(|f| f.to_string()).collect();
            return Some(item(what, Verb::Change(fields), steps));
        }
        let steps = Self::target_steps(s, c);
        if steps.is_empty() {
            return Some(item(what, Verb::Unchanged, vec![]));
        }
        Some(item(what, Verb::Change(vec!["targets".into()]), steps))
    }

    /// The explicit-target calls that take the service's targets to the
    /// file's.
    fn target_steps(s: &SvcWant, c: &Service) -> Vec<Step> {
        let now: BTreeSet<(Ipv4Addr, Option<u16>, u32)> = c
            .targets
            .iter()
            .filter(|t| t.explicit)
            .filter_map(|t| Some((bare(&t.ip).parse().ok()?, t.port, t.weight)))
            .collect();
        let want: BTreeSet<(Ipv4Addr, Option<u16>, u32)> = s.targets.iter().copied().collect();
        let mut steps = Vec::new();
        for &(ip, port, w) in want.difference(&now) {
            steps.push(Step::AddTarget(s.name.clone(), target_req(s, ip, port, w)));
        }
        for &(ip, port, _) in now.difference(&want) {
            // A weight change is an add of the same target.
            if !want.iter().any(|&(i, p, _)| (i, p) == (ip, port)) {
                steps.push(Step::RemoveTarget(
                    s.name.clone(),
                    target_req(s, ip, port, 1),
                ));
            }
        }
        steps
    }

    fn policy(&mut self, p: &PolicyWant) -> Option<Item> {
        let r = &p.rule;
        let what = format!("policy {}.{}", r.name, r.network);
        if !self.network_known(&r.network) {
            return self.fail(
                &p.origin,
                format!("spec.network: no network {:?}", r.network),
            );
        }
        let add = Step::AddPolicy(PolicyAddRequest {
            network: r.network.clone(),
            name: Some(r.name.clone()),
            from: selector_text(&r.from, "any"),
            to: selector_text(&r.to, ""),
            ports: r.ports.iter().map(|p| p.to_string()).collect(),
        });
        let Some(c) = self
            .cur
            .policies
            .iter()
            .find(|c| c.network == r.network && c.name == r.name)
        else {
            return Some(item(what, Verb::Create, vec![add]));
        };
        let mut changed = Vec::new();
        for (field, differs) in [
            ("from", c.from != r.from),
            ("to", c.to != r.to),
            ("ports", c.ports != r.ports),
        ] {
            if differs {
                changed.push(field.to_string());
            }
        }
        if changed.is_empty() {
            return Some(item(what, Verb::Unchanged, vec![]));
        }
        let rm = Step::RemovePolicy {
            network: r.network.clone(),
            name: r.name.clone(),
        };
        Some(item(what, Verb::Change(changed), vec![rm, add]))
    }

    /// The address `container` has on the network (the QoS entries' key).
    pub fn qos_key(&mut self, q: &QosWant) -> Result<Option<String>, ()> {
        let net = &q.entry.network;
        match q.container.as_deref() {
            None => Ok(None),
            Some(c) if c.parse::<Ipv4Addr>().is_ok() => Ok(Some(c.to_string())),
            Some(c) => match self.cur.container_ip(net, c) {
                Some(ip) => Ok(Some(ip)),
                None => {
                    self.fail(
                        &q.origin,
                        format!("spec.container: no container {c:?} on network {net}"),
                    );
                    Err(())
                }
            },
        }
    }

    fn qos(&mut self, q: &QosWant) -> Option<Item> {
        let net = q.entry.network.clone();
        if !self.network_known(&net) {
            return self.fail(&q.origin, format!("spec.network: no network {net:?}"));
        }
        let what = match &q.container {
            Some(c) => format!("qos {c}.{net}"),
            None => format!("qos {net}"),
        };
        let key = self.qos_key(q).ok()?;
        let set = Step::SetQos(QosSetRequest {
            network: net.clone(),
            container: key.clone(),
            rate_kbit: q.entry.rate_kbit,
            ceiling_kbit: q.entry.ceiling_kbit,
            delay_ms: q.entry.delay_ms,
            jitter_ms: q.entry.jitter_ms,
            loss_percent: q.entry.loss_percent,
        });
        let Some(c) = self
            .cur
            .qos
            .iter()
            .find(|c| c.network == net && c.container.as_deref().map(bare) == key.as_deref())
        else {
            return Some(item(what, Verb::Create, vec![set]));
        };
        let want = QosEntry {
            container: c.container.clone(),
            ..q.entry.clone()
        };
        let changed = qos_diff(c, &want);
        if changed.is_empty() {
            return Some(item(what, Verb::Unchanged, vec![]));
        }
        Some(item(what, Verb::Change(changed), vec![set]))
    }

    /// The public port of an association: its own, or the service's
    /// first port (as the file or, failing that, the mesh has it).
    pub fn public_port(&self, a: &Assoc) -> Option<u16> {
        if a.port.is_some() {
            return a.port;
        }
        if let Some(s) = self
            .want
            .services
            .iter()
            .find(|s| s.name == a.service && s.network == a.network)
        {
            return s.ports.first().map(|p| p.port);
        }
        self.cur
            .service(&a.service, &a.network)
            .and_then(|s| s.ports.first().map(|p| p.port))
    }

    /// The floating IP a want is about now, if any.
    pub fn current_fip(&self, f: &FipWant) -> Option<&'a mesh_api::Fip> {
        let cur: &'a Current = self.cur;
        match f.addr {
            Some(a) => cur.fips.iter().find(|x| bare(&x.addr) == a.to_string()),
            None => {
                let a = f.associations.first()?;
                cur.fips.iter().find(|x| {
                    x.bindings
                        .iter()
                        .any(|b| b.service == a.service && b.network == a.network)
                })
            }
        }
    }

    fn fip(&mut self, f: &FipWant) -> Option<Item> {
        let mut ports = Vec::new();
        for a in &f.associations {
            match self.public_port(a) {
                Some(p) => ports.push(p),
                None => {
                    return self.fail(
                        &f.origin,
                        format!("no service {}.{} to put behind it", a.service, a.network),
                    )
                }
            }
        }
        let cur = self.current_fip(f);
        let addr = cur
            .map(|c| bare(&c.addr).to_string())
            .or(f.addr.map(|a| a.to_string()));
        let what = format!("fip {}", addr.as_deref().unwrap_or("(next free address)"));
        // A service behind another floating IP: the daemon refuses.
        for a in &f.associations {
            let elsewhere = self.cur.fips.iter().find(|x| {
                Some(bare(&x.addr)) != addr.as_deref()
                    && x.bindings
                        .iter()
                        .any(|b| b.service == a.service && b.network == a.network)
            });
            if let Some(x) = elsewhere {
                return self.fail(
                    &f.origin,
                    format!(
                        "service {}.{} is behind floating IP {} now (dissociate it first)",
                        a.service, a.network, x.addr
                    ),
                );
            }
        }
        let assoc = |a: &Assoc, port: u16| FipAssociateRequest {
            service: a.service.clone(),
            network: Some(a.network.clone()),
            port: Some(port),
        };
        let Some(c) = cur else {
            if let Some(a) = f.addr {
                let in_pool = self
                    .cur
                    .pools
                    .iter()
                    .filter_map(|p| p.cidr.parse::<Ipv4Net>().ok())
                    .chain(self.want.pools.iter().map(|p| p.cidr))
                    .any(|p| p.contains(&a));
                if !in_pool {
                    return self.fail(
                        &f.origin,
                        format!("{a} is in no floating-IP pool (add a FloatingIPPool)"),
                    );
                }
            }
            let mut steps = vec![Step::CreateFip(addr)];
            for (a, p) in f.associations.iter().zip(&ports) {
                steps.push(Step::Associate(None, assoc(a, *p)));
            }
            return Some(item(what, Verb::Create, steps));
        };
        let addr = bare(&c.addr).to_string();
        let mut steps = Vec::new();
        let mut changed = Vec::new();
        for (a, p) in f.associations.iter().zip(&ports) {
            let now = c
                .bindings
                .iter()
                .find(|b| b.service == a.service && b.network == a.network);
            if now.map(|b| b.public_port) != Some(*p) {
                changed.push(format!("{}.{}:{p}", a.service, a.network));
                steps.push(Step::Associate(Some(addr.clone()), assoc(a, *p)));
            }
        }
        if f.exclusive {
            for b in &c.bindings {
                let kept = f
                    .associations
                    .iter()
                    .any(|a| a.service == b.service && a.network == b.network);
                if !kept {
                    changed.push(format!("-{}.{}", b.service, b.network));
                    // Before the associations, which may take its port.
                    steps.insert(
                        0,
                        Step::Dissociate(
                            addr.clone(),
                            FipAssociateRequest {
                                service: b.service.clone(),
                                network: Some(b.network.clone()),
                                port: None,
                            },
                        ),
                    );
                }
            }
        }
        if steps.is_empty() {
            return Some(item(what, Verb::Unchanged, vec![]));
        }
        Some(item(what, Verb::Change(changed), steps))
    }
}

fn target_req(s: &SvcWant, ip: Ipv4Addr, port: Option<u16>, weight: u32) -> ServiceTargetRequest {
    ServiceTargetRequest {
        network: Some(s.network.clone()),
        addr: match port {
            Some(p) => format!("{ip}:{p}"),
            None => ip.to_string(),
        },
        weight: Some(weight),
    }
}

fn qos_diff(c: &QosEntry, w: &QosEntry) -> Vec<String> {
    let mut out = Vec::new();
    for (field, differs) in [
        ("rate", c.rate_kbit != w.rate_kbit),
        ("ceiling", c.ceiling_kbit != w.ceiling_kbit),
        ("delay", c.delay_ms != w.delay_ms),
        ("jitter", c.jitter_ms != w.jitter_ms),
        ("loss", c.loss_percent != w.loss_percent),
    ] {
        if differs {
            out.push(field.to_string());
        }
    }
    out
}
