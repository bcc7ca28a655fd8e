//! The `mesh` CNI plugin (CNI spec 1.1): attaches a container's network
//! namespace to a mesh network by asking the host's `meshd` over its local
//! API, so the daemon stays the one owner of bridges, veths and addresses.
//!
//! Network configuration keys (besides the standard `cniVersion`, `name`,
//! `type`, `args`, `runtimeConfig`, `prevResult`, `dns`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `network` | the config's `name` | mesh network id |
//! | `socket` | `/run/mesh/meshd.sock` | meshd's API socket |
//!
//! The address comes from `runtimeConfig.ips` (capability `ips`), else
//! `args.cni.ips`, else `CNI_ARGS` `IP=`; with none, the daemon allocates
//! one (once it can). A DNS name comes from `args.cni.name`, `CNI_ARGS`
//! `MESH_NAME=` or `K8S_POD_NAME=`; a version label from `args.cni.version`
//! or `CNI_ARGS` `MESH_VERSION=`.
//!
//! Every call is one process: [`run`] takes the environment and stdin and
//! returns what to print and the exit code, so all of it is testable.

/// meshd's local API types and client, shared with the daemon and `meshctl`.
pub use mesh_api as api;

use api::{routes, Client, ClientError};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Versions this plugin speaks (the result format is shared from 0.3.0 on).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const CURRENT_VERSION: &str = "1.1.0";
/// meshd's default API socket (`mesh::config::DEFAULT_API_SOCKET`).
pub const DEFAULT_SOCKET: &str = "/run/mesh/meshd.sock";

/// Error codes of the CNI spec (1–99 reserved by it) and our own (≥ 100).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_CHECK: u32 = 51;
    /// meshd refused the request (address in use, already attached, …).
    pub const REFUSED: u32 = 100;
    /// CHECK found the attachment missing or different from prevResult.
    pub const CHECK_FAILED: u32 = 101;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// What the binary prints on stdout and exits with.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub exit_code: i32,
}

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

    fn arg(&self, key: &str) -> Option<&str> {
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
    pub prev_result: Option<Value>,
    /// From `runtimeConfig.ips`.
    pub runtime_ips: Vec<String>,
    /// From `args.cni.ips`.
    pub args_ips: Vec<String>,
    pub args_name: Option<String>,
    pub args_version: Option<String>,
    /// The standard `dns` key, passed into the result.
    pub dns: Option<Value>,
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
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
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
        let prev_result = obj.get("prevResult").filter(|p| !p.is_null()).cloned();
        if let Some(p) = &prev_result {
            if !p.is_object() {
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    "prevResult must be an object",
                ));
            }
        }
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
            dns: obj.get("dns").filter(|d| !d.is_null()).cloned(),
            valid_attachments,
        })
    }

    fn version_at_least(&self, v: (u32, u32, u32)) -> bool {
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

/// The ADD result for `att` (an `api::Attachment` as JSON, so fields the
/// daemon adds later — `dns_server` — are picked up), appended to
/// `prevResult` when chained.
pub fn add_result(conf: &NetConf, env: &Env, att: &Value, mtu: Option<u32>) -> Value {
    let mut result = match &conf.prev_result {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    result.insert("cniVersion".into(), json!(conf.cni_version));
    let mut interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let host_if = att["host_ifname"].as_str().unwrap_or_default();
    interfaces.push(json!({ "name": host_if }));
    let mut cont = json!({
        "name": att["ifname"],
        "mac": att["mac"],
        "sandbox": env.netns.clone().or_else(|| att["netns"].as_str().map(str::to_string)),
    });
    if let (Some(m), true) = (mtu, conf.version_at_least((1, 1, 0))) {
        cont["mtu"] = json!(m);
    }
    interfaces.push(cont);
    let index = interfaces.len() - 1;
    result.insert("interfaces".into(), Value::Array(interfaces));

    let mut ips = result
        .get("ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // The IPv4 address, and the IPv6 one once meshd hands those out.
    for addr in [att.get("ip"), att.get("ip6")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if addr.is_empty() {
            continue;
        }
        let mut ipc = json!({ "address": addr, "interface": index });
        if !conf.version_at_least((1, 0, 0)) {
            let v = if addr.contains(':') { "6" } else { "4" };
            ipc["version"] = json!(v);
        }
        ips.push(ipc);
    }
    result.insert("ips".into(), Value::Array(ips));
    result.entry("routes").or_insert_with(|| json!([]));

    // DNS: the configured `dns`, the previous result's, and meshd's server.
    let mut dns = match (result.get("dns"), &conf.dns) {
        (Some(Value::Object(d)), _) => d.clone(),
        (_, Some(Value::Object(d))) => d.clone(),
        _ => Map::new(),
    };
    if let Some(server) = att
        .get("dns_server")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let server = server.split('/').next().unwrap_or(server).to_string();
        let ns = dns.entry("nameservers").or_insert_with(|| json!([]));
        if let Some(list) = ns.as_array_mut() {
            if !list.iter().any(|x| x.as_str() == Some(server.as_str())) {
                list.insert(0, json!(server));
            }
        }
    }
    if let Some(domain) = att
        .get("dns_search")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let search = dns.entry("search").or_insert_with(|| json!([]));
        if let Some(list) = search.as_array_mut() {
            if !list.iter().any(|x| x.as_str() == Some(domain)) {
                list.insert(0, json!(domain));
            }
        }
    }
    if !dns.is_empty() {
        result.insert("dns".into(), Value::Object(dns));
    }
    Value::Object(result)
}

/// Checks that `path` is a network namespace file: missing is code 3
/// (the container is gone), anything else that is not one is code 4.
pub fn check_netns(path: &str) -> Result<(), CniError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CniError::new(
                codes::UNKNOWN_CONTAINER,
                format!("CNI_NETNS {path}: no such namespace"),
            )
        } else {
            CniError::new(
                codes::INVALID_ENV,
                format!("CNI_NETNS {path}: cannot open: {e}"),
            )
        }
    })?;
    let stat = nix::sys::statfs::fstatfs(&file).map_err(|e| {
        CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path}: cannot inspect: {e}"),
        )
    })?;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    if stat.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path} is not a network namespace (not an nsfs file)"),
        ));
    }
    // NS_GET_NSTYPE = _IO(0xb7, 0x3)
    let t = unsafe { libc::ioctl(file.as_raw_fd(), 0xb703 as _) };
    if t >= 0 && t != libc::CLONE_NEWNET {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path} is a namespace, but not a network namespace"),
        ));
    }
    Ok(())
}

