//! Random loss on the underlay (nftables `numgen random` in the lab's
//! underlay bridge): at 10 % TCP between containers on two hosts still
//! moves data and the mesh stays up; 30 % for 20 s then healed, everything
//! recovers without a restart (peers up, ping, DNS).

use hickory_proto::rr::RecordType;
use integration::{dns_query, test_mesh, wait_for, Lab};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SUBNET: &str = "198.19.7.0/24";

fn all_peers_up(lab: &Lab) -> anyhow::Result<()> {
    for i in 0..lab.hosts.len() {
        let n = lab.peers_up(i)?;
        anyhow::ensure!(n == lab.hosts.len() - 1, "host {} sees {n} peers up", i + 1);
    }
    Ok(())
}

/// Percentage of 100 quick pings from host 1 to host 2 over the underlay
/// that got no answer: proof the fault is in place.
fn underlay_ping_loss(lab: &Lab) -> f64 {
    let dst = lab.hosts[1].underlay_ip.to_string();
    let out = lab
        .exec(
            &lab.hosts[0].netns,
            &[
                "ping", "-n", "-q", "-c", "100", "-i", "0.01", "-W", "1", &dst,
            ],
        )
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find_map(|f| f.trim().strip_suffix("% packet loss"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loss figure in {text}"))
}

#[test]
fn tcp_flows_through_loss_and_the_mesh_recovers_from_heavy_loss() {
    let Some(mut lab) = test_mesh("loss", 2) else {
        return;
    };
    lab.meshctl(0, &["network", "create", "blue", "--subnet", SUBNET])
        .expect("network create");
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    lab.attach_netns(0, &c1, "blue", &["--ip", "198.19.7.1/24", "--name", "c1"]);
    let a2 = lab.attach_netns(1, &c2, "blue", &["--ip", "198.19.7.2/24", "--name", "c2"]);
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(15))
        .expect("ping before any loss");
    let pids: Vec<Option<u32>> = lab.hosts.iter().map(|h| h.daemon_pid()).collect();

    let server = lab
        .spawn_helper({
            let mut c = lab.exec(&c2, &["iperf3", "-s", "-B", "198.19.7.2", "-p", "5301"]);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            c
        })
        .unwrap();
    let clean = wait_for(Duration::from_secs(10), || {
        lab.iperf_gbps(&c1, "198.19.7.2", 5301, 3)
    })
    .expect("iperf3 without loss");

    lab.underlay_loss(10).expect("10 % loss");
    let measured = underlay_ping_loss(&lab);
    println!("underlay ping loss at 10 %: {measured} % (both directions count)");
    assert!(measured > 0.0, "the loss fault is not in place");
    let lossy = lab
        .iperf_gbps(&c1, "198.19.7.2", 5301, 5)
        .expect("iperf3 at 10 % loss");
    println!(
        "TCP between containers: {clean:.3} Gbit/s clean, {lossy:.4} Gbit/s at 10 % underlay loss"
    );
    assert!(lossy > 0.0, "TCP moved no data at 10 % loss");
    all_peers_up(&lab).expect("the mesh stays up at 10 % loss");
    lab.stop_helper(server).unwrap();

    lab.underlay_loss(30).expect("30 % loss");
    std::thread::sleep(Duration::from_secs(20));
    lab.underlay_loss(0).expect("heal");
    let healed = Instant::now();
    wait_for(Duration::from_secs(15), || all_peers_up(&lab)).expect("peers up after healing");
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(15))
        .expect("ping after healing");
    let dns: std::net::IpAddr = a2
        .dns_server
        .as_deref()
        .expect("the attachment names its DNS server")
        .parse()
        .unwrap();
    let ips = wait_for(Duration::from_secs(10), || {
        dns_query(&c2, dns, "c1.blue", RecordType::A)
    })
    .expect("DNS answers after healing");
    assert_eq!(ips, ["198.19.7.1".parse::<std::net::IpAddr>().unwrap()]);
    println!(
        "recovered from 20 s of 30 % loss in {:.1} s",
        healed.elapsed().as_secs_f64()
    );
    let after: Vec<Option<u32>> = lab.hosts.iter().map(|h| h.daemon_pid()).collect();
    assert_eq!(pids, after, "no meshd restarted");
}
