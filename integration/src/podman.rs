//! podman (CNI backend) with the `mesh` plugin for lab tests: storage, run
//! root, CNI config dir and containers.conf of the lab's own, so nothing of
//! a system podman is touched; one CNI network `mesh-h<N>` per lab host
//! (same mesh network, that host's meshd socket). Needs podman, runc (crun
//! fails on this kind of host's cgroup layout) and a static busybox.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{run, static_busybox, which, Lab};

/// The image [`Podman::new`] imports.
pub const IMAGE: &str = "localhost/mesh-busybox:test";

pub struct Podman {
    dir: PathBuf,
    conf: PathBuf,
}

/// Why podman cannot run here, if it cannot.
pub fn cannot_run() -> Option<String> {
    if !crate::is_root() {
        return Some("needs root".into());
    }
    if which("podman").is_none() || which("runc").is_none() || static_busybox().is_none() {
        return Some(
            "podman, runc or busybox not installed (apt-get install podman busybox-static)".into(),
        );
    }
    None
}

/// The CNI network of lab host `i` (0-based).
pub fn network_of(i: usize) -> String {
    format!("mesh-h{}", i + 1)
}

impl Podman {
    /// Sets podman up under the lab's directory with one CNI network per
    /// lab host for mesh network `network`, and imports [`IMAGE`].
    pub fn new(lab: &Lab, network: &str) -> Result<Podman> {
        let dir = lab.dir.join("podman");
        let netdir = dir.join("cni");
        for d in ["storage", "run", "tmp", "cni"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        if !lab.bin("mesh").is_file() {
            bail!("build the CNI plugin first: cargo build --workspace --bins");
        }
        let plugin_dir = lab.bin("mesh").parent().context("bin dir")?.to_path_buf();
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{}"]
network_config_dir = "{}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#,
                plugin_dir.display(),
                netdir.display(),
            ),
        )?;
        std::fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )?;
        for (i, h) in lab.hosts.iter().enumerate() {
            let name = network_of(i);
            let list = json!({
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [{"type": "mesh", "network": network, "socket": h.socket, "capabilities": {"ips": true}}]
            });
            std::fs::write(
                netdir.join(format!("{name}.conflist")),
                serde_json::to_vec_pretty(&list)?,
            )?;
        }
        let podman = Podman { dir, conf };
        let tar = busybox_rootfs_tar(&podman.dir)?;
        podman.run(&["import", tar.to_str().context("path is not UTF-8")?, IMAGE])?;
        Ok(podman)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs podman; an error carries its output.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        run(&mut self.cmd(args))
    }

    /// Runs podman and returns its trimmed stdout.
    pub fn out(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.run(args)?.stdout)
            .trim()
            .to_string())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Removing the containers runs CNI DEL (the plugin detaches them).
        let _ = self
            .cmd(&["rm", "--all", "--force", "--time", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn busybox_rootfs_tar(dir: &Path) -> Result<PathBuf> {
    let busybox = static_busybox().context("no static busybox")?;
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["proc", "sys", "dev", "tmp", "etc", "run"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(&busybox, bin.join("busybox"))?;
    for applet in ["sh", "ip", "ping", "sleep", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    Ok(tar)
}
