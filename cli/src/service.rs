//! `meshctl service …` and its Circuit-style alias `meshctl lb …`.

use anyhow::Result;
use mesh_api::{Client, CreateServiceRequest, Service, ServiceTargetRequest};

use crate::args::{DeleteArgs, LbCommand, ListArgs, Output, ServiceCommand, TargetArgs};
use crate::print;

pub async fn run(c: &Client, cmd: ServiceCommand) -> Result<()> {
    match cmd {
        ServiceCommand::Create {
            name,
            network,
            ports,
            selector,
            scheduler,
            ip,
            health_interval_ms,
            out,
        } => {
            let req = CreateServiceRequest {
                name,
                network,
                ports,
                selector,
                scheduler,
                ip,
                health_interval_ms,
            };
            created(&c.create_service(&req).await?, out)
        }
        ServiceCommand::Add(t) => add(c, t).await,
        ServiceCommand::Remove(t) => remove(c, t).await,
        ServiceCommand::List(l) => list(c, l).await,
        ServiceCommand::Delete(d) => delete(c, d).await,
    }
}

pub async fn run_lb(c: &Client, cmd: LbCommand) -> Result<()> {
    match cmd {
        LbCommand::Create {
            name,
            vip_port,
            network,
            scheduler,
            protocol,
            out,
        } => {
            // The daemon checks the address; only split VIP and port here.
            let (vip, port) = match vip_port.rsplit_once(':') {
                Some((v, p)) => (v.to_string(), p.to_string()),
                None => anyhow::bail!("{vip_port:?} has no port: expected VIP:PORT"),
            };
            let req = CreateServiceRequest {
                name,
                network,
                ports: vec![format!("{port}/{protocol}")],
                selector: Vec::new(),
                scheduler,
                ip: Some(vip),
                health_interval_ms: None,
            };
            created(&c.create_service(&req).await?, out)
        }
        LbCommand::Add(t) => add(c, t).await,
        LbCommand::Remove(t) => remove(c, t).await,
        LbCommand::List(l) => list(c, l).await,
        LbCommand::Delete(d) => delete(c, d).await,
    }
}

fn created(s: &Service, out: Output) -> Result<()> {
    if out.json {
        return print::json(s);
    }
    println!("{}", s.vip);
    println!("{}", s.vip6);
    Ok(())
}

fn target_req(t: &TargetArgs) -> ServiceTargetRequest {
    ServiceTargetRequest {
        network: t.network.clone(),
        addr: t.addr.clone(),
        weight: t.weight,
    }
}

async fn add(c: &Client, t: TargetArgs) -> Result<()> {
    let s = c.add_service_target(&t.name, &target_req(&t)).await?;
    println!("added {} to service {} ({})", t.addr, s.name, s.network);
    Ok(())
}

async fn remove(c: &Client, t: TargetArgs) -> Result<()> {
    let s = c.remove_service_target(&t.name, &target_req(&t)).await?;
    println!("removed {} from service {} ({})", t.addr, s.name, s.network);
    Ok(())
}

async fn list(c: &Client, l: ListArgs) -> Result<()> {
    let list = c.services().await?;
    if l.out.json {
        return print::json(&list);
    }
    print::services(&list, l.details);
    Ok(())
}

async fn delete(c: &Client, d: DeleteArgs) -> Result<()> {
    let s = c.delete_service(&d.name, d.network.as_deref()).await?;
    println!("deleted service {} ({}, {})", s.name, s.network, s.vip);
    Ok(())
}
