//! Partitions between lab hosts, with nftables inside a host's namespace.

use anyhow::{Context, Result};

use crate::Lab;

impl Lab {
    /// Cuts host `i` off from the hosts in `others` (both directions, all
    /// protocols) with nftables inside host `i`'s namespace.
    pub fn partition(&self, i: usize, others: &[usize]) -> Result<()> {
        let ns = &self.hosts[i].netns;
        let addrs: Vec<String> = others
            .iter()
            .map(|o| self.hosts[*o].underlay_ip.to_string())
            .collect();
        let set = addrs.join(", ");
        let rules = format!(
            "table inet meshlab_partition {{\n chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        let file = self.dir.join(format!("partition-{i}.nft"));
        std::fs::write(&file, rules)?;
        self.exec_ok(ns, &["nft", "-f", file.to_str().context("path")?])?;
        Ok(())
    }

    pub fn heal(&self, i: usize) -> Result<()> {
        self.exec_ok(
            &self.hosts[i].netns,
            &["nft", "delete", "table", "inet", "meshlab_partition"],
        )?;
        Ok(())
    }
}
