//! A private dockerd per lab host, for the Docker plugin tests: its own
//! data root, exec root, pidfile and API socket, run inside the host's
//! network namespace with `--iptables=false --ip-forward=false
//! --bridge=none` (as scripts/compose-test.sh runs it), started and stopped
//! by PID. `unshare --mount` gives it a mount namespace of its own (slave
//! to the host's) with an empty tmpfs on `/run` (no system containerd,
//! systemd or plugins in sight; its own roots are in the lab directory),
//! where the host's plugin directory is bind-mounted on
//! `/run/docker/plugins`: each dockerd finds its own host's meshd as plugin
//! `mesh` and runs its own containerd.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{run, static_busybox, terminate, which, Lab};

/// The image every lab dockerd imports: a static busybox, nothing pulled.
pub const IMAGE: &str = "mesh-lab-busybox";

/// Why Docker cannot run here, if it cannot.
pub fn cannot_run() -> Option<String> {
    if !crate::is_root() {
        return Some("needs root".into());
    }
    for bin in [
        "dockerd",
        "docker",
        "containerd",
        "runc",
        "nsenter",
        "unshare",
    ] {
        if which(bin).is_none() {
            return Some(format!(
                "{bin} is not installed (apt-get install docker.io)"
            ));
        }
    }
    if static_busybox().is_none() {
        return Some("no static busybox (apt-get install busybox-static)".into());
    }
    None
}

/// Where host `i`'s meshd serves the plugin (bind-mounted for its dockerd).
pub fn plugin_dir(lab: &Lab, i: usize) -> PathBuf {
    lab.hosts[i].state_dir.join("plugins")
}

/// dockerd's API socket of host `i`.
pub fn docker_socket(lab: &Lab, i: usize) -> PathBuf {
    lab.hosts[i].state_dir.join("docker").join("docker.sock")
}

/// Sets host `i`'s meshd flags for the plugin (before it starts).
pub fn enable_plugin(lab: &mut Lab, i: usize) -> Result<()> {
    let dir = plugin_dir(lab, i);
    std::fs::create_dir_all(&dir)?;
    let sock = docker_socket(lab, i);
    lab.hosts[i].extra_args.extend([
        "--docker-plugin".to_string(),
        "--docker-plugin-socket".to_string(),
        dir.join("mesh.sock").display().to_string(),
        "--docker-host".to_string(),
        sock.display().to_string(),
    ]);
    Ok(())
}

pub struct Dockerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts host `i`'s dockerd and waits until it answers.
    pub fn start(lab: &Lab, i: usize) -> Result<Dockerd> {
        let h = &lab.hosts[i];
        let socket = docker_socket(lab, i);
        let dir = socket
            .parent()
            .context("socket has a directory")?
            .to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let d = dir.display();
        let script = format!(
            "mount -t tmpfs -o mode=755 none /run && mkdir -p /run/docker/plugins && \
             mount --bind {plugins} /run/docker/plugins && \
             exec dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
               --userland-proxy=false --storage-driver vfs --log-level warn \
               --host unix://{d}/docker.sock --exec-root {d}/exec --pidfile {d}/dockerd.pid \
               --data-root {d}/data",
            plugins = plugin_dir(lab, i).display(),
        );
        // nsenter, not `ip netns exec`: that one remounts /sys, and the
        // cgroup mounts dockerd needs with it.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", h.netns))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let mut me = Dockerd {
            dir,
            socket,
            child: Some(child),
        };
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                me.child = None;
                bail!("dockerd exited ({status}):\n{}", me.log_tail(20));
            }
            match me.docker_ok(&["info", "--format", "{{.ID}}"]) {
                Ok(_) => return Ok(me),
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    bail!("dockerd did not come up: {e:#}\n{}", me.log_tail(20))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `docker -H <this dockerd> args…`
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn docker_out(&self, args: &[&str]) -> Result<Output> {
        self.docker(args)
            .output()
            .with_context(|| format!("running docker {args:?}"))
    }

    /// Runs docker; an error carries its stderr.
    pub fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let out = run(&mut self.docker(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `docker network create -d mesh --ipam-driver mesh [--subnet S]
    /// [-o mesh.network=M] NAME`: what an operator types to put a Docker
    /// network on the mesh.
    pub fn create_mesh_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        mesh_network: Option<&str>,
    ) -> Result<String> {
        let option = mesh_network.map(|m| format!("mesh.network={m}"));
        let mut args = vec!["network", "create", "-d", "mesh", "--ipam-driver", "mesh"];
        if let Some(s) = subnet {
            args.extend(["--subnet", s]);
        }
        if let Some(o) = &option {
            args.extend(["-o", o.as_str()]);
        }
        args.push(name);
        self.docker_ok(&args)
    }

    /// Imports [`IMAGE`] from a static busybox (no registry).
    pub fn import_busybox(&self) -> Result<()> {
        let busybox = static_busybox().context("no static busybox")?;
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::copy(&busybox, root.join("bin/busybox"))?;
        for dir in ["etc", "tmp", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let list = run(Command::new(&busybox).arg("--list"))?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
        }
        let tar = self.dir.join("rootfs.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."))?;
        self.docker_ok(&[
            "import",
            "--change",
            "CMD [\"sh\"]",
            tar.to_str().context("path is not UTF-8")?,
            IMAGE,
        ])?;
        Ok(())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker_ok(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker_out(&args);
            }
        }
        if let Some(child) = self.child.take() {
            let _ = terminate(
                child,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(20),
            );
        }
        if std::env::var_os("MESH_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
