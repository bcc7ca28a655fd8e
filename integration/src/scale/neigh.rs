//! Every namespace shares the kernel's neighbour (ARP/ND) table limits:
//! with N hosts on one underlay there are about N² entries, far above the
//! default `gc_thresh3` of 1024, and the kernel starts dropping neighbours
//! ("neighbour table overflow"). The guard raises the limits in the root
//! namespace for the lab's lifetime and puts the old values back on drop.

use anyhow::{Context, Result};
use std::path::PathBuf;

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];

pub struct NeighGuard {
    saved: Vec<(PathBuf, String)>,
}

fn knob(family: &str, n: u8) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/neigh/default/gc_thresh{n}"))
}

/// Limits for `hosts` lab hosts (underlay plus one container each).
pub fn wanted(hosts: usize) -> [u64; 3] {
    let third = (4 * hosts * hosts + 1024) as u64;
    [third / 4, third / 2, third]
}

impl NeighGuard {
    /// Raises (never lowers) the three thresholds of both families.
    pub fn raise(hosts: usize) -> Result<NeighGuard> {
        let mut guard = NeighGuard { saved: Vec::new() };
        for family in FAMILIES {
            for (n, want) in (1..=3).zip(wanted(hosts)) {
                let path = knob(family, n);
                let old = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let current: u64 = old.trim().parse().unwrap_or(0);
                if current >= want {
                    continue;
                }
                std::fs::write(&path, want.to_string())
                    .with_context(|| format!("writing {}", path.display()))?;
                guard.saved.push((path, old));
            }
        }
        Ok(guard)
    }
}

impl Drop for NeighGuard {
    fn drop(&mut self) {
        // gc_thresh1 <= 2 <= 3 is not enforced, so the order does not matter.
        for (path, old) in self.saved.drain(..).rev() {
            if let Err(e) = std::fs::write(&path, old.trim()) {
                eprintln!("cannot restore {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_grow_with_the_square_of_the_hosts() {
        let [a, b, c] = super::wanted(50);
        assert!(a < b && b < c);
        assert!(c >= 50 * 50 * 2, "room for underlay and overlay neighbours");
    }
}
