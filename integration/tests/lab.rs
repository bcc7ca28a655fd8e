//! End-to-end tests on the namespace lab (root only; CI runs as root).
//! Every test builds its own lab with a unique prefix; `Lab`'s Drop removes
//! it even when an assertion fails.

use anyhow::Result;
use integration::{is_root, test_lab, unique_prefix, wait_for, Lab};
use mesh_api::{AttachRequest, Attachment, ErrorKind, JoinRequest, PeerState};
use std::process::Stdio;
use std::time::Duration;

const BLUE: &str = "198.19.1.0/24";

/// Three hosts, network `blue`, one container per host at .1/.2/.3.
fn three_host_blue(tag: &str) -> Option<(Lab, Vec<String>, Vec<Attachment>)> {
    let mut lab = test_lab(tag, 3)?;
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", "blue", "--subnet", BLUE])
        .expect("network create");
    let mut cs = Vec::new();
    let mut atts = Vec::new();
    for i in 0..3 {
        let ns = lab.add_container(&format!("c{}", i + 1)).unwrap();
        // The network was created on host 1: the others learn it by gossip.
        let a = wait_for(Duration::from_secs(10), || {
            lab.attach(i, &ns, "blue", &format!("198.19.1.{}/24", i + 1))
        })
        .expect("attach");
        cs.push(ns);
        atts.push(a);
    }
    Some((lab, cs, atts))
}

#[test]
fn containers_on_three_hosts_talk_at_layer_2() {
    let Some((mut lab, cs, atts)) = three_host_blue("l2") else {
        return;
    };
    lab.wait_ping(&cs[0], "198.19.1.2", Duration::from_secs(10))
        .unwrap();
    lab.wait_ping(&cs[0], "198.19.1.3", Duration::from_secs(10))
        .unwrap();
    assert!(lab.ping(&cs[1], "198.19.1.3", 3), "h2 -> h3 container ping");

    // ARP resolved across hosts: c1's neighbour entry for c2 is c2's MAC.
    let neigh = lab
        .exec_ok(&cs[0], &["ip", "neigh", "show", "198.19.1.2"])
        .unwrap();
    let mac2 = atts[1].mac.as_str();
    assert!(
        neigh.contains(mac2),
        "neighbour table {neigh:?} lacks {mac2}"
    );

    // TCP across hosts.
    // Listening before the client starts (iperf3 -J exits 0 on a refusal).
    let server = lab.iperf_server(&cs[2], 5201).unwrap();
    let out = wait_for(Duration::from_secs(10), || {
        let o = lab
            .exec(&cs[0], &["iperf3", "-c", "198.19.1.3", "-t", "2", "-J"])
            .output()?;
        anyhow::ensure!(o.status.success(), "iperf3 client failed");
        Ok(o)
    })
    .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        bytes > 100_000,
        "TCP moved only {bytes} bytes: {}\nstatus h1: {}",
        String::from_utf8_lossy(&out.stdout),
        lab.meshctl(0, &["status"]).unwrap_or_default()
    );
    lab.stop_helper(server).unwrap();

    // A broadcast reaches every other container on the network.
    for ns in &cs[1..] {
        lab.exec_ok(
            ns,
            &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"],
        )
        .unwrap();
    }
    let out = lab
        .exec(
            &cs[0],
            &[
                "ping",
                "-n",
                "-b",
                "-c",
                "3",
                "-i",
                "0.3",
                "-W",
                "1",
                "198.19.1.255",
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("from 198.19.1.2"),
        "no broadcast reply from c2: {text}"
    );
    assert!(
        text.contains("from 198.19.1.3"),
        "no broadcast reply from c3: {text}"
    );

    // Status shows the peers up, keyed, and traffic counted.
    let s = lab.status(0).unwrap();
    assert_eq!(s.mesh_size, 3);
    for p in &s.peers {
        assert_eq!(p.state, PeerState::Up);
        assert!(p.key_generation.is_some());
        assert!(p.tx.packets > 0, "{p:?}");
        assert!(p.rx.packets > 0, "{p:?}");
    }
    let metrics = lab.meshctl(0, &["metrics"]).unwrap();
    assert!(metrics.contains("mesh_peer_up{peer=\"h2\""), "{metrics}");
    assert!(
        metrics.contains("mesh_dataplane_dropped_datagrams_total{reason="),
        "{metrics}"
    );
    // The same samples as JSON: h2's gauge is 1 (up).
    let samples: Vec<Sample> = lab.meshctl_json(0, &["metrics"]).unwrap();
    let up = samples
        .iter()
        .find(|m| {
            m.name == "mesh_peer_up" && m.labels.get("peer").map(String::as_str) == Some("h2")
        })
        .unwrap_or_else(|| panic!("no mesh_peer_up for h2 in {samples:?}"));
    assert_eq!(up.value, Some(1.0));
    // And the token as JSON is the token.
    let token: mesh_api::TokenResponse = lab.meshctl_json(0, &["token"]).unwrap();
    assert_eq!(token.token, lab.meshctl(0, &["token"]).unwrap().trim());
}

