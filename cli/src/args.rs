//! meshctl's command line (clap derive). Every read command takes `--json`.

use clap::{Args, Parser, Subcommand};
use mesh_api::DEFAULT_SOCKET;
use std::path::PathBuf;

mod apply;
mod console;
mod edge;
mod log;
mod observe;
mod traffic;
mod wg;

pub use apply::{ApplyArgs, DeleteFilesArgs, ExportArgs};
pub use console::ConsoleCommand;
pub use edge::{FipCommand, FipPoolCommand};
pub use log::{format_time, parse_since, LogArgs};
pub use observe::{parse_interval, DoctorArgs, TopArgs};
pub use traffic::{parse_duration_ms, parse_percent, PolicyCommand, QosCommand};
pub use wg::WgCommand;

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "Control the mesh daemon (meshd)")]
pub struct Cli {
    /// Path of meshd's API socket.
    #[arg(long, global = true, env = "MESH_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Replace the mesh secret: members learn the new one over their
    /// connections, old tokens stop admitting new hosts, and removed hosts
    /// cannot come back (members that are down now get it when they return).
    Rotate(Output),
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this mesh's join token (a secret: share it only with hosts you
    /// trust); `token rotate` revokes it.
    Token {
        #[command(subcommand)]
        action: Option<TokenCommand>,
        #[command(flatten)]
        out: Output,
    },
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
    /// Versions: this client, the daemon, and every peer's meshd and
    /// protocol range, with the protocol version each link speaks.
    Version(Output),
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
        /// A label `key=value` that service selectors match (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// `bridge` (a veth on the overlay) or `macvlan` (on the host's NIC,
        /// `--parent`; `--ip` is then an address of that network).
        #[arg(long, default_value = "bridge")]
        mode: mesh_api::AttachMode,
        /// The host's NIC for `--mode macvlan`.
        #[arg(long)]
        parent: Option<String>,
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
    /// Prometheus metrics (text format; `--json`: a list of samples).
    Metrics(Output),
    /// Check this host and its peers; one line per problem with what to do
    /// (exit status 1 if there is any).
    Doctor(DoctorArgs),
    /// Live traffic rates per container and per peer, refreshed in place.
    Top(TopArgs),
    /// The audit trail: replicated writes this host admitted (who, when,
    /// channel, key, create/update/delete) and those it refused, with why.
    Log(LogArgs),
    /// Services: a VIP and a DNS name in front of a fleet of targets.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Circuit-style load balancers (services under another name).
    #[command(subcommand)]
    Lb(LbCommand),
    /// Allow rules of `deny` networks (over container labels).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Give this host an address of its own on NET (processes here reach
    /// the containers, containers reach this host).
    Expose {
        network: String,
        #[command(flatten)]
        out: Output,
    },
    /// Take this host's address on NET away again.
    Hide { network: String },
    /// Floating IPs: underlay addresses one live host answers for, in
    /// front of services.
    #[command(subcommand)]
    Fip(FipCommand),
    /// Create or change the objects of YAML files (mesh/v1 kinds and
    /// Kubernetes v1/Service); one line per object; --dry-run changes nothing.
    Apply(ApplyArgs),
    /// Delete the objects of YAML files (those that exist).
    Delete(DeleteFilesArgs),
    /// The mesh's networks, services, policies, QoS, floating-IP pools and
    /// floating IPs as YAML that `meshctl apply` takes.
    Export(ExportArgs),
    /// The read-only web console meshd serves (`console_listen`).
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// WireGuard clients (laptops, phones) on mesh networks through a
    /// gateway host.
    #[command(subcommand)]
    Wg(WgCommand),
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service; prints its VIP (and its IPv6 VIP on a second line).
    Create {
        /// A DNS label: the service answers as NAME.<network>.
        name: String,
        #[arg(long)]
        network: String,
        /// `PORT[:TARGET_PORT][/tcp|/udp]` (repeatable, at least one).
        #[arg(long = "port", required = true)]
        ports: Vec<String>,
        /// `KEY=VALUE`: containers with all these labels are targets (repeatable).
        #[arg(long = "selector")]
        selector: Vec<String>,
        /// rr (default) or wrr.
        #[arg(long)]
        scheduler: Option<String>,
        /// The VIP (default: allocated from the network's subnet).
        #[arg(long)]
        ip: Option<String>,
        /// Health check interval of TCP targets, in milliseconds (default 1000).
        #[arg(long)]
        health_interval_ms: Option<u64>,
        #[command(flatten)]
        out: Output,
    },
    /// Add an explicit target (or change its weight).
    Add(TargetArgs),
    /// Remove an explicit target.
    Remove(TargetArgs),
    /// List services; with --details every target.
    List(ListArgs),
    /// Delete a service.
    Delete(DeleteArgs),
}

