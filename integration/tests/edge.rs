//! The edge on the 3-host namespace lab (root) with an "outside"
//! namespace on the underlay that is not a mesh host: floating IPs from a
//! sub-range of the underlay (hosts at 198.18.0.1-3/24, the pool
//! 198.18.0.240/28) in front of services (two services on one FIP by port,
//! partition, SIGKILL and link-down failover), egress, expose/hide,
//! macvlan. One lab for those checks, to keep lab time low; another for
//! an address a machine of the LAN already uses. Servers are busybox httpd with a CGI script answering
//! `NAME REMOTE_ADDR`.

use integration::{test_mesh, wait_for, Lab};
use mesh_api::{Fip, HostAddress};
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// A sub-range of the underlay 198.18.0.0/24 that holds no host.
const POOL: &str = "198.18.0.240/28";
const FIP: &str = "198.18.0.241";
const FIP2: &str = "198.18.0.242";

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

/// Names answering `n` new connections to the FIP.
fn names_behind(lab: &Lab, out: &str, port: u16, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| lab.ask(out, FIP, port))
        .map(|(name, _)| name)
        .collect()
}

fn fips(lab: &Lab, i: usize) -> Vec<Fip> {
    lab.meshctl_json(i, &["fip", "list"]).unwrap()
}

/// The host index that host `i` says holds the FIP.
fn holder(lab: &Lab, i: usize) -> usize {
    wait_for(Duration::from_secs(15), || {
        let f = fips(lab, i).into_iter().find(|f| f.addr == FIP);
        let name = f
            .and_then(|f| f.holder)
            .ok_or_else(|| anyhow::anyhow!("no holder yet"))?;
        lab.hosts
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| anyhow::anyhow!("unknown holder {name}"))
    })
    .unwrap()
}

/// The MACs answering ARP for the FIP on the underlay, as the outside sees.
fn arp_answers(lab: &Lab, out: &str) -> BTreeSet<String> {
    lab.arp_who_has(
        out,
        "ul0",
        OUTSIDE,
        FIP.parse().unwrap(),
        Duration::from_millis(400),
    )
    .unwrap()
}

fn ul_mac(lab: &Lab, i: usize) -> String {
    lab.mac_of(&lab.hosts[i].netns, "ul0").unwrap()
}

/// Waits until exactly `mac` answers ARP for the FIP; never two at once.
fn wait_arp(lab: &Lab, out: &str, mac: &str, within: Duration) {
    wait_for(within, || {
        let seen = arp_answers(lab, out);
        assert!(seen.len() <= 1, "two hosts answer ARP for {FIP}: {seen:?}");
        if seen.contains(mac) {
            Ok(())
        } else {
            anyhow::bail!("{seen:?} answer, not {mac}")
        }
    })
    .unwrap();
}