/// Bytes of a capture file (pcap) taken with tcpdump in namespace `ns`
/// while `ping -p PATTERN` runs from `cs[0]` to 198.19.1.2.
fn capture_while_pinging(
    lab: &mut Lab,
    ns: &str,
    iface: &str,
    cs: &[String],
    pattern: &str,
) -> Vec<u8> {
    let file = lab.dir.join(format!("cap-{ns}.pcap"));
    let pid = lab
        .spawn_helper({
            let mut c = lab.exec(
                ns,
                &[
                    "tcpdump",
                    "-i",
                    iface,
                    "-U",
                    "-n",
                    "-s",
                    "0",
                    "-w",
                    file.to_str().unwrap(),
                ],
            );
            c.stdout(Stdio::null()).stderr(Stdio::null());
            c
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = lab
        .exec(
            &cs[0],
            &[
                "ping",
                "-n",
                "-c",
                "5",
                "-i",
                "0.2",
                "-p",
                pattern,
                "-s",
                "200",
                "198.19.1.2",
            ],
        )
        .output();
    std::thread::sleep(Duration::from_millis(300));
    lab.stop_helper(pid).unwrap();
    std::fs::read(&file).unwrap_or_default()
}

/// One sample of `meshctl metrics --json`.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    /// `null` for NaN.
    value: Option<f64>,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn underlay_never_carries_plaintext() {
    let Some((mut lab, cs, _)) = three_host_blue("pt") else {
        return;
    };
    lab.wait_ping(&cs[0], "198.19.1.2", Duration::from_secs(10))
        .unwrap();
    let pattern = "deadbeefcafef00d5a5a0123456789ab";
    let needle = hex(pattern);
    // Positive control: the pattern is visible inside the receiving container.
    let inside = capture_while_pinging(&mut lab, &cs[1], "eth-blue", &cs, pattern);
    assert!(
        contains(&inside, &needle),
        "control capture lacks the payload ({} bytes)",
        inside.len()
    );
    // The underlay bridge sees only sealed datagrams.
    let ul = lab.underlay.clone();
    let wire = capture_while_pinging(&mut lab, &ul, "br0", &cs, pattern);
    assert!(
        wire.len() > 5 * 200,
        "underlay capture is too small ({} bytes)",
        wire.len()
    );
    assert!(
        !contains(&wire, &needle),
        "plaintext payload seen on the underlay"
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn wrong_token_cannot_join_and_reaches_nobody() {
    let Some(mut lab) = test_lab("tok", 3) else {
        return;
    };
    lab.start_daemon(0).unwrap();
    lab.start_daemon(1).unwrap();
    lab.start_daemon(2).unwrap();
    let token = lab.meshctl(0, &["token"]).unwrap().trim().to_string();
    let seed = lab.hosts[0].control_address();
    lab.meshctl(1, &["join", &seed, "--token", &token]).unwrap();
    // Host 3 offers the token of its own one-host mesh: well-formed, wrong.
    let wrong = lab.meshctl(2, &["token"]).unwrap().trim().to_string();
    assert_ne!(wrong, token);
    let err = lab
        .meshctl(2, &["join", &seed, "--token", &wrong])
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("token") || err.to_lowercase().contains("secret"),
        "unclear error: {err}"
    );
    let err = lab
        .meshctl(2, &["join", &seed, "--token", "not-a-token"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid token"), "unclear error: {err}");

    lab.meshctl(0, &["network", "create", "blue", "--subnet", BLUE])
        .unwrap();
    lab.meshctl(2, &["network", "create", "blue", "--subnet", BLUE])
        .unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c3 = lab.add_container("c3").unwrap();
    lab.attach(0, &c1, "blue", "198.19.1.1/24").unwrap();
    lab.attach(2, &c3, "blue", "198.19.1.3/24").unwrap();
    assert!(
        !lab.ping(&c3, "198.19.1.1", 3),
        "a host with a wrong token reached the mesh"
    );
    for i in 0..2 {
        let s = lab.status(i).unwrap();
        let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
        assert!(
            !names.contains(&"h3"),
            "host {i} lists the intruder: {names:?}"
        );
    }
}

#[test]
fn killed_daemon_restarts_with_same_identity_and_restores_traffic() {
    let Some((mut lab, cs, _)) = three_host_blue("kill") else {
        return;
    };
    lab.wait_ping(&cs[0], "198.19.1.2", Duration::from_secs(10))
        .unwrap();
    let id_before = lab.status(1).unwrap().host.id;
    lab.stop_daemon(1, nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    assert!(
        !lab.ping(&cs[0], "198.19.1.2", 2),
        "traffic flowed with the daemon dead"
    );
    lab.start_daemon(1).unwrap();
    let s = lab.status(1).unwrap();
    assert_eq!(s.host.id, id_before, "identity changed across restart");
    // The container's interface survived; traffic resumes once keys are new.
    lab.wait_ping(&cs[0], "198.19.1.2", Duration::from_secs(30))
        .unwrap();
    lab.wait_ping(&cs[1], "198.19.1.3", Duration::from_secs(30))
        .unwrap();
    let atts = lab.attachments(1);
    assert_eq!(atts.len(), 1, "attachment not re-adopted: {atts:?}");
}

#[test]
fn networks_are_isolated() {
    let Some(mut lab) = test_lab("iso", 2) else {
        return;
    };
    lab.start_mesh().unwrap();
    // Networks may not overlap (each host routes both), so each container
    // gets an on-link route to the other network's subnet: only the
    // segments' isolation keeps them apart.
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.3.0/24"],
    )
    .unwrap();
    let overlap = lab
        .meshctl(
            0,
            &["network", "create", "red", "--subnet", "198.19.3.0/24"],
        )
        .unwrap_err();
    assert!(
        format!("{overlap:#}").contains("overlaps network"),
        "{overlap:#}"
    );
    lab.meshctl(
        0,
        &["network", "create", "red", "--subnet", "198.19.4.0/24"],
    )
    .unwrap();
    let b1 = lab.add_container("b1").unwrap();
    let b2 = lab.add_container("b2").unwrap();
    let r2 = lab.add_container("r2").unwrap();
    lab.attach(0, &b1, "blue", "198.19.3.1/24").unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.attach(1, &b2, "blue", "198.19.3.2/24")
    })
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.attach(1, &r2, "red", "198.19.4.3/24")
    })
    .unwrap();
    for (ns, other, dev) in [
        (&b1, "198.19.4.0/24", "eth-blue"),
        (&r2, "198.19.3.0/24", "eth-red"),
    ] {
        lab.exec_ok(ns, &["ip", "route", "add", other, "dev", dev])
            .unwrap();
    }
    lab.wait_ping(&b1, "198.19.3.2", Duration::from_secs(10))
        .unwrap();
    assert!(!lab.ping(&b1, "198.19.4.3", 3), "blue reached red");
    assert!(!lab.ping(&r2, "198.19.3.1", 3), "red reached blue");
}

#[test]
fn bad_input_gets_clear_errors_and_leaves_the_daemon_intact() -> Result<()> {
    let Some(mut lab) = test_lab("bad", 1) else {
        return Ok(());
    };
    lab.start_daemon(0)?;
    lab.meshctl(0, &["network", "create", "blue", "--subnet", BLUE])?;
    let c = lab.add_container("c1")?;
    let path = format!("/run/netns/{c}");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "attach",
                "999999999",
                "--network",
                "blue",
                "--ip",
                "198.19.1.5/24",
            ],
            "no process",
        ),
        (
            vec![
                "attach",
                &path,
                "--network",
                "nope",
                "--ip",
                "198.19.1.5/24",
            ],
            "does not exist",
        ),
        (
            vec!["attach", &path, "--network", "blue", "--ip", "10.1.1.1/24"],
            "outside",
        ),
        (
            vec![
                "attach",
                &path,
                "--network",
                "blue",
                "--ip",
                "198.19.1.254/24",
            ],
            "reserved",
        ),
        (
            vec!["attach", &path, "--network", "blue", "--name", "bad name!"],
            "DNS label",
        ),
        (
            vec![
                "attach",
                "/etc/hostname",
                "--network",
                "blue",
                "--ip",
                "198.19.1.5/24",
            ],
            "not a network namespace",
        ),
        (
            vec!["network", "create", "Bad_Id", "--subnet", BLUE],
            "lowercase",
        ),
        (
            vec!["network", "create", "green", "--subnet", "198.19.9.1/24"],
            "host bits",
        ),
        (
            vec!["network", "create", "blue", "--subnet", BLUE],
            "already exists",
        ),
        (
            vec!["join", "198.18.0.99:7800", "--token", "garbage"],
            "invalid token",
        ),
    ];
    for (args, want) in cases {
        let err = lab
            .meshctl(0, &args)
            .expect_err(&format!("{args:?} should fail"));
        assert!(
            err.to_string().contains(want),
            "{args:?}: {err} (wanted {want:?})"
        );
    }
    lab.attach(0, &c, "blue", "198.19.1.5/24")?;
    let c2 = lab.add_container("c2")?;
    let err = lab
        .attach(0, &c2, "blue", "198.19.1.5/24")
        .unwrap_err()
        .to_string();
    assert!(err.contains("already in use"), "{err}");
    // The refused attach left nothing behind in c2.
    let links = lab.exec_ok(&c2, &["ip", "-o", "link"])?;
    assert_eq!(links.lines().count(), 1, "c2 has leftovers: {links}");
    // An unreachable peer is an error, not a hang or a crash.
    let token = lab.meshctl(0, &["token"])?.trim().to_string();
    let err = lab
        .meshctl(0, &["join", "198.18.0.99:7800", "--token", &token])
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    // Removal is refused while in use.
    let err = lab
        .meshctl(0, &["network", "rm", "blue"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("attached"), "{err}");
    // Programs tell the cases apart by kind, not by the text above.
    let c3 = lab.add_container("c3")?;
    let path3 = format!("/run/netns/{c3}");
    let attach = |target: &str, network: &str, ip: &str| AttachRequest {
        target: target.into(),
        network: network.into(),
        ip: Some(ip.into()),
        ifname: None,
        container_id: None,
        name: None,
        version: None,
        labels: Default::default(),
        mode: None,
        parent: None,
        origin: mesh_api::Origin::Cli,
    };
    let kind_of = |req: AttachRequest| {
        lab.api(0, |c| async move { c.attach(&req).await })
            .expect_err("the attach should fail")
            .kind()
    };
    assert_eq!(
        kind_of(attach("999999999", "blue", "198.19.1.6/24")),
        Some(ErrorKind::NotFound)
    );
    assert_eq!(
        kind_of(attach(&path3, "nope", "198.19.1.6/24")),
        Some(ErrorKind::NetworkNotFound),
        "an unknown network has a kind of its own"
    );
    assert_eq!(
        kind_of(attach(&path3, "blue", "10.1.1.1/24")),
        Some(ErrorKind::BadRequest)
    );
    assert_eq!(
        kind_of(attach(&path3, "blue", "198.19.1.5/24")),
        Some(ErrorKind::Conflict)
    );
    let join = JoinRequest {
        address: "198.18.0.99:7800".into(),
        token: token.clone(),
    };
    let err = lab
        .api(0, |c| async move { c.join(&join).await })
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Unreachable), "{err}");
    let err = lab
        .api(0, |c| async move { c.remove_network("blue", false).await })
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Conflict), "{err}");
    // Still serving, state intact.
    let s = lab.status(0)?;
    assert_eq!(s.networks, 1);
    assert_eq!(s.attachments, 1);
    lab.meshctl(0, &["detach", &path, "--network", "blue"])?;
    lab.meshctl(0, &["network", "rm", "blue"])?;
    Ok(())
}

#[test]
fn malformed_config_is_reported_with_its_location() {
    if !is_root() {
        return;
    }
    let dir = std::env::temp_dir().join(unique_prefix("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("meshd.toml");
    std::fs::write(&cfg, "name = \"x\"\nlisten = 12\n").unwrap();
    let bin = integration::find_bin_dir().unwrap().join("meshd");
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("meshd.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
