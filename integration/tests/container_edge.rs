//! The container edge on the 3-host namespace lab (root): a container is
//! what it was attached as. Each reproduction of issue 26 runs here as
//! written there, from "mallory", a container whose attacker has every
//! capability inside its namespace (more than Docker grants):
//! - it takes web's address (`ip addr` + `arping -U`) and is still not
//!   let into db on a deny network;
//! - it routes db's address on another network through db and does not
//!   reach it;
//! - its router advertisement hands nobody a prefix;
//! - it takes web's MAC, or sprays random MACs, and db still reaches web
//!   every time.
//!
//! And the host side: the service address serves DNS and nothing else
//! after `meshctl expose`, and a service's rules and an egress network's
//! route are in place when `meshctl attach` returns. Every drop shows in `mesh_port_dropped_frames`.

use integration::frames::{self, parse_mac};
use integration::{dns_query, test_mesh, wait_for, Lab};
use mesh_api::Attachment;
use std::net::IpAddr;
use std::time::Duration;

const DENY: &str = "pol";
const OPEN: &str = "opn";
const EGRESS: &str = "egr";
const OUTSIDE: &str = "198.18.0.100";

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

fn wait_drops(lab: &Lab, i: usize, container: &str, reason: &str, above: u64) -> u64 {
    wait_for(Duration::from_secs(5), || {
        let n = lab.port_drops(i, container, Some(reason));
        if n > above {
            Ok(n)
        } else {
            anyhow::bail!("host {i}: {n} {reason} drops at {container}, want more than {above}")
        }
    })
    .unwrap()
}

struct Container {
    ns: String,
    deny: Attachment,
    open: Option<Attachment>,
}

fn container(lab: &mut Lab, host: usize, name: &str, label: Option<&str>, open: bool) -> Container {
    let ns = lab.add_container(name).unwrap();
    let mut args = vec!["--name", name];
    if let Some(l) = label {
        args.extend(["--label", l]);
    }
    let deny = lab.attach_netns(host, &ns, DENY, &args);
    let open = open.then(|| lab.attach_netns(host, &ns, OPEN, &args));
    Container { ns, deny, open }
}

