//! Networks, address allocation and DNS on the 3-host namespace lab (root).

use hickory_proto::rr::RecordType;
use integration::{dns_query, test_mesh, wait_for, Lab};
use mesh_api::{Attachment, DnsRecord, IpamNetwork, Network, PeerState};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

/// The address of `ADDR/LEN`.
fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

fn ip4(a: &Attachment) -> String {
    bare(&a.ip)
}

fn ip6(a: &Attachment) -> String {
    bare(a.ip6.as_deref().expect("an IPv6 address"))
}

/// Waits until `name` resolves to exactly `want` from `ns`.
fn wait_resolves(ns: &str, server: &str, name: &str, t: RecordType, want: &BTreeSet<IpAddr>) {
    wait_for(Duration::from_secs(10), || {
        let got = resolve(ns, server, name, t);
        anyhow::ensure!(got == *want, "{name} from {ns}: {got:?}, want {want:?}");
        Ok(())
    })
    .unwrap();
}

fn resolve(ns: &str, server: &str, name: &str, t: RecordType) -> BTreeSet<IpAddr> {
    dns_query(ns, server.parse().unwrap(), name, t)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[test]
fn networks_span_hosts_with_allocated_dual_stack_addresses_and_dns() {
    let Some(mut lab) = test_mesh("net", 3) else {
        return;
    };
    // Created on host 1, used on hosts 2 and 3.
    let blue: Network = lab
        .meshctl_json(
            0,
            &[
                "network",
                "create",
                "blue",
                "--subnet",
                "198.19.1.0/24",
                "--label",
                "tier=web",
            ],
        )
        .unwrap();
    assert_eq!(blue.labels["tier"], "web");
    assert!(blue.subnet6.starts_with("fd"));
    let dns = blue.dns.clone();
    let dns6 = blue.dns6.clone();
    lab.meshctl(
        0,
        &["network", "create", "red", "--subnet", "198.19.2.0/24"],
    )
    .unwrap();

    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let c3 = lab.add_container("c3").unwrap();
    // No --ip: host 3 owns no space yet and must be granted some.
    let web = lab.attach_netns(2, &c3, "blue", &["--name", "web"]);
    let client = lab.attach_netns(1, &c2, "blue", &["--name", "client"]);
    let c2_red = lab.attach_netns(1, &c2, "red", &[]);
    let c1_red = lab.attach_netns(0, &c1, "red", &["--name", "db"]);
    assert_ne!(ip4(&web), ip4(&client));

    // A container on two networks has both interfaces and reaches both.
    let links = lab.exec_ok(&c2, &["ip", "-o", "link"]).unwrap();
    assert!(
        links.contains("eth-blue") && links.contains("eth-red"),
        "{links}"
    );
    lab.wait_ping(&c2, &ip4(&web), Duration::from_secs(10))
        .unwrap();
    lab.wait_ping(&c2, &ip4(&c1_red), Duration::from_secs(10))
        .unwrap();
    assert_ne!(ip4(&c2_red), ip4(&c1_red));
    // Without --name a container is named after its namespace (or runtime id).
    assert_eq!(c2_red.name.as_deref(), Some(c2.as_str()));
    let c2_red_ip: BTreeSet<IpAddr> = [ip4(&c2_red).parse().unwrap()].into();
    wait_for(Duration::from_secs(10), || {
        let got = resolve(
            &c1,
            c1_red.dns_server.as_deref().unwrap(),
            &format!("{c2}.red"),
            RecordType::A,
        );
        anyhow::ensure!(got == c2_red_ip, "default name not resolvable: {got:?}");
        Ok(())
    })
    .unwrap();
    // IPv6 across hosts.
    let web6 = ip6(&web);
    wait_for(Duration::from_secs(10), || {
        let ok = lab
            .exec(&c2, &["ping", "-6", "-n", "-c", "1", "-W", "1", &web6])
            .status()?
            .success();
        anyhow::ensure!(ok, "ping6 {web6} failed");
        Ok(())
    })
    .unwrap();

    // DNS on the network's service address, from a container on another host.
    let want4: BTreeSet<IpAddr> = [ip4(&web).parse().unwrap()].into();
    let want6: BTreeSet<IpAddr> = [web6.parse().unwrap()].into();
    wait_resolves(&c2, &dns, "web.blue", RecordType::A, &want4);
    assert_eq!(resolve(&c2, &dns6, "web.blue", RecordType::AAAA), want6);
    // meshd wrote the resolver config of this `ip netns` container.
    let hosts = lab
        .exec_ok(&c2, &["getent", "ahostsv4", "web.blue"])
        .unwrap();
    assert!(hosts.contains(&ip4(&web)), "getent: {hosts}");
    // Names are per network: db is on red, not blue.
    assert!(dns_query(&c2, dns.parse().unwrap(), "db.blue", RecordType::A).is_err());

    // Several containers with one name give all their addresses.
    let c4 = lab.add_container("c4").unwrap();
    let web2 = lab.attach_netns(0, &c4, "blue", &["--name", "web"]);
    let both: BTreeSet<IpAddr> = [ip4(&web).parse().unwrap(), ip4(&web2).parse().unwrap()].into();
    wait_resolves(&c2, &dns, "web.blue", RecordType::A, &both);

    // Detach: the record goes.
    lab.meshctl(
        2,
        &["detach", &format!("/run/netns/{c3}"), "--network", "blue"],
    )
    .unwrap();
    let only: BTreeSet<IpAddr> = [ip4(&web2).parse().unwrap()].into();
    wait_resolves(&c2, &dns, "web.blue", RecordType::A, &only);

    // Version-aware answers.
    let v1 = lab.add_container("v1").unwrap();
    let v2 = lab.add_container("v2").unwrap();
    let probe = lab.add_container("pr").unwrap();
    let a1 = lab.attach_netns(0, &v1, "blue", &["--name", "api", "--version", "v1"]);
    let a2 = lab.attach_netns(1, &v2, "blue", &["--name", "api", "--version", "v2"]);
    lab.attach_netns(2, &probe, "blue", &["--name", "probe", "--version", "v2"]);
    let v2_only: BTreeSet<IpAddr> = [ip4(&a2).parse().unwrap()].into();
    let all_api: BTreeSet<IpAddr> = [ip4(&a1).parse().unwrap(), ip4(&a2).parse().unwrap()].into();
    wait_resolves(&probe, &dns, "api.blue", RecordType::A, &v2_only);
    wait_resolves(&c2, &dns, "api.blue", RecordType::A, &all_api);
    let listed: Vec<DnsRecord> = lab.meshctl_json(0, &["dns"]).unwrap();
    assert!(listed.iter().any(|r| r.fqdn == "api.blue"), "{listed:?}");

    // A network restricted to hosts 1 and 2 does not exist on host 3.
    lab.meshctl(
        0,
        &[
            "network",
            "create",
            "priv",
            "--subnet",
            "198.19.3.0/24",
            "--hosts",
            "h1,h2",
        ],
    )
    .unwrap();
    let p3 = lab.add_container("p3").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let err = lab
        .meshctl(
            2,
            &["attach", &format!("/run/netns/{p3}"), "--network", "priv"],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("restricted"), "{err}");
    let p2 = lab.add_container("p2").unwrap();
    let p2a = lab.attach_netns(1, &p2, "priv", &[]);
    // Its members share its secret (sealed to each of them): traffic flows.
    let p1 = lab.add_container("p1").unwrap();
    lab.attach_netns(0, &p1, "priv", &[]);
    lab.wait_ping(&p1, &ip4(&p2a), Duration::from_secs(10))
        .unwrap();

    // The lab leaves no resolver config behind for its containers.
    let resolv_dir = std::path::Path::new("/etc/netns").join(&c2);
    assert!(resolv_dir.join("resolv.conf").exists(), "meshd wrote none");
    drop(lab);
    assert!(!resolv_dir.exists(), "{} left behind", resolv_dir.display());
}

/// Addresses this host allocated, as it reports them itself.
fn own_allocations(lab: &Lab, host: usize) -> Vec<String> {
    let name = lab.hosts[host].name.clone();
    let v: Vec<IpamNetwork> = lab.meshctl_json(host, &["ipam"]).unwrap();
    v.into_iter()
        .flat_map(|n| n.allocations)
        .filter(|a| a.host == name)
        .map(|a| a.ip)
        .collect()
}

fn reserve_many(lab: &Lab, host: usize, n: usize) -> usize {
    let mut ok = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    (0..n / 4)
                        .filter(|_| {
                            lab.meshctl(host, &["ipam", "reserve", "--network", "pool"])
                                .is_ok()
                        })
                        .count()
                })
            })
            .collect();
        ok = handles.into_iter().map(|h| h.join().unwrap()).sum();
    });
    ok
}

