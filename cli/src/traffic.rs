//! `meshctl policy …` and `meshctl network qos …`.

use anyhow::Result;
use mesh_api::{Client, PolicyAddRequest, PolicyRule, QosEntry, QosResetRequest, QosSetRequest};
use std::collections::BTreeMap;

use crate::args::{PolicyCommand, QosCommand};
use crate::print;

pub async fn run_policy(c: &Client, cmd: PolicyCommand) -> Result<()> {
    match cmd {
        PolicyCommand::Add {
            network,
            from,
            to,
            ports,
            name,
            out,
        } => {
            let req = PolicyAddRequest {
                network,
                name,
                from,
                to,
                ports,
            };
            let r = c.add_policy(&req).await?;
            if out.json {
                return print::json(&r);
            }
            println!("added rule {} to network {}", r.name, r.network);
        }
        PolicyCommand::List { network, out } => {
            let rules: Vec<PolicyRule> = c
                .policies()
                .await?
                .into_iter()
                .filter(|r| network.as_ref().is_none_or(|n| *n == r.network))
                .collect();
            if out.json {
                return print::json(&rules);
            }
            rules_table(&rules);
        }
        PolicyCommand::Rm { network, name } => {
            let r = c.remove_policy(&network, &name).await?;
            println!("removed rule {} from network {}", r.name, r.network);
        }
    }
    Ok(())
}

fn selector(s: &BTreeMap<String, String>) -> String {
    if s.is_empty() {
        return "any".into();
    }
    let v: Vec<String> = s.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.join(",")
}

fn rules_table(rules: &[PolicyRule]) {
    println!(
        "{:<12} {:<16} {:<24} {:<24} PORTS",
        "NETWORK", "NAME", "FROM", "TO"
    );
    for r in rules {
        let ports: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
        let ports = if ports.is_empty() {
            "all".into()
        } else {
            ports.join(",")
        };
        println!(
            "{:<12} {:<16} {:<24} {:<24} {}",
            r.network,
            r.name,
            selector(&r.from),
            selector(&r.to),
            ports
        );
    }
}

pub async fn run_qos(c: &Client, cmd: QosCommand) -> Result<()> {
    match cmd {
        QosCommand::Set {
            network,
            container,
            rate,
            ceiling,
            delay,
            jitter,
            loss,
            out,
        } => {
            let req = QosSetRequest {
                network,
                container,
                rate_kbit: rate,
                ceiling_kbit: ceiling,
                delay_ms: delay,
                jitter_ms: jitter,
                loss_percent: loss,
            };
            let q = c.set_qos(&req).await?;
            if out.json {
                return print::json(&q);
            }
            qos_table(&[q]);
        }
        QosCommand::Reset { network, container } => {
            let removed = c
                .reset_qos(&QosResetRequest {
                    network: network.clone(),
                    container,
                })
                .await?;
            println!(
                "network {network}: {} shaping entr{} removed",
                removed.len(),
                if removed.len() == 1 { "y" } else { "ies" }
            );
        }
        QosCommand::Show { network, out } => {
            let all: Vec<QosEntry> = c
                .qos()
                .await?
                .into_iter()
                .filter(|q| network.as_ref().is_none_or(|n| *n == q.network))
                .collect();
            if out.json {
                return print::json(&all);
            }
            qos_table(&all);
        }
    }
    Ok(())
}

fn qos_table(entries: &[QosEntry]) {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{:<12} {:<16} {:<10} {:<10} {:<10} {:<10} LOSS",
        "NETWORK", "CONTAINER", "RATE", "CEILING", "DELAY", "JITTER"
    );
    for q in entries {
        println!(
            "{:<12} {:<16} {:<10} {:<10} {:<10} {:<10} {}",
            q.network,
            q.container.as_deref().unwrap_or("all"),
            or_dash(q.rate_kbit.map(|r| format!("{r}kbit"))),
            or_dash(q.ceiling_kbit.map(|r| format!("{r}kbit"))),
            or_dash(q.delay_ms.map(|d| format!("{d}ms"))),
            or_dash(q.jitter_ms.map(|d| format!("{d}ms"))),
            or_dash(q.loss_percent.map(|l| format!("{l}%"))),
        );
    }
}
