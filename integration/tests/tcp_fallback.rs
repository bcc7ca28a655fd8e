//! The TCP fallback: nftables in h1's namespace drops all UDP between h1
//! and the other hosts (TCP passes), so neither QUIC nor the data plane's
//! UDP (direct or relayed through h3) reaches h1. The hosts stay members
//! over TLS on TCP; replicated state still flows (a container attached and
//! a service created after the block are seen on h1); containers on h1 and
//! h2 talk, by name and through the service's VIP; status says `tcp` and
//! doctor says why. Lifting the block brings the data path back to UDP
//! within 10 s. Run as root.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use integration::{dns_query, test_lab, wait_for, Lab};
use mesh_api::Attachment;

const NET: &str = "tcpfb";
const SUBNET: &str = "198.19.9.0/24";

/// The mesh up, network NET, c1 on h1 (198.19.9.1) and c2 on h2
/// (198.19.9.2, with `c2_extra` attach flags), pinging each other directly.
fn two_containers(lab: &mut Lab, c2_extra: &[&str]) -> (String, String, Attachment) {
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", NET, "--subnet", SUBNET])
        .expect("network create");
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    let a1 = lab.attach_netns(0, &c1, NET, &["--ip", "198.19.9.1/24"]);
    let mut args = vec!["--ip", "198.19.9.2/24"];
    args.extend_from_slice(c2_extra);
    lab.attach_netns(1, &c2, NET, &args);
    lab.wait_ping(&c1, "198.19.9.2", Duration::from_secs(10))
        .expect("direct ping");
    (c1, c2, a1)
}

#[test]
fn hosts_without_udp_between_them_carry_control_and_data_over_tcp_and_return_to_udp() {
    let Some(mut lab) = test_lab("tcpfb", 3) else {
        return;
    };
    let (c1, c2, a1) = two_containers(&mut lab, &["--label", "app=web"]);
    lab.serve_who(&c2, "c2", 8080).unwrap();
    lab.wait_path(0, "h2", "direct", Duration::from_secs(10))
        .unwrap();

    lab.block_udp(0, &[1, 2]).unwrap();
    let blocked_at = Instant::now();
    let up = lab
        .wait_control(0, "h2", "tcp", Duration::from_secs(60))
        .and_then(|_| lab.wait_control(1, "h1", "tcp", Duration::from_secs(20)))
        .and_then(|_| lab.wait_path(0, "h2", "tcp", Duration::from_secs(20)))
        .and_then(|_| lab.wait_path(1, "h1", "tcp", Duration::from_secs(20)));
    if up.is_err() {
        lab.dump_logs();
    }
    up.unwrap();
    println!(
        "UDP blocked → control and data over TCP: {:.1} s",
        blocked_at.elapsed().as_secs_f64()
    );
    // h3 is reached over TCP too (it cannot relay: UDP to it is blocked).
    lab.wait_control(0, "h3", "tcp", Duration::from_secs(30))
        .unwrap();

    if let Err(e) = lab.wait_ping(&c1, "198.19.9.2", Duration::from_secs(10)) {
        for i in 0..3 {
            eprintln!("{}", lab.meshctl(i, &["status"]).unwrap_or_default());
        }
        lab.dump_logs();
        panic!("containers talk over TCP: {e:#}");
    }
    let status = lab.meshctl(0, &["status"]).unwrap();
    let h2_line = status
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("h2"))
        .unwrap_or_else(|| panic!("no h2 in the status:\n{status}"));
    // PEER NAME ADDRESS STATE PATH …
    assert_eq!(
        h2_line.split_whitespace().nth(4),
        Some("tcp"),
        "PATH is not tcp: {h2_line}"
    );
    // `meshctl doctor` exits 1 (warnings are problems): its report is
    // read from stdout.
    let out = std::process::Command::new(lab.bin("meshctl"))
        .arg("--socket")
        .arg(&lab.hosts[0].socket)
        .arg("doctor")
        .output()
        .unwrap();
    let doctor = String::from_utf8_lossy(&out.stdout);
    assert!(
        doctor.contains("TCP fallback") && doctor.contains("UDP"),
        "doctor does not say why:\n{doctor}"
    );

    // Replicated state flows over TCP: a container attached on h2 and a
    // service created on h2 after the block are found from h1.
    let c3 = lab.add_container("c3").unwrap();
    lab.attach_netns(
        1,
        &c3,
        NET,
        &["--ip", "198.19.9.3/24", "--label", "app=web"],
    );
    lab.serve_who(&c3, "c3", 8080).unwrap();
    let dns: IpAddr = a1.dns_server.as_deref().unwrap().parse().unwrap();
    wait_for(Duration::from_secs(15), || {
        let a = dns_query(&c1, dns, &format!("{c3}.{NET}"), RecordType::A)?;
        anyhow::ensure!(a == vec!["198.19.9.3".parse::<IpAddr>()?], "A {a:?}");
        Ok(())
    })
    .expect("h1 resolves a container attached on h2 after the block");
    let service: serde_json::Value = lab
        .meshctl_json(
            1,
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
    let vip = service["vip"].as_str().unwrap().to_string();
    let (name, _) = lab.wait_ask(&c1, &vip, 80).expect("service VIP over TCP");
    assert!(name == "c2" || name == "c3", "{name}");
    assert_eq!(
        lab.peer_status(0, "h2").unwrap().path,
        "tcp",
        "still over TCP while UDP is blocked"
    );

    lab.unblock_udp(0).unwrap();
    let unblocked_at = Instant::now();
    let back = lab.wait_path(0, "h2", "direct", Duration::from_secs(10));
    if back.is_err() {
        lab.dump_logs();
    }
    let took = back.expect("data path back on UDP within 10 s");
    println!(
        "UDP unblocked → data path direct: {:.1} s",
        took.as_secs_f64()
    );
    lab.wait_control(0, "h2", "direct", Duration::from_secs(10))
        .expect("control back on QUIC within 10 s");
    println!(
        "UDP unblocked → control direct: {:.1} s",
        unblocked_at.elapsed().as_secs_f64()
    );
    lab.wait_path(1, "h1", "direct", Duration::from_secs(10))
        .unwrap();
    lab.wait_ping(&c1, "198.19.9.2", Duration::from_secs(5))
        .expect("containers talk over UDP again");
}

