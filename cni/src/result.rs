//! The result JSON of ADD (and the `prevResult` of a chain), typed. Keys
//! this plugin does not know — a previous plugin's — pass through unchanged.

use crate::api::Attachment;
use crate::config::{Env, NetConf};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path of a container interface; none on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `ADDR/LEN`.
    pub address: String,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// "4" or "6": results before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
            && self.other.is_empty()
    }
}

/// The ADD result for `att`, appended to `prevResult` when chained: the
/// host veth, the container interface, its addresses, and DNS (the
/// configured `dns` or the previous result's, with meshd's resolver and
/// search domain in front).
pub fn add_result(conf: &NetConf, env: &Env, att: &Attachment, mtu: Option<u32>) -> CniResult {
    let mut result = conf.prev_result.clone().unwrap_or_default();
    result.cni_version = conf.cni_version.clone();
    result.interfaces.push(Interface {
        name: att.host_ifname.clone(),
        ..Interface::default()
    });
    result.interfaces.push(Interface {
        name: att.ifname.clone(),
        mac: Some(att.mac.clone()),
        mtu: mtu.filter(|_| conf.version_at_least((1, 1, 0))),
        sandbox: Some(env.netns.clone().unwrap_or_else(|| att.netns.clone())),
        other: Map::new(),
    });
    let index = result.interfaces.len() - 1;
    // The IPv4 address, and the IPv6 one once meshd hands those out.
    for addr in std::iter::once(&att.ip)
        .chain(att.ip6.as_ref())
        .filter(|a| !a.is_empty())
    {
        let version = (!conf.version_at_least((1, 0, 0)))
            .then(|| if addr.contains(':') { "6" } else { "4" }.to_string());
        result.ips.push(IpConfig {
            address: addr.clone(),
            interface: Some(index),
            version,
            ..IpConfig::default()
        });
    }

    let mut dns = result
        .dns
        .take()
        .or_else(|| conf.dns.clone())
        .unwrap_or_default();
    if let Some(server) = att.dns_server.as_deref().filter(|s| !s.is_empty()) {
        let server = server.split('/').next().unwrap_or(server).to_string();
        if !dns.nameservers.contains(&server) {
            dns.nameservers.insert(0, server);
        }
    }
    if let Some(domain) = att.dns_search.as_deref().filter(|s| !s.is_empty()) {
        if !dns.search.iter().any(|s| s == domain) {
            dns.search.insert(0, domain.to_string());
        }
    }
    result.dns = (!dns.is_empty()).then_some(dns);
    result
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: Value) -> NetConf {
        let mut base = json!({"cniVersion": "1.1.0", "name": "blue", "type": "mesh"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        NetConf::parse(base.to_string().as_bytes()).unwrap()
    }

    fn add_env() -> Env {
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Env::from_map(&env).unwrap()
    }

    pub(crate) fn attachment() -> Attachment {
        Attachment {
            network: "blue".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            host_ifname: "msv0001".into(),
            ip: "10.0.0.2/24".into(),
            ip6: None,
            mac: "02:00:00:00:00:01".into(),
            dns_server: None,
            dns_search: None,
            container_id: Some("c1".into()),
            name: None,
            version: None,
            labels: Default::default(),
            origin: mesh_api::Origin::Cni("blue".into()),
        }
    }

    fn json_of(r: &CniResult) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn result_1_1() {
        let r = json_of(&add_result(
            &conf(json!({"dns": {"search": ["mesh"]}})),
            &add_env(),
            &attachment(),
            Some(1400),
        ));
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"][0], json!({"name": "msv0001"}));
        assert_eq!(
            r["interfaces"][1],
            json!({"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x", "mtu": 1400})
        );
        assert_eq!(
            r["ips"],
            json!([{"address": "10.0.0.2/24", "interface": 1}])
        );
        assert_eq!(r["routes"], json!([]));
        assert_eq!(r["dns"], json!({"search": ["mesh"]}));
    }

    #[test]
    fn result_old_versions_and_dns_server() {
        let mut c = conf(json!({}));
        c.cni_version = "0.4.0".into();
        let a = Attachment {
            dns_server: Some("10.0.0.1".into()),
            dns_search: Some("blue".into()),
            ip6: Some("fd00::2/64".into()),
            ..attachment()
        };
        let r = json_of(&add_result(&c, &add_env(), &a, Some(1400)));
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(
            r["ips"][1],
            json!({"address": "fd00::2/64", "interface": 1, "version": "6"})
        );
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert_eq!(r["dns"]["nameservers"], json!(["10.0.0.1"]));
        assert_eq!(r["dns"]["search"], json!(["blue"]));
        assert!(r.get("dns").is_some());
        // Without any DNS there is no `dns` key at all.
        let r = json_of(&add_result(&c, &add_env(), &attachment(), None));
        assert!(r.get("dns").is_none(), "{r}");
    }

    #[test]
    fn result_chains_onto_prev_result() {
        let c = conf(json!({"prevResult": {"cniVersion": "1.1.0",
            "interfaces": [{"name": "eth1", "sandbox": "/run/netns/x", "socketPath": "/s"}],
            "ips": [{"address": "192.0.2.2/24", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
            "dns": {"nameservers": ["192.0.2.53"]},
            "custom": {"kept": true}}}));
        let a = Attachment {
            dns_server: Some("10.0.0.1/24".into()),
            ..attachment()
        };
        let r = json_of(&add_result(&c, &add_env(), &a, None));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(r["interfaces"][0]["socketPath"], "/s");
        assert_eq!(
            r["ips"][1],
            json!({"address": "10.0.0.2/24", "interface": 2})
        );
        assert_eq!(r["routes"][0]["gw"], "192.0.2.1");
        assert_eq!(r["dns"]["nameservers"], json!(["10.0.0.1", "192.0.2.53"]));
        assert_eq!(r["custom"], json!({"kept": true}));
    }
}
