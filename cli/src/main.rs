//! `meshctl`: the command-line client of `meshd`'s local API.

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use mesh::api::{self, routes, Client};
use mesh::config::DEFAULT_API_SOCKET;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "Control the mesh daemon (meshd)")]
struct Cli {
    /// Path of meshd's API socket.
    #[arg(long, global = true, env = "MESH_SOCKET", default_value = DEFAULT_API_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
struct Output {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this mesh's join token (a secret: share it only with hosts you trust).
    Token,
    /// Join the mesh that the host at ADDRESS belongs to.
    Join {
        /// `host:port` of any member's control port (default port 7800).
        address: String,
        /// The join token of that mesh (`meshctl token` on one of its hosts).
        #[arg(long, env = "MESH_TOKEN")]
        token: String,
    },
    /// This host, mesh size, and every peer's state and traffic.
    Status(Output),
    /// The member list.
    Peers(Output),
    /// Create, list and remove networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Connect a container (by PID or network-namespace path) to a network.
    Attach {
        /// A PID or a path to a network namespace (e.g. /run/netns/NAME).
        target: String,
        #[arg(long)]
        network: String,
        /// `ADDR/LEN` inside the network's subnet (default: allocated).
        #[arg(long)]
        ip: Option<String>,
        /// Interface name in the container (default eth-<network>).
        #[arg(long)]
        ifname: Option<String>,
        /// DNS name of the container on the network.
        #[arg(long)]
        name: Option<String>,
        /// The runtime's container id (lets `detach --container-id` work after the container is gone).
        #[arg(long)]
        container_id: Option<String>,
        /// Deployment version label (version-aware DNS answers).
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Disconnect a container from a network.
    Detach {
        /// A PID or a network namespace path (or use --container-id).
        #[arg(required_unless_present = "container_id")]
        target: Option<String>,
        #[arg(long)]
        network: String,
        #[arg(long)]
        container_id: Option<String>,
    },
    /// Containers attached on this host.
    Attachments(Output),
    /// OCI runtime hook: reads the container state JSON on stdin; `start`
    /// (createRuntime/prestart) attaches the container per its `mesh.*`
    /// annotations, `stop` (poststop) detaches it by container id.
    Hook {
        #[arg(value_enum)]
        phase: HookPhase,
    },
    /// Hosts removed for good, and the like.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Who owns how much address space, and what is allocated; reserve and
    /// release addresses without attaching anything.
    Ipam {
        #[command(subcommand)]
        action: Option<IpamCommand>,
        #[command(flatten)]
        out: Output,
    },
    /// The DNS records (`name.<network>`) of the mesh.
    Dns(Output),
    /// Prometheus metrics (text format).
    Metrics,
}

#[derive(Debug, Subcommand)]
enum IpamCommand {
    /// Take an address (the next free one, or --ip) without an attachment.
    Reserve {
        #[arg(long)]
        network: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
    /// Give back a reserved address.
    Release {
        #[arg(long)]
        network: String,
        ip: String,
    },
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Remove a host that is gone for good: its address ranges pass to the
    /// other hosts and its DNS records go. Safe to run on any number of hosts.
    Rm {
        /// Name or peer id (a unique prefix is enough).
        peer: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HookPhase {
    #[value(alias = "createRuntime", alias = "prestart")]
    Start,
    #[value(alias = "poststop")]
    Stop,
}

/// The OCI state a runtime passes to hooks on stdin (the fields we use).
#[derive(Debug, serde::Deserialize)]
struct OciState {
    id: String,
    #[serde(default)]
    pid: Option<i64>,
    #[serde(default)]
    bundle: Option<PathBuf>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The `mesh.*` annotations of a container: from the state, else (runtimes
/// that leave them out at poststop) from the bundle's config.json.
fn hook_annotations(state: &OciState) -> std::collections::BTreeMap<String, String> {
    if state.annotations.contains_key("mesh.network") {
        return state.annotations.clone();
    }
    let from_bundle = state
        .bundle
        .as_ref()
        .and_then(|b| std::fs::read(b.join("config.json")).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| serde_json::from_value(v["annotations"].clone()).ok());
    from_bundle.unwrap_or_else(|| state.annotations.clone())
}

async fn hook(c: &Client, phase: HookPhase) -> Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let state: OciState = serde_json::from_str(&input)
        .map_err(|e| anyhow::anyhow!("hook: stdin is not an OCI state JSON: {e}"))?;
    if state.id.is_empty() {
        bail!("hook: the OCI state has an empty container id");
    }
    let ann = hook_annotations(&state);
    let get = |k: &str| {
        ann.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let Some(network) = get("mesh.network") else {
        bail!(
            "hook: container {} has no mesh.network annotation (the network to attach it to)",
            state.id
        );
    };
    match phase {
        HookPhase::Start => {
            let pid = match state.pid {
                Some(p) if p > 0 => p,
                _ => bail!("hook start: the OCI state of {} has no pid (run this as a createRuntime or prestart hook)", state.id),
            };
            let req = api::AttachRequest {
                target: format!("/proc/{pid}/ns/net"),
                network,
                ip: get("mesh.ip"),
                ifname: get("mesh.ifname"),
                container_id: Some(state.id.clone()),
                name: get("mesh.name"),
                version: get("mesh.version"),
            };
            let a: api::Attachment = c.post(routes::ATTACH, &req).await?;
            println!(
                "attached {} to {} as {} ({})",
                state.id, a.network, a.ip, a.ifname
            );
        }
        HookPhase::Stop => {
            let req = api::DetachRequest {
                target: None,
                network: network.clone(),
                container_id: Some(state.id.clone()),
            };
            match c.post::<_, api::Attachment>(routes::DETACH, &req).await {
                Ok(a) => println!("detached {} from {} ({})", state.id, a.network, a.ip),
                // Already detached (or the network is gone): nothing to undo.
                Err(api::ClientError::Api { status: 404, .. }) => {
                    println!("{} was not attached to {network}", state.id)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network on the whole mesh.
    Create {
        /// 1-11 of a-z, 0-9, '-'.
        id: String,
        /// IPv4 subnet, e.g. 10.40.0.0/24.
        #[arg(long)]
        subnet: String,
        /// IPv6 prefix (default: a ULA /64 derived from the id).
        #[arg(long)]
        subnet6: Option<String>,
        /// A label `key=value` (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Restrict the network to these hosts (names or ids, comma-separated).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        #[command(flatten)]
        out: Output,
    },
    /// List networks.
    List(Output),
    /// Remove a network from the whole mesh.
    Rm {
        id: String,
        /// Remove even if containers are attached (they are detached).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshctl: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Accepts `host:port` or `[v6]:port`; a missing port gets the default.
fn normalize_address(addr: &str) -> Result<String> {
    let addr = addr.trim();
    if addr.is_empty() {
        bail!("empty address: expected host:port");
    }
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(addr.to_string());
    }
    if addr.parse::<std::net::IpAddr>().is_ok() {
        return Ok(
            std::net::SocketAddr::new(addr.parse()?, mesh::config::DEFAULT_CONTROL_PORT)
                .to_string(),
        );
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                bail!("address {addr:?} has no host");
            }
            port.parse::<u16>().map_err(|_| {
                anyhow::anyhow!("address {addr:?}: port {port:?} is not a number from 0 to 65535")
            })?;
            Ok(addr.to_string())
        }
        Some(_) => bail!("address {addr:?}: write IPv6 addresses as [addr]:port"),
        None => Ok(format!("{addr}:{}", mesh::config::DEFAULT_CONTROL_PORT)),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let c = Client::new(&cli.socket);
    match cli.command {
        Command::Token => {
            let t: api::TokenResponse = c.get(routes::TOKEN).await?;
            println!("{}", t.token);
        }
        Command::Join { address, token } => {
            let address = normalize_address(&address)?;
            let r: api::JoinResponse = c
                .post(
                    routes::JOIN,
                    &api::JoinRequest {
                        address: address.clone(),
                        token,
                    },
                )
                .await?;
            println!("joined the mesh through {address} (peer {})", r.peer);
        }
        Command::Status(out) => {
            let s: api::StatusResponse = c.get(routes::STATUS).await?;
            if out.json {
                return print_json(&s);
            }
            println!("host     {} ({})", s.host.name, s.host.id);
            println!(
                "control  {}  data {}",
                s.host.control_address, s.host.data_address
            );
            let up = s
                .peers
                .iter()
                .filter(|p| p.state == api::PeerState::Up)
                .count();
            println!(
                "mesh     {} host(s), {} peer(s) up, {} network(s), {} attachment(s) here",
                s.mesh_size, up, s.networks, s.attachments
            );
            println!("encryption ChaCha20-Poly1305, x25519 session keys");
            print_peers(&s.peers);
            let drops: u64 = s.drops.values().sum();
            if drops > 0 {
                let list: Vec<String> = s
                    .drops
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("dropped  {}", list.join(" "));
            }
        }
        Command::Peers(out) => {
            let p: Vec<api::PeerStatus> = c.get(routes::PEERS).await?;
            if out.json {
                return print_json(&p);
            }
            print_peers(&p);
        }
        Command::Network(NetworkCommand::Create {
            id,
            subnet,
            subnet6,
            labels,
            hosts,
            out,
        }) => {
            let req = api::CreateNetworkRequest {
                id,
                subnet,
                subnet6,
                labels: labels.into_iter().collect(),
                hosts,
            };
            let n: api::Network = c.post(routes::NETWORKS, &req).await?;
            if out.json {
                return print_json(&n);
            }
            println!(
                "created network {} ({} and {}, mtu {}, dns {})",
                n.id, n.subnet, n.subnet6, n.mtu, n.dns
            );
        }
        Command::Network(NetworkCommand::List(out)) => {
            let ns: Vec<api::Network> = c.get(routes::NETWORKS).await?;
            if out.json {
                return print_json(&ns);
            }
            println!(
                "{:<12} {:<18} {:<24} {:<15} {:<6} {:<12} HOSTS",
                "NETWORK", "SUBNET", "SUBNET6", "DNS", "MTU", "BRIDGE"
            );
            for n in ns {
                let hosts = if n.hosts.is_empty() {
                    "all".to_string()
                } else {
                    n.hosts.len().to_string()
                };
                println!(
                    "{:<12} {:<18} {:<24} {:<15} {:<6} {:<12} {}",
                    n.id, n.subnet, n.subnet6, n.dns, n.mtu, n.bridge, hosts
                );
            }
        }
        Command::Network(NetworkCommand::Rm { id, force }) => {
            let path = format!("{}?force={force}", routes::network(&id));
            let n: api::Network = c.delete(&path).await?;
            println!("removed network {}", n.id);
        }
        Command::Attach {
            target,
            network,
            ip,
            ifname,
            name,
            container_id,
            version,
            out,
        } => {
            let req = api::AttachRequest {
                target,
                network,
                ip,
                ifname,
                container_id,
                name,
                version,
            };
            let a: api::Attachment = c.post(routes::ATTACH, &req).await?;
            if out.json {
                return print_json(&a);
            }
            println!("{}", a.ip);
        }
        Command::Detach {
            target,
            network,
            container_id,
        } => {
            let req = api::DetachRequest {
                target,
                network,
                container_id,
            };
            let a: api::Attachment = c.post(routes::DETACH, &req).await?;
            println!("detached {} from {} ({})", a.netns, a.network, a.ip);
        }
        Command::Hook { phase } => return hook(&c, phase).await,
        Command::Peer(PeerCommand::Rm { peer }) => {
            let r: api::RemovePeerResponse = c.delete(&routes::peer(&peer)).await?;
            println!("removed peer {} for good", r.removed);
        }
        Command::Ipam {
            action: Some(IpamCommand::Reserve { network, ip, label }),
            ..
        } => {
            let r: api::Reservation = c
                .post(
                    routes::IPAM_RESERVE,
                    &api::ReserveRequest { network, ip, label },
                )
                .await?;
            println!("{}", r.ip);
        }
        Command::Ipam {
            action: Some(IpamCommand::Release { network, ip }),
            ..
        } => {
            let r: api::Reservation = c
                .post(routes::IPAM_RELEASE, &api::ReleaseRequest { network, ip })
                .await?;
            println!("released {} on {}", r.ip, r.network);
        }
        Command::Ipam { action: None, out } => {
            let nets: Vec<api::IpamNetwork> = c.get(routes::IPAM).await?;
            if out.json {
                return print_json(&nets);
            }
            for n in nets {
                println!("network {} ({})", n.network, n.subnet);
                println!(
                    "  {:<16} {:<16} {:>6} {:>6}  OWNER",
                    "FROM", "TO", "SIZE", "USED"
                );
                for r in &n.ranges {
                    println!(
                        "  {:<16} {:<16} {:>6} {:>6}  {}",
                        r.start, r.end, r.size, r.used, r.owner_name
                    );
                }
                for a in &n.allocations {
                    println!(
                        "  allocated {:<16} on {:<12} {}",
                        a.ip,
                        a.host,
                        a.name.as_deref().unwrap_or("")
                    );
                }
            }
        }
        Command::Metrics => {
            print!("{}", c.get_text(routes::METRICS).await?);
        }
        Command::Dns(out) => {
            let recs: Vec<api::DnsRecord> = c.get(routes::DNS).await?;
            if out.json {
                return print_json(&recs);
            }
            println!(
                "{:<28} {:<16} {:<28} {:<8} {:<12} LIVE",
                "NAME", "A", "AAAA", "VERSION", "HOST"
            );
            for r in recs {
                println!(
                    "{:<28} {:<16} {:<28} {:<8} {:<12} {}",
                    r.fqdn,
                    r.ip,
                    r.ip6.as_deref().unwrap_or("-"),
                    r.version.as_deref().unwrap_or("-"),
                    r.host,
                    if r.live { "yes" } else { "no" }
                );
            }
        }
        Command::Attachments(out) => {
            let list: Vec<api::Attachment> = c.get(routes::ATTACHMENTS).await?;
            if out.json {
                return print_json(&list);
            }
            println!(
                "{:<12} {:<18} {:<14} {:<19} NETNS",
                "NETWORK", "ADDRESS", "IFNAME", "MAC"
            );
            for a in list {
                println!(
                    "{:<12} {:<18} {:<14} {:<19} {}",
                    a.network, a.ip, a.ifname, a.mac, a.netns
                );
            }
        }
    }
    Ok(())
}

fn print_peers(peers: &[api::PeerStatus]) {
    if peers.is_empty() {
        println!("no peers (join one with `meshctl join HOST:PORT --token TOKEN`)");
        return;
    }
    println!(
        "{:<14} {:<12} {:<22} {:<11} {:<7} {:>8} {:>8} {:>12} {:>12}",
        "PEER", "NAME", "ADDRESS", "STATE", "PATH", "RTT", "KEY-AGE", "TX", "RX"
    );
    for p in peers {
        let rtt = p
            .rtt_ms
            .map(|r| format!("{r:.2}ms"))
            .unwrap_or_else(|| "-".into());
        let age = p
            .key_age_secs
            .map(|a| format!("{a:.0}s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:<12} {:<22} {:<11} {:<7} {:>8} {:>8} {:>12} {:>12}",
            p.id,
            p.name,
            p.address,
            p.state,
            p.path,
            rtt,
            age,
            format!("{}/{}p", human_bytes(p.tx.bytes), p.tx.packets),
            format!("{}/{}p", human_bytes(p.rx.bytes), p.rx.packets),
        );
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(normalize_address("10.0.0.1:7800").unwrap(), "10.0.0.1:7800");
        assert_eq!(normalize_address("10.0.0.1").unwrap(), "10.0.0.1:7800");
        assert_eq!(normalize_address("host1").unwrap(), "host1:7800");
        assert_eq!(normalize_address("[::1]:9").unwrap(), "[::1]:9");
        assert!(normalize_address("host:99999").is_err());
        assert!(normalize_address("host:abc").is_err());
        assert!(normalize_address("").is_err());
        assert!(normalize_address("::1:7800x").is_err());
    }

    #[test]
    fn cli_parses() {
        Cli::try_parse_from([
            "meshctl",
            "attach",
            "123",
            "--network",
            "a",
            "--ip",
            "10.0.0.2/24",
        ])
        .unwrap();
        assert!(Cli::try_parse_from(["meshctl", "attach", "123"]).is_err());
        Cli::try_parse_from([
            "meshctl",
            "network",
            "create",
            "a",
            "--subnet",
            "10.0.0.0/24",
        ])
        .unwrap();
        Cli::try_parse_from(["meshctl", "hook", "start"]).unwrap();
        Cli::try_parse_from(["meshctl", "--socket", "/x", "hook", "poststop"]).unwrap();
        assert!(Cli::try_parse_from(["meshctl", "hook", "later"]).is_err());
    }

    #[test]
    fn hook_state() {
        let s: OciState = serde_json::from_str(
            r#"{"ociVersion":"1.0.2-dev","id":"x","status":"creating","pid":32372,"bundle":"/b","annotations":{"mesh.network":"blue"}}"#,
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("x", Some(32372)));
        assert_eq!(hook_annotations(&s)["mesh.network"], "blue");
        // poststop: no pid, annotations from the bundle.
        let dir = std::env::temp_dir().join(format!("meshctl-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"mesh.network":"red"}}"#,
        )
        .unwrap();
        let s: OciState = serde_json::from_value(
            serde_json::json!({"id": "x", "status": "stopped", "bundle": dir}),
        )
        .unwrap();
        assert_eq!(s.pid, None);
        assert_eq!(hook_annotations(&s)["mesh.network"], "red");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
