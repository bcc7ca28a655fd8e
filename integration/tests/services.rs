//! Services on the 3-host namespace lab (root): one lab for every check, to
//! keep lab time low. Backends are busybox httpd with a CGI script that
//! answers `NAME REMOTE_ADDR`, on hosts 1 and 2; the client is on host 3.

use hickory_proto::rr::RecordType;
use integration::{dns_query, is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Attachment, ErrorKind, Service};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const NET: &str = "svc";

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

struct Backend {
    name: String,
    ns: String,
    ip: String,
    pid: Option<u32>,
}

struct World {
    lab: Lab,
    www: PathBuf,
    client: String,
    client_ip: String,
    client_ip6: String,
    backends: Vec<Backend>,
}

impl World {
    fn docroot(&self, name: &str) -> PathBuf {
        self.www.join(name)
    }

    /// A container on `host` attached with `labels`, serving httpd on 8080.
    fn add_backend(&mut self, name: &str, host: usize, labels: &[&str]) -> usize {
        let ns = self.lab.add_container(name).unwrap();
        let path = format!("/run/netns/{ns}");
        let mut args = vec!["attach", path.as_str(), "--network", NET, "--name", name];
        for l in labels {
            args.extend_from_slice(&["--label", l]);
        }
        let a: Attachment = wait_for(Duration::from_secs(10), || {
            self.lab.meshctl_json(host, &args)
        })
        .unwrap();
        let cgi = self.docroot(name).join("cgi-bin");
        std::fs::create_dir_all(&cgi).unwrap();
        let script = cgi.join("who");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"{name} $REMOTE_ADDR\"\n"
            ),
        )
        .unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap();
        self.backends.push(Backend {
            name: name.into(),
            ns,
            ip: bare(&a.ip),
            pid: None,
        });
        let i = self.backends.len() - 1;
        self.start_httpd(i);
        i
    }

    fn start_httpd(&mut self, i: usize) {
        let (name, ns, ip) = {
            let b = &self.backends[i];
            (b.name.clone(), b.ns.clone(), b.ip.clone())
        };
        let root = self.docroot(&name);
        let cmd = self.lab.exec(
            &ns,
            &[
                "busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
                root.to_str().unwrap(),
            ],
        );
        let pid = self.lab.spawn_helper(cmd).unwrap();
        self.backends[i].pid = Some(pid);
        // Up when it answers on its own address.
        wait_for(Duration::from_secs(5), || {
            self.lab
                .exec_ok(
                    &ns,
                    &[
                        "busybox",
                        "wget",
                        "-q",
                        "-O",
                        "-",
                        &format!("http://{ip}:8080/cgi-bin/who"),
                    ],
                )
                .and_then(|o| {
                    if o.trim().is_empty() {
                        anyhow::bail!("no answer")
                    } else {
                        Ok(())
                    }
                })
        })
        .unwrap();
    }

    fn stop_httpd(&mut self, i: usize) {
        if let Some(pid) = self.backends[i].pid.take() {
            self.lab.stop_helper(pid).unwrap();
        }
    }

    /// `n` new connections from the client to `url`; the answers by
    /// backend name, each checked to carry the client's own address.
    fn fetch(&self, url: &str, n: usize) -> BTreeMap<String, usize> {
        let script = format!(
            "for i in $(seq {n}); do timeout 2 busybox wget -q -O - {url} || echo FAILED; done"
        );
        let out = self
            .lab
            .exec_ok(&self.client, &["sh", "-c", &script])
            .unwrap();
        let mut counts = BTreeMap::new();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split_whitespace();
            let name = parts.next().unwrap_or_default().to_string();
            if name != "FAILED" {
                let seen = parts.next().unwrap_or_default();
                // The client's own address, IPv4 or IPv6 (names prefer AAAA).
                let own = seen.trim_matches(|c| c == '[' || c == ']');
                let own = own.strip_prefix("::ffff:").unwrap_or(own);
                assert!(
                    own == self.client_ip || own == self.client_ip6,
                    "backend {name} saw {seen}, not the client's own {} / {}",
                    self.client_ip,
                    self.client_ip6
                );
            }
            *counts.entry(name).or_insert(0) += 1;
        }
        counts
    }

    /// Fetches `n` until `ok` holds of the answers (the client's rules
    /// follow the view the test waited for within a tick).
    fn settle(
        &self,
        url: &str,
        n: usize,
        ok: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> BTreeMap<String, usize> {
        wait_for(Duration::from_secs(5), || {
            let seen = self.fetch(url, n);
            anyhow::ensure!(ok(&seen), "{url}: {seen:?}");
            Ok(seen)
        })
        .unwrap()
    }

    fn service(&self, host: usize, name: &str) -> Service {
        let all: Vec<Service> = self.lab.meshctl_json(host, &["service", "list"]).unwrap();
        all.into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no service {name} on host {host}"))
    }

    /// Waits until the client's host has exactly `want` active targets.
    fn wait_targets(&self, name: &str, want: &[&str], within: Duration) -> Duration {
        let start = Instant::now();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        wait_for(within, || {
            let s = self.service(2, name);
            let mut got: Vec<String> = s
                .targets
                .iter()
                .filter(|t| t.active)
                .filter_map(|t| t.name.clone())
                .collect();
            got.sort();
            anyhow::ensure!(got == want, "{name}: active {got:?}, want {want:?}");
            Ok(())
        })
        .unwrap_or_else(|e| {
            self.lab.dump_logs();
            panic!("{e:#}")
        });
        start.elapsed()
    }
}

