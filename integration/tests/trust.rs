//! What a member host, an operator's slip or a replicated write can no
//! longer do (issue 27), on one namespace lab (root): hosts h0-h2 run
//! meshd with `--fip-pool 198.18.0.240/28` (h0 also `--max-networks 4`),
//! h3 is a raw member (a gossip node joined with the token, writing
//! records past the API), and an outside machine sits on the LAN.
//!
//! - networks that would capture the hosts' LAN or routes, global or
//!   oversized IPv6 prefixes, overlaps and more than the cap are refused at
//!   the API; a host with a route the network overlaps refuses it locally
//!   and says so; the raw member's capturing and overlapping definitions
//!   land nowhere;
//! - the raw member deleting a container's endpoint and label records
//!   does not open the container on a deny network, and its host writes
//!   the record again;
//! - floating IPs are answered only inside the hosts' `fip_pools`, and
//!   never the hosts' gateway.

use integration::member::RawMember;
use integration::{is_root, unique_prefix, wait_for, Lab};
use mesh_api::{DnsRecord, Fip, StatusResponse};
use mesh_model::records::{EndpointRecord, NetworkDef, ENDPOINTS_CHANNEL, NETWORKS_CHANNEL};
use mesh_model::services::{LabelRecord, LABELS_CHANNEL};
use std::net::Ipv4Addr;
use std::time::Duration;

const PERMITTED: &str = "198.18.0.240/28";
const OTHER_POOL: &str = "198.18.0.224/28";
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn refused(lab: &Lab, args: &[&str], want: &str) {
    let e = lab.meshctl(0, args).unwrap_err().to_string();
    assert!(e.contains(want), "{args:?}: {e}");
}

fn status(lab: &Lab, i: usize) -> StatusResponse {
    lab.status(i).unwrap()
}

/// Waits until host `i` refuses `network` for `reason`.
fn wait_refused(lab: &Lab, i: usize, network: &str, reason: &str) {
    wait_for(Duration::from_secs(15), || {
        match status(lab, i).refused_networks.get(network) {
            Some(r) if r.reason == reason => Ok(()),
            other => anyhow::bail!("{network} on h{i}: {other:?}"),
        }
    })
    .unwrap();
}

