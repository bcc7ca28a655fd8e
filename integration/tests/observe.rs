//! `meshctl doctor`, the per-attachment metrics and `meshctl top` on a
//! two-host lab: a healthy mesh has no problem (exit 0); a peer whose
//! meshd is gone is one problem line with what to do (exit non-zero).

use integration::{test_mesh, wait_for};
use mesh_api::{CheckStatus, DoctorReport};
use std::time::Duration;

#[test]
fn doctor_metrics_and_top() {
    let Some(mut lab) = test_mesh("obs", 2) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.8.0/24"],
    )
    .expect("network create");
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    lab.attach_netns(0, &c1, "blue", &["--ip", "198.19.8.1/24", "--name", "web"]);
    lab.attach_netns(1, &c2, "blue", &["--ip", "198.19.8.2/24"]);
    lab.wait_ping(&c1, "198.19.8.2", Duration::from_secs(15))
        .expect("ping");

    // Healthy: every check ok or skipped, exit status 0.
    let r: DoctorReport = wait_for(Duration::from_secs(10), || lab.meshctl_json(0, &["doctor"]))
        .unwrap_or_else(|e| panic!("doctor on a healthy mesh: {e:#}"));
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "tun",
        "vnet_hdr",
        "nftables",
        "ip_forward",
        "br_netfilter",
        "underlay_mtu",
    ] {
        assert!(names.contains(&n), "no {n} in {names:?}");
    }
    let u = r.checks.iter().find(|c| c.name == "underlay_mtu").unwrap();
    assert_eq!(u.status, CheckStatus::Ok, "{u:?}");
    assert!(u.detail.contains("1500"), "{u:?}");
    assert_eq!(r.peers.len(), 1);
    let control = &r.peers[0].checks[0];
    assert_eq!(
        (control.name.as_str(), control.status),
        ("control", CheckStatus::Ok)
    );
    let version = r.peers[0]
        .checks
        .iter()
        .find(|c| c.name == "version")
        .unwrap();
    assert_eq!(
        version.status,
        CheckStatus::Ok,
        "peers advertise their version"
    );
    println!("{}", lab.meshctl(0, &["doctor"]).unwrap());

    // Per-attachment metrics, labelled, counting what the ping moved.
    let text = lab.meshctl(0, &["metrics"]).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("mesh_attachment_packets_total{")
                && l.contains("container=\"web\"")
                && l.contains("direction=\"tx\"")
        })
        .unwrap_or_else(|| panic!("no attachment packets for web in {text}"));
    assert!(
        line.contains("network=\"blue\"") && line.contains("host=\""),
        "{line}"
    );
    let sent: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(sent >= 1.0, "{line}");
    assert!(text.contains("mesh_peer_path_relayed{"), "{text}");

    // top --once --json: rates over the interval, while c1 pings.
    let pinger = lab
        .spawn_helper(lab.exec(&c1, &["ping", "-q", "-i", "0.05", "198.19.8.2"]))
        .unwrap();
    let top: serde_json::Value = lab
        .meshctl_json(0, &["top", "--once", "--interval", "1"])
        .expect("top --once --json");
    lab.stop_helper(pinger).unwrap();
    let web = top["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container"] == "web")
        .unwrap_or_else(|| panic!("no web in {top}"));
    assert!(web["tx"]["packets"].as_f64().unwrap() > 5.0, "{top}");
    assert_eq!(top["peers"][0]["state"], "up", "{top}");

    // h2's meshd gone: a problem line naming it (the control connection
    // down, once the liveness timeout passed), and a non-zero exit.
    lab.stop_daemon(1, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let h2 = lab.hosts[1].name.clone();
    let (code, r) = wait_for(Duration::from_secs(15), || {
        let out = std::process::Command::new(lab.bin("meshctl"))
            .arg("--socket")
            .arg(&lab.hosts[0].socket)
            .args(["doctor", "--json"])
            .output()?;
        let r: DoctorReport = serde_json::from_slice(&out.stdout)?;
        let down = r.problems().iter().any(|(peer, c)| {
            *peer == Some(h2.as_str())
                && c.name == "control"
                && c.status == CheckStatus::Fail
                && c.fix.as_deref().unwrap_or("").contains("meshd runs on")
        });
        anyhow::ensure!(
            down,
            "control to h2 not reported down yet: {:?}",
            r.problems()
        );
        Ok((out.status.code(), r))
    })
    .unwrap();
    assert_eq!(code, Some(1), "{r:?}");
    let text = lab.meshctl(0, &["doctor"]).unwrap_err().to_string();
    assert!(text.contains("problem(s) found"), "{text}");
}
