//! Declarative configuration: `meshctl apply -f`, `meshctl delete -f`,
//! `meshctl export` (docs/apply.md).
//!
//! - [`kinds`]: the document types (mesh/v1 kinds, Kubernetes v1/Service),
//! - [`load`]: files and directories into documents, every error kept,
//! - [`desired`]: documents checked and turned into wanted objects,
//! - [`current`]: what the mesh holds (API reads),
//! - [`plan`], [`prune`]: the diff, one line per object, and its API calls,
//! - [`export`]: the mesh as documents.
//!
//! Files are read and checked whole, and the diff computed, before the
//! first call: a file with a problem changes nothing.

pub mod current;
pub mod desired;
pub mod export;
pub mod kinds;
pub mod load;
pub mod plan;
pub mod prune;
#[cfg(test)]
mod tests;

use anyhow::{Context, Result};
use mesh_api::Client;
use std::path::PathBuf;

use crate::args::{ApplyArgs, DeleteFilesArgs, ExportArgs};
use current::Current;
use plan::{Item, Planner, Step, Verb};

fn read(files: &[PathBuf], network: Option<&str>) -> Result<desired::Desired> {
    let docs = load::load(files)?;
    Ok(desired::build(docs, network)?)
}

pub async fn apply(c: &Client, a: ApplyArgs) -> Result<()> {
    let want = read(&a.files, a.network.as_deref())?;
    let cur = Current::fetch(c).await?;
    let items = Planner::new(&cur, &want).apply()?;
    run(c, &items, a.dry_run).await
}

pub async fn delete(c: &Client, a: DeleteFilesArgs) -> Result<()> {
    let want = read(&a.files, a.network.as_deref())?;
    let cur = Current::fetch(c).await?;
    let items = Planner::new(&cur, &want).delete()?;
    run(c, &items, false).await
}

pub async fn export(c: &Client, a: ExportArgs) -> Result<()> {
    let cur = Current::fetch(c).await?;
    let text = export::render(&cur)?;
    match a.output {
        Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Prints each item's line once its calls are done (all of them at once
/// for a dry run), then a summary line.
async fn run(c: &Client, items: &[Item], dry_run: bool) -> Result<()> {
    for it in items {
        if !dry_run {
            execute(c, it).await.with_context(|| it.to_string())?;
        }
        println!("{it}");
    }
    println!("{}", summary(items, dry_run));
    Ok(())
}

/// `apply: 1 created, 0 changed, 2 unchanged` and the like.
pub fn summary(items: &[Item], dry_run: bool) -> String {
    let count = |f: &dyn Fn(&Verb) -> bool| items.iter().filter(|i| f(&i.verb)).count();
    let created = count(&|v| *v == Verb::Create);
    let changed = count(&|v| matches!(v, Verb::Change(_)));
    let unchanged = count(&|v| *v == Verb::Unchanged);
    let deleted = count(&|v| *v == Verb::Delete);
    let absent = count(&|v| *v == Verb::Absent);
    if deleted + absent > 0 {
        return format!("{deleted} deleted, {changed} changed, {absent} absent");
    }
    if dry_run {
        format!(
            "dry run: {created} to create, {changed} to change, {unchanged} unchanged; nothing changed"
        )
    } else {
        format!("{created} created, {changed} changed, {unchanged} unchanged")
    }
}

async fn execute(c: &Client, it: &Item) -> Result<()> {
    // The address a `CreateFip` of this item got.
    let mut fip: Option<String> = None;
    for step in &it.steps {
        match step {
            Step::CreateNetwork(r) => {
                c.create_network(r).await?;
            }
            Step::UpdateNetwork(id, r) => {
                c.update_network(id, r).await?;
            }
            Step::RemoveNetwork(id) => {
                c.remove_network(id, false).await?;
            }
            Step::AddPool(cidr) => {
                c.add_fip_pool(cidr).await?;
            }
            Step::RemovePool(cidr) => {
                c.remove_fip_pool(cidr).await?;
            }
            Step::CreateService(r) => {
                c.create_service(r).await?;
            }
            Step::UpdateService(name, r) => {
                c.update_service(name, r).await?;
            }
            Step::DeleteService { name, network } => {
                c.delete_service(name, Some(network)).await?;
            }
            Step::AddTarget(name, r) => {
                c.add_service_target(name, r).await?;
            }
            Step::RemoveTarget(name, r) => {
                c.remove_service_target(name, r).await?;
            }
            Step::AddPolicy(r) => {
                c.add_policy(r).await?;
            }
            Step::RemovePolicy { network, name } => {
                c.remove_policy(network, name).await?;
            }
            Step::SetQos(r) => {
                c.set_qos(r).await?;
            }
            Step::ResetQos(r) => {
                c.reset_qos(r).await?;
            }
            Step::CreateFip(addr) => {
                let req = mesh_api::CreateFipRequest { addr: addr.clone() };
                fip = Some(current::bare(&c.create_fip(&req).await?.addr).to_string());
            }
            Step::Associate(addr, r) => {
                let addr = addr
                    .clone()
                    .or_else(|| fip.clone())
                    .context("no floating IP to associate")?;
                c.associate_fip(&addr, r).await?;
            }
            Step::Dissociate(addr, r) => {
                c.dissociate_fip(addr, r).await?;
            }
            Step::ReleaseFip(addr) => {
                c.release_fip(addr, true).await?;
            }
        }
    }
    Ok(())
}
