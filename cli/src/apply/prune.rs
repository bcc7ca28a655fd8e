//! `meshctl delete -f`: the objects of the files that exist, removed in
//! the reverse of apply's order (floating IPs before the services they
//! front, services before their network, pools last).

use mesh_api::{FipAssociateRequest, QosResetRequest};

use super::current::bare;
use super::desired::FipWant;
use super::load::Invalid;
use super::plan::{Item, Planner, Step, Verb};

fn item(what: String, steps: Vec<Step>) -> Item {
    let verb = if steps.is_empty() {
        Verb::Absent
    } else {
        Verb::Delete
    };
    Item { verb, what, steps }
}

impl Planner<'_> {
    pub fn delete(mut self) -> Result<Vec<Item>, Invalid> {
        let (cur, want) = (self.cur, self.want);
        let mut out = Vec::new();
        for f in &want.fips {
            out.push(self.delete_fip(f));
        }
        for q in &want.qos {
            let net = &q.entry.network;
            let what = match &q.container {
                Some(c) => format!("qos {c}.{net}"),
                None => format!("qos {net}"),
            };
            let exists = match &q.container {
                // A container that is gone has no shaping left to remove.
                Some(c) => {
                    let ip = c
                        .parse::<std::net::Ipv4Addr>()
                        .ok()
                        .map(|a| a.to_string())
                        .or_else(|| cur.container_ip(net, c));
                    ip.is_some_and(|ip| {
                        cur.qos.iter().any(|x| {
                            x.network == *net && x.container.as_deref().map(bare) == Some(&ip)
                        })
                    })
                }
                None => cur
                    .qos
                    .iter()
                    .any(|x| x.network == *net && x.container.is_none()),
            };
            let steps = if exists {
                vec![Step::ResetQos(QosResetRequest {
                    network: net.clone(),
                    container: q.container.clone(),
                })]
            } else {
                vec![]
            };
            out.push(item(what, steps));
        }
        for p in &want.policies {
            let r = &p.rule;
            let exists = cur
                .policies
                .iter()
                .any(|c| c.network == r.network && c.name == r.name);
            let steps = if exists {
                vec![Step::RemovePolicy {
                    network: r.network.clone(),
                    name: r.name.clone(),
                }]
            } else {
                vec![]
            };
            out.push(item(format!("policy {}.{}", r.name, r.network), steps));
        }
        for s in &want.services {
            let steps = match cur.service(&s.name, &s.network) {
                Some(_) => vec![Step::DeleteService {
                    name: s.name.clone(),
                    network: s.network.clone(),
                }],
                None => vec![],
            };
            out.push(item(format!("service {}.{}", s.name, s.network), steps));
        }
        for n in &want.networks {
            let steps = match cur.network(&n.id) {
                Some(_) => vec![Step::RemoveNetwork(n.id.clone())],
                None => vec![],
            };
            out.push(item(format!("network {}", n.id), steps));
        }
        for p in &want.pools {
            let exists = cur
                .pools
                .iter()
                .any(|c| c.cidr.parse::<ipnet::Ipv4Net>().ok() == Some(p.cidr));
            let steps = if exists {
                vec![Step::RemovePool(p.cidr.to_string())]
            } else {
                vec![]
            };
            out.push(item(format!("fip-pool {}", p.cidr), steps));
        }
        if self.errors.is_empty() {
            Ok(out)
        } else {
            Err(Invalid(std::mem::take(&mut self.errors)))
        }
    }

    /// A FloatingIP document's address goes (with its associations); a
    /// LoadBalancer's association goes, and the address with it unless it
    /// still fronts another service.
    fn delete_fip(&self, f: &FipWant) -> Item {
        let Some(c) = self.current_fip(f) else {
            let what = match f.addr {
                Some(a) => format!("fip {a}"),
                None => match f.associations.first() {
                    Some(a) => format!("fip (of service {}.{})", a.service, a.network),
                    None => "fip".to_string(),
                },
            };
            return item(what, vec![]);
        };
        let addr = bare(&c.addr).to_string();
        let what = format!("fip {addr}");
        if f.exclusive {
            return item(what, vec![Step::ReleaseFip(addr)]);
        }
        let mut steps = Vec::new();
        for a in &f.associations {
            if c.bindings
                .iter()
                .any(|b| b.service == a.service && b.network == a.network)
            {
                steps.push(Step::Dissociate(
                    addr.clone(),
                    FipAssociateRequest {
                        service: a.service.clone(),
                        network: Some(a.network.clone()),
                        port: None,
                    },
                ));
            }
        }
        let others = c.bindings.iter().any(|b| {
            !f.associations
                .iter()
                .any(|a| a.service == b.service && a.network == b.network)
        });
        if others {
            let fields = f
                .associations
                .iter()
                .map(|a| format!("-{}.{}", a.service, a.network))
                .collect();
            let verb = if steps.is_empty() {
                Verb::Unchanged
            } else {
                Verb::Change(fields)
            };
            return Item { verb, what, steps };
        }
        steps.push(Step::ReleaseFip(addr));
        item(what, steps)
    }
}
