//! Docker's network plugin (`meshd --docker-plugin`) on two lab hosts, each
//! with a private dockerd (see `integration::docker`): `docker run`
//! containers on both hosts reach each other by DNS name, reach a
//! container attached by `meshctl attach` and one podman started through
//! CNI, stay connected across a meshd
//! restart; `docker network inspect` shows the mesh subnet; a Docker
//! network's name is its mesh network's id when it is a valid one (else
//! `dk` + Docker's id), so containers answer as `NAME.<docker network>`;
//! bad requests
//! get the protocol's error answer and leave nothing half-attached; the
//! Docker side goes with `docker network rm`, the mesh network only when
//! Docker made it and nothing uses it. Skipped (with the reason) where
//! Docker cannot run.

use integration::docker::{self, Dockerd, IMAGE};
use integration::podman::{self, Podman};
use integration::{test_lab, wait_for, Lab};
use mesh_api::{Attachment, DnsRecord, Network};
use std::io::{Read, Write};
use std::time::Duration;

const SUBNET: &str = "10.77.0.0/24";
/// The Docker network's name on both hosts, and so the mesh network's id.
const DNET: &str = "dnet";
const NET: &str = DNET;

fn run_container(d: &Dockerd, name: &str, dns: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--network", DNET, "--name", name, "--dns", dns];
    args.extend_from_slice(extra);
    args.extend([IMAGE, "sleep", "3600"]);
    d.docker_ok(&args)
        .unwrap_or_else(|e| panic!("docker run {name}: {e:#}\n{}", d.log_tail(20)))
}

/// `ping` from inside a Docker container, retried while names and
/// neighbours settle.
fn wait_docker_ping(d: &Dockerd, container: &str, dst: &str) {
    wait_for(Duration::from_secs(30), || {
        d.docker_ok(&["exec", container, "ping", "-c", "1", "-W", "1", dst])
    })
    .unwrap_or_else(|e| panic!("{container} cannot ping {dst}: {e:#}"));
}

fn attachment_named(lab: &Lab, i: usize, name: &str) -> anyhow::Result<Attachment> {
    lab.attachments(i)
        .into_iter()
        .find(|a| a.name.as_deref() == Some(name))
        .ok_or_else(|| anyhow::anyhow!("host {i} lists no attachment named {name}"))
}

