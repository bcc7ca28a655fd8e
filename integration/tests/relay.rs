//! Data-plane relay (root only): only the data port (UDP 7801) is blocked
//! between h1 and h2, the control plane stays direct. Frames between
//! their containers go through h3 within 5 s and come back to the direct
//! path within 10 s of the unblock; switch-over times and iperf3
//! throughput relayed vs. direct are printed.

use anyhow::ensure;
use integration::{test_lab, wait_for};
use std::time::Duration;

const NET: &str = "relay";
const DATA_PORT: u16 = 7801;
const IPERF_PORT: u16 = 5201;

#[test]
fn blocked_data_port_is_relayed_through_the_third_host_and_heals() {
    let Some(mut lab) = test_lab("dprelay", 3) else {
        return;
    };
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.78.0.0/24"])
        .expect("network create");
    let cs: Vec<(String, String)> = (0..2)
        .map(|i| {
            let ns = lab.add_container(&format!("c{}", i + 1)).unwrap();
            let a = lab.attach_netns(i, &ns, NET, &[]);
            (ns, a.ip.split('/').next().unwrap().to_string())
        })
        .collect();
    let (c1, c2) = (&cs[0].0, &cs[1].1);
    lab.wait_ping(c1, c2, Duration::from_secs(10)).unwrap();
    lab.wait_path(0, "h2", "direct", Duration::from_secs(10))
        .unwrap();
    // The probes measured the path: a 1500-byte underlay, IPv4.
    wait_for(Duration::from_secs(10), || {
        let p = lab.peer_status(0, "h2")?;
        ensure!(p.path_mtu == Some(1472), "path MTU {:?}", p.path_mtu);
        ensure!(p.path_rtt_ms.is_some(), "no probe RTT");
        Ok(())
    })
    .unwrap();
    lab.iperf_server(&cs[1].0.clone(), IPERF_PORT).unwrap();
    let direct = lab
        .iperf_gbps(c1, c2, IPERF_PORT, 3)
        .expect("iperf3 direct");

    lab.block_udp_port(0, 1, DATA_PORT).unwrap();
    let to_relay = lab
        .wait_path(0, "h2", "relayed via h3", Duration::from_secs(5))
        .unwrap();
    lab.wait_path(1, "h1", "relayed via h3", Duration::from_secs(5))
        .unwrap();
    // The control plane was not touched: still direct, still up.
    let p = lab.peer_status(0, "h2").unwrap();
    assert_eq!(p.state, mesh_api::PeerState::Up);
    assert_ne!(p.control.as_deref(), Some("relayed via h3"));
    assert!(
        lab.ping(c1, c2, 5),
        "containers on h1 and h2 talk through h3"
    );
    // The relayed path's endpoint is h3's data port; its MTU smaller by
    // the relay envelope (40 bytes; the search stops within 8 bytes).
    wait_for(Duration::from_secs(10), || {
        let p = lab.peer_status(0, "h2")?;
        let endpoint = p.data_address.clone().unwrap_or_default();
        ensure!(endpoint.starts_with("198.18.0.3:"), "endpoint {endpoint}");
        let mtu = p.path_mtu.unwrap_or(0);
        ensure!(
            (1424..=1432).contains(&mtu),
            "relayed path MTU {:?}",
            p.path_mtu
        );
        Ok(())
    })
    .unwrap();
    let relayed = lab
        .iperf_gbps(c1, c2, IPERF_PORT, 3)
        .expect("iperf3 relayed");
    // Full-size frames do not fit a relay envelope on a 1500-byte underlay
    // (1472 + 40): refused locally (the socket never fragments) and counted,
    // until the frame is answered with "fragmentation needed" / its MSS
    // clamped against the peer's path MTU.
    let too_big = lab.status(0).unwrap().drops.get("too_big").copied();
    println!("h1 too_big drops while relayed: {too_big:?}");

    lab.unblock_udp_port(0, 1, DATA_PORT).unwrap();
    let to_direct = lab
        .wait_path(0, "h2", "direct", Duration::from_secs(10))
        .unwrap();
    lab.wait_path(1, "h1", "direct", Duration::from_secs(10))
        .unwrap();
    assert!(lab.ping(c1, c2, 3), "containers talk after the unblock");
    println!(
        "data-plane relay: direct→relayed {:.1} s, relayed→direct {:.1} s; iperf3 direct \
         {direct:.2} Gbit/s, relayed {relayed:.2} Gbit/s (ratio {:.2})",
        to_relay.as_secs_f64(),
        to_direct.as_secs_f64(),
        relayed / direct
    );
}
