//! What meshd cleans up on its own, on the namespace lab (root): containers
//! that vanish without a detach, attaches that fail half-way, and hosts
//! that go down (no floods for them).

use hickory_proto::rr::RecordType;
use integration::{dns_query, test_mesh, wait_for, Lab};
use mesh_api::{Attachment, DnsRecord, IpamNetwork, Network, PeerState, StatusResponse};
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// meshd reaps within 5 s; the margin absorbs a loaded machine.
const REAP_DEADLINE: Duration = Duration::from_secs(10);

fn netns_del(ns: &str) {
    let ok = Command::new("ip")
        .args(["netns", "del", ns])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "ip netns del {ns}");
}

/// Deletes containers while meshd still runs, so it reaps them and the
/// test leaves no `/etc/netns` directory behind (the lab stops the daemons
/// before it deletes its namespaces).
fn delete_containers(lab: &Lab, names: &[&str]) {
    for ns in names {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    wait_for(REAP_DEADLINE, || {
        for ns in names {
            let etc = format!("/etc/netns/{ns}");
            anyhow::ensure!(!Path::new(&etc).exists(), "{etc} is still there");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tail(0, 20)));
}

fn attached_in(lab: &Lab, host: usize, ns: &str) -> bool {
    let path = format!("/run/netns/{ns}");
    lab.attachments(host).iter().any(|a| a.netns == path)
}

fn dns_names(lab: &Lab, host: usize) -> Vec<String> {
    lab.meshctl_json::<Vec<DnsRecord>>(host, &["dns"])
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.fqdn)
        .collect()
}

/// Waits until `ns`'s attachment, its DNS name and its resolv.conf are gone.
fn wait_reaped(lab: &Lab, host: usize, ns: &str, fqdn: &str, dns_from: &str, dns: &str) {
    let etc = format!("/etc/netns/{ns}");
    wait_for(REAP_DEADLINE, || {
        anyhow::ensure!(!attached_in(lab, host, ns), "{ns} is still attached");
        anyhow::ensure!(
            !dns_names(lab, host).iter().any(|n| n == fqdn),
            "{fqdn} is still listed"
        );
        anyhow::ensure!(!Path::new(&etc).exists(), "{etc} is still there");
        let answer = dns_query(dns_from, dns.parse()?, fqdn, RecordType::A);
        anyhow::ensure!(answer.is_err(), "{fqdn} still answers {answer:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{ns} was not reaped: {e:#}\n{}", lab.log_tail(host, 30)));
}

/// Network `blue` on 198.19.`third`.0/24 with container `gone` at .10 named
/// `web` and a plain container `asker`; returns the DNS server and both.
fn web_and_asker(lab: &mut Lab, third: u8) -> (String, String, String) {
    let subnet = format!("198.19.{third}.0/24");
    let net: Network = lab
        .meshctl_json(0, &["network", "create", "blue", "--subnet", &subnet])
        .unwrap();
    let gone = lab.add_container("gone").unwrap();
    let asker = lab.add_container("asker").unwrap();
    let ip = format!("198.19.{third}.10/24");
    lab.attach_netns(0, &gone, "blue", &["--ip", &ip, "--name", "web"]);
    lab.attach_netns(0, &asker, "blue", &[]);
    (net.dns, gone, asker)
}

#[test]
fn a_container_whose_namespace_is_deleted_is_reaped() {
    let Some(mut lab) = test_mesh("reap", 1) else {
        return;
    };
    let (dns, gone, asker) = web_and_asker(&mut lab, 40);
    // Everything an attachment leaves around is there first.
    wait_for(Duration::from_secs(10), || {
        let a = dns_query(&asker, dns.parse()?, "web.blue", RecordType::A)?;
        anyhow::ensure!(a == ["198.19.40.10".parse::<std::net::IpAddr>()?], "{a:?}");
        Ok(())
    })
    .unwrap();
    assert!(Path::new(&format!("/etc/netns/{gone}/resolv.conf")).exists());

    // The container goes away without a detach.
    netns_del(&gone);
    wait_reaped(&lab, 0, &gone, "web.blue", &asker, &dns);

    // Its address is free again.
    let again = lab.add_container("again").unwrap();
    let a = lab.attach_netns(0, &again, "blue", &["--ip", "198.19.40.10/24"]);
    assert_eq!(a.ip, "198.19.40.10/24");
    delete_containers(&lab, &[&asker, &again]);
}

#[test]
fn a_namespace_deleted_while_meshd_is_stopped_is_reaped_at_start() {
    let Some(mut lab) = test_mesh("reaprs", 1) else {
        return;
    };
    let (dns, gone, asker) = web_and_asker(&mut lab, 41);
    lab.stop_daemon(0, Signal::SIGTERM).unwrap();
    netns_del(&gone);
    lab.start_daemon(0).unwrap();
    wait_reaped(&lab, 0, &gone, "web.blue", &asker, &dns);
    let again = lab.add_container("again").unwrap();
    let a = lab.attach_netns(0, &again, "blue", &["--ip", "198.19.41.10/24"]);
    assert_eq!(a.ip, "198.19.41.10/24");
    // The survivor kept its attachment across the restart.
    assert!(attached_in(&lab, 0, &asker));
    delete_containers(&lab, &[&asker, &again]);
}

#[test]
fn a_pid_attachment_outlives_its_process_while_the_namespace_lives() {
    let Some(mut lab) = test_mesh("reappid", 1) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.45.0/24"],
    )
    .unwrap();
    // The namespace is held by its `ip netns` mount; a process inside it
    // is attached by PID, then exits.
    let holder = lab.add_container("holder").unwrap();
    let peer = lab.add_container("peer").unwrap();
    let pid = lab
        .spawn_helper(lab.exec(&holder, &["sleep", "60"]))
        .unwrap();
    let pid_text = pid.to_string();
    lab.attach_netns(0, &peer, "blue", &["--ip", "198.19.45.2/24"]);
    let a: Attachment = wait_for(Duration::from_secs(10), || {
        lab.meshctl_json(
            0,
            &[
                "attach",
                &pid_text,
                "--network",
                "blue",
                "--ip",
                "198.19.45.1/24",
            ],
        )
    })
    .unwrap();
    assert_eq!(a.ip, "198.19.45.1/24");
    lab.stop_helper(pid).unwrap();
    // Several sweeps later the container is still attached and reachable:
    // its veth lives as long as its namespace, whatever became of the PID.
    std::thread::sleep(Duration::from_secs(6)); // three of meshd's 2 s sweeps
    let ips: Vec<String> = lab.attachments(0).into_iter().map(|a| a.ip).collect();
    assert!(ips.contains(&"198.19.45.1/24".to_string()), "{ips:?}");
    lab.wait_ping(&peer, "198.19.45.1", Duration::from_secs(10))
        .unwrap();
    delete_containers(&lab, &[&holder, &peer]);
}

/// Host-side veth ends meshd has made in host `i`'s namespace.
fn veths(lab: &Lab, i: usize) -> usize {
    lab.exec_ok(&lab.hosts[i].netns, &["ip", "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|name| name.trim().starts_with("msv"))
        })
        .count()
}

#[test]
fn an_attach_whose_record_cannot_be_saved_is_undone_completely() {
    let Some(mut lab) = test_mesh("rollb", 1) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.42.0/24"],
    )
    .unwrap();
    let c = lab.add_container("c").unwrap();
    let path = format!("/run/netns/{c}");
    let args = [
        "attach",
        path.as_str(),
        "--network",
        "blue",
        "--ip",
        "198.19.42.10/24",
    ];
    // A directory where the temporary file goes makes saving fail (root
    // ignores permissions, so an unwritable directory would not).
    let blocker = lab.hosts[0].state_dir.join("attachments.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let err = lab.meshctl(0, &args).unwrap_err().to_string();
    assert!(err.contains("attachments"), "{err}");
    assert!(lab.attachments(0).is_empty());
    assert_eq!(veths(&lab, 0), 0, "the veth is gone");
    let status: StatusResponse = lab.meshctl_json(0, &["status"]).unwrap();
    assert_eq!(status.attachments, 0);
    let inside = lab.exec_ok(&c, &["ip", "-o", "link", "show"]).unwrap();
    assert!(!inside.contains("eth-blue"), "{inside}");

    // Once saving works, the same request succeeds: no "already
    // attached", and the address was released.
    std::fs::remove_dir(&blocker).unwrap();
    let a: Attachment = lab.meshctl_json(0, &args).unwrap();
    assert_eq!(a.ip, "198.19.42.10/24");
    assert_eq!(veths(&lab, 0), 1);
    delete_containers(&lab, &[&c]);
}

#[test]
fn status_counts_attachments_while_an_attach_waits_for_address_space() {
    let Some(mut lab) = test_mesh("stat", 2) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.43.0/24"],
    )
    .unwrap();
    // One attachment on h2 (its space granted by h1, the creator).
    let first = lab.add_container("first").unwrap();
    lab.attach_netns(1, &first, "blue", &[]);
    // An address h1 owns: h2 must ask h1 for it.
    let ipam: Vec<IpamNetwork> = lab.meshctl_json(1, &["ipam"]).unwrap();
    let h1_range = ipam[0]
        .ranges
        .iter()
        .find(|r| r.owner_name == "h1")
        .cloned()
        .expect("h1 owns a range");
    let wanted = format!("{}/24", h1_range.start);
    // h1 stops answering; h2 still counts it up for a few seconds, asks,
    // and waits for a grant that does not come.
    lab.partition(1, &[0]).unwrap();
    let second = lab.add_container("second").unwrap();
    let path = format!("/run/netns/{second}");
    std::thread::scope(|s| {
        let l = &lab;
        let pending =
            s.spawn(move || l.meshctl(1, &["attach", &path, "--network", "blue", "--ip", &wanted]));
        let mut seen_while_pending = 0;
        std::thread::sleep(Duration::from_millis(300));
        while !pending.is_finished() {
            let st: StatusResponse = l.meshctl_json(1, &["status"]).unwrap();
            if pending.is_finished() {
                break;
            }
            assert_eq!(st.attachments, 1, "status while an attach waits: {st:?}");
            seen_while_pending += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = pending.join().unwrap();
        assert!(
            seen_while_pending > 0,
            "the attach finished before status could be asked"
        );
    });
    lab.heal(1).unwrap();
    delete_containers(&lab, &[&first, &second]);
}

/// Packets host `i` has sealed for the peer called `name`.
fn tx_to(lab: &Lab, i: usize, name: &str) -> u64 {
    let s: StatusResponse = lab.meshctl_json(i, &["status"]).unwrap();
    s.peers
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.tx.packets)
        .unwrap_or_else(|| panic!("no peer {name} in {s:?}"))
}

