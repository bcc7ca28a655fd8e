//! `meshctl hook` as OCI runtime hooks under runc (root only; skipped when
//! runc or busybox is not installed: `apt-get install runc busybox-static`).
//! runc runs in the root namespace and gives the container a new network
//! namespace; the createRuntime hook attaches it through lab host 1's meshd
//! socket, the poststop hook detaches it.

use integration::{is_root, static_busybox, unique_prefix, wait_for, which, Lab};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A busybox rootfs: /bin/busybox plus the applets the test uses.
fn busybox_rootfs(rootfs: &Path, busybox: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "ip", "ping", "sleep", "cat", "ifconfig", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// What `runc state` prints (the fields we use).
#[derive(Debug, serde::Deserialize)]
struct RuncState {
    status: String,
    #[serde(default)]
    pid: u32,
}

/// `runc` with a state root of the lab's own; deletes the container on
/// drop (runc ends the container's processes, which we started).
struct Runc {
    root: PathBuf,
    id: String,
}

impl Runc {
    fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root);
        c
    }

    fn state(&self) -> Option<RuncState> {
        let out = self.cmd().args(["state", &self.id]).output().ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn runc_hooks_attach_and_detach() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let (Some(_), Some(busybox)) = (which("runc"), static_busybox()) else {
        eprintln!("skipping: runc or busybox not installed (apt-get install runc busybox-static)");
        return;
    };
    let mut lab = Lab::new(&unique_prefix("oci"), 2).expect("lab");
    lab.start_mesh().expect("mesh up");
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.8.0/24"],
    )
    .unwrap();
    // A container on host 2 for the runc container to reach.
    let w2 = lab.add_container("w2").unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.attach(1, &w2, "blue", "198.19.8.2/24")
    })
    .unwrap();

    let bundle = lab.dir.join("bundle");
    busybox_rootfs(&bundle.join("rootfs"), &busybox);
    let meshctl = lab.bin("meshctl");
    let socket = lab.hosts[0].socket.display().to_string();
    let hook = |phase: &str| json!({"path": meshctl, "args": ["meshctl", "--socket", socket, "hook", phase], "timeout": 20});
    let caps = [
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
    ];
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sleep", "300"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "web",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
        ],
        "hooks": {"createRuntime": [hook("start")], "poststop": [hook("stop")]},
        "annotations": {
            "mesh.network": "blue",
            "mesh.ip": "198.19.8.1/24",
            "mesh.ifname": "eth0",
            "mesh.name": "web",
            "mesh.version": "v1"
        },
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"]
        }
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();

    let runc = Runc {
        root: lab.dir.join("runc"),
        id: format!("{}-r1", lab.prefix),
    };
    let start = Instant::now();
    // The container inherits runc's stdio: files, not pipes (a pipe would
    // keep us waiting for EOF until the container exits).
    let errlog = lab.dir.join("runc-run.log");
    let status = runc
        .cmd()
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(&runc.id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&errlog).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "runc run: {}",
        std::fs::read_to_string(&errlog).unwrap_or_default()
    );
    eprintln!("runc run with the start hook: {:?}", start.elapsed());
    let st = runc.state().expect("runc state");
    assert_eq!(st.status, "running", "{st:?}");

    // The hook attached it, under the runtime's container id.
    let atts = lab.attachments(0);
    let a = atts
        .iter()
        .find(|a| a.container_id.as_deref() == Some(runc.id.as_str()))
        .unwrap_or_else(|| panic!("no attachment for {}: {atts:?}", runc.id));
    assert_eq!(a.ip, "198.19.8.1/24");
    assert_eq!(a.ifname, "eth0");
    assert_eq!(a.name.as_deref(), Some("web"));
    assert_eq!(a.version.as_deref(), Some("v1"));
    assert_eq!(a.netns, format!("/proc/{}/ns/net", st.pid));

    // Inside the container: eth0 with the address; it reaches host 2's container.
    let exec = |args: &[&str]| {
        runc.cmd()
            .arg("exec")
            .arg(&runc.id)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = exec(&["ip", "addr", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("198.19.8.1/24"),
        "{o:?}"
    );
    wait_for(Duration::from_secs(10), || {
        let o = exec(&["ping", "-c", "1", "-W", "1", "198.19.8.2"]);
        anyhow::ensure!(
            o.status.success(),
            "ping: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        Ok(())
    })
    .expect("runc container -> w2 over the mesh");
    assert!(lab.ping(&w2, "198.19.8.1", 3), "w2 -> runc container");

    // Stop: kill, delete: the poststop hook detaches by container id.
    let o = runc
        .cmd()
        .args(["kill", &runc.id, "KILL"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    wait_for(Duration::from_secs(10), || {
        let s = runc.state().map(|s| s.status).unwrap_or_default();
        anyhow::ensure!(s == "stopped", "still {s}");
        Ok(())
    })
    .unwrap();
    let o = runc.cmd().args(["delete", &runc.id]).output().unwrap();
    assert!(o.status.success(), "runc delete: {o:?}");
    assert!(
        !lab.attached_ids(0).contains(&runc.id),
        "still attached after poststop"
    );
    assert!(!lab.ping(&w2, "198.19.8.1", 1));

    // The stop hook again (a runtime retrying): already gone is success.
    let mut c = Command::new(&meshctl);
    c.args(["--socket", &socket, "hook", "stop"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        json!({"ociVersion": "1.0.2", "id": runc.id, "status": "stopped", "annotations": {"mesh.network": "blue"}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    // A start hook without the network annotation fails with a clear error.
    let mut child = Command::new(&meshctl)
        .args(["--socket", &socket, "hook", "start"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"id":"x","pid":1,"annotations":{}}"#,
    )
    .unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mesh.network"),
        "{o:?}"
    );
}