/// Looks inside the namespace: `ifname` exists, is up, and carries `addr`
/// (`ADDR/LEN`). Runs on a thread of its own that enters the namespace.
pub fn inspect_netns(path: &str, ifname: &str, addr: &str) -> Result<(), String> {
    let (path, ifname, addr) = (path.to_string(), ifname.to_string(), addr.to_string());
    std::thread::spawn(move || -> Result<(), String> {
        let file = std::fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {path}: {e}"))?;
        let want: std::net::IpAddr = addr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("bad address {addr:?}"))?;
        let mut found = false;
        let mut up = false;
        let mut has_addr = false;
        for ifa in
            nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interfaces in {path}: {e}"))?
        {
            if ifa.interface_name != ifname {
                continue;
            }
            found = true;
            up |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let a = ifa.address.as_ref();
            if let Some(sin) = a.and_then(|a| a.as_sockaddr_in()) {
                has_addr |= std::net::IpAddr::V4(sin.ip()) == want;
            }
            if let Some(sin6) = a.and_then(|a| a.as_sockaddr_in6()) {
                has_addr |= std::net::IpAddr::V6(sin6.ip()) == want;
            }
        }
        if !found {
            return Err(format!("interface {ifname} is missing in {path}"));
        }
        if !up {
            return Err(format!("interface {ifname} in {path} is down"));
        }
        if !has_addr {
            return Err(format!("interface {ifname} in {path} lacks address {addr}"));
        }
        Ok(())
    })
    .join()
    .map_err(|_| "namespace inspection thread panicked".to_string())?
}

