//! Path MTU in the lab (root only): one host's underlay is 1300 bytes.
//! The default network MTU follows the smallest underlay (floored at
//! 1280 for IPv6), TCP between containers on every pair of hosts moves
//! data (MSS clamped to each path), a ping too big for the interface fails
//! locally, one that fits the interface but not the path gets "Frag
//! needed" from the mesh, and smaller ones pass. A network with an
//! explicit `--mtu 1422` over the same path gets "Frag needed" and TCP
//! still works.

use anyhow::{ensure, Result};
use integration::{test_lab, wait_for, Lab};
use std::process::Stdio;
use std::time::Duration;

const SMALL_HOST: usize = 2;
const SMALL_UNDERLAY: u32 = 1300;
/// What the data plane says fits the path to the small host: 1300 less
/// IPv4 + UDP (28), the sealed datagram's overhead (36) and Ethernet (14).
const PATH_IP_MTU: u32 = 1222;

/// `ping -M do -c 1 -s size`; (success, everything it printed).
fn ping_df(lab: &Lab, ns: &str, dst: &str, size: u32) -> (bool, String) {
    ping_mode(lab, ns, dst, size, "do")
}

fn ping_mode(lab: &Lab, ns: &str, dst: &str, size: u32, mode: &str) -> (bool, String) {
    let out = lab
        .exec(
            ns,
            &[
                "ping",
                "-n",
                "-c",
                "1",
                "-W",
                "2",
                "-M",
                mode,
                "-s",
                &size.to_string(),
                dst,
            ],
        )
        .stdin(Stdio::null())
        .output()
        .expect("running ping");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Waits until every host carries network `net` at `mtu`.
fn wait_network_mtu(lab: &Lab, net: &str, mtu: u32) {
    for i in 0..lab.hosts.len() {
        wait_for(Duration::from_secs(20), || {
            let nets: Vec<mesh_api::Network> = lab.meshctl_json(i, &["network", "list"])?;
            let n = nets.iter().find(|n| n.id == net);
            ensure!(
                n.map(|n| n.mtu) == Some(mtu),
                "{net} on host {i}: {:?}",
                n.map(|n| n.mtu)
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// A container per host on `net`; (namespace, address).
fn containers(lab: &mut Lab, net: &str, tag: &str) -> Vec<(String, String)> {
    (0..lab.hosts.len())
        .map(|i| {
            let ns = lab.add_container(&format!("{tag}{}", i + 1)).unwrap();
            let a = lab.attach_netns(i, &ns, net, &[]);
            let mtu = lab
                .exec_ok(&ns, &["cat", &format!("/sys/class/net/{}/mtu", a.ifname)])
                .unwrap();
            println!("{ns}: {} mtu {}", a.ip, mtu.trim());
            (ns, a.ip.split('/').next().unwrap().to_string())
        })
        .collect()
}

/// TCP from every container to every other; prints the rates.
fn tcp_every_pair(lab: &mut Lab, cs: &[(String, String)], base_port: u16) -> Result<()> {
    for (j, (ns, _)) in cs.iter().enumerate() {
        let port = (base_port + j as u16).to_string();
        let mut server = lab.exec(ns, &["iperf3", "-s", "-p", &port]);
        server.stdout(Stdio::null()).stderr(Stdio::null());
        lab.spawn_helper(server)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    for (i, (from, _)) in cs.iter().enumerate() {
        for (j, (_, to)) in cs.iter().enumerate().filter(|(j, _)| *j != i) {
            let gbps = wait_for(Duration::from_secs(10), || {
                lab.iperf_gbps(from, to, base_port + j as u16, 2)
            })?;
            println!("TCP h{} → h{}: {gbps:.2} Gbit/s", i + 1, j + 1);
            ensure!(
                gbps > 0.01,
                "TCP h{} → h{} barely moves: {gbps} Gbit/s",
                i + 1,
                j + 1
            );
        }
    }
    Ok(())
}

#[test]
fn a_small_underlay_makes_no_black_hole() {
    let Some(mut lab) = test_lab("mtu", 3) else {
        return;
    };
    lab.set_underlay_mtu(SMALL_HOST, SMALL_UNDERLAY).unwrap();
    lab.start_mesh().expect("mesh up");

    // Default MTU: overlay_mtu(1300) = 1222 is below IPv6's 1280: floored.
    lab.meshctl(
        0,
        &["network", "create", "auto", "--subnet", "10.78.0.0/24"],
    )
    .expect("network create");
    wait_network_mtu(&lab, "auto", 1280);
    let cs = containers(&mut lab, "auto", "a");
    let (c1, to_small, to_big) = (&cs[0].0, &cs[SMALL_HOST].1, &cs[1].1);
    lab.wait_ping(c1, to_small, Duration::from_secs(10))
        .unwrap();
    tcp_every_pair(&mut lab, &cs, 5301).unwrap();

    // Larger than the interface: the container's own kernel refuses.
    let (ok, out) = ping_df(&lab, c1, to_small, 1300);
    println!("ping -M do -s 1300 (interface 1280): {}", out.trim());
    assert!(!ok && out.contains("message too long"), "{out}");
    // Fits the interface, not the path: the mesh answers Frag needed
    // (from the destination's address) with the path's MTU.
    let (ok, out) = ping_df(&lab, c1, to_small, 1240);
    println!("ping -M do -s 1240 (path {PATH_IP_MTU}): {}", out.trim());
    assert!(!ok, "{out}");
    // The advertised underlays give 1222 at once; the probes find the
    // path within their 8-byte resolution and may report a little less.
    let reported = reported_mtu(&out).unwrap_or_else(|| panic!("no MTU in: {out}"));
    assert!(
        (PATH_IP_MTU - 8..=PATH_IP_MTU).contains(&reported),
        "the mesh reports the path MTU ({PATH_IP_MTU}, probed within 8 bytes): {out}"
    );
    let (ok, out) = ping_df(&lab, c1, to_small, reported - 28);
    assert!(ok, "a ping that fits the path passes: {out}");
    let (ok, out) = ping_df(&lab, c1, to_big, 1280 - 28);
    assert!(ok, "a full-size ping between 1500-byte hosts passes: {out}");

    // An explicit MTU larger than the path: Frag needed, TCP still works.
    lab.meshctl(
        0,
        &[
            "network",
            "create",
            "big",
            "--subnet",
            "10.78.1.0/24",
            "--mtu",
            "1422",
        ],
    )
    .expect("network create --mtu");
    wait_network_mtu(&lab, "big", 1422);
    let cs = containers(&mut lab, "big", "b");
    let (c1, to_small) = (&cs[0].0, &cs[SMALL_HOST].1);
    lab.wait_ping(c1, to_small, Duration::from_secs(10))
        .unwrap();
    let (ok, out) = ping_df(&lab, c1, to_small, 1300);
    println!(
        "ping -M do -s 1300 (interface 1422, path {PATH_IP_MTU}): {}",
        out.trim()
    );
    assert!(!ok && out.contains("Frag needed"), "{out}");
    tcp_every_pair(&mut lab, &cs, 5401).unwrap();
    // Without DF the mesh fragments (both ways: the reply has no DF either).
    let (ok, out) = ping_mode(&lab, c1, to_small, 1300, "dont");
    assert!(ok, "ping -M dont -s 1300 passes in fragments: {out}");

    // Back to the default: every device, container ends included, follows.
    lab.meshctl(0, &["network", "set", "big", "--mtu", "auto"])
        .expect("network set --mtu auto");
    wait_network_mtu(&lab, "big", 1280);
    for (ns, _) in &cs {
        wait_for(Duration::from_secs(10), || {
            let mtu = lab.exec_ok(ns, &["cat", "/sys/class/net/eth-big/mtu"])?;
            ensure!(mtu.trim() == "1280", "{ns}: mtu {}", mtu.trim());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let (ok, out) = ping_df(&lab, c1, to_small, 1300);
    assert!(
        !ok && out.contains("message too long"),
        "now refused locally: {out}"
    );

    // Bad input is a clear error.
    let err = lab
        .meshctl(
            0,
            &[
                "network",
                "create",
                "tiny",
                "--subnet",
                "10.78.2.0/24",
                "--mtu",
                "1000",
            ],
        )
        .unwrap_err();
    assert!(format!("{err:#}").contains("1280"), "{err:#}");
}

/// The MTU in ping's "Frag needed and DF set (mtu = N)".
fn reported_mtu(ping_output: &str) -> Option<u32> {
    let rest = &ping_output[ping_output.find("mtu = ")? + "mtu = ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
