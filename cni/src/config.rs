//! What a call is asked: the CNI_* environment and the network
//! configuration on stdin.

use crate::error::{codes, CniError};
use crate::result::{CniResult, Dns};
use crate::{api, SUPPORTED_VERSIONS};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "" => return Err(CniError::new(codes::INVALID_ENV, "CNI_COMMAND is empty")),
            other => {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!(
                        "CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, STATUS, VERSION, GC"
                    ),
                ))
            }
        })
    }
}

/// The CNI_* environment of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    /// CNI_ARGS, in order.
    pub args: Vec<(String, String)>,
}

fn non_empty(env: &HashMap<String, String>, key: &str) -> Option<String> {
    env.get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Env {
    pub fn from_map(env: &HashMap<String, String>) -> Result<Env, CniError> {
        let command = match env.get("CNI_COMMAND") {
            Some(c) => Command::parse(c.trim())?,
            None => return Err(CniError::new(codes::INVALID_ENV, "CNI_COMMAND is not set")),
        };
        let e = Env {
            command,
            container_id: non_empty(env, "CNI_CONTAINERID"),
            netns: non_empty(env, "CNI_NETNS"),
            ifname: non_empty(env, "CNI_IFNAME"),
            args: parse_cni_args(env.get("CNI_ARGS").map(String::as_str).unwrap_or(""))?,
        };
        let required: &[(&str, bool)] = match command {
            Command::Add | Command::Check => &[
                ("CNI_CONTAINERID", e.container_id.is_some()),
                ("CNI_NETNS", e.netns.is_some()),
                ("CNI_IFNAME", e.ifname.is_some()),
            ],
            // DEL may come after the namespace is gone, without CNI_NETNS.
            Command::Del => &[("CNI_CONTAINERID", e.container_id.is_some())],
            _ => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                codes::INVALID_ENV,
                format!(
                    "{} needs {} (not set or empty)",
                    command_name(command),
                    missing.join(", ")
                ),
            ));
        }
        Ok(e)
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn command_name(c: Command) -> &'static str {
    match c {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Status => "STATUS",
        Command::Version => "VERSION",
        Command::Gc => "GC",
    }
}

/// CNI_ARGS keys we use; K8S_* are set by runtimes and ignored.
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "IP",
    "MESH_NAME",
    "MESH_VERSION",
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// `K=V;K2=V2`. Unknown keys are an error unless `IgnoreUnknown=1|true`.
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CniError::new(
                codes::INVALID_ENV,
                format!("CNI_ARGS: {part:?} is not KEY=VALUE"),
            ));
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    let ignore = out.iter().any(|(k, v)| {
        k == "IgnoreUnknown" && matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
    });
    if !ignore {
        if let Some((k, _)) = out.iter().find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(CniError::new(
                codes::INVALID_ENV,
                format!("CNI_ARGS: unknown key {k:?} (known: IP, MESH_NAME, MESH_VERSION; set IgnoreUnknown=1 to skip others)"),
            ));
        }
    }
    Ok(out)
}

/// `(major, minor, patch)` of a supported version string.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next().unwrap_or(Some(0))?);
    if it.next().is_some() {
        return None;
    }
    Some(t)
}

/// The network configuration from stdin.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub network: String,
    pub socket: PathBuf,
    /// The previous plugin's result in a chain.
    pub prev_result: Option<CniResult>,
    /// From `runtimeConfig.ips`.
    pub runtime_ips: Vec<String>,
    /// From `args.cni.ips`.
    pub args_ips: Vec<String>,
    pub args_name: Option<String>,
    pub args_version: Option<String>,
    /// From `args.cni.labels`: an object or `"k=v,k=v"`.
    pub args_labels: std::collections::BTreeMap<String, String>,
    /// The standard `dns` key, passed into the result.
    pub dns: Option<Dns>,
    /// GC: `(containerID, ifname)` pairs still in use.
    pub valid_attachments: Option<Vec<(String, Option<String>)>>,
}

fn str_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, CniError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    CniError::new(
                        codes::INVALID_CONFIG,
                        format!("{what}: {x} is not a string"),
                    )
                })
            })
            .collect(),
        Some(other) => Err(CniError::new(
            codes::INVALID_CONFIG,
            format!("{what} must be a list of strings, not {other}"),
        )),
    }
}

fn opt_str(obj: &Map<String, Value>, key: &str, what: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::new(
            codes::INVALID_CONFIG,
            format!("{what}{key} must be a string, not {other}"),
        )),
    }
}