/// Maps a meshd API error to a CNI error.
pub fn api_error(e: ClientError, conf: &NetConf, doing: &str) -> CniError {
    let socket = conf.socket.display().to_string();
    match e {
        ClientError::NotRunning(p) => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "{doing}: meshd is not running (no socket at {})",
                p.display()
            ),
        )
        .details("start meshd, or set \"socket\" in the network configuration"),
        ClientError::PermissionDenied(p) => CniError::new(
            codes::IO,
            format!(
                "{doing}: permission denied on meshd's socket {}",
                p.display()
            ),
        ),
        ClientError::Connect { path, source } => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "{doing}: cannot reach meshd at {}: {source}",
                path.display()
            ),
        ),
        ClientError::Http(h) => CniError::new(
            codes::IO,
            format!("{doing}: HTTP to meshd at {socket} failed: {h}"),
        ),
        ClientError::Decode(d) => CniError::new(
            codes::IO,
            format!("{doing}: unexpected answer from meshd: {d}"),
        ),
        ClientError::Api { status, message } => {
            let code = match status {
                404 if message.contains("network") && message.contains("does not exist") => {
                    codes::INVALID_CONFIG
                }
                404 => codes::UNKNOWN_CONTAINER,
                400 if message.contains("--ip") => codes::INVALID_CONFIG,
                400 | 403 | 409 => codes::REFUSED,
                502 | 503 => codes::TRY_AGAIN_LATER,
                _ => codes::IO,
            };
            let mut msg = format!("{doing}: {message}");
            if message.contains("--ip") {
                msg.push_str(
                    " (give the address in runtimeConfig.ips, args.cni.ips or CNI_ARGS IP=)",
                );
            }
            CniError::new(code, msg).details(format!("meshd at {socket} answered HTTP {status}"))
        }
    }
}

fn block<F: std::future::Future>(f: F) -> Result<F::Output, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(codes::IO, format!("cannot start the I/O runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// One CNI call: parses the environment and stdin, talks to meshd, and
/// says what to print. Errors are printed as the spec's error JSON.
pub fn run(env: &HashMap<String, String>, stdin: &[u8]) -> Output {
    let version_hint = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    match dispatch(env, stdin) {
        Ok(Some(v)) => Output {
            stdout: v.to_string(),
            exit_code: 0,
        },
        Ok(None) => Output {
            stdout: String::new(),
            exit_code: 0,
        },
        Err(e) => {
            eprintln!("mesh CNI: {e}");
            Output {
                stdout: e.to_json(&version_hint).to_string(),
                exit_code: 1,
            }
        }
    }
}

pub fn version_json() -> Value {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

fn dispatch(env: &HashMap<String, String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = Env::from_map(env)?;
    if env.command == Command::Version {
        return Ok(Some(version_json()));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => add(&conf, &env).map(Some),
        Command::Del => del(&conf, &env).map(|()| None),
        Command::Check => {
            if !conf.version_at_least((0, 4, 0)) {
                return Err(CniError::new(
                    codes::INCOMPATIBLE_VERSION,
                    format!(
                        "CHECK needs cniVersion 0.4.0 or later, the configuration says {}",
                        conf.cni_version
                    ),
                ));
            }
            check(&conf, &env).map(|()| None)
        }
        Command::Status => {
            need_1_1(&conf, "STATUS")?;
            status(&conf).map(|()| None)
        }
        Command::Gc => {
            need_1_1(&conf, "GC")?;
            gc(&conf).map(|()| None)
        }
        Command::Version => unreachable!(),
    }
}

fn need_1_1(conf: &NetConf, what: &str) -> Result<(), CniError> {
    if conf.version_at_least((1, 1, 0)) {
        Ok(())
    } else {
        Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "{what} needs cniVersion 1.1.0, the configuration says {}",
                conf.cni_version
            ),
        ))
    }
}

/// The parts of a network the plugin needs. Read loosely (not as
/// `api::Network`) so a plugin and a daemon of neighbouring versions agree.
struct NetInfo {
    subnet: String,
    mtu: Option<u32>,
}

fn find_network(conf: &NetConf, client: &Client, doing: &str) -> Result<NetInfo, CniError> {
    let nets: Vec<Value> =
        block(client.get(routes::NETWORKS))?.map_err(|e| api_error(e, conf, doing))?;
    nets.into_iter()
        .find(|n| n["id"].as_str() == Some(conf.network.as_str()))
        .map(|n| NetInfo {
            subnet: n["subnet"].as_str().unwrap_or_default().to_string(),
            mtu: n["mtu"].as_u64().map(|m| m as u32),
        })
        .ok_or_else(|| {
        CniError::new(
            codes::INVALID_CONFIG,
            format!("{doing}: mesh network {:?} does not exist", conf.network),
        )
        .details(format!(
            "create it with `meshctl network create {} --subnet CIDR`, or set \"network\" in the configuration",
            conf.network
        ))
    })
}