fn assert_no_duplicates(lab: &Lab) -> usize {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for h in 0..lab.hosts.len() {
        for ip in own_allocations(lab, h) {
            if let Some(other) = seen.insert(ip.clone(), h) {
                panic!("{ip} allocated by both h{} and h{}", other + 1, h + 1);
            }
        }
    }
    seen.len()
}

#[test]
fn ipam_never_duplicates_across_partition_heal_and_restart() {
    let Some(mut lab) = test_mesh("ipam", 3) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "pool", "--subnet", "198.19.16.0/22"],
    )
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.meshctl(2, &["ipam", "reserve", "--network", "pool"])
    })
    .unwrap();

    // Hundreds of concurrent allocations on every host.
    let counts: Vec<usize> = std::thread::scope(|s| {
        let l = &lab;
        let hs: Vec<_> = (0..3)
            .map(|h| s.spawn(move || reserve_many(l, h, 120)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        counts.iter().all(|c| *c >= 100),
        "allocations failed: {counts:?}"
    );
    let total = assert_no_duplicates(&lab);
    assert!(total >= 300, "only {total} allocations");

    // Host 3 cut off from hosts 1 and 2; both sides keep allocating.
    lab.partition(2, &[0, 1]).unwrap();
    // The cut is real: host 1 marks host 3 down.
    wait_for(Duration::from_secs(20), || {
        let s = lab.status(0)?;
        let h3 = s.peers.iter().find(|p| p.name == "h3");
        anyhow::ensure!(h3.is_some_and(|p| p.state != PeerState::Up), "h3 still up");
        Ok(())
    })
    .unwrap();
    let side_a = reserve_many(&lab, 0, 40) + reserve_many(&lab, 1, 40);
    let side_b = reserve_many(&lab, 2, 20);
    assert!(side_a > 0, "the majority side could not allocate");
    // Host 3 may allocate only from what it owns; whatever it got must be unique.
    lab.heal(2).unwrap();
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    let after_heal = assert_no_duplicates(&lab);
    assert_eq!(after_heal, total + side_a + side_b);
    // And the views converge: host 1 sees every allocation of every host.
    wait_for(Duration::from_secs(15), || {
        let v: Vec<IpamNetwork> = lab.meshctl_json(0, &["ipam"])?;
        let n = v[0].allocations.len();
        anyhow::ensure!(n == after_heal, "h1 sees {n} of {after_heal}");
        Ok(())
    })
    .unwrap();

    // A static request for an address someone else owns is granted by its owner.
    let ring: Vec<IpamNetwork> = lab.meshctl_json(0, &["ipam"]).unwrap();
    let free_elsewhere = ring[0]
        .ranges
        .iter()
        .find(|r| r.owner_name == "h1" && r.used < r.size)
        .map(|r| r.end.clone())
        .expect("h1 has free space");
    let got = lab
        .meshctl(
            2,
            &[
                "ipam",
                "reserve",
                "--network",
                "pool",
                "--ip",
                &free_elsewhere,
            ],
        )
        .unwrap();
    assert!(got.starts_with(&free_elsewhere), "{got}");
    // Once h2 has heard of it (gossip, milliseconds; longer on a loaded
    // machine), h2 refuses it as in use rather than asking its old owner.
    wait_for(Duration::from_secs(15), || {
        let v: Vec<IpamNetwork> = lab.meshctl_json(1, &["ipam"])?;
        anyhow::ensure!(
            v[0].allocations.iter().any(|a| a.ip == free_elsewhere),
            "h2 does not know {free_elsewhere} is taken yet"
        );
        Ok(())
    })
    .unwrap();
    let err = lab
        .meshctl(
            1,
            &[
                "ipam",
                "reserve",
                "--network",
                "pool",
                "--ip",
                &free_elsewhere,
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use"), "{err}");

    // Every daemon restarted: allocations survive.
    let before: Vec<BTreeSet<String>> = (0..3)
        .map(|h| own_allocations(&lab, h).into_iter().collect())
        .collect();
    for h in 0..3 {
        lab.stop_daemon(h, Signal::SIGKILL).unwrap();
    }
    for h in 0..3 {
        lab.start_daemon(h).unwrap();
    }
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    for (h, want) in before.iter().enumerate() {
        let now: BTreeSet<String> = own_allocations(&lab, h).into_iter().collect();
        assert_eq!(
            &now,
            want,
            "h{} lost or changed allocations across restart",
            h + 1
        );
    }
    assert_no_duplicates(&lab);
}

#[test]
fn removed_peer_passes_its_space_on() {
    let Some(mut lab) = test_mesh("prm", 3) else {
        return;
    };
    lab.meshctl(
        0,
        &["network", "create", "pool", "--subnet", "198.19.20.0/24"],
    )
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.meshctl(2, &["ipam", "reserve", "--network", "pool"])
    })
    .unwrap();
    let err = lab
        .meshctl(0, &["peer", "rm", "h3"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is up"), "{err}");
    lab.stop_daemon(2, Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(15), || {
        lab.meshctl(0, &["peer", "rm", "h3"])
    })
    .unwrap();
    // Running it on a second host too is harmless (not Weave's trap), once
    // that host has also seen h3 go down (failure detection is per host).
    wait_for(Duration::from_secs(15), || {
        lab.meshctl(1, &["peer", "rm", "h3"])
    })
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        let v: Vec<IpamNetwork> = lab.meshctl_json(1, &["ipam"])?;
        let owners: BTreeSet<String> = v[0].ranges.iter().map(|r| r.owner_name.clone()).collect();
        anyhow::ensure!(
            !owners.iter().any(|o| o != "h1" && o != "h2"),
            "owners still {owners:?}"
        );
        Ok(())
    })
    .unwrap();
    let s = lab.status(0).unwrap();
    assert_eq!(s.peers.len(), 1, "removed peer still listed: {:?}", s.peers);
}