#[test]
fn a_container_is_what_it_was_attached_as() {
    let Some(mut lab) = test_mesh("cedge", 3) else {
        return;
    };
    if integration::which("busybox").is_none() {
        eprintln!("skipping: needs busybox");
        return;
    }
    let out = lab.add_outside(100).unwrap();
    for args in [
        vec![
            "network",
            "create",
            DENY,
            "--subnet",
            "10.93.0.0/24",
            "--policy",
            "deny",
        ],
        vec!["network", "create", OPEN, "--subnet", "10.94.0.0/24"],
        vec![
            "network",
            "create",
            EGRESS,
            "--subnet",
            "10.95.0.0/24",
            "--egress",
        ],
        vec![
            "policy", "add", DENY, "--from", "app=web", "--to", "app=db", "--port", "5432/tcp",
        ],
    ] {
        lab.meshctl(0, &args).unwrap();
    }
    let web = container(&mut lab, 0, "web", Some("app=web"), true);
    let db = container(&mut lab, 1, "db", Some("app=db"), true);
    let mallory = container(&mut lab, 2, "mallory", None, false);
    let near = container(&mut lab, 2, "near", Some("app=other"), false);
    let (web_ip, db_ip, mal_ip) = (
        bare(&web.deny.ip),
        bare(&db.deny.ip),
        bare(&mallory.deny.ip),
    );
    let db_open = bare(&db.open.as_ref().unwrap().ip);
    let dev = mallory.deny.ifname.clone();
    lab.serve_who(&db.ns, "db", 5432).unwrap();
    lab.serve_who(&db.ns, "db", 22).unwrap();
    lab.wait_ask(&web.ns, &db_ip, 5432).unwrap();
    assert!(
        lab.ask(&mallory.ns, &db_ip, 5432).is_none(),
        "no rule lets mallory in"
    );

    // ---- 1. IP takeover: web's address, announced, opens nothing.
    for cmd in [
        vec!["ip", "addr", "flush", "dev", &dev],
        vec!["ip", "addr", "add", &format!("{web_ip}/24"), "dev", &dev],
    ] {
        lab.exec_ok(&mallory.ns, &cmd).unwrap();
    }
    let _ = lab.exec_ok(
        &mallory.ns,
        &["busybox", "arping", "-U", "-c", "2", "-I", &dev, &web_ip],
    );
    let try_db = |lab: &Lab| {
        for _ in 0..2 {
            assert!(
                lab.ask(&mallory.ns, &db_ip, 5432).is_none(),
                "mallory got into db with web's address"
            );
        }
    };
    try_db(&lab);
    wait_drops(&lab, 2, &mal_ip, "arp", 0);
    // Past ARP: db's MAC written in by hand, so IP packets go out.
    lab.exec_ok(
        &mallory.ns,
        &[
            "ip",
            "neigh",
            "replace",
            &db_ip,
            "lladdr",
            &db.deny.mac,
            "dev",
            &dev,
        ],
    )
    .unwrap();
    try_db(&lab);
    wait_drops(&lab, 2, &mal_ip, "ip", 0);
    assert!(lab.ask(&web.ns, &db_ip, 5432).is_some(), "web lost db");
    for cmd in [
        vec!["ip", "addr", "flush", "dev", &dev],
        vec!["ip", "addr", "add", &mallory.deny.ip, "dev", &dev],
    ] {
        lab.exec_ok(&mallory.ns, &cmd).unwrap();
    }

    // ---- 2. db's address on the open network, routed through db's deny
    // address: the deny network passes only its rules.
    lab.exec_ok(
        &mallory.ns,
        &[
            "ip",
            "route",
            "add",
            &format!("{db_open}/32"),
            "via",
            &db_ip,
        ],
    )
    .unwrap();
    assert!(
        lab.ask(&web.ns, &db_open, 22).is_some(),
        "db serves 22 on the open network"
    );
    for _ in 0..2 {
        assert!(
            lab.ask(&mallory.ns, &db_open, 22).is_none(),
            "mallory reached db's second address through the deny network"
        );
    }
    wait_drops(&lab, 1, &db_ip, "destination", 0);

    // ---- 3. A router advertisement from a container hands out nothing.
    let mal_mac = parse_mac(&mallory.deny.mac).unwrap();
    let ra = frames::router_advert(mal_mac, "2001:db8:bad::".parse().unwrap());
    lab.send_frames(&mallory.ns, &dev, vec![ra.clone(), ra.clone(), ra])
        .unwrap();
    wait_drops(&lab, 2, &mal_ip, "router", 0);
    std::thread::sleep(Duration::from_secs(1));
    for c in [&near, &web] {
        let addrs = lab.exec_ok(&c.ns, &["ip", "-6", "addr"]).unwrap();
        assert!(
            !addrs.contains("2001:db8:bad"),
            "{} took mallory's prefix: {addrs}",
            c.ns
        );
    }

    // db's replies to web's MAC all reach web (none strays to mallory).
    let web_keeps_db = |lab: &Lab| {
        for i in 0..5 {
            assert!(
                lab.ask(&web.ns, &db_ip, 5432).is_some(),
                "web lost db ({i})"
            );
        }
    };

    // ---- 4. MAC takeover: web keeps reaching db, every time.
    let before = lab.port_drops(2, &mal_ip, Some("mac"));
    lab.exec_ok(
        &mallory.ns,
        &["ip", "link", "set", "dev", &dev, "address", &web.deny.mac],
    )
    .unwrap();
    let _ = lab.exec_ok(
        &mallory.ns,
        &["busybox", "arping", "-U", "-c", "3", "-I", &dev, &mal_ip],
    );
    let _ = lab.ping_replies(&mallory.ns, &db_ip, 3);
    web_keeps_db(&lab);
    wait_drops(&lab, 2, &mal_ip, "mac", before);
    lab.exec_ok(
        &mallory.ns,
        &[
            "ip",
            "link",
            "set",
            "dev",
            &dev,
            "address",
            &mallory.deny.mac,
        ],
    )
    .unwrap();

    // ---- 5. A spray of random source MACs: dropped at the port, so the
    // switches' tables keep what others use.
    let before = lab.port_drops(2, &mal_ip, Some("mac"));
    // In bursts: a veth queues at most `netdev_max_backlog` (1,000) frames.
    for _ in 0..25 {
        let spray = frames::random_mac_spray(200, db_ip.parse().unwrap());
        lab.send_frames(&mallory.ns, &dev, spray).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = wait_drops(&lab, 2, &mal_ip, "mac", before + 4999);
    assert!(after >= before + 5000, "{before} → {after}");
    web_keeps_db(&lab);

    // ---- 6. The service address serves DNS, nothing else, even once the
    // host has a route back (`expose`).
    let svc = "10.94.0.254";
    let h2 = lab.hosts[1].netns.clone();
    let exposed: mesh_api::HostAddress = lab.meshctl_json(1, &["expose", OPEN]).unwrap();
    lab.serve_who(&h2, "host2", 2222).unwrap();
    let (name, _) = lab.wait_ask(&db.ns, &bare(&exposed.ip), 2222).unwrap();
    assert_eq!(name, "host2", "expose opens the host at its own address");
    assert!(
        lab.ask(&db.ns, svc, 2222).is_none(),
        "the service address answered on port 2222"
    );
    let found = dns_query(
        &db.ns,
        svc.parse().unwrap(),
        "web.opn",
        hickory_proto::rr::RecordType::A,
    )
    .unwrap();
    let web_open: IpAddr = bare(&web.open.as_ref().unwrap().ip).parse().unwrap();
    assert_eq!(
        found,
        vec![web_open],
        "DNS still answers at the service address"
    );
    assert!(lab.ping(&db.ns, svc, 1), "the service address answers ping");

    // ---- 7. A service's rules are in a container when its attach returns.
    lab.meshctl(
        0,
        &[
            "service",
            "create",
            "dbsvc",
            "--network",
            OPEN,
            "--port",
            "9000:22",
            "--selector",
            "app=db",
            "--ip",
            "10.94.0.200",
        ],
    )
    .unwrap();
    let (name, _) = lab.wait_ask(&web.ns, "10.94.0.200", 9000).unwrap();
    assert_eq!(name, "db");
    let late = lab.add_container("late").unwrap();
    lab.attach_netns(2, &late, OPEN, &["--name", "late"]);
    assert_eq!(
        lab.ask(&late, "10.94.0.200", 9000)
            .map(|(n, _)| n)
            .as_deref(),
        Some("db"),
        "the first connection to a service after attach returns failed"
    );

    // ---- 8. Egress: the first connection after attach returns goes out.
    lab.serve_who(&out, "outside", 8080).unwrap();
    let h1 = lab.hosts[0].netns.clone();
    lab.wait_ask(&h1, OUTSIDE, 8080).unwrap();
    let eg = lab.add_container("eg").unwrap();
    lab.attach_netns(0, &eg, EGRESS, &["--name", "eg"]);
    let first = lab.ask(&eg, OUTSIDE, 8080);
    assert_eq!(
        first.map(|(n, _)| n).as_deref(),
        Some("outside"),
        "the first connection out after attach failed"
    );
}

/// The cost of port security, measured (not asserted): one run, same
/// machine, the table in place and removed by hand, alternating. Run with
/// `cargo test -p integration --release --test container_edge --
/// --ignored port_security_cost --nocapture`.
#[test]
#[ignore]
fn port_security_cost() {
    let Some(mut lab) = test_mesh("pscost", 2) else {
        return;
    };
    lab.meshctl(0, &["network", "create", OPEN, "--subnet", "10.94.0.0/24"])
        .unwrap();
    let attach = |lab: &mut Lab, host: usize, name: &str| {
        let ns = lab.add_container(name).unwrap();
        let a = lab.attach_netns(host, &ns, OPEN, &["--name", name]);
        (ns, bare(&a.ip))
    };
    let (a, _) = attach(&mut lab, 0, "a");
    let (b, b_ip) = attach(&mut lab, 0, "b");
    let (c, c_ip) = attach(&mut lab, 1, "c");
    for (ns, port) in [(&b, 5201), (&c, 5201)] {
        lab.iperf_server(ns, port).unwrap();
    }
    lab.wait_ping(&a, &c_ip, Duration::from_secs(10)).unwrap();
    let hosts: Vec<String> = lab.hosts.iter().map(|h| h.netns.clone()).collect();
    let saved: Vec<String> = hosts
        .iter()
        .map(|h| {
            lab.exec_ok(h, &["nft", "list", "table", "bridge", "ms_ports"])
                .unwrap()
        })
        .collect();
    let set = |lab: &Lab, on: bool| {
        for (h, table) in hosts.iter().zip(&saved) {
            if on {
                let file = lab.dir.join("ports.nft");
                std::fs::write(&file, table).unwrap();
                lab.exec_ok(h, &["nft", "-f", file.to_str().unwrap()])
                    .unwrap();
            } else {
                lab.exec_ok(h, &["nft", "delete", "table", "bridge", "ms_ports"])
                    .unwrap();
            }
        }
    };
    // Small UDP datagrams as fast as iperf3 sends them: packets per second
    // received, the per-packet measure.
    let pps = |lab: &Lab, dst: &str| -> f64 {
        let out = lab
            .exec_ok(
                &a,
                &[
                    "iperf3", "-c", dst, "-u", "-l", "64", "-b", "0", "-t", "3", "-J",
                ],
            )
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let s = &v["end"]["sum"];
        let got = s["packets"].as_f64().unwrap() - s["lost_packets"].as_f64().unwrap();
        got / s["seconds"].as_f64().unwrap()
    };
    println!("round\ttable\tsame-host kpps\tsame-host Gbit/s\tcross-host kpps\tcross-host Gbit/s");
    for round in 1..=5 {
        for on in [true, false] {
            set(&lab, on);
            let same = pps(&lab, &b_ip) / 1e3;
            let same_tcp = lab.iperf_gbps(&a, &b_ip, 5201, 3).unwrap();
            let cross = pps(&lab, &c_ip) / 1e3;
            let cross_tcp = lab.iperf_gbps(&a, &c_ip, 5201, 3).unwrap();
            println!(
                "{round}\t{}\t{same:.1}\t{same_tcp:.2}\t{cross:.1}\t{cross_tcp:.2}",
                if on { "on" } else { "off" }
            );
        }
    }
    set(&lab, true);
}