fn refused(lab: &Lab, args: &[&str], want: &str) {
    let before = fips(lab, 0);
    let e = lab.meshctl(0, args).unwrap_err().to_string();
    assert!(e.contains(want), "{args:?}: {e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert_eq!(fips(lab, 0), before, "{args:?} changed something");
}

struct Edge {
    lab: Lab,
    out: String,
}

/// The lab: `blue` (egress) and `red` (none), the outside, a FIP pool.
fn edge_lab() -> Option<Edge> {
    let mut lab = test_mesh("edge", 3)?;
    let out = lab.add_outside(100).unwrap();
    lab.meshctl(
        0,
        &[
            "network",
            "create",
            "blue",
            "--subnet",
            "10.77.0.0/24",
            "--egress",
        ],
    )
    .unwrap();
    lab.meshctl(0, &["network", "create", "red", "--subnet", "10.78.0.0/24"])
        .unwrap();
    lab.serve_who(&out, "outside", 8080).unwrap();
    Some(Edge { lab, out })
}

fn container(
    lab: &mut Lab,
    host: usize,
    name: &str,
    net: &str,
    extra: &[&str],
) -> (String, String) {
    let ns = lab.add_container(name).unwrap();
    let mut args = vec!["--name", name];
    args.extend_from_slice(extra);
    let a = lab.attach_netns(host, &ns, net, &args);
    (ns, bare(&a.ip))
}

#[test]
fn the_edge_floating_ips_egress_and_expose() {
    let Some(Edge { mut lab, out }) = edge_lab() else {
        return;
    };

    // ---- expose: host ↔ container on the exposing host; other hosts'
    // containers reach it through the mesh; other hosts do not.
    let (r1, r1_ip) = container(&mut lab, 0, "r1", "red", &[]);
    let (r2, _) = container(&mut lab, 1, "r2", "red", &[]);
    let a: HostAddress = lab.meshctl_json(0, &["expose", "red"]).unwrap();
    assert!(a.exposed);
    let h1_red = bare(&a.ip);
    let status = lab.status(0).unwrap();
    assert!(
        status
            .host_addresses
            .iter()
            .any(|x| x.network == "red" && x.exposed && x.ip == a.ip),
        "{:?}",
        status.host_addresses
    );
    let h1 = lab.hosts[0].netns.clone();
    let h2 = lab.hosts[1].netns.clone();
    lab.wait_ping(&h1, &r1_ip, Duration::from_secs(10)).unwrap();
    lab.wait_ping(&r1, &h1_red, Duration::from_secs(10))
        .unwrap();
    lab.wait_ping(&r2, &h1_red, Duration::from_secs(10))
        .unwrap();
    lab.serve_who(&h1, "host1", 8090).unwrap();
    assert_eq!(lab.wait_ask(&r2, &h1_red, 8090).unwrap().0, "host1");
    assert!(!lab.ping(&h2, &r1_ip, 1), "host 2 did not expose red");

    // ---- egress: blue goes out masqueraded behind the host; red does not;
    // nothing comes in.
    let (c1, c1_ip) = container(&mut lab, 0, "c1", "blue", &[]);
    lab.wait_ping(&c1, &OUTSIDE.to_string(), Duration::from_secs(10))
        .unwrap();
    let (name, seen) = lab.wait_ask(&c1, &OUTSIDE.to_string(), 8080).unwrap();
    assert_eq!(
        (name.as_str(), seen.as_str()),
        ("outside", "198.18.0.1"),
        "the outside sees host 1's underlay address"
    );
    assert!(!lab.ping(&r1, &OUTSIDE.to_string(), 2), "red has no egress");
    // The gateway is no exposure: blue's containers do not reach host 1.
    let gw = lab
        .status(0)
        .unwrap()
        .host_addresses
        .into_iter()
        .find(|x| x.network == "blue")
        .expect("blue has a gateway on host 1");
    assert!(gw.gateway && !gw.exposed);
    assert!(
        lab.ask(&c1, &bare(&gw.ip), 8090).is_none(),
        "the gateway is not exposed"
    );
    lab.serve_who(&c1, "c1", 8080).unwrap();
    lab.wait_ask(&c1, &c1_ip, 8080).unwrap();
    lab.exec_ok(
        &out,
        &["ip", "route", "add", "10.77.0.0/24", "via", "198.18.0.1"],
    )
    .unwrap();
    assert!(
        lab.ask(&out, &c1_ip, 8080).is_none(),
        "the outside opened a connection inward"
    );
    assert!(!lab.ping(&out, &c1_ip, 2), "the outside pinged a container");

    // ---- floating IP in front of services whose targets are on the two
    // hosts that do not hold it.
    lab.meshctl(0, &["fip", "pool", "add", POOL]).unwrap();
    // Every host's underlay subnet (198.18.0.0/24) contains the pool.
    let pools: Vec<mesh_api::FipPool> = lab.meshctl_json(0, &["fip", "pool", "list"]).unwrap();
    let may_hold: BTreeSet<&str> = pools[0].hosts.iter().map(String::as_str).collect();
    assert_eq!(may_hold, ["h1", "h2", "h3"].into(), "{pools:?}");
    assert_eq!(lab.meshctl(0, &["fip", "create", FIP]).unwrap().trim(), FIP);
    let hx = holder(&lab, 0);
    let others: Vec<usize> = (0..3).filter(|i| *i != hx).collect();
    for (k, host) in others.iter().enumerate() {
        let name = format!("b{k}");
        let (ns, _) = container(&mut lab, *host, &name, "blue", &["--label", "app=web"]);
        lab.serve_who(&ns, &name, 8080).unwrap();
        lab.serve_who(&ns, &format!("{name}-api"), 8081).unwrap();
    }
    lab.meshctl(
        0,
        &[
            "service",
            "create",
            "web",
            "--network",
            "blue",
            "--port",
            "80:8080",
            "--selector",
            "app=web",
        ],
    )
    .unwrap();
    lab.meshctl(
        0,
        &[
            "service",
            "create",
            "api",
            "--network",
            "blue",
            "--port",
            "8081",
            "--selector",
            "app=web",
        ],
    )
    .unwrap();
    // From two other hosts, once the services reached them: one record
    // per association, so neither overwrites the other.
    wait_for(Duration::from_secs(10), || {
        lab.meshctl(1, &["fip", "associate", FIP, "web"])
    })
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        lab.meshctl(2, &["fip", "associate", FIP, "api", "--port", "81"])
    })
    .unwrap();
    // Bad input: one line, nothing changed.
    wait_for(Duration::from_secs(5), || {
        (fips(&lab, 0).iter().any(|f| f.bindings.len() == 2))
            .then_some(())
            .ok_or_else(|| anyhow::anyhow!("associations not replicated yet"))
    })
    .unwrap();
    refused(
        &lab,
        &["fip", "associate", FIP, "api", "--port", "80"],
        "port 80",
    );
    refused(&lab, &["fip", "create", "10.9.9.9"], "no floating-IP pool");
    refused(&lab, &["fip", "create", FIP], "already a floating IP");
    refused(
        &lab,
        &["fip", "create", "198.18.0.2"],
        "no floating-IP pool",
    );
    refused(&lab, &["fip", "associate", FIP2, "web"], "no floating IP");
    refused(&lab, &["fip", "associate", FIP, "nosuch"], "no service");
    refused(&lab, &["fip", "release", FIP], "dissociate first");
    refused(&lab, &["fip", "pool", "rm", POOL], "release them first");
    lab.meshctl(0, &["fip", "create", FIP2]).unwrap();
    refused(
        &lab,
        &["fip", "associate", FIP2, "web"],
        "already has floating IP",
    );
    lab.meshctl(0, &["fip", "release", FIP2]).unwrap();

    // Answers come from the backends, both, on both ports.
    lab.wait_ask(&out, FIP, 80).unwrap();
    wait_for(Duration::from_secs(15), || {
        let web = names_behind(&lab, &out, 80, 6);
        let api = names_behind(&lab, &out, 81, 6);
        let want_web: BTreeSet<String> = ["b0", "b1"].map(String::from).into();
        let want_api: BTreeSet<String> = ["b0-api", "b1-api"].map(String::from).into();
        if web == want_web && api == want_api {
            Ok(())
        } else {
            anyhow::bail!("web {web:?}, api {api:?}")
        }
    })
    .unwrap();
    let holder_mac = ul_mac(&lab, hx);
    wait_arp(&lab, &out, &holder_mac, Duration::from_secs(5));

    // ---- partition: the holder alone is the minority and gives the FIP up;
    // the majority takes it; never two answer.
    lab.partition(hx, &others).unwrap();
    let started = Instant::now();
    wait_for(Duration::from_secs(20), || {
        let seen = arp_answers(&lab, &out);
        assert!(seen.len() <= 1, "two hosts answer ARP for {FIP}: {seen:?}");
        match seen.iter().next() {
            Some(m) if *m != holder_mac => Ok(()),
            _ => anyhow::bail!("{seen:?} answer"),
        }
    })
    .unwrap();
    eprintln!(
        "partition: the majority answers after {:?}",
        started.elapsed()
    );
    assert_ne!(holder(&lab, others[0]), hx);
    let minority = fips(&lab, hx);
    assert!(
        minority.iter().all(|f| f.holder.is_none()
            && f.reason
                .as_deref()
                .is_some_and(|r| r.contains("no majority of candidates reachable"))),
        "the minority names no holder, and says why: {minority:?}"
    );
    let table = lab.meshctl(hx, &["fip", "list"]).unwrap();
    assert!(
        table.contains("(none: no majority of candidates reachable"),
        "{table}"
    );
    lab.wait_ask(&out, FIP, 80).unwrap();
    lab.heal(hx).unwrap();
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    wait_arp(&lab, &out, &holder_mac, Duration::from_secs(15));

    // ---- SIGKILL of the holder: another host takes over, new connections work.
    let took = failover(&mut lab, &out, hx);
    eprintln!("failover after SIGKILL: {took:?}");
    // Back up, the host keeps what it had: its exposed address, the FIP.
    lab.start_daemon(hx).unwrap();
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    wait_arp(&lab, &out, &holder_mac, Duration::from_secs(20));
    lab.wait_ask(&out, FIP, 80).unwrap();
    let kept = lab.status(0).unwrap().host_addresses;
    assert!(
        kept.iter()
            .any(|x| x.network == "red" && x.exposed && x.ip == a.ip),
        "{kept:?}"
    );
    lab.wait_ping(&r2, &h1_red, Duration::from_secs(10))
        .unwrap();

    // ---- the holder's underlay link goes down: another host takes over.
    let hx_ns = lab.hosts[hx].netns.clone();
    lab.exec_ok(&hx_ns, &["ip", "link", "set", "ul0", "down"])
        .unwrap();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(20), || {
        let seen = arp_answers(&lab, &out);
        assert!(seen.len() <= 1, "two hosts answer ARP for {FIP}: {seen:?}");
        if seen.is_empty() || seen.contains(&holder_mac) {
            anyhow::bail!("no new holder yet ({seen:?})");
        }
        lab.ask(&out, FIP, 80)
            .ok_or_else(|| anyhow::anyhow!("no answer"))
    })
    .unwrap();
    eprintln!("failover after link down: {:?}", t0.elapsed());
    lab.exec_ok(&hx_ns, &["ip", "link", "set", "ul0", "up"])
        .unwrap();
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    wait_arp(&lab, &out, &holder_mac, Duration::from_secs(20));

    // ---- macvlan: on the physical network, reachable from the outside,
    // named in DNS, no overlay interface.
    let m1 = lab.add_container("m1").unwrap();
    let m1_path = format!("/run/netns/{m1}");
    let bad = lab
        .meshctl(
            1,
            &[
                "attach",
                &m1_path,
                "--network",
                "red",
                "--mode",
                "macvlan",
                "--parent",
                "nosuch0",
                "--ip",
                "198.18.0.150/24",
            ],
        )
        .unwrap_err()
        .to_string();
    assert!(bad.contains("parent interface \"nosuch0\""), "{bad}");
    assert!(
        lab.attachments(1).iter().all(|x| x.netns != m1_path),
        "nothing attached"
    );
    let mv = lab.attach_netns(
        1,
        &m1,
        "red",
        &[
            "--mode",
            "macvlan",
            "--parent",
            "ul0",
            "--ip",
            "198.18.0.150/24",
            "--name",
            "m1",
        ],
    );
    assert_eq!(mv.ip, "198.18.0.150/24");
    lab.wait_ping(&out, "198.18.0.150", Duration::from_secs(10))
        .unwrap();
    lab.serve_who(&m1, "m1", 8080).unwrap();
    assert_eq!(
        lab.wait_ask(&out, "198.18.0.150", 8080).unwrap(),
        ("m1".to_string(), OUTSIDE.to_string())
    );
    let links = lab.exec_ok(&m1, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("eth-red"), "an overlay interface: {links}");
    let answers = wait_for(Duration::from_secs(10), || {
        integration::dns_query(
            &r2,
            "10.78.0.254".parse().unwrap(),
            "m1.red",
            hickory_proto::rr::RecordType::A,
        )
    })
    .unwrap();
    assert_eq!(
        answers,
        vec![std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 0, 150))]
    );

    // ---- hide: the exposed address goes.
    lab.meshctl(0, &["hide", "red"]).unwrap();
    assert!(lab
        .status(0)
        .unwrap()
        .host_addresses
        .iter()
        .all(|x| x.network != "red"));
    assert!(!lab.ping(&r1, &h1_red, 2), "hidden, yet reachable");
}

