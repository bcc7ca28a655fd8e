//! Relayed control: nftables in h1's namespace drops only the control port
//! (UDP 7800) between h1 and h2, so no QUIC connection can form between
//! them; h3 relays their heartbeats and key exchanges. Status says
//! `relayed via h3` on both, keys keep rotating, containers keep talking
//! (the data port is open: data stays direct); lifting the drop brings the
//! direct link back. Run as root.

use std::time::{Duration, Instant};

use anyhow::bail;
use integration::{test_lab, wait_for};

const NET: &str = "198.19.7.0/24";
/// Short, so that rotations are seen within the test.
const REKEY_SECS: &str = "4";

#[test]
fn control_relays_through_a_third_host_when_the_control_port_is_blocked() {
    let Some(mut lab) = test_lab("crelay", 3) else {
        return;
    };
    for h in &mut lab.hosts {
        h.extra_args = vec!["--rekey-interval".into(), REKEY_SECS.into()];
    }
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", "crelay", "--subnet", NET])
        .expect("network create");
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    lab.attach_netns(0, &c1, "crelay", &["--ip", "198.19.7.1/24"]);
    lab.attach_netns(1, &c2, "crelay", &["--ip", "198.19.7.2/24"]);
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(10))
        .expect("direct ping");
    assert_eq!(
        lab.peer_status(0, "h2").unwrap().control.as_deref(),
        Some("direct")
    );

    lab.block_udp_port(0, 1, 7800).unwrap();
    let blocked_at = Instant::now();
    let t1 = lab.wait_control(0, "h2", "relayed via h3", Duration::from_secs(20));
    let t2 = lab.wait_control(1, "h1", "relayed via h3", Duration::from_secs(10));
    if t1.is_err() || t2.is_err() {
        lab.dump_logs();
    }
    t1.unwrap();
    t2.unwrap();
    let to_relayed = blocked_at.elapsed();
    println!("control direct→relayed: {:.1} s", to_relayed.as_secs_f64());
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(10))
        .expect("containers talk while control is relayed");

    // Keys rotate over the relay: two more generations on both ends.
    let g0 = lab
        .peer_status(0, "h2")
        .unwrap()
        .key_generation
        .unwrap_or(0);
    wait_for(Duration::from_secs(30), || {
        let at1 = lab.peer_status(0, "h2")?.key_generation.unwrap_or(0);
        let at2 = lab.peer_status(1, "h1")?.key_generation.unwrap_or(0);
        if at1 >= g0 + 2 && at2 >= g0 + 2 {
            Ok(())
        } else {
            bail!("generations {at1}/{at2}, want ≥ {}", g0 + 2)
        }
    })
    .expect("keys rotate through the relay");
    assert_eq!(
        lab.peer_status(0, "h2").unwrap().control.as_deref(),
        Some("relayed via h3"),
        "still relayed (the block holds)"
    );
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(5))
        .expect("containers talk after rotations");

    lab.unblock_udp_port(0, 1, 7800).unwrap();
    let healed_at = Instant::now();
    lab.wait_control(0, "h2", "direct", Duration::from_secs(20))
        .unwrap();
    lab.wait_control(1, "h1", "direct", Duration::from_secs(10))
        .unwrap();
    println!(
        "control relayed→direct: {:.1} s",
        healed_at.elapsed().as_secs_f64()
    );
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(10))
        .expect("direct again");
}