#[derive(Debug, Subcommand)]
pub enum LbCommand {
    /// `lb create NAME VIP:PORT --network NET [--scheduler wrr]`.
    Create {
        name: String,
        /// The VIP and port, e.g. 10.40.0.235:80.
        vip_port: String,
        #[arg(long)]
        network: String,
        /// rr (default) or wrr.
        #[arg(long)]
        scheduler: Option<String>,
        /// tcp (default) or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[command(flatten)]
        out: Output,
    },
    /// `lb add NAME ADDR:PORT [--weight N]`.
    Add(TargetArgs),
    /// `lb remove NAME ADDR:PORT`.
    Remove(TargetArgs),
    /// `lb list [--details]`.
    List(ListArgs),
    /// `lb delete NAME`.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    pub name: String,
    /// `ADDR[:PORT]` (default port: each service port's target port).
    pub addr: String,
    #[arg(long)]
    pub weight: Option<u32>,
    /// Needed only if the name exists on several networks.
    #[arg(long)]
    pub network: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Every target with its host, weight, health and connection count.
    #[arg(long)]
    pub details: bool,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub name: String,
    /// Needed only if the name exists on several networks.
    #[arg(long)]
    pub network: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
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
pub enum PeerCommand {
    /// Remove a host that is gone for good: its address ranges pass to the
    /// other hosts and its DNS records go. Safe to run on any number of hosts.
    Rm {
        /// Name or peer id (a unique prefix is enough).
        peer: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HookPhase {
    #[value(alias = "createRuntime", alias = "prestart")]
    Start,
    #[value(alias = "poststop")]
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
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
        /// `open` (default): everything passes; `deny`: only what a policy rule allows.
        #[arg(long)]
        policy: Option<mesh_api::PolicyMode>,
        /// Containers reach outside the mesh through their own host.
        #[arg(long)]
        egress: bool,
        /// Interface MTU of the network (1280-9000); default: what the
        /// smallest known path between the hosts allows.
        #[arg(long)]
        mtu: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// List networks.
    List(Output),
    /// Change a network's settings (any host may).
    Set {
        id: String,
        /// `open` or `deny`.
        #[arg(long)]
        policy: Option<mesh_api::PolicyMode>,
        /// `on` or `off`.
        #[arg(long, value_parser = parse_on_off)]
        egress: Option<bool>,
        /// Interface MTU (1280-9000), or `auto`: what the smallest path allows.
        #[arg(long, value_parser = parse_mtu)]
        mtu: Option<u32>,
        #[command(flatten)]
        out: Output,
    },
    /// Traffic shaping (QoS) of a network's containers.
    #[command(subcommand)]
    Qos(QosCommand),
    /// Remove a network from the whole mesh.
    Rm {
        id: String,
        /// Remove even if containers are attached (they are detached).
        #[arg(long)]
        force: bool,
    },
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{other:?} is neither on nor off")),
    }
}

/// `auto` is 0 on the wire: back to the default.
fn parse_mtu(s: &str) -> Result<u32, String> {
    match s {
        "auto" => Ok(0),
        n => n
            .parse()
            .map_err(|_| format!("{n:?} is neither a number nor auto")),
    }
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

/// Accepts `host:port` or `[v6]:port`; a missing port gets the default
/// control port.
pub fn normalize_address(addr: &str) -> anyhow::Result<String> {
    use anyhow::bail;
    use mesh_api::DEFAULT_CONTROL_PORT;
    let addr = addr.trim();
    if addr.is_empty() {
        bail!("empty address: expected host:port");
    }
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(addr.to_string());
    }
    if let Ok(ip) = addr.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, DEFAULT_CONTROL_PORT).to_string());
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
        None => Ok(format!("{addr}:{DEFAULT_CONTROL_PORT}")),
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
    fn every_read_command_takes_json() {
        for args in [
            &["token"][..],
            &["token", "rotate"],
            &["status"],
            &["peers"],
            &["network", "list"],
            &["attachments"],
            &["ipam"],
            &["dns"],
            &["metrics"],
            &["service", "list"],
            &["lb", "list", "--details"],
            &["policy", "list"],
            &["network", "qos", "show"],
            &["fip", "list"],
            &["fip", "pool", "list"],
            &["expose", "blue"],
            &["fip", "create"],
            &["console", "token"],
            &["wg", "list"],
        ] {
            let mut argv = vec!["meshctl"];
            argv.extend_from_slice(args);
            argv.push("--json");
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            let json = match cli.command {
                Command::Token {
                    action: Some(TokenCommand::Rotate(o)),
                    ..
                }
                | Command::Token { out: o, .. }
                | Command::Status(o)
                | Command::Peers(o)
                | Command::Network(NetworkCommand::List(o))
                | Command::Attachments(o)
                | Command::Ipam { out: o, .. }
                | Command::Dns(o)
                | Command::Metrics(o)
                | Command::Service(ServiceCommand::List(ListArgs { out: o, .. }))
                | Command::Lb(LbCommand::List(ListArgs { out: o, .. }))
                | Command::Policy(PolicyCommand::List { out: o, .. })
                | Command::Network(NetworkCommand::Qos(QosCommand::Show { out: o, .. })) => o.json,
                Command::Fip(FipCommand::List(o))
                | Command::Fip(FipCommand::Pool(FipPoolCommand::List(o)))
                | Command::Fip(FipCommand::Create { out: o, .. })
                | Command::Expose { out: o, .. }
                | Command::Console(ConsoleCommand::Token(o))
                | Command::Wg(WgCommand::List(o)) => o.json,
                other => panic!("{argv:?} parsed as {other:?}"),
            };
            assert!(json, "{argv:?}");
        }
    }

