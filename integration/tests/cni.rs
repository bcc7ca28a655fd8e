//! The `mesh` CNI plugin driven like a runtime drives it (root only):
//! `integration::cnitool` execs the plugin binary with CNI_* variables and
//! the configuration on stdin, in a lab host's namespace, against that
//! host's meshd socket.

use integration::cnitool::{CniResult, CniTool, Container, VersionReply};
use integration::{test_lab, test_mesh, wait_for, Lab};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SUBNET: &str = "198.19.7.0/24";

fn lab(tag: &str) -> Option<Lab> {
    let lab = test_mesh(tag, 2)?;
    lab.meshctl(0, &["network", "create", "blue", "--subnet", SUBNET])
        .expect("network create");
    Some(lab)
}

/// The plugin as host `i`'s runtime would run it: in that host's
/// namespace, talking to its meshd.
fn tool(lab: &Lab, i: usize, network: Option<&str>) -> CniTool {
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": "blue",
        "type": "mesh",
        "socket": lab.hosts[i].socket,
    });
    if let Some(n) = network {
        conf["network"] = json!(n);
    }
    CniTool::new(lab.bin("mesh"), Some(&lab.hosts[i].netns), conf).expect("plugin binary")
}

fn container(id: &str, ns: &str) -> Container {
    Container {
        id: id.into(),
        netns: format!("/run/netns/{ns}"),
        ifname: "eth0".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAME=".to_string() + id,
    }
}