/// A host reached only over TCP relays for others: h1 has no UDP to
/// anyone and no TCP to h2, so its containers reach h2's through h3 (h1→h3
/// over TCP, h3→h2 over UDP), control and data.
#[test]
fn a_host_reached_only_over_tcp_relays_for_the_others() {
    let Some(mut lab) = test_lab("tcprl", 3) else {
        return;
    };
    let (c1, _, _) = two_containers(&mut lab, &[]);

    lab.block_udp(0, &[1, 2]).unwrap();
    lab.block_tcp(0, &[1]).unwrap();
    let relayed = lab
        .wait_control(0, "h3", "tcp", Duration::from_secs(60))
        .and_then(|_| lab.wait_control(0, "h2", "relayed via h3", Duration::from_secs(30)))
        .and_then(|_| lab.wait_path(0, "h2", "relayed via h3", Duration::from_secs(30)))
        .and_then(|_| lab.wait_path(1, "h1", "relayed via h3", Duration::from_secs(30)));
    if relayed.is_err() {
        lab.dump_logs();
    }
    relayed.unwrap();
    lab.wait_ping(&c1, "198.19.9.2", Duration::from_secs(10))
        .expect("containers talk through h3, reached over TCP");
}

/// A host with no UDP to the mesh joins it: `meshctl join` falls back to
/// TCP once QUIC cannot reach the seed.
#[test]
fn a_host_without_udp_joins_over_tcp() {
    let Some(mut lab) = test_lab("tcpjn", 2) else {
        return;
    };
    lab.start_daemon(0).unwrap();
    lab.start_daemon(1).unwrap();
    lab.block_udp(1, &[0]).unwrap();
    let token = lab.meshctl(0, &["token"]).unwrap().trim().to_string();
    let seed = lab.hosts[0].control_address();
    // A wrong token is refused over TCP as over QUIC: an answer, not
    // tried again (host 2's own one-host mesh's token: well-formed, wrong).
    let wrong = lab.meshctl(1, &["token"]).unwrap().trim().to_string();
    let refused = lab
        .meshctl(1, &["join", &seed, "--token", &wrong])
        .unwrap_err()
        .to_string();
    let said = refused.to_lowercase();
    assert!(
        (said.contains("token") || said.contains("secret")) && !said.contains("cannot reach"),
        "a refusal over TCP should say so: {refused}"
    );
    let joined = lab.meshctl(1, &["join", &seed, "--token", &token]);
    if joined.is_err() {
        lab.dump_logs();
    }
    joined.expect("join over TCP");
    lab.wait_all_up(Duration::from_secs(30)).unwrap();
    lab.wait_control(1, "h1", "tcp", Duration::from_secs(10))
        .unwrap();
    lab.wait_control(0, "h2", "tcp", Duration::from_secs(10))
        .unwrap();
}

/// README, "Where UDP is blocked": `tcp_extra_port = 443` in meshd.toml
/// adds a second TCP port peers try. With UDP and the control port's TCP
/// both dropped between h1 and h2, h2 reaches h1 on 443.
#[test]
fn an_extra_tcp_port_from_meshd_toml_is_advertised_and_dialled() {
    let Some(mut lab) = test_lab("tcpxp", 2) else {
        return;
    };
    let config = lab.hosts[0].state_dir.with_extension("toml");
    std::fs::write(&config, "tcp_extra_port = 443\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    lab.hosts[0]
        .extra_args
        .extend(["--config".to_string(), config]);
    lab.start_mesh().expect("mesh up");

    lab.block_udp(0, &[1]).unwrap();
    lab.block_tcp_port(0, 1, integration::CONTROL_PORT).unwrap();
    let over_443 = lab
        .wait_control(1, "h1", "tcp", Duration::from_secs(60))
        .and_then(|_| lab.wait_control(0, "h2", "tcp", Duration::from_secs(10)));
    if over_443.is_err() {
        lab.dump_logs();
    }
    over_443.expect("h1 and h2 linked over TCP");
    let h1 = lab.peer_status(1, "h1").unwrap();
    assert!(
        h1.address.ends_with(":443"),
        "h2 reaches h1 at {}, not its port 443",
        h1.address
    );
}
