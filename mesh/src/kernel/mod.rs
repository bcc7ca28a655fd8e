//! Programming the kernel: subsystems describe what they want and hand it
//! here; only this module spawns `nft`, `ip`, `tc` or `bridge` (a test
//! says so), and namespaces are entered one way (`mesh_sys::netns`).
//!
//! - [`nft`]: whole nftables scripts, atomically; tables' names, counters;
//! - [`command`]: iproute2, on the host or in a namespace;
//! - [`interfaces`]: the interfaces, addresses, MACs and MTUs here;
//! - [`routes`]: the routes here;
//! - [`changes`]: when the interfaces, addresses or routes here changed.

pub mod changes;
pub mod command;
pub mod interfaces;
pub mod nft;
pub mod routes;

#[cfg(test)]
mod tests {
    /// No module outside `kernel/` spawns the tools that program the
    /// kernel, nor enters a namespace with `nsenter`.
    #[test]
    fn only_kernel_spawns_kernel_tools() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path != root.join("kernel") {
                        dirs.push(path);
                    }
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for tool in ["nft", "ip", "tc", "bridge", "nsenter"] {
                    if text.contains(&format!("Command::new(\"{tool}\")")) {
                        offenders.push(format!("{} spawns {tool}", path.display()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