/// Interfaces in a namespace other than lo.
fn links(lab: &Lab, ns: &str) -> Vec<String> {
    lab.exec_ok(ns, &["ip", "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        })
        .filter(|n| n != "lo")
        .collect()
}

#[test]
fn cni_add_check_del_across_two_hosts() {
    let Some(mut lab) = lab("cni") else { return };
    let t1 = tool(&lab, 0, None);
    let t2 = tool(&lab, 1, None);

    let v: VersionReply = t1.version().unwrap().ok().unwrap();
    assert_eq!(v.cni_version, "1.1.0");
    assert!(v.supported_versions.iter().any(|s| s == "1.1.0"));

    // STATUS: ready on host 1 at once, on host 2 when the network arrived by gossip.
    t1.status().unwrap().ok::<()>().unwrap();
    wait_for(Duration::from_secs(10), || t2.status()?.ok::<()>()).expect("STATUS on host 2");

    let ns1 = lab.add_container("k1").unwrap();
    let ns2 = lab.add_container("k2").unwrap();
    let c1 = container("cid-one", &ns1);
    let mut c2 = container("cid-two", &ns2);

    // Address from runtimeConfig.ips on host 1, from CNI_ARGS IP= (bare,
    // gets the subnet's length) on host 2.
    let start = Instant::now();
    let r1 = t1.add(&c1, json!({"ips": ["198.19.7.1/24"]})).unwrap();
    eprintln!("ADD took {:?}", r1.elapsed);
    let r1: CniResult = r1.ok().unwrap();
    c2.args = format!("{};IP=198.19.7.2", c2.args);
    let r2: CniResult = t2.add(&c2, Value::Null).unwrap().ok().unwrap();
    eprintln!("two ADDs: {:?}", start.elapsed());

    assert_eq!(r1.cni_version, "1.1.0");
    let ifs = &r1.interfaces;
    assert_eq!(ifs.len(), 2, "{r1:?}");
    assert!(ifs[0].name.starts_with("ms"), "host veth: {r1:?}");
    assert_eq!(ifs[1].name, "eth0");
    assert_eq!(ifs[1].sandbox.as_deref(), Some(c1.netns.as_str()));
    assert!(ifs[1].mtu.unwrap() > 1000);
    assert_eq!(
        (r1.ips[0].address.as_str(), r1.ips[0].interface),
        ("198.19.7.1/24", Some(1))
    );
    assert_eq!(r2.ips[0].address, "198.19.7.2/24");
    // The MAC in the result is the one inside the container.
    let link = lab
        .exec_ok(&ns1, &["ip", "-o", "link", "show", "eth0"])
        .unwrap();
    let mac = ifs[1].mac.as_deref().unwrap();
    assert!(link.contains(mac), "{link} vs {r1:?}");

    // DNS: meshd's resolver for the network, once it has one.
    let att = lab
        .attachments(0)
        .into_iter()
        .find(|a| a.container_id.as_deref() == Some("cid-one"))
        .expect("attachment of cid-one");
    if let Some(server) = &att.dns_server {
        let server = server.split('/').next().unwrap();
        let dns = r1.dns.as_ref().expect("a dns section");
        assert_eq!(dns.nameservers[0], server, "{r1:?}");
    }
    eprintln!("ADD result: {r1:?}");

    // Across hosts, over the mesh.
    lab.wait_ping(&ns1, "198.19.7.2", Duration::from_secs(10))
        .expect("k1 -> k2 over the mesh");
    assert!(lab.ping(&ns2, "198.19.7.1", 3), "k2 -> k1");

    // Port security holds for a CNI attachment: k1 sending as another
    // address reaches nothing, and its host counts it.
    let spoofs = |lab: &Lab| {
        lab.port_drops(0, "198.19.7.1", Some("arp")) + lab.port_drops(0, "198.19.7.1", Some("ip"))
    };
    let before = spoofs(&lab);
    lab.exec_ok(
        &ns1,
        &["ip", "addr", "add", "198.19.7.77/24", "dev", "eth0"],
    )
    .unwrap();
    let spoofed = [
        "ping",
        "-c",
        "2",
        "-W",
        "1",
        "-I",
        "198.19.7.77",
        "198.19.7.2",
    ];
    assert!(
        lab.exec_ok(&ns1, &spoofed).is_err(),
        "k1 reached k2 from an address it was not given"
    );
    assert!(spoofs(&lab) > before, "no drop counted");
    lab.exec_ok(
        &ns1,
        &["ip", "addr", "del", "198.19.7.77/24", "dev", "eth0"],
    )
    .unwrap();
    assert!(lab.ping(&ns1, "198.19.7.2", 3), "k1 -> k2 after");

    t1.check(&c1).unwrap().ok::<()>().unwrap();
    t2.check(&c2).unwrap().ok::<()>().unwrap();

    // CHECK notices an interface that went away inside the container.
    lab.exec_ok(&ns2, &["ip", "link", "set", "eth0", "down"])
        .unwrap();
    let bad = t2.check(&c2).unwrap();
    assert_eq!(bad.code(), Some(101), "{:?}", bad);
    assert!(bad.msg().contains("down"), "{}", bad.msg());
    lab.exec_ok(&ns2, &["ip", "link", "set", "eth0", "up"])
        .unwrap();

    // DEL as runtimes send it after the container exited: no CNI_NETNS.
    let gone = Container {
        netns: String::new(),
        ..c2.clone()
    };
    let d = t2.del(&gone).unwrap();
    assert!(d.success, "{d:?}");
    assert!(!lab.attached_ids(1).contains(&"cid-two".to_string()));
    assert!(
        links(&lab, &ns2).is_empty(),
        "veth left in k2: {:?}",
        links(&lab, &ns2)
    );
    assert!(!lab.ping(&ns1, "198.19.7.2", 1));
    // Repeated DEL: still fine.
    assert!(t2.del(&gone).unwrap().success);
    // CHECK of a detached container fails.
    assert!(!t2.exec("CHECK", &c2, json!({})).unwrap().success);

    // DEL after the namespace itself was deleted.
    lab.exec_ok(&ns1, &["true"]).unwrap();
    std::process::Command::new("ip")
        .args(["netns", "del", &ns1])
        .status()
        .unwrap();
    let d = t1.del(&c1).unwrap();
    assert!(d.success, "{d:?}");
    assert!(lab.attached_ids(0).is_empty());
}

#[test]
fn cni_errors_concurrency_gc_and_status() {
    let Some(mut lab) = lab("cne") else { return };
    let t1 = tool(&lab, 0, None);
    let ns = lab.add_container("e1").unwrap();
    let c = container("cid-e1", &ns);
    let ip = json!({"ips": ["198.19.7.10/24"]});

    // Bad input: each with its code and a message naming the problem.
    let bad_json = t1.exec_raw("ADD", &c, b"{\"cniVersion\": ").unwrap();
    assert_eq!(bad_json.code(), Some(6), "{bad_json:?}");
    let mut conf = t1.conf.clone();
    conf["cniVersion"] = json!("2.7.0");
    let bad_ver = t1.exec_raw("ADD", &c, conf.to_string().as_bytes()).unwrap();
    assert_eq!(bad_ver.code(), Some(1));
    assert!(bad_ver.msg().contains("2.7.0"));
    let no_netns = t1
        .exec(
            "ADD",
            &Container {
                netns: String::new(),
                ..c.clone()
            },
            json!({}),
        )
        .unwrap();
    assert_eq!(no_netns.code(), Some(4));
    assert!(no_netns.msg().contains("CNI_NETNS"), "{}", no_netns.msg());
    let not_ns = t1
        .exec(
            "ADD",
            &Container {
                netns: "/etc/hostname".into(),
                ..c.clone()
            },
            json!({}),
        )
        .unwrap();
    assert_eq!(not_ns.code(), Some(4));
    assert!(
        not_ns.msg().contains("not a network namespace"),
        "{}",
        not_ns.msg()
    );
    let no_such = t1
        .exec(
            "ADD",
            &Container {
                netns: "/run/netns/nope-x".into(),
                ..c.clone()
            },
            json!({}),
        )
        .unwrap();
    assert_eq!(no_such.code(), Some(3));
    let unknown_net = tool(&lab, 0, Some("nosuchnet"))
        .add(&c, ip.clone())
        .unwrap();
    assert_eq!(unknown_net.code(), Some(7), "{unknown_net:?}");
    assert!(unknown_net.msg().contains("nosuchnet"));
    let outside = t1.add(&c, json!({"ips": ["10.99.0.1/24"]})).unwrap();
    assert!(!outside.success);
    assert!(
        links(&lab, &ns).is_empty(),
        "half-attached: {:?}",
        links(&lab, &ns)
    );

    // Without an address: meshd allocates one (IPAM) or says it needs one.
    let auto = t1.add(&c, Value::Null).unwrap();
    eprintln!("ADD without an address: {}", auto.json);
    if auto.success {
        let r: CniResult = auto.ok().unwrap();
        assert!(r.ips[0].address.starts_with("198.19.7."), "{r:?}");
        assert!(t1.del(&c).unwrap().success);
    } else {
        assert_eq!(auto.code(), Some(7), "{auto:?}");
        assert!(auto.msg().contains("runtimeConfig.ips"), "{}", auto.msg());
    }
    assert!(links(&lab, &ns).is_empty());

    t1.add(&c, ip.clone()).unwrap().ok::<CniResult>().unwrap();
    // Address taken by another container: refused, nothing left behind.
    let ns_dup = lab.add_container("e2").unwrap();
    let dup = t1.add(&container("cid-e2", &ns_dup), ip.clone()).unwrap();
    assert_eq!(dup.code(), Some(100), "{dup:?}");
    assert!(dup.msg().contains("198.19.7.10"), "{}", dup.msg());
    assert!(links(&lab, &ns_dup).is_empty());

    // Concurrent ADDs and DELs for different containers.
    let many: Vec<Container> = (0..6)
        .map(|k| {
            container(
                &format!("cid-p{k}"),
                &lab.add_container(&format!("p{k}")).unwrap(),
            )
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for (k, c) in many.iter().enumerate() {
            let t = &t1;
            s.spawn(move || {
                let r = t
                    .add(c, json!({"ips": [format!("198.19.7.{}/24", 100 + k)]}))
                    .unwrap();
                assert!(r.success, "{r:?}");
            });
        }
    });
    eprintln!("6 parallel ADDs: {:?}", start.elapsed());
    let ids = lab.attached_ids(0);
    assert_eq!(ids.len(), 7, "{ids:?}");
    lab.wait_ping(
        &format!("{}-p0", lab.prefix),
        "198.19.7.105",
        Duration::from_secs(5),
    )
    .expect("p0 -> p5");
    std::thread::scope(|s| {
        for c in many.iter().take(3) {
            let t = &t1;
            s.spawn(move || assert!(t.del(c).unwrap().success));
        }
    });
    assert_eq!(lab.attached_ids(0).len(), 4);

    // A hand-made attachment (no container id) is not the plugin's to collect.
    let manual = lab.add_container("m1").unwrap();
    lab.attach(0, &manual, "blue", "198.19.7.50/24").unwrap();
    // GC: keep e1 and p3; p4, p5 are stale.
    let g = t1.gc(&[("cid-e1", "eth0"), ("cid-p3", "eth0")]).unwrap();
    assert!(g.success, "{g:?}");
    let mut ids = lab.attached_ids(0);
    ids.sort();
    assert_eq!(ids, vec!["cid-e1", "cid-p3"]);
    assert_eq!(lab.attachments(0).len(), 3, "the manual attachment stays");

    // meshd away: STATUS says 50, ADD says try again later (11).
    lab.stop_daemon(0, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let st = t1.status().unwrap();
    assert_eq!(st.code(), Some(50), "{st:?}");
    let later = t1
        .add(
            &container("cid-late", &ns_dup),
            json!({"ips": ["198.19.7.77/24"]}),
        )
        .unwrap();
    assert_eq!(later.code(), Some(11), "{later:?}");
    // DEL with the namespace still there cannot be done without meshd.
    assert_eq!(t1.del(&c).unwrap().code(), Some(11));
}

/// `meshctl hook start` as an OCI runtime runs it (createRuntime): the
/// container's state on stdin, its pid in the container's namespace.
fn hook_attach(lab: &mut Lab, ns: &str, id: &str, ip: &str) {
    let pid = lab
        .spawn_helper({
            let mut c = lab.exec(ns, &["sleep", "600"]);
            c.stdout(std::process::Stdio::null());
            c
        })
        .unwrap();
    let state = json!({"ociVersion": "1.0.2", "id": id, "status": "creating", "pid": pid,
        "annotations": {"mesh.network": "blue", "mesh.ip": ip}});
    let mut child = std::process::Command::new(lab.bin("meshctl"))
        .arg("--socket")
        .arg(&lab.hosts[0].socket)
        .args(["hook", "start"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), state.to_string().as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hook: {out:?}");
}

/// GC with an empty valid list (the runtime has no containers left)
/// collects the calling configuration's own attachments and nothing that
/// an OCI hook, `meshctl attach`, the Docker plugin or another CNI
/// configuration made on the same network, container ids and all.
#[test]
fn cni_gc_collects_only_its_own() {
    use integration::docker::{self, Dockerd, IMAGE};
    let Some(mut lab) = test_lab("cgc", 1) else {
        return;
    };
    let docker_why = docker::cannot_run();
    if docker_why.is_none() {
        docker::enable_plugin(&mut lab, 0).unwrap();
    }
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", "blue", "--subnet", SUBNET])
        .expect("network create");

    // This configuration's own: two containers, both stale at GC.
    let mine = tool(&lab, 0, None);
    for (k, id) in ["cni-a", "cni-b"].iter().enumerate() {
        let ns = lab.add_container(id).unwrap();
        let r = mine
            .add(
                &container(id, &ns),
                json!({"ips": [format!("198.19.7.{}/24", 10 + k)]}),
            )
            .unwrap();
        assert!(r.success, "{r:?}");
    }
    // Another CNI configuration on the same mesh network.
    let mut conf = mine.conf.clone();
    conf["name"] = json!("blue-other");
    conf["network"] = json!("blue");
    let other = CniTool::new(lab.bin("mesh"), Some(&lab.hosts[0].netns), conf).unwrap();
    let ns = lab.add_container("cni-o").unwrap();
    let r = other
        .add(&container("cni-o", &ns), json!({"ips": ["198.19.7.20/24"]}))
        .unwrap();
    assert!(r.success, "{r:?}");
    // The OCI hook's and the CLI's, each with a container id.
    let ns = lab.add_container("hk").unwrap();
    hook_attach(&mut lab, &ns, "hook-c1", "198.19.7.30/24");
    let ns = lab.add_container("cl").unwrap();
    lab.meshctl(
        0,
        &[
            "attach",
            &format!("/run/netns/{ns}"),
            "--network",
            "blue",
            "--ip",
            "198.19.7.40/24",
            "--container-id",
            "cli-c1",
        ],
    )
    .unwrap();
    // Docker's, through a private dockerd and the plugin; named by the
    // container id Docker reports.
    let _d = match &docker_why {
        Some(why) => {
            eprintln!("Docker part skipped: {why}");
            None
        }
        None => {
            let d = Dockerd::start(&lab, 0).expect("dockerd");
            d.import_busybox().expect("image");
            d.create_mesh_network("web", Some(SUBNET), Some("blue"))
                .unwrap();
            let id = d
                .docker_ok(&["run", "-d", "--network", "web", IMAGE, "sleep", "600"])
                .unwrap();
            wait_for(Duration::from_secs(20), || {
                let ids = lab.attached_ids(0);
                ids.contains(&id)
                    .then_some(())
                    .ok_or_else(|| anyhow::anyhow!("no attachment of {id} yet: {ids:?}"))
            })
            .unwrap();
            Some((d, id))
        }
    };
    let before = lab.attached_ids(0);
    eprintln!("attached before GC: {before:?}");
    for id in ["cni-a", "cni-b", "cni-o", "hook-c1", "cli-c1"] {
        assert!(
            before.iter().any(|b| b == id),
            "{id} not attached: {before:?}"
        );
    }

    let g = mine.gc(&[]).unwrap();
    assert!(g.success, "{g:?}");
    let mut after = lab.attached_ids(0);
    after.sort();
    let mut want: Vec<String> = before
        .iter()
        .filter(|id| *id != "cni-a" && *id != "cni-b")
        .cloned()
        .collect();
    want.sort();
    assert_eq!(after, want, "GC took other runtimes' attachments");

    // The list says who made each.
    let listed: Vec<Value> = lab.meshctl_json(0, &["attachments"]).unwrap();
    let origin = |id: &str| {
        listed
            .iter()
            .find(|a| a["container_id"] == id)
            .map(|a| a["origin"].clone())
    };
    assert_eq!(origin("cni-o"), Some(json!("cni:blue-other")));
    assert_eq!(origin("hook-c1"), Some(json!("hook")));
    assert_eq!(origin("cli-c1"), Some(json!("cli")));
    if let Some((_, id)) = &_d {
        assert_eq!(origin(id), Some(json!("docker")));
    }
    let table = lab.meshctl(0, &["attachments"]).unwrap();
    assert!(
        table.contains("ORIGIN") && table.contains("cni:blue-other"),
        "{table}"
    );
    // The other configuration collects its own too.
    assert!(other.gc(&[]).unwrap().success);
    assert!(!lab.attached_ids(0).iter().any(|id| id == "cni-o"));
}