/// One raw plugin call on host `i`'s plugin socket: (HTTP status, body).
fn plugin_call(lab: &Lab, i: usize, call: &str, body: &str) -> (u16, serde_json::Value) {
    let path = docker::plugin_dir(lab, i).join("mesh.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&path).expect("plugin socket");
    write!(
        s,
        "POST /{call} HTTP/1.0\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Host-side veths meshd has on host `i` (`<prefix>v…`).
fn host_veths(lab: &Lab, i: usize) -> usize {
    lab.exec_ok(&lab.hosts[i].netns, &["ip", "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|n| n.trim().starts_with("msv"))
        })
        .count()
}

#[test]
fn docker_containers_join_the_mesh_through_the_plugin() {
    if let Some(why) = docker::cannot_run() {
        eprintln!("skipping: Docker cannot run here: {why}");
        return;
    }
    let Some(mut lab) = test_lab("dk", 2) else {
        return;
    };
    for i in 0..2 {
        docker::enable_plugin(&mut lab, i).unwrap();
    }
    lab.start_mesh().expect("mesh up");
    // Declared after the lab: dropped (containers removed, dockerd
    // stopped) before the lab's namespaces go.
    let d: Vec<Dockerd> = (0..2)
        .map(|i| Dockerd::start(&lab, i).expect("dockerd"))
        .collect();
    for dk in &d {
        dk.import_busybox().expect("image");
    }

    // Host 1 creates the mesh network through Docker, named after the
    // Docker network (README's form: no -o mesh.network); host 2 maps its
    // Docker network to that one by its subnet once it knows it.
    let create = |dk: &Dockerd| dk.create_mesh_network(DNET, Some(SUBNET), None);
    create(&d[0]).unwrap_or_else(|e| panic!("{e:#}\n{}", lab.log_tail(0, 20)));
    let net: Network = wait_for(Duration::from_secs(20), || {
        let nets: Vec<Network> = lab.meshctl_json(1, &["network", "list"])?;
        nets.into_iter()
            .find(|n| n.id == NET)
            .ok_or_else(|| anyhow::anyhow!("host 2 does not know {NET} yet"))
    })
    .unwrap();
    assert_eq!(net.subnet, SUBNET);
    assert_eq!(
        net.labels.get("docker.network").map(String::as_str),
        Some(DNET)
    );
    create(&d[1]).unwrap();
    let subnet = d[0]
        .docker_ok(&[
            "network",
            "inspect",
            DNET,
            "--format",
            "{{(index .IPAM.Config 0).Subnet}}",
        ])
        .unwrap();
    assert_eq!(
        subnet, SUBNET,
        "docker network inspect shows the mesh subnet"
    );

    // Two Docker containers, one per host, by DNS name.
    run_container(&d[0], "web1", &net.dns, &["--label", "app=web"]);
    run_container(&d[1], "web2", &net.dns, &[]);
    let a1 = wait_for(Duration::from_secs(30), || {
        attachment_named(&lab, 0, "web1")
    })
    .unwrap();
    assert_eq!(a1.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(a1.network, NET);
    wait_for(Duration::from_secs(30), || {
        attachment_named(&lab, 1, "web2")
    })
    .unwrap();
    wait_docker_ping(&d[0], "web1", &format!("web2.{NET}"));
    wait_docker_ping(&d[1], "web2", &format!("web1.{NET}"));

    // A container attached by meshctl on host 2 is reachable by name.
    let ns = lab.add_container("c3").unwrap();
    let c3 = lab.attach_netns(1, &ns, NET, &["--name", "plain"]);
    wait_docker_ping(&d[0], "web1", &format!("plain.{NET}"));
    let c3_ip = c3.ip.split('/').next().unwrap().to_string();
    let web1_ip = a1.ip.split('/').next().unwrap().to_string();
    lab.wait_ping(&ns, &web1_ip, Duration::from_secs(20))
        .unwrap();

    // And one podman started through CNI on host 2, where podman can run.
    let pod = match podman::cannot_run() {
        None => Some(Podman::new(&lab, NET).expect("podman set up")),
        Some(why) => {
            eprintln!("podman part skipped: {why}");
            None
        }
    };
    if let Some(pod) = &pod {
        let name = format!("{}-pod", lab.prefix);
        let net = podman::network_of(1);
        pod.run(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "--cap-add",
            "NET_RAW",
            podman::IMAGE,
            "sleep",
            "300",
        ])
        .unwrap();
        let id = pod.out(&["inspect", "--format", "{{.Id}}", &name]).unwrap();
        let a = lab
            .attachments(1)
            .into_iter()
            .find(|a| a.container_id.as_deref() == Some(id.as_str()))
            .expect("the podman container is attached on host 2");
        wait_docker_ping(&d[0], "web1", a.ip.split('/').next().unwrap());
    }

    // Port security holds for a Docker attachment: web1 sending from an
    // address it was not given reaches nothing, and its host counts it.
    let web2 = attachment_named(&lab, 1, "web2").unwrap();
    let web2_ip = web2.ip.split('/').next().unwrap().to_string();
    // From the host into web1's namespace: a container that has NET_ADMIN.
    let pid = d[0]
        .docker_ok(&["inspect", "--format", "{{.State.Pid}}", "web1"])
        .unwrap();
    let in_web1 = |cmd: &[&str]| {
        std::process::Command::new("nsenter")
            .args(["-t", pid.trim(), "-n", "--"])
            .args(cmd)
            .output()
            .unwrap()
    };
    let spoofs = |lab: &Lab| {
        lab.port_drops(0, &web1_ip, Some("arp")) + lab.port_drops(0, &web1_ip, Some("ip"))
    };
    let before = spoofs(&lab);
    let added = in_web1(&["ip", "addr", "add", "10.77.0.199/24", "dev", "eth0"]);
    assert!(added.status.success(), "{added:?}");
    let out = in_web1(&["ping", "-c", "2", "-W", "1", "-I", "10.77.0.199", &web2_ip]);
    assert!(!out.status.success(), "web1 reached web2 as 10.77.0.199");
    assert!(spoofs(&lab) > before, "no drop counted");
    in_web1(&["ip", "addr", "del", "10.77.0.199/24", "dev", "eth0"]);
    wait_docker_ping(&d[0], "web1", &web2_ip);

    // On an egress network a Docker container has its default route
    // (through this host) when it starts: dockerd sets the gateway the
    // plugin's Join names.
    lab.meshctl(0, &["network", "set", NET, "--egress", "on"])
        .unwrap();
    let gw = wait_for(Duration::from_secs(10), || {
        lab.status(0)?
            .host_addresses
            .into_iter()
            .find(|a| a.network == NET && a.gateway)
            .ok_or_else(|| anyhow::anyhow!("no gateway on host 1 yet"))
    })
    .unwrap();
    let routes = d[0]
        .docker_ok(&["run", "--rm", "--network", DNET, IMAGE, "ip", "route"])
        .unwrap();
    let gw_ip = gw.ip.split('/').next().unwrap();
    assert!(routes.contains(&format!("default via {gw_ip}")), "{routes}");
    lab.meshctl(0, &["network", "set", NET, "--egress", "off"])
        .unwrap();

    // Bad requests: the protocol's error answer, nothing half-attached.
    let veths = host_veths(&lab, 0);
    let attached = lab.attachments(0).len();
    let out = d[0]
        .docker_out(&[
            "network",
            "create",
            "-d",
            "mesh",
            "--ipam-driver",
            "mesh",
            "--subnet",
            "10.77.0.0/16",
            "clash",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pool clash"), "{err}");
    let out = d[0]
        .docker_out(&[
            "run",
            "-d",
            "--network",
            DNET,
            "--ip",
            &c3_ip,
            "--name",
            "dup",
            IMAGE,
            "sleep",
            "60",
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already in use"),
        "{err}"
    );
    let (status, body) = plugin_call(
        &lab,
        0,
        "NetworkDriver.CreateEndpoint",
        r#"{"NetworkID":"nope","EndpointID":"e1","Interface":{"Address":"10.77.0.9/24"}}"#,
    );
    assert_eq!(status, 500);
    let msg = body["Err"].as_str().unwrap_or_default();
    assert!(
        msg.contains("nope") && msg.contains("not a mesh network"),
        "{body}"
    );
    let (status, body) = plugin_call(&lab, 0, "Plugin.Activate", "");
    assert_eq!(status, 200);
    assert_eq!(
        body["Implements"],
        serde_json::json!(["NetworkDriver", "IpamDriver"])
    );
    let (status, _) = plugin_call(&lab, 0, "NetworkDriver.Join", "{not json");
    assert_eq!(status, 400);
    assert_eq!(
        plugin_call(&lab, 0, "NetworkDriver.NoSuchCall", "{}").0,
        404
    );
    assert_eq!(host_veths(&lab, 0), veths, "a refused request left a veth");
    assert_eq!(lab.attachments(0).len(), attached);

    // No --subnet, no mesh.network: a fresh mesh network on a free /24,
    // Docker-made, so it goes with the Docker network; named after it when
    // the name is a valid mesh id, else dk + the start of Docker's id.
    for (name, id_is) in [("auto", "auto"), ("Auto_Net", "dk")] {
        let docker_id = d[0].create_mesh_network(name, None, None).unwrap();
        let auto = d[0]
            .docker_ok(&[
                "network",
                "inspect",
                name,
                "--format",
                "{{(index .IPAM.Config 0).Subnet}}",
            ])
            .unwrap();
        let made = wait_for(Duration::from_secs(20), || {
            let nets: Vec<Network> = lab.meshctl_json(0, &["network", "list"])?;
            nets.into_iter()
                .find(|n| n.subnet == auto)
                .ok_or_else(|| anyhow::anyhow!("no mesh network for {name} yet"))
        })
        .unwrap();
        let want = match id_is {
            "dk" => format!("dk{}", &docker_id[..9]),
            id => id.to_string(),
        };
        assert!(
            made.id == want && auto.starts_with("10.200."),
            "{name}: {made:?}"
        );
        assert_eq!(
            made.labels.get("docker.network").map(String::as_str),
            Some(name)
        );
        // A container on it right away.
        d[0].docker_ok(&["run", "--rm", "--network", name, IMAGE, "true"])
            .unwrap();
        d[0].docker_ok(&["network", "rm", name]).unwrap();
        wait_for(Duration::from_secs(20), || {
            let nets: Vec<Network> = lab.meshctl_json(0, &["network", "list"])?;
            match nets.iter().any(|n| n.subnet == auto) {
                true => Err(anyhow::anyhow!("{} is still there", made.id)),
                false => Ok(()),
            }
        })
        .unwrap();
    }

    // meshd restarts under running containers: they stay connected.
    lab.stop_daemon(0, nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    lab.start_daemon(0).unwrap();
    wait_for(Duration::from_secs(30), || {
        attachment_named(&lab, 0, "web1")
    })
    .unwrap();
    wait_docker_ping(&d[0], "web1", &format!("web2.{NET}"));
    wait_docker_ping(&d[1], "web2", &format!("web1.{NET}"));
    // The plugin still knows its endpoints: a new container joins.
    run_container(&d[0], "web3", &net.dns, &[]);
    wait_docker_ping(&d[1], "web2", &format!("web3.{NET}"));

    // docker rm detaches: the attachment, its veth and its name go.
    d[0].docker_ok(&["rm", "-f", "web1", "web3"]).unwrap();
    wait_for(Duration::from_secs(20), || {
        match lab.attachments(0).is_empty() && host_veths(&lab, 0) == 0 {
            true => Ok(()),
            false => Err(anyhow::anyhow!("host 1 still lists attachments")),
        }
    })
    .unwrap();

    // docker network rm: host 2 did not create the mesh network, so it
    // stays; host 1 did, and once nothing uses it, it goes.
    d[1].docker_ok(&["rm", "-f", "web2"]).unwrap();
    drop(pod); // Its containers go (CNI DEL).
    d[1].docker_ok(&["network", "rm", DNET]).unwrap();
    lab.meshctl(
        1,
        &["detach", &format!("/run/netns/{ns}"), "--network", NET],
    )
    .unwrap();
    let ids = |i| -> Vec<String> {
        lab.meshctl_json::<Vec<Network>>(i, &["network", "list"])
            .unwrap()
            .into_iter()
            .map(|n| n.id)
            .collect()
    };
    assert!(ids(0).contains(&NET.to_string()));
    // Host 2's detach reaches host 1 by gossip first.
    wait_for(Duration::from_secs(20), || {
        let records: Vec<DnsRecord> = lab.meshctl_json(0, &["dns"])?;
        match records.iter().any(|r| r.fqdn.ends_with(&format!(".{NET}"))) {
            true => Err(anyhow::anyhow!("host 1 still sees containers on {NET}")),
            false => Ok(()),
        }
    })
    .unwrap();
    d[0].docker_ok(&["network", "rm", DNET]).unwrap();
    wait_for(Duration::from_secs(20), || {
        match ids(0).contains(&NET.to_string()) {
            true => Err(anyhow::anyhow!("{NET} is still there")),
            false => Ok(()),
        }
    })
    .unwrap();
    drop(d);
}
