//! Rate and ceiling with HTB (`tc` from iproute2), per container
//! interface and in both directions: on the host end of its veth for what
//! goes to the container, and on its own interface, inside its namespace,
//! for what it sends. One class takes all traffic: it is held to `rate`
//! and may borrow up to `ceil` when the link has room, never above.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// A container interface's shaping (kbit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Htb {
    pub rate_kbit: u64,
    pub ceil_kbit: u64,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .context("running tc (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn tc(netns: Option<&Path>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("tc");
            c
        }
        None => Command::new("tc"),
    }
}

/// Shapes `dev` (in `netns`, or the host's) to `shape`, or removes its
/// shaping (`None`).
pub fn shape(netns: Option<&Path>, dev: &str, shape: Option<Htb>) -> Result<()> {
    let Some(s) = shape else {
        // Nothing installed is fine: the goal is "no shaping".
        let _ = run(tc(netns).args(["qdisc", "del", "dev", dev, "root"]));
        return Ok(());
    };
    run(tc(netns).args([
        "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
    ]))
    .with_context(|| format!("HTB on {dev}"))?;
    // A burst of ~10 ms at the ceiling keeps the rate steady at low rates.
    let burst = (s.ceil_kbit * 1000 / 8 / 100).max(1600);
    run(tc(netns).args([
        "class",
        "replace",
        "dev",
        dev,
        "parent",
        "1:",
        "classid",
        "1:1",
        "htb",
        "rate",
        &format!("{}kbit", s.rate_kbit),
        "ceil",
        &format!("{}kbit", s.ceil_kbit),
        "burst",
        &burst.to_string(),
        "cburst",
        &burst.to_string(),
    ]))
    .with_context(|| format!("HTB class on {dev}"))
}