#[test]
fn a_host_that_is_down_is_sent_no_broadcasts() {
    let Some(mut lab) = test_mesh("flood", 3) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.44.0/24"],
    )
    .unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let c3 = lab.add_container("c3").unwrap();
    lab.attach_netns(0, &c1, "blue", &["--ip", "198.19.44.1/24"]);
    lab.attach_netns(1, &c2, "blue", &["--ip", "198.19.44.2/24"]);
    lab.attach_netns(2, &c3, "blue", &["--ip", "198.19.44.3/24"]);
    lab.wait_ping(&c1, "198.19.44.3", Duration::from_secs(15))
        .unwrap();

    lab.stop_daemon(2, Signal::SIGTERM).unwrap();
    wait_for(Duration::from_secs(20), || {
        let s: StatusResponse = lab.meshctl_json(0, &["status"])?;
        let h3 = s.peers.iter().find(|p| p.name == "h3");
        anyhow::ensure!(h3.is_some_and(|p| p.state != PeerState::Up), "h3 still up");
        Ok(())
    })
    .unwrap();
    // ARP for an address nobody has: broadcasts, flooded to every member.
    // (Each round asks for a fresh address: the kernel does not probe
    // again for one it is still giving up on.)
    let (to_h2, to_h3) = (tx_to(&lab, 0, "h2"), tx_to(&lab, 0, "h3"));
    assert!(!lab.ping(&c1, "198.19.44.99", 3));
    assert!(tx_to(&lab, 0, "h2") > to_h2, "floods still reach h2");
    assert_eq!(tx_to(&lab, 0, "h3"), to_h3, "h3 is down: no copies for it");

    // Back up, back in the flood list.
    lab.start_daemon(2).unwrap();
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    lab.wait_ping(&c1, "198.19.44.3", Duration::from_secs(15))
        .unwrap();
    let to_h3 = tx_to(&lab, 0, "h3");
    assert!(!lab.ping(&c1, "198.19.44.98", 2));
    assert!(
        tx_to(&lab, 0, "h3") > to_h3,
        "h3 is up again: it gets floods"
    );
    delete_containers(&lab, &[&c1, &c2, &c3]);
}