/// `args.cni.labels`: `{"app": "nginx"}` or `"app=nginx,tier=web"`.
fn labels_arg(v: Option<&Value>) -> Result<std::collections::BTreeMap<String, String>, CniError> {
    let bad = |m: String| CniError::new(codes::INVALID_CONFIG, m);
    let mut out = std::collections::BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(format!("args.cni.labels.{k} must be a string, not {v}")))?;
                out.insert(k.clone(), v.to_string());
            }
        }
        Some(Value::String(text)) => {
            for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match item.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        out.insert(k.to_string(), v.to_string());
                    }
                    _ => return Err(bad(format!("args.cni.labels: {item:?} is not key=value"))),
                }
            }
        }
        Some(o) => {
            return Err(bad(format!(
                "args.cni.labels must be an object or \"k=v,k=v\", not {o}"
            )))
        }
    }
    Ok(out)
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_come_as_an_object_or_a_string() {
        let o = serde_json::json!({"app": "nginx"});
        assert_eq!(labels_arg(Some(&o)).unwrap()["app"], "nginx");
        let s = serde_json::json!("app=nginx, tier=web");
        assert_eq!(labels_arg(Some(&s)).unwrap().len(), 2);
        assert!(labels_arg(None).unwrap().is_empty());
        assert!(labels_arg(Some(&serde_json::json!("app"))).is_err());
        assert!(labels_arg(Some(&serde_json::json!({"a": 1}))).is_err());
        assert!(labels_arg(Some(&serde_json::json!(3))).is_err());
    }
}

/// A configuration value read as its type; a mismatch is code 7.
fn typed<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, CniError> {
    serde_json::from_value(v.clone())
        .map_err(|e| CniError::new(codes::INVALID_CONFIG, format!("{what}: {e}")))
}

impl NetConf {
    /// Parses stdin: malformed JSON is code 6, a bad or missing key code 7,
    /// an unsupported version code 1, an `ipam` section code 2.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                codes::DECODE,
                format!("network configuration on stdin is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(obj) = v else {
            return Err(CniError::new(
                codes::DECODE,
                "network configuration on stdin is not a JSON object",
            ));
        };
        let cni_version = opt_str(&obj, "cniVersion", "")?.ok_or_else(|| {
            CniError::new(
                codes::INVALID_CONFIG,
                "network configuration has no cniVersion",
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                codes::INCOMPATIBLE_VERSION,
                format!("cniVersion {cni_version:?} is not supported"),
            )
            .details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))));
        }
        let name = opt_str(&obj, "name", "")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                CniError::new(codes::INVALID_CONFIG, "network configuration has no name")
            })?;
        if obj.get("ipam").is_some_and(|i| !i.is_null()) {
            return Err(CniError::new(
                codes::UNSUPPORTED_FIELD,
                "ipam is not supported by the mesh plugin: meshd assigns addresses (pass one in runtimeConfig.ips, args.cni.ips or CNI_ARGS IP=)",
            ));
        }
        let network = opt_str(&obj, "network", "")?.unwrap_or_else(|| name.clone());
        if network.is_empty() {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                "network must not be empty",
            ));
        }
        let socket = opt_str(&obj, "socket", "")?
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(api::DEFAULT_SOCKET));
        let runtime = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(o) => {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!("runtimeConfig must be an object, not {o}"),
                ))
            }
        };
        let runtime_ips = str_list(runtime.get("ips"), "runtimeConfig.ips")?;
        let cni_args = match obj.get("args").and_then(|a| a.get("cni")) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(o) => {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!("args.cni must be an object, not {o}"),
                ))
            }
        };
        let args_ips = str_list(cni_args.get("ips"), "args.cni.ips")?;
        let args_name = opt_str(&cni_args, "name", "args.cni.")?;
        let args_version = opt_str(&cni_args, "version", "args.cni.")?;
        let args_labels = labels_arg(cni_args.get("labels"))?;
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => Some(typed(p, "prevResult")?),
            Some(_) => {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    "prevResult must be an object",
                ))
            }
        };
        let dns = match obj.get("dns") {
            None | Some(Value::Null) => None,
            Some(d) => Some(typed(d, "dns")?),
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|a| {
                        let id =
                            a.get("containerID")
                                .and_then(Value::as_str)
                                .ok_or_else(|| {
                                    CniError::new(
                                codes::INVALID_CONFIG,
                                format!("cni.dev/valid-attachments: entry {a} has no containerID"),
                            )
                                })?;
                        Ok((
                            id.to_string(),
                            a.get("ifname").and_then(Value::as_str).map(str::to_string),
                        ))
                    })
                    .collect::<Result<Vec<_>, CniError>>()?,
            ),
            Some(o) => {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!("cni.dev/valid-attachments must be a list, not {o}"),
                ))
            }
        };
        Ok(NetConf {
            cni_version,
            name,
            network,
            socket,
            prev_result,
            runtime_ips,
            args_ips,
            args_name,
            args_version,
            args_labels,
            dns,
            valid_attachments,
        })
    }

    pub fn version_at_least(&self, v: (u32, u32, u32)) -> bool {
        parse_version(&self.cni_version).is_some_and(|have| have >= v)
    }
}