/// Kills host `hx`'s daemon and returns how long until another host
/// answers ARP for the FIP and a new connection from the outside works
/// (through it: the killed host's kernel may still forward to its own
/// containers, but nobody answers ARP for it any more).
fn failover(lab: &mut Lab, out: &str, hx: usize) -> Duration {
    lab.wait_ask(out, FIP, 80).unwrap();
    let old = ul_mac(lab, hx);
    lab.stop_daemon(hx, Signal::SIGKILL).unwrap();
    let t0 = Instant::now();
    wait_for(Duration::from_secs(20), || {
        let seen = lab
            .arp_who_has(
                out,
                "ul0",
                OUTSIDE,
                FIP.parse().unwrap(),
                Duration::from_millis(150),
            )
            .unwrap();
        assert!(seen.len() <= 1, "two hosts answer ARP for {FIP}: {seen:?}");
        if seen.is_empty() || seen.contains(&old) {
            anyhow::bail!("no new holder yet ({seen:?})");
        }
        lab.ask(out, FIP, 80)
            .ok_or_else(|| anyhow::anyhow!("no answer"))
    })
    .unwrap();
    t0.elapsed()
}

/// `cargo test -p integration --test edge -- --ignored`: the failover time
/// over five SIGKILLs of the holder (the median goes in the report).
#[test]
#[ignore]
fn fip_failover_median_of_five() {
    let Some(Edge { mut lab, out }) = edge_lab() else {
        return;
    };
    lab.meshctl(0, &["fip", "pool", "add", POOL]).unwrap();
    lab.meshctl(0, &["fip", "create", FIP]).unwrap();
    for i in 0..3 {
        let (ns, _) = container(
            &mut lab,
            i,
            &format!("b{i}"),
            "blue",
            &["--label", "app=web"],
        );
        lab.serve_who(&ns, &format!("b{i}"), 8080).unwrap();
    }
    lab.meshctl(
        0,
        &[
            "service",
            "create",
            "web",
            "--network",
            "blue",
            "--port",
            "80:8080",
            "--selector",
            "app=web",
        ],
    )
    .unwrap();
    lab.meshctl(0, &["fip", "associate", FIP, "web"]).unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let observer = (0..3)
            .find(|i| lab.hosts[*i].daemon_pid().is_some())
            .unwrap();
        let hx = holder(&lab, observer);
        times.push(failover(&mut lab, &out, hx));
        lab.start_daemon(hx).unwrap();
        lab.wait_all_up(Duration::from_secs(30)).unwrap();
        let mac = ul_mac(&lab, hx);
        wait_arp(&lab, &out, &mac, Duration::from_secs(20));
    }
    times.sort();
    eprintln!("failover times {times:?}; median {:?}", times[2]);
}