fn add(conf: &NetConf, env: &Env) -> Result<Value, CniError> {
    let netns = env.netns.as_deref().unwrap_or_default();
    let cid = env.container_id.clone().unwrap_or_default();
    check_netns(netns)?;
    let client = Client::new(&conf.socket);
    let doing = format!("attaching container {cid} to mesh network {}", conf.network);
    let net = find_network(conf, &client, &doing)?;
    let ip = requested_ip(conf, env, Some(&net.subnet))?;
    let name = conf
        .args_name
        .clone()
        .or_else(|| env.arg("MESH_NAME").map(str::to_string))
        .or_else(|| env.arg("K8S_POD_NAME").map(str::to_string))
        .filter(|n| !n.is_empty());
    let version = conf
        .args_version
        .clone()
        .or_else(|| env.arg("MESH_VERSION").map(str::to_string))
        .filter(|n| !n.is_empty());
    let req = api::AttachRequest {
        target: netns.to_string(),
        network: conf.network.clone(),
        ip,
        ifname: env.ifname.clone(),
        container_id: Some(cid),
        name,
        version,
    };
    let att: Value =
        block(client.post(routes::ATTACH, &req))?.map_err(|e| api_error(e, conf, &doing))?;
    Ok(add_result(conf, env, &att, net.mtu))
}

fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let cid = env.container_id.clone().unwrap_or_default();
    let client = Client::new(&conf.socket);
    let doing = format!(
        "detaching container {cid} from mesh network {}",
        conf.network
    );
    let req = api::DetachRequest {
        target: None,
        network: conf.network.clone(),
        container_id: Some(cid),
    };
    match block(client.post::<_, Value>(routes::DETACH, &req))? {
        Ok(_) => Ok(()),
        // Already gone (a repeated DEL) or the network was removed: done.
        Err(ClientError::Api { status: 404, .. }) => Ok(()),
        Err(e @ (ClientError::NotRunning(_) | ClientError::Connect { .. })) => {
            // With the namespace gone, the veth died with it, and meshd
            // drops the stale record when it starts: nothing is left.
            let ns_alive = env.netns.as_deref().is_some_and(|p| Path::new(p).exists());
            if ns_alive {
                Err(api_error(e, conf, &doing))
            } else {
                eprintln!("mesh CNI: {doing}: meshd unreachable, namespace gone: nothing to undo");
                Ok(())
            }
        }
        Err(e) => Err(api_error(e, conf, &doing)),
    }
}

fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let cid = env.container_id.as_deref().unwrap_or_default();
    let netns = env.netns.as_deref().unwrap_or_default();
    let ifname = env.ifname.as_deref().unwrap_or_default();
    check_netns(netns)?;
    let client = Client::new(&conf.socket);
    let doing = format!("checking container {cid} on mesh network {}", conf.network);
    find_network(conf, &client, &doing)?;
    let atts: Vec<api::Attachment> =
        block(client.get(routes::ATTACHMENTS))?.map_err(|e| api_error(e, conf, &doing))?;
    let att = atts
        .iter()
        .find(|a| a.network == conf.network && a.container_id.as_deref() == Some(cid))
        .ok_or_else(|| {
            CniError::new(
                codes::CHECK_FAILED,
                format!("{doing}: the container is not attached"),
            )
        })?;
    let fail = |m: String| CniError::new(codes::CHECK_FAILED, format!("{doing}: {m}"));
    if att.ifname != ifname {
        return Err(fail(format!(
            "attached as {}, not CNI_IFNAME {ifname}",
            att.ifname
        )));
    }
    if let Some(prev) = &conf.prev_result {
        let ifs = prev["interfaces"].as_array().cloned().unwrap_or_default();
        let ours = ifs.iter().position(|i| {
            i["name"].as_str() == Some(ifname)
                && i["sandbox"].as_str().is_some_and(|s| !s.is_empty())
        });
        let Some(idx) = ours else {
            return Err(fail(format!(
                "prevResult has no interface {ifname} in a sandbox"
            )));
        };
        if let Some(mac) = ifs[idx]["mac"].as_str() {
            if !mac.eq_ignore_ascii_case(&att.mac) {
                return Err(fail(format!("MAC is {}, prevResult says {mac}", att.mac)));
            }
        }
        let ips = prev["ips"].as_array().cloned().unwrap_or_default();
        let addr = ips
            .iter()
            .find(|i| i["interface"].as_u64() == Some(idx as u64))
            .and_then(|i| i["address"].as_str());
        if let Some(addr) = addr {
            if addr != att.ip {
                return Err(fail(format!(
                    "address is {}, prevResult says {addr}",
                    att.ip
                )));
            }
        }
    }
    inspect_netns(netns, ifname, &att.ip).map_err(fail)
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    let client = Client::new(&conf.socket);
    let unavailable = |m: String| CniError::new(codes::NOT_AVAILABLE, m);
    let _: api::StatusResponse = block(client.get(routes::STATUS))?.map_err(|e| {
        unavailable(format!(
            "meshd is not available: {}",
            api_error(e, conf, "status").msg
        ))
    })?;
    find_network(conf, &client, "status").map_err(|e| unavailable(e.msg))?;
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let client = Client::new(&conf.socket);
    let doing = format!("garbage-collecting mesh network {}", conf.network);
    let valid: HashSet<(String, Option<String>)> = conf
        .valid_attachments
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let atts: Vec<api::Attachment> =
        block(client.get(routes::ATTACHMENTS))?.map_err(|e| api_error(e, conf, &doing))?;
    let mut errors = Vec::new();
    for a in atts.iter().filter(|a| a.network == conf.network) {
        // Attachments made by hand (no container id) are not ours to collect.
        let Some(cid) = a.container_id.clone() else {
            continue;
        };
        if valid.contains(&(cid.clone(), Some(a.ifname.clone())))
            || valid.contains(&(cid.clone(), None))
        {
            continue;
        }
        let req = api::DetachRequest {
            target: None,
            network: conf.network.clone(),
            container_id: Some(cid.clone()),
        };
        match block(client.post::<_, Value>(routes::DETACH, &req))? {
            Ok(_) | Err(ClientError::Api { status: 404, .. }) => {
                eprintln!("mesh CNI: GC detached stale container {cid}")
            }
            Err(e) => errors.push(api_error(e, conf, &format!("{doing}: container {cid}"))),
        }
    }
    match errors.into_iter().next() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn run_err(e: &[(&str, &str)], stdin: &str) -> Value {
        let out = run(&env(e), stdin.as_bytes());
        assert_eq!(out.exit_code, 1, "{}", out.stdout);
        serde_json::from_str(&out.stdout).unwrap()
    }

    #[test]
    fn version_command_needs_nothing_else() {
        let out = run(&env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(out.exit_code, 0);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("0.4.0")));
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = run_err(&[], "{}");
        assert_eq!(e["code"], 4);
        assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"));
        let e = run_err(&[("CNI_COMMAND", "FOO")], "{}");
        assert_eq!(e["code"], 4);
        let e = run_err(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")], "{}");
        assert_eq!(e["code"], 4);
        let m = e["msg"].as_str().unwrap();
        assert!(
            m.contains("CNI_NETNS") && m.contains("CNI_IFNAME") && !m.contains("CNI_CONTAINERID"),
            "{m}"
        );
        // DEL without a namespace is fine (env-wise).
        Env::from_map(&env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")])).unwrap();
        let e = run_err(&[("CNI_COMMAND", "DEL")], "{}");
        assert!(e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
    }

    #[test]
    fn config_errors_have_the_spec_codes() {
        let del = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")];
        let e = run_err(&del, "{not json");
        assert_eq!(e["code"], 6);
        assert_eq!(e["cniVersion"], "1.1.0");
        let e = run_err(&del, r#"{"cniVersion":"9.9.9","name":"n"}"#);
        assert_eq!(e["code"], 1);
        assert!(e["msg"].as_str().unwrap().contains("9.9.9"));
        let e = run_err(&del, r#"{"name":"n"}"#);
        assert_eq!(e["code"], 7);
        let e = run_err(&del, r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(
            (e["code"].clone(), e["cniVersion"].clone()),
            (json!(7), json!("1.0.0"))
        );
        let e = run_err(
            &del,
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#,
        );
        assert_eq!(e["code"], 2);
        let e = run_err(
            &del,
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":"x"}}"#,
        );
        assert_eq!(e["code"], 7);
        let e = run_err(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(e["code"], 1);
        let e = run_err(
            &[("CNI_COMMAND", "GC")],
            r#"{"cniVersion":"0.4.0","name":"n"}"#,
        );
        assert_eq!(e["code"], 1);
        let chk = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "e"),
        ];
        let e = run_err(&chk, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(e["code"], 1);
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

    fn attachment() -> Value {
        json!({"network": "blue", "netns": "/run/netns/x", "ifname": "eth0", "host_ifname": "msv0001",
               "ip": "10.0.0.2/24", "mac": "02:00:00:00:00:01", "container_id": "c1"})
    }

    #[test]
    fn result_1_1() {
        let r = add_result(
            &conf(json!({"dns": {"search": ["mesh"]}})),
            &add_env(),
            &attachment(),
            Some(1400),
        );
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
        let mut a = attachment();
        a["dns_server"] = json!("10.0.0.1");
        a["dns_search"] = json!("blue");
        a["ip6"] = json!("fd00::2/64");
        let r = add_result(&c, &add_env(), &a, Some(1400));
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(
            r["ips"][1],
            json!({"address": "fd00::2/64", "interface": 1, "version": "6"})
        );
        assert!(r["interfaces"][1].get("mtu").is_none());
        assert_eq!(r["dns"]["nameservers"], json!(["10.0.0.1"]));
        assert_eq!(r["dns"]["search"], json!(["blue"]));
    }

    #[test]
    fn result_chains_onto_prev_result() {
        let c = conf(json!({"prevResult": {"cniVersion": "1.1.0",
            "interfaces": [{"name": "eth1", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "192.0.2.2/24", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]}}));
        let r = add_result(&c, &add_env(), &attachment(), None);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(
            r["ips"][1],
            json!({"address": "10.0.0.2/24", "interface": 2})
        );
        assert_eq!(r["routes"][0]["gw"], "192.0.2.1");
    }

    #[test]
    fn api_errors_map_to_codes() {
        let c = conf(json!({}));
        let e = api_error(ClientError::NotRunning("/x".into()), &c, "attaching");
        assert_eq!(e.code, 11);
        let e = api_error(
            ClientError::Api {
                status: 404,
                message: "network \"x\" does not exist (see ...)".into(),
            },
            &c,
            "attaching",
        );
        assert_eq!(e.code, 7);
        let e = api_error(
            ClientError::Api {
                status: 400,
                message: "--ip ADDR/LEN is required: ...".into(),
            },
            &c,
            "attaching",
        );
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("runtimeConfig.ips"));
        let e = api_error(
            ClientError::Api {
                status: 409,
                message: "address in use".into(),
            },
            &c,
            "a",
        );
        assert_eq!(e.code, 100);
        assert!(e.details.contains("409"));
    }

    #[test]
    fn netns_checks() {
        assert_eq!(check_netns("/nonexistent/ns").unwrap_err().code, 3);
        let e = check_netns("/etc/hostname").unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("not a network namespace"), "{}", e.msg);
        // Our own namespace is a real one.
        check_netns("/proc/self/ns/net").unwrap();
        // A mount namespace is nsfs but not a network namespace.
        if std::path::Path::new("/proc/self/ns/mnt").exists() {
            assert_eq!(check_netns("/proc/self/ns/mnt").unwrap_err().code, 4);
        }
    }

    #[test]
    fn unreachable_daemon() {
        let stdin =
            json!({"cniVersion": "1.1.0", "name": "blue", "socket": "/nonexistent/meshd.sock"})
                .to_string();
        let e = run_err(&[("CNI_COMMAND", "STATUS")], &stdin);
        assert_eq!(e["code"], 50);
        // DEL with the namespace gone and meshd away: nothing left to undo.
        let out = run(
            &env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")]),
            stdin.as_bytes(),
        );
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
        let e = run_err(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/proc/self/ns/net"),
                ("CNI_IFNAME", "e"),
            ],
            &stdin,
        );
        assert_eq!(e["code"], 11);
        let e = run_err(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/etc/hostname"),
                ("CNI_IFNAME", "e"),
            ],
            &stdin,
        );
        assert_eq!(e["code"], 4);
    }
}