fn api_kind(lab: &Lab, req: mesh_api::CreateServiceRequest) -> Option<ErrorKind> {
    lab.api(0, |c| async move { c.create_service(&req).await })
        .expect_err("the request should fail")
        .kind()
}

fn request(name: &str, ports: &[&str]) -> mesh_api::CreateServiceRequest {
    mesh_api::CreateServiceRequest {
        name: name.into(),
        network: NET.into(),
        ports: ports.iter().map(|s| s.to_string()).collect(),
        selector: vec![],
        scheduler: None,
        ip: None,
        health_interval_ms: None,
    }
}

/// A UDP server in `ns` answering every datagram with `name PEER`.
fn udp_echo(ns: &str, bind: &str, name: &str) {
    let (path, bind) = (format!("/run/netns/{ns}"), bind.to_string());
    let sock: UdpSocket =
        mesh_sys::netns::run_in_net(&path, move || UdpSocket::bind(bind).unwrap()).unwrap();
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
        }
    });
}

/// One datagram from `ns` to `dst`; the answer, if any.
fn udp_ask(ns: &str, dst: SocketAddr) -> Option<String> {
    let path = format!("/run/netns/{ns}");
    mesh_sys::netns::run_in_net(&path, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.send_to(b"hi", dst).ok()?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .ok()
    .flatten()
}

fn within(counts: &BTreeMap<String, usize>, name: &str, want: usize, slack: usize) {
    let got = counts.get(name).copied().unwrap_or(0);
    assert!(
        got + slack >= want && got <= want + slack,
        "{name}: {got} connections, want {want} ± {slack} ({counts:?})"
    );
}

#[test]
fn services_balance_follow_the_fleet_and_survive_restarts() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    if integration::which("busybox").is_none() {
        eprintln!("skipping: busybox is not installed");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("svc"), 3).expect("building the lab");
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.77.0.0/24"])
        .unwrap();
    let www = lab.dir.join("www");
    let client = lab.add_container("cl").unwrap();
    let path = format!("/run/netns/{client}");
    let ca: Attachment = wait_for(Duration::from_secs(10), || {
        lab.meshctl_json(2, &["attach", &path, "--network", NET, "--name", "cl"])
    })
    .unwrap();
    let mut w = World {
        lab,
        www,
        client,
        client_ip: bare(&ca.ip),
        client_ip6: bare(ca.ip6.as_deref().unwrap()),
        backends: vec![],
    };
    let b1 = w.add_backend("b1", 0, &["app=web"]);
    let b2 = w.add_backend("b2", 1, &["app=web", "tier=x"]);
    let b3 = w.add_backend("b3", 1, &["app=web"]);
    w.add_backend("other", 0, &["app=db"]);

    // Bad input: one-line errors with their kinds.
    let lab = &w.lab;
    let mut dup = request("web", &["80:8080"]);
    dup.selector = vec!["app=web".into()];
    let web: Service = lab
        .meshctl_json(
            0,
            &[
                "service",
                "create",
                "web",
                "--network",
                NET,
                "--port",
                "80:8080",
                "--selector",
                "app=web",
            ],
        )
        .unwrap();
    assert!(web.vip.starts_with("10.77.0."), "{web:?}");
    assert_eq!(api_kind(lab, dup.clone()), Some(ErrorKind::Conflict));
    let mut unknown = request("x", &["80"]);
    unknown.network = "nope".into();
    assert_eq!(
        api_kind(lab, unknown.clone()),
        Some(ErrorKind::NetworkNotFound)
    );
    for (port, ip, sel) in [
        ("70000", None, None),
        ("80", Some("10.99.0.5"), None),
        ("80", None, Some("app")),
    ] {
        let mut r = request("x", &[port]);
        r.ip = ip.map(String::from);
        r.selector = sel.into_iter().map(String::from).collect();
        assert_eq!(
            api_kind(lab, r.clone()),
            Some(ErrorKind::BadRequest),
            "{port} {ip:?} {sel:?}"
        );
    }
    let mut taken = request("x", &["80"]);
    taken.ip = Some(bare(&ca.ip));
    assert!(api_kind(lab, taken.clone()).is_some());
    let err = lab
        .meshctl(0, &["service", "add", "web", "10.77.0.9", "--weight", "0"])
        .unwrap_err();
    assert!(
        err.to_string().contains("weight") && !err.to_string().contains('\n'),
        "{err}"
    );

    // DNS: web.svc answers the VIPs, on the client's host.
    let dns: IpAddr = ca.dns_server.as_deref().unwrap().parse().unwrap();
    wait_for(Duration::from_secs(10), || {
        let a = dns_query(&w.client, dns, "web.svc", RecordType::A)?;
        anyhow::ensure!(a == vec![web.vip.parse::<IpAddr>()?], "A {a:?}");
        let aaaa = dns_query(&w.client, dns, "web.svc", RecordType::AAAA)?;
        anyhow::ensure!(aaaa == vec![web.vip6.parse::<IpAddr>()?], "AAAA {aaaa:?}");
        Ok(())
    })
    .unwrap();

    // rr: 300 new connections spread 100 ± 15 over three targets on two hosts.
    w.wait_targets("web", &["b1", "b2", "b3"], Duration::from_secs(10));
    let by_name = w.fetch("http://web.svc/cgi-bin/who", 3);
    assert_eq!(by_name.values().sum::<usize>(), 3, "{by_name:?}");
    assert!(!by_name.contains_key("FAILED"), "{by_name:?}");
    let url = format!("http://{}/cgi-bin/who", web.vip);
    let rr = w.fetch(&url, 300);
    eprintln!("rr distribution over 300: {rr:?}");
    for b in ["b1", "b2", "b3"] {
        within(&rr, b, 100, 15);
    }
    // Over IPv6 too.
    let v6 = w.fetch(&format!("http://[{}]/cgi-bin/who", web.vip6), 3);
    assert_eq!(v6.values().sum::<usize>(), 3);
    assert!(!v6.contains_key("FAILED"), "{v6:?}");
    // Connection counts (read from the client namespace every 2 s).
    wait_for(Duration::from_secs(6), || {
        let s = w.service(2, "web");
        let per: Vec<u64> = s.targets.iter().map(|t| t.connections).collect();
        anyhow::ensure!(
            per.iter().sum::<u64>() >= 306 && per.iter().all(|n| *n >= 100),
            "{per:?}"
        );
        Ok(())
    })
    .unwrap();
    let metrics = w.lab.meshctl(2, &["metrics"]).unwrap();
    assert!(
        metrics.contains("mesh_service_connections_total{service=\"web\""),
        "{metrics}"
    );

    // Health: a dead backend leaves within 5 s and comes back.
    w.stop_httpd(b2);
    let gone = w.wait_targets("web", &["b1", "b3"], Duration::from_secs(5));
    eprintln!("stopped backend out of rotation after {gone:?}");
    w.settle(&url, 6, |m| {
        !m.contains_key("b2") && !m.contains_key("FAILED")
    });
    let after = w.fetch(&url, 30);
    assert_eq!(after.get("b2"), None, "{after:?}");
    assert_eq!(after.get("FAILED"), None, "{after:?}");
    w.start_httpd(b2);
    let back = w.wait_targets("web", &["b1", "b2", "b3"], Duration::from_secs(5));
    eprintln!("restarted backend back after {back:?}");

    // The fleet: a new labelled container joins within 2 s; detach removes it.
    let b4 = w.add_backend("b4", 0, &["app=web"]);
    let joined = w.wait_targets("web", &["b1", "b2", "b3", "b4"], Duration::from_secs(2));
    eprintln!("new container joined after {joined:?}");
    w.settle(&url, 8, |m| m.contains_key("b4"));
    let ns4 = format!("/run/netns/{}", w.backends[b4].ns);
    w.stop_httpd(b4);
    w.lab
        .meshctl(0, &["detach", &ns4, "--network", NET])
        .unwrap();
    w.wait_targets("web", &["b1", "b2", "b3"], Duration::from_secs(5));

    // wrr with explicit targets, 3:1 within 15 %.
    let lab = &w.lab;
    lab.meshctl(
        1,
        &[
            "service",
            "create",
            "weighted",
            "--network",
            NET,
            "--port",
            "81:8080",
            "--scheduler",
            "wrr",
        ],
    )
    .unwrap();
    let (ip1, ip3) = (w.backends[b1].ip.clone(), w.backends[b3].ip.clone());
    wait_for(Duration::from_secs(10), || {
        lab.meshctl(2, &["service", "add", "weighted", &ip1, "--weight", "3"])
    })
    .unwrap();
    // Explicit targets live in the service's one record: two hosts editing
    // it at the same moment is last-writer-wins for the whole list
    // (docs/services.md). Host 1 edits once it has seen host 3's edit.
    wait_for(Duration::from_secs(10), || {
        let s = w.service(0, "weighted");
        anyhow::ensure!(
            s.targets.iter().any(|t| t.explicit && t.ip == ip1),
            "host 1 does not see {ip1} yet: {:?}",
            s.targets
        );
        Ok(())
    })
    .unwrap();
    lab.meshctl(0, &["service", "add", "weighted", &ip3, "--weight", "1"])
        .unwrap();
    w.wait_targets("weighted", &["b1", "b3"], Duration::from_secs(10));
    let vip_w = w.service(2, "weighted").vip;
    let wrr = w.fetch(&format!("http://{vip_w}:81/cgi-bin/who"), 200);
    eprintln!("wrr 3:1 distribution over 200: {wrr:?}");
    let ratio = wrr.get("b1").copied().unwrap_or(0) as f64
        / wrr.get("b3").copied().unwrap_or(1).max(1) as f64;
    assert!((2.55..=3.45).contains(&ratio), "ratio {ratio} ({wrr:?})");
    lab.meshctl(2, &["service", "remove", "weighted", &ip3])
        .unwrap();
    w.wait_targets("weighted", &["b1"], Duration::from_secs(5));
    w.settle(&format!("http://{vip_w}:81/cgi-bin/who"), 6, |m| {
        m.get("b1") == Some(&6)
    });
    let lab = &w.lab;
    let text = lab.meshctl(2, &["service", "list", "--details"]).unwrap();
    assert!(
        text.contains("weighted") && text.contains(&ip1) && text.contains("weight 3"),
        "{text}"
    );

    // UDP, to a backend on another host; it sees the client's address.
    let ip2 = w.backends[b2].ip.clone();
    udp_echo(&w.backends[b2].ns, &format!("{ip2}:5300"), "b2");
    lab.meshctl(
        0,
        &[
            "service",
            "create",
            "udp",
            "--network",
            NET,
            "--port",
            "53:5300/udp",
        ],
    )
    .unwrap();
    lab.meshctl(0, &["service", "add", "udp", &ip2]).unwrap();
    w.wait_targets("udp", &["b2"], Duration::from_secs(10));
    let vip_u: IpAddr = w.service(2, "udp").vip.parse().unwrap();
    let answer = wait_for(Duration::from_secs(5), || {
        udp_ask(&w.client, SocketAddr::new(vip_u, 53))
            .ok_or_else(|| anyhow::anyhow!("no UDP answer"))
    })
    .unwrap();
    assert_eq!(answer, format!("b2 {}", w.client_ip));

    // Circuit's verbs.
    let lab = &w.lab;
    let out = lab
        .meshctl(
            1,
            &["lb", "create", "demo", "10.77.0.235:90", "--network", NET],
        )
        .unwrap();
    assert!(out.starts_with("10.77.0.235"), "{out}");
    lab.meshctl(1, &["lb", "add", "demo", &format!("{ip1}:8080")])
        .unwrap();
    w.wait_targets("demo", &["b1"], Duration::from_secs(10));
    w.settle("http://10.77.0.235:90/cgi-bin/who", 4, |m| {
        m.get("b1") == Some(&4)
    });
    let lab = &w.lab;
    let text = lab.meshctl(2, &["lb", "list", "--details"]).unwrap();
    assert!(
        text.contains("demo") && text.contains(&format!("{ip1}:8080")),
        "{text}"
    );
    lab.meshctl(2, &["lb", "remove", "demo", &format!("{ip1}:8080")])
        .unwrap();
    lab.meshctl(2, &["lb", "delete", "demo"]).unwrap();
    wait_for(Duration::from_secs(5), || {
        let all: Vec<Service> = lab.meshctl_json(2, &["lb", "list"])?;
        anyhow::ensure!(all.iter().all(|s| s.name != "demo"), "demo still listed");
        Ok(())
    })
    .unwrap();

    // Host death: the targets of a killed host leave within 5 s.
    w.lab.stop_daemon(1, Signal::SIGKILL).unwrap();
    let dead = w.wait_targets("web", &["b1"], Duration::from_secs(5));
    eprintln!("dead host's targets out after {dead:?}");
    // The client's rules follow the view within a tick.
    w.settle(&url, 4, |m| m.get("b1") == Some(&4));

    // Every daemon restarts; the services stay and keep working.
    for i in 0..3 {
        w.lab.stop_daemon(i, Signal::SIGTERM).unwrap();
    }
    for i in 0..3 {
        w.lab.start_daemon(i).unwrap();
    }
    w.lab.wait_all_up(Duration::from_secs(30)).unwrap();
    for i in 0..3 {
        let names: Vec<String> = w
            .lab
            .meshctl_json::<Vec<Service>>(i, &["service", "list"])
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names.len(), 3, "host {i}: {names:?}");
    }
    assert_eq!(w.service(0, "web").vip, web.vip);
    w.wait_targets("web", &["b1", "b2", "b3"], Duration::from_secs(10));
    w.settle(&url, 6, |m| m.len() == 3 && !m.contains_key("FAILED"));
    let again = w.fetch(&url, 30);
    for b in ["b1", "b2", "b3"] {
        within(&again, b, 10, 3);
    }

    // A network with services is removed only with --force, and they go with it.
    let lab = &w.lab;
    let err = lab.meshctl(0, &["network", "rm", NET]).unwrap_err();
    assert!(err.to_string().contains("service"), "{err}");
    lab.meshctl(0, &["network", "rm", NET, "--force"]).unwrap();
    wait_for(Duration::from_secs(10), || {
        let all: Vec<Service> = lab.meshctl_json(2, &["service", "list"])?;
        anyhow::ensure!(all.is_empty(), "{} services left", all.len());
        Ok(())
    })
    .unwrap();
}
