//! Rate and ceiling with HTB (`tc` from iproute2), per container
//! interface and in both directions: on the host end of its veth for what
//! goes to the container, and on its own interface, inside its namespace,
//! for what it sends. One class takes all traffic: it is held to `rate`
//! and may borrow up to `ceil` when the link has room, never above.

use anyhow::{Context, Result};
use std::path::Path;

use crate::kernel::command::{self as kernel, Tool};

/// A container interface's shaping (kbit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Htb {
    pub rate_kbit: u64,
    pub ceil_kbit: u64,
}

fn tc(netns: Option<&Path>, args: &[&str]) -> Result<()> {
    kernel::run(netns, Tool::Tc, args)?;
    Ok(())
}

/// Shapes `dev` (in `netns`, or the host's) to `shape`, or removes its
/// shaping (`None`).
pub fn shape(netns: Option<&Path>, dev: &str, shape: Option<Htb>) -> Result<()> {
    let Some(s) = shape else {
        // Nothing installed is fine: the goal is "no shaping".
        let _ = tc(netns, &["qdisc", "del", "dev", dev, "root"]);
        return Ok(());
    };
    tc(
        netns,
        &[
            "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
        ],
    )
    .with_context(|| format!("HTB on {dev}"))?;
    // A burst of ~10 ms at the ceiling keeps the rate steady at low rates.
    let burst = (s.ceil_kbit * 1000 / 8 / 100).max(1600);
    let (rate, ceil) = (
        format!("{}kbit", s.rate_kbit),
        format!("{}kbit", s.ceil_kbit),
    );
    let burst = burst.to_string();
    tc(
        netns,
        &[
            "class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
            "ceil", &ceil, "burst", &burst, "cburst", &burst,
        ],
    )
    .with_context(|| format!("HTB class on {dev}"))
}
