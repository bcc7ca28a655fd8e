//! From the replicated records to what this host installs: the policy of
//! its containers on deny networks, and each container's shaping. Pure.
//!
//! This host's own containers come from its own attachment store, never
//! from the replicated endpoint and label records: another member may
//! delete or overwrite those (a later stamp wins), and that must not take
//! away what this host enforces for its containers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use mesh_api::{PolicyMode, PolicyRule, QosEntry};

use super::policy::{Allow, DenyNetwork, Guarded};
use super::ports::Port;
use super::{qos_key, tc::Htb};
use crate::services::targets::labels_of;
use crate::state::AttachmentRecord;
use mesh_model::records::{EndpointRecord, NetworkDef, NetworkSettings};
use mesh_model::services::LabelRecord;
use mesh_model::{ipam, networks};

pub struct Facts {
    pub me: String,
    pub prefix: String,
    pub networks: BTreeMap<String, NetworkDef>,
    pub settings: BTreeMap<String, NetworkSettings>,
    pub endpoints: BTreeMap<String, EndpointRecord>,
    pub labels: BTreeMap<String, LabelRecord>,
    pub rules: BTreeMap<String, PolicyRule>,
    pub qos: BTreeMap<String, QosEntry>,
    /// This host's attachments (its own store).
    pub attachments: Vec<AttachmentRecord>,
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

struct Member<'a> {
    ip: Ipv4Addr,
    host: &'a str,
    labels: BTreeMap<String, String>,
}

/// Every deny network carried here, with this host's containers on it
/// and what may reach each.
pub fn deny_networks(f: &Facts) -> Vec<DenyNetwork> {
    let mut out = Vec::new();
    for (id, def) in &f.networks {
        let deny = f
            .settings
            .get(id)
            .is_some_and(|s| s.policy == PolicyMode::Deny);
        if !deny || !def.allows_host(&f.me) {
            continue;
        }
        // This host's containers, as attached here.
        let mut members: Vec<Member> = f
            .attachments
            .iter()
            .filter(|r| r.attachment.network == *id)
            .filter_map(|r| {
                Some(Member {
                    ip: r.ip().ok()?,
                    host: &f.me,
                    labels: r.attachment.labels.clone(),
                })
            })
            .collect();
        let local: std::collections::BTreeSet<Ipv4Addr> = members.iter().map(|m| m.ip).collect();
        // Other hosts' containers (not VIPs or bare reservations: those
        // have no MAC), as their records say; a record claiming one of
        // this host's addresses is not believed. This host's own address
        // on the network (a gateway, `expose`) is guarded like a container.
        let own_address =
            |e: &EndpointRecord| e.host == f.me && mesh_model::edge::is_host_address(e);
        members.extend(
            f.endpoints
                .iter()
                .filter(|(_, e)| e.network == *id && !e.mac.is_empty())
                .filter(|(_, e)| e.host != f.me || own_address(e))
                .filter_map(|(key, e)| {
                    let IpAddr::V4(ip) = e.ip else { return None };
                    Some(Member {
                        ip,
                        host: &e.host,
                        labels: labels_of(key, e, &f.labels).cloned().unwrap_or_default(),
                    })
                })
                .filter(|m| !local.contains(&m.ip)),
        );
        let rules: Vec<&PolicyRule> = f.rules.values().filter(|r| r.network == *id).collect();
        let containers = members
            .iter()
            .filter(|m| m.host == f.me)
            .map(|m| Guarded {
                network: id.clone(),
                ip: m.ip,
                ip6: Some(def.ipv6_for(m.ip)),
                allow: rules
                    .iter()
                    .filter(|r| matches(&r.to, &m.labels))
                    .map(|r| Allow {
                        from: (!r.from.is_empty()).then(|| {
                            let src: Vec<Ipv4Addr> = members
                                .iter()
                                .filter(|s| matches(&r.from, &s.labels))
                                .map(|s| s.ip)
                                .collect();
                            let src6 = src.iter().map(|a| def.ipv6_for(*a)).collect();
                            (src, src6)
                        }),
                        ports: r.ports.clone(),
                    })
                    .collect(),
            })
            .collect();
        let w = networks::wire_id(id);
        let svc = ipam::service_address(def.subnet);
        out.push(DenyNetwork {
            wire: w,
            bridge: networks::bridge_name(&f.prefix, w),
            service4: svc,
            service6: def.ipv6_for(svc),
            broadcast4: def.subnet.broadcast(),
            containers,
        });
    }
    out
}

