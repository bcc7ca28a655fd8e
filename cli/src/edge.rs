//! `meshctl fip …`.

use anyhow::Result;
use mesh_api::{Client, CreateFipRequest, FipAssociateRequest};

use crate::args::{FipCommand, FipPoolCommand};
use crate::print;

pub async fn run(c: &Client, cmd: FipCommand) -> Result<()> {
    match cmd {
        FipCommand::Pool(FipPoolCommand::Add { cidr }) => {
            let p = c.add_fip_pool(&cidr).await?;
            if p.hosts.is_empty() {
                // Added all the same: hosts on that LAN may join later.
                println!(
                    "added pool {}, but no host's underlay subnet contains it: nobody answers for its addresses until one does",
                    p.cidr
                );
            } else {
                println!(
                    "added pool {} ({} host(s) may hold its addresses)",
                    p.cidr,
                    p.hosts.len()
                );
            }
        }
        FipCommand::Pool(FipPoolCommand::Rm { cidr }) => {
            let p = c.remove_fip_pool(&cidr).await?;
            println!("removed pool {}", p.cidr);
        }
        FipCommand::Pool(FipPoolCommand::List(out)) => {
            let list = c.fip_pools().await?;
            if out.json {
                return print::json(&list);
            }
            print::fip_pools(&list);
        }
        FipCommand::Create { addr, out } => {
            let f = c.create_fip(&CreateFipRequest { addr }).await?;
            if out.json {
                return print::json(&f);
            }
            println!("{}", f.addr);
        }
        FipCommand::Associate {
            fip,
            service,
            port,
            network,
        } => {
            let req = FipAssociateRequest {
                service,
                network,
                port,
            };
            let f = c.associate_fip(&fip, &req).await?;
            if let Some(b) = f.bindings.iter().find(|b| b.service == req.service) {
                println!(
                    "{}:{} -> service {} ({})",
                    f.addr, b.public_port, b.service, b.network
                );
            }
        }
        FipCommand::Dissociate {
            fip,
            service,
            network,
        } => {
            let req = FipAssociateRequest {
                service: service.clone(),
                network,
                port: None,
            };
            let f = c.dissociate_fip(&fip, &req).await?;
            println!("{} no longer fronts service {service}", f.addr);
        }
        FipCommand::List(out) => {
            let list = c.fips().await?;
            if out.json {
                return print::json(&list);
            }
            print::fips(&list);
        }
        FipCommand::Release { fip, force } => {
            let f = c.release_fip(&fip, force).await?;
            println!("released {}", f.addr);
        }
    }
    Ok(())
}