    #[test]
    fn service_and_lb_commands_parse() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "service",
            "create",
            "web",
            "--network",
            "blue",
            "--port",
            "80:8080",
            "--port",
            "53/udp",
            "--selector",
            "app=nginx",
            "--scheduler",
            "wrr",
        ])
        .unwrap();
        match cli.command {
            Command::Service(ServiceCommand::Create {
                ports, selector, ..
            }) => {
                assert_eq!(ports, ["80:8080", "53/udp"]);
                assert_eq!(selector, ["app=nginx"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["meshctl", "service", "create", "web", "--network", "b"]).is_err()
        );
        Cli::try_parse_from([
            "meshctl",
            "service",
            "add",
            "web",
            "10.0.0.2:80",
            "--weight",
            "3",
        ])
        .unwrap();
        Cli::try_parse_from([
            "meshctl",
            "lb",
            "create",
            "demo",
            "10.0.0.235:80",
            "--network",
            "b",
        ])
        .unwrap();
        Cli::try_parse_from(["meshctl", "lb", "remove", "demo", "10.0.0.2:80"]).unwrap();
        Cli::try_parse_from(["meshctl", "lb", "delete", "demo"]).unwrap();
        Cli::try_parse_from([
            "meshctl",
            "attach",
            "1",
            "--network",
            "b",
            "--label",
            "app=x",
        ])
        .unwrap();
    }

    #[test]
    fn network_settings_parse() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "network",
            "create",
            "a",
            "--subnet",
            "10.0.0.0/24",
            "--policy",
            "deny",
            "--egress",
        ])
        .unwrap();
        match cli.command {
            Command::Network(NetworkCommand::Create { policy, egress, .. }) => {
                assert_eq!(policy, Some(mesh_api::PolicyMode::Deny));
                assert!(egress);
            }
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["meshctl", "network", "set", "a", "--egress", "off"]).unwrap();
        match cli.command {
            Command::Network(NetworkCommand::Set { policy, egress, .. }) => {
                assert_eq!((policy, egress), (None, Some(false)));
            }
            other => panic!("{other:?}"),
        }
        for (arg, want) in [("auto", 0), ("1300", 1300)] {
            let cli =
                Cli::try_parse_from(["meshctl", "network", "set", "a", "--mtu", arg]).unwrap();
            match cli.command {
                Command::Network(NetworkCommand::Set { mtu, .. }) => assert_eq!(mtu, Some(want)),
                other => panic!("{other:?}"),
            }
        }
        for bad in [
            &["--policy", "closed"][..],
            &["--egress", "yes"],
            &["--mtu", "big"],
        ] {
            let mut argv = vec!["meshctl", "network", "set", "a"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn qos_and_policy_parse() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "network",
            "qos",
            "set",
            "sandbox",
            "--rate",
            "5000",
            "--ceiling",
            "6000",
            "--delay",
            "50ms",
            "--loss",
            "10%",
        ])
        .unwrap();
        match cli.command {
            Command::Network(NetworkCommand::Qos(QosCommand::Set {
                rate,
                ceiling,
                delay,
                loss,
                ..
            })) => {
                assert_eq!((rate, ceiling), (Some(5000), Some(6000)));
                assert_eq!((delay, loss), (Some(50.0), Some(10.0)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_duration_ms("1.5s").unwrap(), 1500.0);
        assert_eq!(parse_duration_ms("200us").unwrap(), 0.2);
        for bad in ["-5ms", "fast", "", "NaN"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?}");
        }
        assert!(parse_percent("101").is_err());
        assert!(
            Cli::try_parse_from(["meshctl", "network", "qos", "set", "x", "--rate", "-1"]).is_err()
        );
        Cli::try_parse_from([
            "meshctl", "policy", "add", "blue", "--from", "app=web", "--to", "app=db", "--port",
            "5432/tcp", "--name", "web-db",
        ])
        .unwrap();
        assert!(
            Cli::try_parse_from(["meshctl", "policy", "add", "blue", "--from", "any"]).is_err()
        );
        Cli::try_parse_from(["meshctl", "policy", "rm", "blue", "web-db"]).unwrap();
    }

    #[test]
    fn edge_commands_parse() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "fip",
            "associate",
            "198.18.0.200",
            "web",
            "--port",
            "8080",
        ])
        .unwrap();
        match cli.command {
            Command::Fip(FipCommand::Associate {
                fip, service, port, ..
            }) => {
                assert_eq!(
                    (fip.as_str(), service.as_str(), port),
                    ("198.18.0.200", "web", Some(8080))
                );
            }
            other => panic!("{other:?}"),
        }
        Cli::try_parse_from(["meshctl", "fip", "pool", "add", "198.18.0.192/26"]).unwrap();
        Cli::try_parse_from(["meshctl", "fip", "pool", "rm", "198.18.0.192/26"]).unwrap();
        Cli::try_parse_from(["meshctl", "fip", "create", "198.18.0.200"]).unwrap();
        Cli::try_parse_from(["meshctl", "fip", "release", "198.18.0.200", "--force"]).unwrap();
        Cli::try_parse_from(["meshctl", "fip", "dissociate", "198.18.0.200", "web"]).unwrap();
        Cli::try_parse_from(["meshctl", "hide", "blue"]).unwrap();
        assert!(Cli::try_parse_from(["meshctl", "fip", "associate", "198.18.0.200"]).is_err());
    }

    #[test]
    fn labels_are_key_value() {
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
