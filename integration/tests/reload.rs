//! `systemctl reload meshd` (SIGHUP) on a running three-host mesh with
//! containers attached (root, namespace lab): host 1 runs from a config
//! file; a reload changes its log filter, DNS upstreams (two tiny
//! upstream servers on host 1's loopback) and floating-IP pools, starts
//! its metrics listener, and changes a restart-only key. All take effect
//! (the last is listed as needing a restart); peers stay connected and
//! the attachment untouched. A bad file is then refused with its line,
//! and the old settings stay in force. Host 2's reload shortens its
//! rekey interval: its links rekey faster without reconnecting. Host 3,
//! started without a file, refuses a reload and keeps running.

use integration::{dns_query, is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Network, ReloadStatus};
use std::net::{IpAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NET: &str = "rl";
const SUBNET: &str = "198.19.9.0/24";
const NAME: &str = "www.upstream.test.";
/// Host 1's metrics listener once the reload starts it.
const METRICS: &str = "127.0.0.1:9464";
/// A floating-IP pool on the lab's LAN, outside the `fip_pools` the
/// reload gives host 1.
const POOL: &str = "198.18.0.240/28";

/// A DNS server on `addr` inside namespace `ns` answering every question
/// with one A record, `answer`; counts the questions; ends when `stop` is
/// set.
fn upstream(ns: &str, addr: &str, answer: &str, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::{rdata::A, RData, Record};
    let (path, addr) = (format!("/run/netns/{ns}"), addr.to_string());
    let sock = mesh_sys::netns::run_in_net(&path, move || UdpSocket::bind(addr).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (c, ip) = (count.clone(), answer.parse::<std::net::Ipv4Addr>().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let mut a = Message::response(q.metadata.id, OpCode::Query);
            a.metadata.recursion_available = true;
            for question in &q.queries {
                a.add_query(question.clone());
                a.add_answer(Record::from_rdata(
                    question.name().clone(),
                    300,
                    RData::A(A(ip)),
                ));
            }
            let _ = sock.send_to(&a.to_vec().unwrap(), from);
        }
    });
    count
}

fn resolve(ns: &str, server: IpAddr) -> anyhow::Result<Vec<IpAddr>> {
    dns_query(ns, server, NAME, hickory_proto::rr::RecordType::A)
}

/// A datagram that is no DNS message, to the network's DNS server: meshd
/// logs it at debug level only.
fn send_garbage(ns: &str, server: IpAddr) {
    let path = format!("/run/netns/{ns}");
    mesh_sys::netns::run_in_net(&path, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"not dns", (server, 53)).unwrap();
    })
    .unwrap();
}