fn lab() -> Option<(Lab, RawMember, String)> {
    if !is_root() || integration::which("busybox").is_none() {
        eprintln!("skipping: needs root and busybox");
        return None;
    }
    let mut lab = Lab::new(&unique_prefix("trust"), 4).expect("building the lab");
    for i in 0..3 {
        lab.hosts[i].extra_args = vec!["--fip-pool".into(), PERMITTED.into()];
    }
    lab.hosts[0]
        .extra_args
        .extend(["--max-networks".to_string(), "4".to_string()]);
    for i in 0..3 {
        // As on a host that does not route, whatever this machine does.
        let ns = lab.hosts[i].netns.clone();
        lab.exec_ok(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=0"])
            .unwrap();
        lab.start_daemon(i).unwrap();
    }
    let token = lab.meshctl(0, &["token"]).unwrap();
    let seed = lab.hosts[0].control_address();
    for i in 1..3 {
        lab.meshctl(i, &["join", &seed, "--token", token.trim()])
            .unwrap();
    }
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    let h3 = &lab.hosts[3];
    let member = RawMember::join(
        &h3.netns,
        "mallory",
        format!("{}:7800", h3.underlay_ip).parse().unwrap(),
        &seed,
        &token,
    )
    .expect("the raw member joins");
    let out = lab.add_outside(100).unwrap();
    Some((lab, member, out))
}

#[test]
fn members_slips_and_strangers_cannot_capture_hosts_or_remove_protection() {
    let Some((mut lab, member, out)) = lab() else {
        return;
    };

    // ---- networks that would capture the hosts' own traffic ----
    let cases: [(&[&str], &str); 4] = [
        (
            &["lan", "--subnet", "198.18.0.0/24"],
            "overlaps the underlay subnet 198.18.0.0/24",
        ),
        (
            &["g", "--subnet", "10.70.1.0/24", "--subnet6", "2000::/3"],
            "/48 to a /64",
        ),
        (
            &[
                "g",
                "--subnet",
                "10.70.1.0/24",
                "--subnet6",
                "2001:db8:7::/64",
            ],
            "global",
        ),
        (&["lo", "--subnet", "127.0.0.0/8"], "loopback"),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = ["network", "create"].iter().chain(args).copied().collect();
        refused(&lab, &args, want);
    }
    lab.meshctl(
        0,
        &[
            "network",
            "create",
            "deny",
            "--subnet",
            "10.71.0.0/24",
            "--policy",
            "deny",
        ],
    )
    .unwrap();
    lab.meshctl(
        0,
        &["network", "create", "open", "--subnet", "10.72.0.0/24"],
    )
    .unwrap();
    refused(
        &lab,
        &["network", "create", "over", "--subnet", "10.71.0.128/25"],
        "overlaps network \"deny\"",
    );

    // A route only h1 has: h0 creates the network, h1 refuses it locally.
    lab.exec_ok(
        &lab.hosts[1].netns,
        &[
            "ip",
            "route",
            "add",
            "10.73.0.0/16",
            "via",
            "198.18.0.1",
            "dev",
            "ul0",
        ],
    )
    .unwrap();
    lab.meshctl(
        0,
        &["network", "create", "side", "--subnet", "10.73.4.0/24"],
    )
    .unwrap();
    wait_refused(&lab, 1, "side", "overlaps_route");
    assert!(!status(&lab, 0).refused_networks.contains_key("side"));
    let text = lab.meshctl(1, &["status"]).unwrap();
    assert!(
        text.contains("refused  network side is not carried here"),
        "{text}"
    );
    let metrics = lab.meshctl(1, &["metrics"]).unwrap();
    assert!(
        metrics.contains("mesh_network_refused{network=\"side\",reason=\"overlaps_route\"} 1"),
        "{metrics}"
    );
    let c = lab.add_container("side1").unwrap();
    let e = lab.attach(1, &c, "side", "10.73.4.5/24").unwrap_err();
    assert!(
        format!("{e:#}").contains("not carried on this host"),
        "{e:#}"
    );
    let route = lab
        .exec_ok(&lab.hosts[1].netns, &["ip", "route", "get", "10.73.4.9"])
        .unwrap();
    assert!(
        route.contains("via 198.18.0.1"),
        "h1's own route stays: {route}"
    );

    // The cap: h0 carries at most four networks.
    lab.meshctl(0, &["network", "create", "n4", "--subnet", "10.74.0.0/24"])
        .unwrap();
    refused(
        &lab,
        &["network", "create", "n5", "--subnet", "10.75.0.0/24"],
        "max_networks",
    );

    // The raw member writes what the API refuses: a network on the LAN
    // and one on deny's subnet. They pass the guards (well formed, its
    // own) but land nowhere.
    let (evil, twin) = member.run(|node| {
        let me = node.id().to_hex();
        let def = |id: &str, subnet: &str| NetworkDef {
            id: id.into(),
            subnet: subnet.parse().unwrap(),
            subnet6: mesh_model::networks::derive_ula(id),
            created_by: me.clone(),
            labels: Default::default(),
            hosts: vec![],
            sealed_secrets: Default::default(),
        };
        let ch = node.channel(
            NETWORKS_CHANNEL,
            gossip::LwwMap::<String, NetworkDef>::default(),
        );
        let (evil, twin) = (def("evil", "198.18.0.0/24"), def("twin", "10.71.0.0/24"));
        ch.modify(|m| m.set(node.id(), "evil".into(), evil.clone()));
        ch.modify(|m| m.set(node.id(), "twin".into(), twin.clone()));
        (evil, twin)
    });
    for i in 0..3 {
        wait_refused(&lab, i, &evil.id, "overlaps_underlay");
        wait_refused(&lab, i, &twin.id, "overlaps_network");
    }
    let route = lab
        .exec_ok(&lab.hosts[0].netns, &["ip", "route", "get", "198.18.0.2"])
        .unwrap();
    assert!(
        route.contains("dev ul0"),
        "the LAN is still the LAN: {route}"
    );
    lab.wait_all_up(Duration::from_secs(10)).unwrap();

    // ---- protection survives another member's deletions ----
    let attach = |lab: &mut Lab, host: usize, name: &str, label: &str| {
        let ns = lab.add_container(name).unwrap();
        let a = lab.attach_netns(host, &ns, "deny", &["--name", name, "--label", label]);
        (ns, a.ip.split('/').next().unwrap().to_string())
    };
    let (_db, db_ip) = attach(&mut lab, 0, "db", "app=db");
    let (web, _) = attach(&mut lab, 1, "web", "app=web");
    let (other, _) = attach(&mut lab, 1, "other", "app=other");
    lab.meshctl(
        0,
        &[
            "policy", "add", "deny", "--from", "app=web", "--to", "app=db",
        ],
    )
    .unwrap();
    lab.wait_ping(&web, &db_ip, Duration::from_secs(15))
        .unwrap();
    assert!(
        !lab.ping(&other, &db_ip, 2),
        "the policy lets other reach db"
    );
    // The member deletes db's records again and again while other tries
    // to reach it: db's host writes them back (waiting longer each time),
    // so they are missing most of the time, and db stays closed anyway.
    let key = mesh_model::records::endpoint_key("deny", db_ip.parse().unwrap());
    let delete = move |node: &gossip::Node| {
        let eps = node.channel(
            ENDPOINTS_CHANNEL,
            gossip::LwwMap::<String, EndpointRecord>::default(),
        );
        eps.modify(|m| m.remove(node.id(), key.clone()));
        let labels = node.channel(
            LABELS_CHANNEL,
            gossip::LwwMap::<String, LabelRecord>::default(),
        );
        labels.modify(|m| m.remove(node.id(), key.clone()));
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let reached = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let delete = delete.clone();
                member.run(move |node| delete(node));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let replies = lab.ping_replies(&other, &db_ip, 15);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        replies
    });
    assert_eq!(reached, 0, "deleting db's records opened it to other");
    // The deletions reached db's own host, which wrote the record again.
    let log = lab.log_tail(0, 400);
    assert!(log.contains("deleted this host's endpoint record"), "{log}");
    wait_for(Duration::from_secs(15), || {
        let records: Vec<DnsRecord> = lab.meshctl_json(1, &["dns"])?;
        match records.iter().any(|r| r.fqdn == "db.deny") {
            true => Ok(()),
            false => anyhow::bail!("db.deny not back on h1"),
        }
    })
    .unwrap();
    assert!(lab.ping(&web, &db_ip, 3), "web lost its way to db");

    // ---- floating IPs only where the hosts permit, never a gateway ----
    let gateway = "198.18.0.242";
    for i in 0..3 {
        lab.exec_ok(
            &lab.hosts[i].netns,
            &[
                "ip", "route", "add", "default", "via", gateway, "dev", "ul0",
            ],
        )
        .unwrap();
    }
    for pool in [PERMITTED, OTHER_POOL] {
        lab.meshctl(0, &["fip", "pool", "add", pool]).unwrap();
    }
    for fip in ["198.18.0.241", gateway, "198.18.0.225"] {
        lab.meshctl(0, &["fip", "create", fip]).unwrap();
    }
    let answered = |fip: &str| {
        lab.arp_who_has(
            &out,
            "ul0",
            OUTSIDE,
            fip.parse().unwrap(),
            Duration::from_millis(400),
        )
        .unwrap()
    };
    wait_for(Duration::from_secs(15), || {
        match answered("198.18.0.241").len() {
            1 => Ok(()),
            n => anyhow::bail!("{n} hosts answer for 198.18.0.241"),
        }
    })
    .unwrap();
    let fips: Vec<Fip> = lab.meshctl_json(0, &["fip", "list"]).unwrap();
    let other = fips.iter().find(|f| f.addr == "198.18.0.225").unwrap();
    assert_eq!(
        other.holder, None,
        "no host permits {OTHER_POOL}: {other:?}"
    );
    for fip in ["198.18.0.225", gateway] {
        assert!(answered(fip).is_empty(), "{fip} is answered");
    }

    // ---- `meshd --cleanup` gives the holder back as it was ----
    let fips: Vec<Fip> = lab.meshctl_json(0, &["fip", "list"]).unwrap();
    let name = fips
        .iter()
        .find(|f| f.addr == "198.18.0.241")
        .and_then(|f| f.holder.clone())
        .unwrap();
    let i = lab.hosts.iter().position(|h| h.name == name).unwrap();
    let forwarding = |lab: &Lab| {
        let v = lab.exec_ok(
            &lab.hosts[i].netns,
            &["cat", "/proc/sys/net/ipv4/ip_forward"],
        );
        v.unwrap().trim().to_string()
    };
    assert_eq!(forwarding(&lab), "1", "the holder routes");
    lab.stop_daemon(i, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let meshd = lab.bin("meshd");
    let state = lab.hosts[i].state_dir.to_str().unwrap().to_string();
    lab.exec_ok(
        &lab.hosts[i].netns,
        &[meshd.to_str().unwrap(), "--cleanup", "--state-dir", &state],
    )
    .unwrap();
    assert_eq!(
        forwarding(&lab),
        "0",
        "meshd turned forwarding on, so cleanup turns it off"
    );
    let links = lab
        .exec_ok(&lab.hosts[i].netns, &["ip", "-o", "link"])
        .unwrap();
    assert!(!links.contains(": msb"), "a bridge is left: {links}");
}
