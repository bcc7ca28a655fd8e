//! The resolv.conf meshd writes for namespaces made by `ip netns add NAME`:
//! `ip netns exec` bind-mounts `/etc/netns/NAME/resolv.conf` over
//! `/etc/resolv.conf`, so one written there makes the network's names
//! resolve. The host's own resolv.conf is never touched, and a file meshd
//! did not write is never replaced or removed.

use std::path::{Path, PathBuf};

/// Where `ip netns exec` looks for the namespace at `netns_path`, if it is
/// a named one (`/run/netns/NAME`).
fn path_for(root: &Path, netns_path: &str) -> Option<PathBuf> {
    let name = netns_path.strip_prefix("/run/netns/")?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    Some(root.join(name).join("resolv.conf"))
}

fn header(network: &str) -> String {
    format!("# written by meshd for network {network}\n")
}

/// `/etc/netns`, or another root (tests).
#[derive(Debug, Clone)]
pub struct NetnsEtc {
    root: PathBuf,
}

impl Default for NetnsEtc {
    fn default() -> Self {
        NetnsEtc {
            root: PathBuf::from("/etc/netns"),
        }
    }
}

impl NetnsEtc {
    pub fn at(root: impl Into<PathBuf>) -> NetnsEtc {
        NetnsEtc { root: root.into() }
    }

    /// Writes the resolv.conf of a named namespace unless one exists.
    pub fn write(
        &self,
        netns_path: &str,
        network: &str,
        server: std::net::Ipv4Addr,
    ) -> std::io::Result<()> {
        let Some(path) = path_for(&self.root, netns_path) else {
            return Ok(());
        };
        if path.exists() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = format!("{}nameserver {server}\nsearch {network}\n", header(network));
        std::fs::write(&path, text)
    }

    /// Removes the file if meshd wrote it for `network`, and its directory
    /// if that leaves it empty. Returns whether the file was removed.
    pub fn remove(&self, netns_path: &str, network: &str) -> bool {
        let Some(path) = path_for(&self.root, netns_path) else {
            return false;
        };
        let ours = std::fs::read_to_string(&path)
            .map(|t| t.starts_with(&header(network)))
            .unwrap_or(false);
        if !ours || std::fs::remove_file(&path).is_err() {
            return false;
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_for_named_namespaces_and_removed_only_when_ours() {
        let root = std::env::temp_dir().join(format!("mesh-netns-etc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let etc = NetnsEtc::at(&root);
        let dns = std::net::Ipv4Addr::new(10, 0, 0, 254);
        etc.write("/run/netns/c1", "blue", dns).unwrap();
        let text = std::fs::read_to_string(root.join("c1/resolv.conf")).unwrap();
        assert!(text.contains("nameserver 10.0.0.254"), "{text}");
        assert!(text.contains("search blue"), "{text}");
        // A second network does not overwrite, nor remove, the first's file.
        etc.write("/run/netns/c1", "red", dns).unwrap();
        assert!(!etc.remove("/run/netns/c1", "red"));
        assert!(root.join("c1/resolv.conf").exists());
        assert!(etc.remove("/run/netns/c1", "blue"));
        assert!(!root.join("c1").exists(), "the directory goes too");
        // Not a named namespace: nothing written.
        etc.write("/proc/1/ns/net", "blue", dns).unwrap();
        etc.write("/run/netns/../x", "blue", dns).unwrap();
        assert!(!root.exists() || std::fs::read_dir(&root).unwrap().next().is_none());
        // A file meshd did not write stays.
        std::fs::create_dir_all(root.join("c2")).unwrap();
        std::fs::write(root.join("c2/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        assert!(!etc.remove("/run/netns/c2", "blue"));
        assert!(root.join("c2/resolv.conf").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