/// The shaping entry of a container: its own, else its network's.
pub fn qos_for<'a>(f: &'a Facts, network: &str, ip: &str) -> Option<&'a QosEntry> {
    f.qos
        .get(&qos_key(network, Some(ip)))
        .or_else(|| f.qos.get(&qos_key(network, None)))
}

/// HTB for a container: a rate alone is also its ceiling, a ceiling
/// alone also its rate.
pub fn htb_for(f: &Facts, network: &str, ip: &str) -> Option<Htb> {
    let q = qos_for(f, network, ip)?;
    let rate = q.rate_kbit.or(q.ceiling_kbit)?;
    Some(Htb {
        rate_kbit: rate,
        ceil_kbit: q.ceiling_kbit.unwrap_or(rate).max(rate),
    })
}

/// The ports of this host's veth attachments (macvlan attachments have
/// no host end: the LAN they join is not the mesh's to police). A record
/// that does not parse is left out, so its veth passes nothing.
pub fn ports(records: &[AttachmentRecord]) -> Vec<Port> {
    records
        .iter()
        .filter(|r| !crate::attach::is_macvlan(r))
        .filter_map(|r| {
            let a = &r.attachment;
            let net: ipnet::Ipv4Net = a.ip.parse().ok()?;
            let ip6 = match &a.ip6 {
                Some(v) => Some(v.parse::<ipnet::Ipv6Net>().ok()?.addr()),
                None => None,
            };
            Some(Port {
                host_if: a.host_ifname.clone(),
                network: a.network.clone(),
                mac: super::delay::parse_mac(&a.mac)?,
                ip: net.addr(),
                broadcast4: net.broadcast(),
                ip6,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, host: &str, mac: &str) -> EndpointRecord {
        EndpointRecord {
            network: "blue".into(),
            ip: ip.parse().unwrap(),
            ip6: None,
            mac: mac.into(),
            host: host.into(),
            name: None,
            version: None,
        }
    }

    /// An attachment of this host, as its store has it.
    fn attached(ip: &str, mac: &str, app: &str) -> AttachmentRecord {
        serde_json::from_value(serde_json::json!({
            "network": "blue", "netns": "/run/netns/c", "ifname": "eth-blue",
            "host_ifname": "msv00000003", "ip": format!("{ip}/24"), "mac": mac,
            "labels": {"app": app}, "netns_dev": 1, "netns_ino": 2,
        }))
        .unwrap()
    }

    fn facts(policy: PolicyMode) -> Facts {
        let mut f = Facts {
            me: "me".into(),
            prefix: "mesh-".into(),
            networks: BTreeMap::new(),
            settings: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            labels: BTreeMap::new(),
            rules: BTreeMap::new(),
            qos: BTreeMap::new(),
            attachments: vec![attached("10.40.0.3", "02:00:00:00:00:03", "db")],
        };
        f.networks.insert(
            "blue".into(),
            NetworkDef {
                id: "blue".into(),
                subnet: "10.40.0.0/24".parse().unwrap(),
                subnet6: networks::derive_ula("blue"),
                created_by: "x".into(),
                labels: BTreeMap::new(),
                hosts: vec![],
                sealed_secrets: BTreeMap::new(),
            },
        );
        f.settings
            .insert("blue".into(), NetworkSettings::new(policy, false));
        for (ip, host, mac, app) in [
            ("10.40.0.2", "other", "02:00:00:00:00:02", "web"),
            ("10.40.0.3", "me", "02:00:00:00:00:03", "db"),
            ("10.40.0.4", "me", "", "vip"),
        ] {
            let key = format!("blue/{ip}");
            f.endpoints.insert(key.clone(), ep(ip, host, mac));
            f.labels.insert(
                key,
                LabelRecord {
                    network: "blue".into(),
                    ip: ip.parse().unwrap(),
                    mac: mac.into(),
                    host: host.into(),
                    labels: [("app".to_string(), app.to_string())].into(),
                },
            );
        }
        f.rules.insert(
            "blue/r".into(),
            PolicyRule {
                network: "blue".into(),
                name: "r".into(),
                from: [("app".to_string(), "web".to_string())].into(),
                to: [("app".to_string(), "db".to_string())].into(),
                ports: vec![],
            },
        );
        f
    }

    #[test]
    fn only_local_containers_of_deny_networks_are_guarded() {
        assert!(deny_networks(&facts(PolicyMode::Open)).is_empty());
        let nets = deny_networks(&facts(PolicyMode::Deny));
        assert_eq!(nets.len(), 1);
        let c = &nets[0].containers;
        assert_eq!(
            c.len(),
            1,
            "the remote web and the VIP are not guarded here"
        );
        assert_eq!(c[0].ip.to_string(), "10.40.0.3");
        let from = c[0].allow[0].from.as_ref().unwrap();
        assert_eq!(from.0, vec!["10.40.0.2".parse::<Ipv4Addr>().unwrap()]);
        // Labels that no longer belong to the endpoint (another MAC) do not count.
        let mut f = facts(PolicyMode::Deny);
        f.labels.get_mut("blue/10.40.0.2").unwrap().mac = "02:00:00:00:00:99".into();
        let nets = deny_networks(&f);
        assert!(nets[0].containers[0].allow[0]
            .from
            .as_ref()
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn another_hosts_writes_cannot_remove_a_local_containers_policy() {
        let guarded = |f: &Facts| {
            let nets = deny_networks(f);
            let c = &nets[0].containers;
            assert_eq!(c.len(), 1, "{c:?}");
            assert_eq!(c[0].ip.to_string(), "10.40.0.3");
            c[0].allow.len()
        };
        // Its endpoint and labels deleted by another member.
        let mut f = facts(PolicyMode::Deny);
        f.endpoints.remove("blue/10.40.0.3");
        f.labels.remove("blue/10.40.0.3");
        assert_eq!(
            guarded(&f),
            1,
            "still guarded, its rule still found by label"
        );
        // Overwritten: another host claims the address with labels that
        // would let everyone in.
        let mut f = facts(PolicyMode::Deny);
        let e = f.endpoints.get_mut("blue/10.40.0.3").unwrap();
        e.host = "other".into();
        let l = f.labels.get_mut("blue/10.40.0.3").unwrap();
        l.host = "other".into();
        l.labels = [("app".to_string(), "web".to_string())].into();
        assert_eq!(guarded(&f), 1);
        let from = &deny_networks(&f)[0].containers[0].allow[0].from;
        assert_eq!(
            from.as_ref().unwrap().0,
            vec!["10.40.0.2".parse::<Ipv4Addr>().unwrap()],
            "the forged claim on this host's address is not a source"
        );
        // A record naming this host for a container it does not have
        // guards nothing.
        let mut f = facts(PolicyMode::Deny);
        f.endpoints.get_mut("blue/10.40.0.2").unwrap().host = "me".into();
        assert_eq!(guarded(&f), 1);
    }

    #[test]
    fn container_shaping_overrides_the_network() {
        let mut f = facts(PolicyMode::Open);
        let q = |c: Option<&str>, rate, ceil| QosEntry {
            network: "blue".into(),
            container: c.map(String::from),
            rate_kbit: rate,
            ceiling_kbit: ceil,
            delay_ms: None,
            jitter_ms: None,
            loss_percent: None,
        };
        f.qos.insert("blue".into(), q(None, Some(5000), Some(6000)));
        f.qos.insert(
            "blue/10.40.0.3".into(),
            q(Some("10.40.0.3"), Some(100), None),
        );
        assert_eq!(
            htb_for(&f, "blue", "10.40.0.2"),
            Some(Htb {
                rate_kbit: 5000,
                ceil_kbit: 6000
            })
        );
        assert_eq!(
            htb_for(&f, "blue", "10.40.0.3"),
            Some(Htb {
                rate_kbit: 100,
                ceil_kbit: 100
            })
        );
        f.qos.clear();
        f.qos.insert(
            "blue".into(),
            QosEntry {
                delay_ms: Some(5.0),
                ..q(None, None, None)
            },
        );
        assert_eq!(htb_for(&f, "blue", "10.40.0.2"), None, "delay only: no HTB");
    }
}
