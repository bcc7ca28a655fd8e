//! podman (CNI backend) with the `mesh` plugin, on two lab hosts: one CNI
//! network configuration per host's meshd socket. Root only; skipped when
//! podman, runc or busybox is not installed (`apt-get install podman
//! busybox-static`; keep runc: crun fails on this host's cgroup layout).
//! podman runs with storage, run root, CNI config dir and containers.conf
//! of the lab's own, so nothing of a system podman is touched.

use integration::{is_root, static_busybox, unique_prefix, wait_for, which, Lab};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Podman {
    dir: PathBuf,
    conf: PathBuf,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
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

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("running podman");
        if !out.status.success() {
            panic!(
                "podman {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        out
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

fn busybox_rootfs_tar(dir: &Path, busybox: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc", "run"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "ip", "ping", "sleep", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    tar
}

#[test]
fn podman_containers_on_two_hosts_talk() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let (Some(_), Some(_), Some(busybox)) = (which("podman"), which("runc"), static_busybox())
    else {
        eprintln!("skipping: podman, runc or busybox not installed (apt-get install podman busybox-static)");
        return;
    };
    let mut lab = Lab::new(&unique_prefix("pod"), 2).expect("lab");
    lab.start_mesh().expect("mesh up");
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.9.0/24"],
    )
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        let l = lab.meshctl(1, &["network", "list"])?;
        anyhow::ensure!(l.contains("blue"), "network not on host 2 yet");
        Ok(())
    })
    .unwrap();

    let dir = lab.dir.join("podman");
    let netdir = dir.join("cni");
    for d in ["storage", "run", "tmp", "cni"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let plugin_dir = lab.bin("mesh").parent().unwrap().to_path_buf();
    assert!(
        lab.bin("mesh").is_file(),
        "build the plugin: cargo build --workspace --bins"
    );
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
    )
    .unwrap();
    std::fs::write(
        dir.join("registries.conf"),
        "unqualified-search-registries = []\n",
    )
    .unwrap();
    // One CNI network per lab host: same mesh network, that host's meshd.
    for (i, h) in lab.hosts.iter().enumerate() {
        let name = format!("mesh-h{}", i + 1);
        let list = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [{"type": "mesh", "network": "blue", "socket": h.socket, "capabilities": {"ips": true}}]
        });
        std::fs::write(
            netdir.join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
    }
    let podman = Podman {
        dir: dir.clone(),
        conf,
    };

    let tar = busybox_rootfs_tar(&dir, &busybox);
    podman.run(&[
        "import",
        tar.to_str().unwrap(),
        "localhost/mesh-busybox:test",
    ]);
    let nets = podman.run(&["network", "ls", "--format", "{{.Name}}"]);
    let nets = String::from_utf8_lossy(&nets.stdout);
    assert!(
        nets.contains("mesh-h1") && nets.contains("mesh-h2"),
        "podman networks: {nets}"
    );

    let names: Vec<String> = (1..=2).map(|i| format!("{}-c{i}", lab.prefix)).collect();
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let net = format!("mesh-h{}", i + 1);
        let ip = format!("198.19.9.{}", i + 1);
        podman.run(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &net,
            "--ip",
            &ip,
            "--cap-add",
            "NET_RAW",
            "localhost/mesh-busybox:test",
            "sleep",
            "300",
        ]);
    }
    eprintln!("two podman runs: {:?}", start.elapsed());

    // Each is attached on its own host, under podman's container id.
    for (i, name) in names.iter().enumerate() {
        let id =
            String::from_utf8_lossy(&podman.run(&["inspect", "--format", "{{.Id}}", name]).stdout)
                .trim()
                .to_string();
        assert!(
            lab.attached_ids(i).contains(&id),
            "{name} ({id}) not attached on host {}",
            i + 1
        );
    }
    let addr = String::from_utf8_lossy(
        &podman
            .run(&["exec", &names[0], "ip", "-4", "addr", "show", "eth0"])
            .stdout,
    )
    .into_owned();
    assert!(addr.contains("198.19.9.1/24"), "{addr}");

    wait_for(Duration::from_secs(10), || {
        let o = podman
            .cmd(&[
                "exec",
                &names[0],
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "198.19.9.2",
            ])
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "ping failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        Ok(())
    })
    .expect("podman container on h1 -> container on h2 over the mesh");
    let o = podman.run(&[
        "exec",
        &names[1],
        "ping",
        "-c",
        "3",
        "-W",
        "1",
        "198.19.9.1",
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 packets received"));

    // Removing the containers runs CNI DEL: detached.
    for name in &names {
        podman.run(&["rm", "--force", "--time", "0", name]);
    }
    assert!(lab.attached_ids(0).is_empty() && lab.attached_ids(1).is_empty());
}
