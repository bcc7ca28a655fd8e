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
        /// `ADDR/LEN` inside the network's subnet (required for now).
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
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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
        return Ok(std::net::SocketAddr::new(addr.parse()?, mesh::config::DEFAULT_CONTROL_PORT).to_string());
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                bail!("address {addr:?} has no host");
            }
            port.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("address {addr:?}: port {port:?} is not a number from 0 to 65535"))?;
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
                .post(routes::JOIN, &api::JoinRequest { address: address.clone(), token })
                .await?;
            println!("joined the mesh through {address} (peer {})", r.peer);
        }
        Command::Status(out) => {
            let s: api::StatusResponse = c.get(routes::STATUS).await?;
            if out.json {
                return print_json(&s);
            }
            println!("host     {} ({})", s.host.name, s.host.id);
            println!("control  {}  data {}", s.host.control_address, s.host.data_address);
            let up = s.peers.iter().filter(|p| p.state == api::PeerState::Up).count();
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
        Command::Network(NetworkCommand::Create { id, subnet, out }) => {
            let n: api::Network = c
                .post(routes::NETWORKS, &api::CreateNetworkRequest { id, subnet })
                .await?;
            if out.json {
                return print_json(&n);
            }
            println!("created network {} ({}, mtu {})", n.id, n.subnet, n.mtu);
        }
        Command::Network(NetworkCommand::List(out)) => {
            let ns: Vec<api::Network> = c.get(routes::NETWORKS).await?;
            if out.json {
                return print_json(&ns);
            }
            println!("{:<12} {:<18} {:<6} {:<12} WIRE-ID", "NETWORK", "SUBNET", "MTU", "BRIDGE");
            for n in ns {
                println!("{:<12} {:<18} {:<6} {:<12} {:08x}", n.id, n.subnet, n.mtu, n.bridge, n.wire_id);
            }
        }
        Command::Network(NetworkCommand::Rm { id, force }) => {
            let path = format!("{}?force={force}", routes::network(&id));
            let n: api::Network = c.delete(&path).await?;
            println!("removed network {}", n.id);
        }
        Command::Attach { target, network, ip, ifname, name, container_id, version, out } => {
            let req = api::AttachRequest { target, network, ip, ifname, container_id, name, version };
            let a: api::Attachment = c.post(routes::ATTACH, &req).await?;
            if out.json {
                return print_json(&a);
            }
            println!("{}", a.ip);
        }
        Command::Detach { target, network, container_id } => {
            let req = api::DetachRequest { target, network, container_id };
            let a: api::Attachment = c.post(routes::DETACH, &req).await?;
            println!("detached {} from {} ({})", a.netns, a.network, a.ip);
        }
        Command::Attachments(out) => {
            let list: Vec<api::Attachment> = c.get(routes::ATTACHMENTS).await?;
            if out.json {
                return print_json(&list);
            }
            println!("{:<12} {:<18} {:<14} {:<19} NETNS", "NETWORK", "ADDRESS", "IFNAME", "MAC");
            for a in list {
                println!("{:<12} {:<18} {:<14} {:<19} {}", a.network, a.ip, a.ifname, a.mac, a.netns);
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
        let rtt = p.rtt_ms.map(|r| format!("{r:.2}ms")).unwrap_or_else(|| "-".into());
        let age = p.key_age_secs.map(|a| format!("{a:.0}s")).unwrap_or_else(|| "-".into());
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
        Cli::try_parse_from(["meshctl", "attach", "123", "--network", "a", "--ip", "10.0.0.2/24"]).unwrap();
        assert!(Cli::try_parse_from(["meshctl", "attach", "123"]).is_err());
        Cli::try_parse_from(["meshctl", "network", "create", "a", "--subnet", "10.0.0.0/24"]).unwrap();
    }
}
