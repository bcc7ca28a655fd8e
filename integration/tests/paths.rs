//! Path faults with both planes at once (root only): two hosts that cannot
//! reach each other at all talk through a third, and two hosts behind NATs
//! find a direct path, falling back to a relay when the NATs turn
//! symmetric. Switch-over times and the relay's throughput are printed.

use anyhow::ensure;
use integration::{test_lab, wait_for, Lab, Nat};
use std::time::{Duration, Instant};

const NET: &str = "paths";
const IPERF_PORT: u16 = 5201;

/// A container per host on network `paths`; returns (namespace, address).
fn containers(lab: &mut Lab) -> Vec<(String, String)> {
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.79.0.0/24"])
        .expect("network create");
    (0..lab.hosts.len())
        .map(|i| {
            let ns = lab.add_container(&format!("c{}", i + 1)).unwrap();
            let a = lab.attach_netns(i, &ns, NET, &[]);
            let ip = a.ip.split('/').next().unwrap().to_string();
            (ns, ip)
        })
        .collect()
}

#[test]
fn hosts_that_cannot_reach_each_other_talk_through_a_third() {
    let Some(mut lab) = test_lab("relay", 3) else {
        return;
    };
    lab.start_mesh().expect("mesh up");
    let cs = containers(&mut lab);
    let (c1, c2) = (&cs[0].0, &cs[1].1);
    lab.wait_ping(c1, c2, Duration::from_secs(10)).unwrap();
    lab.wait_path(0, "h2", "direct", Duration::from_secs(10))
        .unwrap();
    lab.iperf_server(&cs[1].0.clone(), IPERF_PORT).unwrap();
    let direct = lab
        .iperf_gbps(c1, c2, IPERF_PORT, 3)
        .expect("iperf3 direct");

    // Everything between h1 and h2 is dropped, data and control.
    lab.partition(0, &[1]).unwrap();
    let to_relay = lab
        .wait_path(0, "h2", "relayed via h3", Duration::from_secs(15))
        .unwrap();
    lab.wait_path(1, "h1", "relayed via h3", Duration::from_secs(15))
        .unwrap();
    lab.wait_ping(c1, c2, Duration::from_secs(5)).unwrap();
    assert!(
        lab.ping(c1, c2, 5),
        "containers on h1 and h2 talk through h3"
    );
    wait_for(Duration::from_secs(20), || {
        let p = lab.peer_status(0, "h2")?;
        ensure!(
            p.control.as_deref() == Some("relayed via h3"),
            "control to h2 is {:?}",
            p.control
        );
        ensure!(p.state == mesh_api::PeerState::Up, "h2 is {}", p.state);
        Ok(())
    })
    .unwrap();
    let relayed = lab
        .iperf_gbps(c1, c2, IPERF_PORT, 3)
        .expect("iperf3 relayed");

    lab.heal(0).unwrap();
    let to_direct = lab
        .wait_path(0, "h2", "direct", Duration::from_secs(20))
        .unwrap();
    assert!(lab.ping(c1, c2, 3), "containers talk after the heal");
    println!(
        "direct→relayed {:.1} s, relayed→direct {:.1} s; iperf3 direct {direct:.2} Gbit/s, \
         relayed {relayed:.2} Gbit/s (ratio {:.2})",
        to_relay.as_secs_f64(),
        to_direct.as_secs_f64(),
        relayed / direct
    );
}

#[test]
fn hosts_behind_nats_find_a_direct_path_and_relay_when_they_cannot() {
    let Some(mut lab) = test_lab("nat", 3) else {
        return;
    };
    // h1 is on the underlay; h2 and h3 each sit behind a masquerading
    // router and can only be reached through what they open themselves.
    lab.put_behind_nat(1, Nat::PortPreserving).unwrap();
    lab.put_behind_nat(2, Nat::PortPreserving).unwrap();
    lab.start_mesh().expect("mesh up through the NATs");
    let cs = containers(&mut lab);
    let (c2, c3) = (&cs[1].0, &cs[2].1);
    lab.wait_ping(c2, c3, Duration::from_secs(15)).unwrap();
    // A direct path between the two NATed hosts, on the NATs' addresses.
    lab.wait_path(1, "h3", "direct", Duration::from_secs(20))
        .unwrap();
    lab.wait_path(2, "h2", "direct", Duration::from_secs(20))
        .unwrap();
    let p = lab.peer_status(1, "h3").unwrap();
    let endpoint = p.data_address.unwrap_or_default();
    assert!(
        endpoint.starts_with("198.18.0.103:"),
        "h2 reaches h3 through h3's NAT, not {endpoint:?}"
    );
    // The control connection opens through both NATs as well (each side
    // dials the other's reflexive address at once).
    lab.wait_control(1, "h3", "direct", Duration::from_secs(30))
        .unwrap();
    lab.wait_control(2, "h2", "direct", Duration::from_secs(10))
        .unwrap();
    let address = lab.peer_status(1, "h3").unwrap().address;
    assert!(
        address.starts_with("198.18.0.103:"),
        "h2 holds its control link to h3 at h3's NAT, not {address}"
    );

    // Symmetric NATs (and every mapping forgotten): no direct path is
    // possible any more; the relay carries the traffic (while there is
    // some: an idle path is not probed).
    lab.keep_talking(c2, c3).unwrap();
    lab.set_nat(1, Nat::Symmetric).unwrap();
    lab.set_nat(2, Nat::Symmetric).unwrap();
    let start = Instant::now();
    lab.wait_path(1, "h3", "relayed via h1", Duration::from_secs(30))
        .unwrap();
    lab.wait_control(1, "h3", "relayed via h1", Duration::from_secs(30))
        .unwrap();
    lab.wait_control(2, "h2", "relayed via h1", Duration::from_secs(10))
        .unwrap();
    println!(
        "behind symmetric NATs: data and control relayed via h1 after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    lab.wait_ping(c2, c3, Duration::from_secs(10)).unwrap();
    assert!(lab.ping(c2, c3, 3), "containers behind symmetric NATs talk");
}
