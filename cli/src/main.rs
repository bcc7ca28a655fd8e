//! `meshctl`: the command-line client of `meshd`'s local API.
//!
//! - [`args`]: the command line (in the library, see `lib.rs`),
//! - [`hook`]: the OCI runtime hook,
//! - [`print`]: text tables and JSON output,
//! - [`metrics`]: Prometheus text read into samples for `metrics --json`,
//! - [`doctor`], [`top`]: `meshctl doctor` and `meshctl top`,
//! - [`apply`]: `meshctl apply`, `delete -f` and `export`.

use meshctl::args;
mod hook;
mod metrics;
mod print;

use anyhow::Result;
use args::{Cli, Command, IpamCommand, NetworkCommand, PeerCommand};

mod apply;
mod doctor;
mod edge;
mod log;
mod service;
mod top;
mod traffic;
mod version;
mod wg;
use clap::Parser;
use mesh_api::{
    AttachRequest, Client, CreateNetworkRequest, DetachRequest, JoinRequest, ReleaseRequest,
    ReserveRequest,
};

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

async fn run(cli: Cli) -> Result<()> {
    let c = Client::new(&cli.socket);
    match cli.command {
        Command::Token {
            action: Some(args::TokenCommand::Rotate(out)),
            ..
        } => {
            let t = c.rotate_token().await?;
            if out.json {
                return print::json(&t);
            }
            println!("{}", t.token);
        }
        Command::Token { action: None, out } => {
            let t = c.token().await?;
            if out.json {
                return print::json(&t);
            }
            println!("{}", t.token);
        }
        Command::Join { address, token } => {
            let address = args::normalize_address(&address)?;
            let r = c
                .join(&JoinRequest {
                    address: address.clone(),
                    token,
                })
                .await?;
            println!("joined the mesh through {address} (peer {})", r.peer);
        }
        Command::Status(out) => {
            let s = c.status().await?;
            if out.json {
                return print::json(&s);
            }
            print::status(&s);
        }
        Command::Version(out) => return version::run(&c, out.json).await,
        Command::Peers(out) => {
            let p = c.peers().await?;
            if out.json {
                return print::json(&p);
            }
            print::peers(&p);
        }
        Command::Network(NetworkCommand::Create {
            id,
            subnet,
            subnet6,
            labels,
            hosts,
            policy,
            egress,
            mtu,
            out,
        }) => {
            let req = CreateNetworkRequest {
                id,
                subnet,
                subnet6,
                labels: labels.into_iter().collect(),
                hosts,
                policy,
                egress,
                mtu,
            };
            let n = c.create_network(&req).await?;
            if out.json {
                return print::json(&n);
            }
            println!(
                "created network {} ({} and {}, mtu {}, dns {})",
                n.id, n.subnet, n.subnet6, n.mtu, n.dns
            );
        }
        Command::Network(NetworkCommand::List(out)) => {
            let ns = c.networks().await?;
            if out.json {
                return print::json(&ns);
            }
            print::networks(&ns);
        }
        Command::Network(NetworkCommand::Set {
            id,
            policy,
            egress,
            mtu,
            out,
        }) => {
            if policy.is_none() && egress.is_none() && mtu.is_none() {
                anyhow::bail!("nothing to change: pass --policy, --egress and/or --mtu");
            }
            let req = mesh_api::UpdateNetworkRequest {
                policy,
                egress,
                mtu,
            };
            let n = c.update_network(&id, &req).await?;
            if out.json {
                return print::json(&n);
            }
            println!(
                "network {}: policy {}, egress {}, mtu {}{}",
                n.id,
                n.policy,
                if n.egress { "on" } else { "off" },
                n.mtu,
                if n.mtu_set { "" } else { " (auto)" }
            );
        }
        Command::Network(NetworkCommand::Rm { id, force }) => {
            let n = c.remove_network(&id, force).await?;
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
            labels,
            mode,
            parent,
            out,
        } => {
            let req = AttachRequest {
                mode: Some(mode),
                parent,
                target,
                network,
                ip,
                ifname,
                container_id,
                name,
                version,
                labels: labels.into_iter().collect(),
                origin: mesh_api::Origin::Cli,
            };
            let a = c.attach(&req).await?;
            if out.json {
                return print::json(&a);
            }
            println!("{}", a.ip);
        }
        Command::Detach {
            target,
            network,
            container_id,
        } => {
            let req = DetachRequest {
                target,
                network,
                container_id,
                origin: None,
            };
            let a = c.detach(&req).await?;
            println!("detached {} from {} ({})", a.netns, a.network, a.ip);
        }
        Command::Attachments(out) => {
            let list = c.attachments().await?;
            if out.json {
                return print::json(&list);
            }
            print::attachments(&list);
        }
        Command::Hook { phase } => return hook::run(&c, phase).await,
        Command::Peer(PeerCommand::Rm { peer }) => {
            let r = c.remove_peer(&peer).await?;
            println!("removed peer {} for good", r.removed);
        }
        Command::Ipam {
            action: Some(IpamCommand::Reserve { network, ip, label }),
            ..
        } => {
            let r = c.reserve(&ReserveRequest { network, ip, label }).await?;
            println!("{}", r.ip);
        }
        Command::Ipam {
            action: Some(IpamCommand::Release { network, ip }),
            ..
        } => {
            let r = c.release(&ReleaseRequest { network, ip }).await?;
            println!("released {} on {}", r.ip, r.network);
        }
        Command::Ipam { action: None, out } => {
            let nets = c.ipam().await?;
            if out.json {
                return print::json(&nets);
            }
            print::ipam(&nets);
        }
        Command::Dns(out) => {
            let recs = c.dns().await?;
            if out.json {
                return print::json(&recs);
            }
            print::dns(&recs);
        }
        Command::Metrics(out) => {
            let text = c.metrics().await?;
            if out.json {
                return print::json(&metrics::parse(&text)?);
            }
            print!("{text}");
        }
        Command::Doctor(a) => return doctor::run(&c, a).await,
        Command::Top(a) => return top::run(&c, a).await,
        Command::Log(a) => return log::run(&c, a).await,
        Command::Console(args::ConsoleCommand::Token(out)) => {
            let t = c.console_token().await?;
            if out.json {
                return print::json(&t);
            }
            println!("{}", t.token);
        }
        Command::Service(cmd) => return service::run(&c, cmd).await,
        Command::Lb(cmd) => return service::run_lb(&c, cmd).await,
        Command::Policy(cmd) => return traffic::run_policy(&c, cmd).await,
        Command::Network(NetworkCommand::Qos(cmd)) => return traffic::run_qos(&c, cmd).await,
        Command::Expose { network, out } => {
            let a = c.expose(&network).await?;
            if out.json {
                return print::json(&a);
            }
            println!("{}", a.ip);
        }
        Command::Hide { network } => {
            let a = c.hide(&network).await?;
            if a.gateway {
                println!("hid {network}; {} stays as its gateway", a.ip);
            } else {
                println!("hid {network} ({} removed)", a.ip);
            }
        }
        Command::Fip(cmd) => return edge::run(&c, cmd).await,
        Command::Wg(cmd) => return wg::run(&c, cmd).await,
        Command::Apply(a) => return apply::apply(&c, a).await,
        Command::Delete(a) => return apply::delete(&c, a).await,
        Command::Export(a) => return apply::export(&c, a).await,
    }
    Ok(())
}