/// A machine of the LAN (not a mesh host) owns addresses of the pool:
/// `fip create` refuses one it already answers for; one it takes after
/// creation is never claimed by a mesh host (the holder's ARP probe finds
/// it) and `fip list` says why; once freed, a mesh host claims it.
#[test]
fn an_address_in_use_on_the_lan_is_neither_taken_nor_answered() {
    let Some(mut lab) = test_mesh("edgeuse", 3) else {
        return;
    };
    let out = lab.add_outside(100).unwrap();
    let owner = lab.add_lan_machine("own", 245).unwrap();
    let owner_mac = lab.mac_of(&owner, "ul0").unwrap();
    let mesh_macs: BTreeSet<String> = (0..3).map(|i| ul_mac(&lab, i)).collect();
    lab.meshctl(0, &["fip", "pool", "add", POOL]).unwrap();

    // In use before: refused, naming the address and who answered.
    let e = lab
        .meshctl(1, &["fip", "create", "198.18.0.245"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("198.18.0.245 is in use on the LAN") && e.contains(&owner_mac),
        "{e}"
    );
    assert!(fips(&lab, 1).is_empty(), "nothing created");

    // Taken after creation, before the holder's wait (a holder new to an
    // address waits 2.5 s before it answers) ends: the probe refuses it.
    let taken = "198.18.0.246";
    lab.meshctl(0, &["fip", "create", taken]).unwrap();
    lab.exec_ok(
        &owner,
        &["ip", "addr", "add", &format!("{taken}/24"), "dev", "ul0"],
    )
    .unwrap();
    let ask_arp = |wait| {
        lab.arp_who_has(&out, "ul0", OUTSIDE, taken.parse().unwrap(), wait)
            .unwrap()
    };
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let seen = ask_arp(Duration::from_millis(300));
        assert_eq!(
            seen,
            [owner_mac.clone()].into(),
            "only the owner answers for {taken} (mesh hosts: {mesh_macs:?})"
        );
    }
    // The kernel of the outside agrees.
    lab.exec_ok(&out, &["ip", "neigh", "flush", "dev", "ul0"])
        .unwrap();
    assert!(lab.ping(&out, taken, 1));
    let neigh = lab.exec_ok(&out, &["ip", "neigh", "show", taken]).unwrap();
    assert!(neigh.contains(&owner_mac), "{neigh}");
    // Every host says why nobody answers.
    for i in 0..3 {
        wait_for(Duration::from_secs(15), || {
            let f = fips(&lab, i).into_iter().find(|f| f.addr == taken);
            match f {
                Some(f)
                    if f.holder.is_none()
                        && f.reason.as_deref().is_some_and(|r| {
                            r.contains(&format!("address in use by {owner_mac}"))
                        }) =>
                {
                    Ok(())
                }
                other => anyhow::bail!("host {i}: {other:?}"),
            }
        })
        .unwrap();
    }
    let table = lab.meshctl(2, &["fip", "list"]).unwrap();
    assert!(
        table.contains(&format!("(none: address in use by {owner_mac}")),
        "{table}"
    );

    // Freed: probed again after the backoff (at most 16 s), and claimed.
    lab.exec_ok(
        &owner,
        &["ip", "addr", "del", &format!("{taken}/24"), "dev", "ul0"],
    )
    .unwrap();
    let t0 = Instant::now();
    let claimed = wait_for(Duration::from_secs(30), || {
        let seen = ask_arp(Duration::from_millis(300));
        match seen.iter().next() {
            Some(m) if seen.len() == 1 && mesh_macs.contains(m) => Ok(m.clone()),
            _ => anyhow::bail!("{seen:?} answer"),
        }
    })
    .unwrap();
    eprintln!("claimed {taken} {:?} after it was freed", t0.elapsed());
    let holder = wait_for(Duration::from_secs(10), || {
        fips(&lab, 0)
            .into_iter()
            .find(|f| f.addr == taken)
            .and_then(|f| f.holder)
            .ok_or_else(|| anyhow::anyhow!("no holder named yet"))
    })
    .unwrap();
    let i = lab.hosts.iter().position(|h| h.name == holder).unwrap();
    assert_eq!(ul_mac(&lab, i), claimed, "the named holder answers");
}