/// The address to ask for: runtimeConfig.ips, then args.cni.ips, then
/// CNI_ARGS IP=. `None`: let meshd allocate. A bare address gets the
/// subnet's prefix length.
pub fn requested_ip(
    conf: &NetConf,
    env: &Env,
    subnet: Option<&str>,
) -> Result<Option<String>, CniError> {
    let (list, from) = if !conf.runtime_ips.is_empty() {
        (conf.runtime_ips.clone(), "runtimeConfig.ips")
    } else if !conf.args_ips.is_empty() {
        (conf.args_ips.clone(), "args.cni.ips")
    } else if let Some(ip) = env.arg("IP").filter(|s| !s.is_empty()) {
        (
            ip.split(',').map(|s| s.trim().to_string()).collect(),
            "CNI_ARGS IP",
        )
    } else {
        return Ok(None);
    };
    if list.len() != 1 {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            format!(
                "{from}: mesh gives a container one address per network, got {}: {list:?}",
                list.len()
            ),
        ));
    }
    let ip = list[0].trim();
    let (addr, len) = match ip.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (ip, None),
    };
    let parsed: std::net::IpAddr = addr.parse().map_err(|_| {
        CniError::new(
            codes::INVALID_CONFIG,
            format!("{from}: {ip:?} is not an IP address"),
        )
    })?;
    match len {
        Some(l) => {
            let max = if parsed.is_ipv4() { 32 } else { 128 };
            match l.parse::<u8>() {
                Ok(n) if n <= max => Ok(Some(format!("{parsed}/{n}"))),
                _ => Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!("{from}: {ip:?} has a bad prefix length"),
                )),
            }
        }
        None => {
            let len = subnet
                .and_then(|s| s.split_once('/'))
                .map(|(_, l)| l)
                .unwrap_or("32");
            Ok(Some(format!("{parsed}/{len}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn conf(extra: Value) -> NetConf {
        let mut base = json!({"cniVersion": "1.1.0", "name": "blue", "type": "mesh"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        NetConf::parse(base.to_string().as_bytes()).unwrap()
    }

    fn add_env() -> Env {
        Env::from_map(&env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap()
    }

    #[test]
    fn config_defaults_and_keys() {
        let c = conf(json!({}));
        assert_eq!(c.network, "blue");
        assert_eq!(c.socket, PathBuf::from("/run/mesh/meshd.sock"));
        let c = conf(json!({"network": "red", "socket": "/tmp/s.sock",
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}));
        assert_eq!(c.network, "red");
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![("a".to_string(), Some("eth0".to_string()))]
        );
    }

    #[test]
    fn cni_args() {
        assert_eq!(
            parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar")
                .unwrap()
                .len(),
            3
        );
        assert!(parse_cni_args("FOO=bar").unwrap_err().msg.contains("FOO"));
        assert!(parse_cni_args("IP=10.0.0.2;K8S_POD_NAME=x").is_ok());
        assert_eq!(parse_cni_args("garbage").unwrap_err().code, 4);
        assert!(parse_cni_args("").unwrap().is_empty());
    }

    #[test]
    fn address_sources_in_order() {
        let mut e = add_env();
        assert_eq!(
            requested_ip(&conf(json!({})), &e, Some("10.0.0.0/24")).unwrap(),
            None
        );
        e.args = vec![("IP".into(), "10.0.0.9".into())];
        assert_eq!(
            requested_ip(&conf(json!({})), &e, Some("10.0.0.0/24"))
                .unwrap()
                .as_deref(),
            Some("10.0.0.9/24")
        );
        let c = conf(json!({"args": {"cni": {"ips": ["10.0.0.7/24"]}}}));
        assert_eq!(
            requested_ip(&c, &e, None).unwrap().as_deref(),
            Some("10.0.0.7/24")
        );
        let c = conf(
            json!({"args": {"cni": {"ips": ["10.0.0.7/24"]}}, "runtimeConfig": {"ips": ["10.0.0.5/24"]}}),
        );
        assert_eq!(
            requested_ip(&c, &e, None).unwrap().as_deref(),
            Some("10.0.0.5/24")
        );
        let c = conf(json!({"runtimeConfig": {"ips": ["10.0.0.5/24", "10.0.0.6/24"]}}));
        assert_eq!(requested_ip(&c, &e, None).unwrap_err().code, 7);
        let c = conf(json!({"runtimeConfig": {"ips": ["10.0.0.500/24"]}}));
        assert_eq!(requested_ip(&c, &e, None).unwrap_err().code, 7);
        let c = conf(json!({"runtimeConfig": {"ips": ["10.0.0.5/40"]}}));
        assert_eq!(requested_ip(&c, &e, None).unwrap_err().code, 7);
    }
}
