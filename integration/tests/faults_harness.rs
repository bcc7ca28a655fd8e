//! The fault topologies themselves (no meshd): a test of a path fault is
//! only as good as the fault, so each is checked to do what it says.

use integration::{test_lab, wait_for, Nat};
use std::time::Duration;

#[test]
fn fault_topologies_do_what_they_say() {
    let Some(mut lab) = test_lab("flt", 3) else {
        return;
    };
    lab.put_behind_nat(1, Nat::PortPreserving).expect("NAT h2");
    lab.put_behind_nat(2, Nat::Symmetric).expect("NAT h3");
    let (h1, h2, h3) = (
        lab.hosts[0].netns.clone(),
        lab.hosts[1].netns.clone(),
        lab.hosts[2].netns.clone(),
    );
    // Out through the NAT works; nothing gets in unasked.
    assert!(
        lab.ping(&h2, "198.18.0.1", 1),
        "h2 reaches h1 through its NAT"
    );
    assert!(
        lab.ping(&h3, "198.18.0.1", 1),
        "h3 reaches h1 through its NAT"
    );
    assert!(
        !lab.ping(&h1, "10.77.2.2", 1),
        "h1 cannot reach h2's private address"
    );
    lab.set_nat(1, Nat::Symmetric)
        .expect("make h2's NAT symmetric");
    assert!(
        lab.ping(&h2, "198.18.0.1", 1),
        "still out after a NAT change"
    );

    // A small underlay MTU is a black hole for larger packets with DF.
    lab.set_underlay_mtu(0, 1300).expect("mtu");
    let big = [
        "ping",
        "-n",
        "-q",
        "-c",
        "1",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1400",
        "198.18.0.1",
    ];
    let small = [
        "ping",
        "-n",
        "-q",
        "-c",
        "1",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1200",
        "198.18.0.1",
    ];
    // (the bridge takes a moment to forward again after an MTU change)
    wait_for(Duration::from_secs(5), || {
        let out = lab.exec(&h2, &small).output()?;
        match out.status.success() {
            true => Ok(()),
            false => anyhow::bail!(
                "1228-byte ping lost: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
    .expect("a packet that fits crosses");
    let out = lab.exec(&h2, &big).output().expect("ping");
    assert!(
        !out.status.success(),
        "a 1428-byte packet crossed a 1300-byte link"
    );

    // Total loss cuts everything; none restores it.
    lab.underlay_loss(100).expect("loss");
    assert!(
        !lab.ping(&h2, "198.18.0.1", 1),
        "100 % loss let a ping through"
    );
    lab.underlay_loss(0).expect("no loss");
    assert!(lab.ping(&h2, "198.18.0.1", 2));

    // A new address is reachable, the old one gone.
    let new = lab.change_address(0, 21).expect("renumber h1");
    assert!(lab.ping(&h2, &new.to_string(), 1), "new address answers");
    assert!(!lab.ping(&h2, "198.18.0.1", 1), "old address still answers");

    // A blocked port does not block ping; the rules install and go.
    lab.block_udp_port(1, 0, 7801).expect("block");
    assert!(lab.ping(&h2, &new.to_string(), 1));
    lab.unblock_udp_port(1, 0, 7801).expect("unblock");
    assert!(lab.unblock_udp_port(1, 0, 7801).is_err(), "already gone");
}