fn log_count(lab: &Lab, i: usize, needle: &str) -> usize {
    std::fs::read_to_string(&lab.hosts[i].log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// `ip -o link show dev IF` in `ns`: its index and MAC, as they must stay.
fn link_identity(lab: &Lab, ns: &str, ifname: &str) -> (String, String) {
    let out = lab
        .exec_ok(ns, &["ip", "-o", "link", "show", "dev", ifname])
        .unwrap();
    let index = out.split(':').next().unwrap().trim().to_string();
    let mac = out
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out}"))
        .to_string();
    (index, mac)
}

/// `kill -HUP PID`, as the docs say, then the reload numbered `count` as
/// host `i` records it.
fn sighup(lab: &Lab, i: usize, count: u64) -> ReloadStatus {
    let pid = lab.hosts[i].daemon_pid().unwrap().to_string();
    let out = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill -HUP {pid}: {out:?}");
    wait_for(Duration::from_secs(10), || {
        let r = lab.status(i)?.reload;
        match r {
            Some(r) if r.count == count => Ok(r),
            other => anyhow::bail!("reload {count} not recorded yet: {other:?}"),
        }
    })
    .unwrap()
}

/// `GET /metrics` from inside namespace `ns`; `None` if nothing listens.
fn metrics(ns: &str, addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let (path, addr) = (format!("/run/netns/{ns}"), addr.to_string());
    mesh_sys::netns::run_in_net(&path, move || {
        let mut s = std::net::TcpStream::connect(addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        Some(text)
    })
    .ok()
    .flatten()
}

fn key_generation(lab: &Lab, i: usize, peer: &str) -> u64 {
    lab.peer_status(i, peer).unwrap().key_generation.unwrap()
}

/// Hosts that host `i` sees may hold addresses of the one floating-IP pool.
fn pool_hosts(lab: &Lab, i: usize) -> anyhow::Result<Vec<String>> {
    let pools: Vec<mesh_api::FipPool> = lab.meshctl_json(i, &["fip", "pool", "list"])?;
    let mut hosts = pools[0].hosts.clone();
    hosts.sort();
    Ok(hosts)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn reload_changes_log_and_dns_live_and_refuses_a_bad_file() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("rld"), 3).expect("building the lab");
    let conf = lab.dir.join("h1.toml");
    let conf_s = conf.to_str().unwrap().to_string();
    write(
        &conf,
        "log = \"info\"\ndns_upstreams = [\"127.0.0.1:5301\"]\n",
    );
    lab.hosts[0].extra_args = vec!["--config".into(), conf_s.clone()];
    let conf2 = lab.dir.join("h2.toml");
    write(&conf2, "rekey_interval = 110\n");
    lab.hosts[1].extra_args = vec!["--config".into(), conf2.to_str().unwrap().into()];
    let stop = Arc::new(AtomicBool::new(false));
    let h1 = lab.hosts[0].netns.clone();
    let old_up = upstream(&h1, "127.0.0.1:5301", "192.0.2.1", stop.clone());
    let new_up = upstream(&h1, "127.0.0.1:5302", "192.0.2.2", stop.clone());
    lab.start_mesh().expect("mesh up");

    let net: Network = lab
        .meshctl_json(0, &["network", "create", NET, "--subnet", SUBNET])
        .unwrap();
    let dns: IpAddr = net.dns.parse().unwrap();
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let a1 = lab.attach_netns(0, &c1, NET, &[]);
    let a2 = lab.attach_netns(1, &c2, NET, &[]);
    let ip2 = a2.ip.split('/').next().unwrap().to_string();
    lab.wait_ping(&c1, &ip2, Duration::from_secs(15)).unwrap();

    // Before: the first upstream answers; garbage is not logged at info.
    let got = wait_for(Duration::from_secs(10), || resolve(&c1, dns)).unwrap();
    assert_eq!(got, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
    send_garbage(&c1, dns);
    resolve(&c1, dns).unwrap();
    assert_eq!(log_count(&lab, 0, "malformed DNS request"), 0);
    assert!(metrics(&h1, METRICS).is_none(), "no metrics listener yet");
    // A floating-IP pool on the LAN: any host may hold it.
    lab.meshctl(0, &["fip", "pool", "add", POOL]).unwrap();
    assert_eq!(pool_hosts(&lab, 0).unwrap(), ["h1", "h2", "h3"]);

    let ups: Vec<usize> = (0..3).map(|i| log_count(&lab, i, "peer up")).collect();
    assert!(ups.iter().all(|n| *n >= 1), "{ups:?}");
    let host_end = link_identity(&lab, &h1, &a1.host_ifname);
    let container_end = link_identity(&lab, &c1, &a1.ifname);

    // The reload: a new filter and upstream, and a restart-only key.
    write(
        &conf,
        "log = \"info,mesh_dns=debug\"\ndns_upstreams = [\"127.0.0.1:5302\"]\n\
         max_networks = 100\nmetrics_listen = \"127.0.0.1:9464\"\n\
         fip_pools = [\"198.18.0.224/28\"]\n",
    );
    let r = sighup(&lab, 0, 1);
    assert!(r.ok && r.error.is_none(), "{r:?}");
    assert_eq!(r.file, conf_s);
    assert_eq!(
        r.applied,
        ["log", "dns_upstreams", "metrics_listen", "fip_pools"]
    );
    assert_eq!(r.needs_restart, ["max_networks"]);
    assert_eq!(
        log_count(
            &lab,
            0,
            &format!("max_networks changed in {conf_s}: needs a restart")
        ),
        1
    );
    let text = lab.meshctl(0, &["status"]).unwrap();
    assert!(
        text.contains("ok, changed log, dns_upstreams, metrics_listen, fip_pools")
            && text.contains("restart  needed to apply max_networks"),
        "{text}"
    );

    let m = metrics(&h1, METRICS).expect("the metrics listener is up");
    assert!(m.contains("mesh_config_last_reload_successful 1"), "{m}");
    // Host 1 no longer permits the pool, here and (by its advert) there.
    for i in [0, 1] {
        wait_for(Duration::from_secs(10), || {
            let hosts = pool_hosts(&lab, i)?;
            anyhow::ensure!(hosts == ["h2", "h3"], "host {i} sees {hosts:?}");
            Ok(())
        })
        .unwrap();
    }

    // The new upstream answers at once (no answer of the old one cached).
    let asked = new_up.load(Ordering::SeqCst);
    assert_eq!(
        resolve(&c1, dns).unwrap(),
        ["192.0.2.2".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(new_up.load(Ordering::SeqCst), asked + 1);
    // The debug filter: the same garbage is logged now.
    send_garbage(&c1, dns);
    wait_for(Duration::from_secs(5), || {
        anyhow::ensure!(log_count(&lab, 0, "malformed DNS request") == 1);
        Ok(())
    })
    .unwrap();

    // Host 2 (which dialed host 1, so it starts their key exchanges)
    // rekeys every 2 s after its reload.
    let before = key_generation(&lab, 1, "h1");
    write(&conf2, "rekey_interval = 2\n");
    let r = sighup(&lab, 1, 1);
    assert_eq!(r.applied, ["rekey_interval"], "{r:?}");
    wait_for(Duration::from_secs(15), || {
        let now = key_generation(&lab, 1, "h1");
        anyhow::ensure!(now >= before + 2, "generation {now}, was {before}");
        Ok(())
    })
    .expect("faster rekeys");

    // Nothing else moved: no peer reconnected, the attachment is the same
    // pair of interfaces, and it still carries traffic.
    for (i, up) in ups.iter().enumerate() {
        assert_eq!(log_count(&lab, i, "peer up"), *up, "host {i} reconnected");
        assert_eq!(log_count(&lab, i, "peer down"), 0, "host {i} lost a peer");
        assert_eq!(lab.peers_up(i).unwrap(), 2);
    }
    assert_eq!(link_identity(&lab, &h1, &a1.host_ifname), host_end);
    assert_eq!(link_identity(&lab, &c1, &a1.ifname), container_end);
    assert_eq!(lab.attachments(0).len(), 1);
    assert!(lab.ping(&c1, &ip2, 3), "the container lost its path");

    // A bad file: refused with its line, nothing changes.
    write(
        &conf,
        "log = \"info\"\ndns_upstreams = [\"127.0.0.1:5301\"]\nrekey_interval = \"soon\"\n",
    );
    let r = sighup(&lab, 0, 2);
    assert!(!r.ok, "{r:?}");
    let e = r.error.clone().unwrap();
    assert!(e.starts_with(&format!("{conf_s} line 3")), "{e}");
    assert!(e.contains("soon") || e.contains("integer"), "{e}");
    assert!(r.applied.is_empty(), "{r:?}");
    assert_eq!(r.needs_restart, ["max_networks"], "still pending");
    assert_eq!(log_count(&lab, 0, "reload refused, nothing changed"), 1);
    let text = lab.meshctl(0, &["status"]).unwrap();
    assert!(
        text.contains(&format!("FAILED: {conf_s} line 3, column 18"))
            && text.contains("restart  needed to apply max_networks"),
        "{text}"
    );
    let old_asked = old_up.load(Ordering::SeqCst);
    assert_eq!(
        resolve(&c1, dns).unwrap(),
        ["192.0.2.2".parse::<IpAddr>().unwrap()],
        "the upstream of the last good file"
    );
    assert_eq!(old_up.load(Ordering::SeqCst), old_asked);
    send_garbage(&c1, dns);
    wait_for(Duration::from_secs(5), || {
        anyhow::ensure!(log_count(&lab, 0, "malformed DNS request") == 2);
        Ok(())
    })
    .expect("the debug filter still in force");
    let m = metrics(&h1, METRICS).expect("the metrics listener stays");
    assert!(m.contains("mesh_config_last_reload_successful 0"), "{m}");

    // Host 3 runs without a file: a reload is refused, meshd runs on.
    let r = sighup(&lab, 2, 1);
    assert!(!r.ok && r.error.unwrap().contains("without --config"));
    assert_eq!(lab.peers_up(2).unwrap(), 2);
    assert_eq!(log_count(&lab, 0, "peer down"), 0);
    stop.store(true, Ordering::Relaxed);
}
