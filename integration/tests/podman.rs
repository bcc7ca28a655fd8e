//! podman (CNI backend) with the `mesh` plugin, on two lab hosts: one CNI
//! network configuration per host's meshd socket. Root only; skipped when
//! podman, runc or busybox is not installed (`apt-get install podman
//! busybox-static`; keep runc: crun fails on this host's cgroup layout).
//! podman runs with storage, run root, CNI config dir and containers.conf
//! of the lab's own (`integration::podman`), so nothing of a system podman
//! is touched.

use integration::podman::{self, Podman, IMAGE};
use integration::{unique_prefix, wait_for, Lab};
use std::time::{Duration, Instant};

#[test]
fn podman_containers_on_two_hosts_talk() {
    if let Some(why) = podman::cannot_run() {
        eprintln!("skipping: {why}");
        return;
    }
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

    let podman = Podman::new(&lab, "blue").expect("podman set up");
    let nets = podman
        .out(&["network", "ls", "--format", "{{.Name}}"])
        .unwrap();
    assert!(
        nets.contains("mesh-h1") && nets.contains("mesh-h2"),
        "podman networks: {nets}"
    );

    let names: Vec<String> = (1..=2).map(|i| format!("{}-c{i}", lab.prefix)).collect();
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let net = podman::network_of(i);
        let ip = format!("198.19.9.{}", i + 1);
        podman
            .run(&[
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
                IMAGE,
                "sleep",
                "300",
            ])
            .unwrap();
    }
    eprintln!("two podman runs: {:?}", start.elapsed());

    // Each is attached on its own host, under podman's container id.
    for (i, name) in names.iter().enumerate() {
        let id = podman
            .out(&["inspect", "--format", "{{.Id}}", name])
            .unwrap();
        assert!(
            lab.attached_ids(i).contains(&id),
            "{name} ({id}) not attached on host {}",
            i + 1
        );
    }
    let addr = podman
        .out(&["exec", &names[0], "ip", "-4", "addr", "show", "eth0"])
        .unwrap();
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
    let o = podman
        .out(&[
            "exec",
            &names[1],
            "ping",
            "-c",
            "3",
            "-W",
            "1",
            "198.19.9.1",
        ])
        .unwrap();
    assert!(o.contains("3 packets received"), "{o}");

    // Removing the containers runs CNI DEL: detached.
    for name in &names {
        podman.run(&["rm", "--force", "--time", "0", name]).unwrap();
    }
    assert!(lab.attached_ids(0).is_empty() && lab.attached_ids(1).is_empty());
}