/// meshd's default `--listen 0.0.0.0:7800`: hosts advertise the subnets
/// of their interfaces, and a pool that is a sub-range of their LAN gets a
/// holder, answered by exactly one of them.
#[test]
fn a_sub_range_pool_gets_a_holder_on_hosts_listening_on_every_address() {
    let Some(mut lab) = integration::test_lab("edgewild", 3) else {
        return;
    };
    for h in &mut lab.hosts {
        h.listen = Some("0.0.0.0:7800".into());
    }
    lab.start_mesh().expect("mesh up");
    let out = lab.add_outside(100).unwrap();
    let mesh_macs: BTreeSet<String> = (0..3).map(|i| ul_mac(&lab, i)).collect();
    lab.meshctl(0, &["fip", "pool", "add", POOL]).unwrap();
    let fip = "198.18.0.247";
    lab.meshctl(0, &["fip", "create", fip]).unwrap();
    wait_for(Duration::from_secs(15), || {
        let f = fips(&lab, 2).into_iter().find(|f| f.addr == fip);
        match f.and_then(|f| f.holder) {
            Some(h) => Ok(h),
            None => anyhow::bail!("no holder yet: {:?}", fips(&lab, 2)),
        }
    })
    .unwrap();
    let seen = wait_for(Duration::from_secs(10), || {
        let seen = lab.arp_who_has(
            &out,
            "ul0",
            OUTSIDE,
            fip.parse().unwrap(),
            Duration::from_millis(400),
        )?;
        anyhow::ensure!(!seen.is_empty(), "nobody answers ARP for {fip}");
        Ok(seen)
    })
    .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen.is_subset(&mesh_macs), "{seen:?} vs {mesh_macs:?}");
}
