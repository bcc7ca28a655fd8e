//! Relayed control: nftables in h1's namespace drops only the control port
//! (UDP 7800) between h1 and h2, so no QUIC connection can form between
//! them; h3 relays their heartbeats and key exchanges. Status says
//! `relayed via h3` on both, keys keep rotating, containers keep talking
//! (the data port is open: data stays direct); lifting the drop brings the
//! direct link back. Run as root.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::{test_lab, wait_for, Lab};
use mesh_api::PeerStatus;

const NET: &str = "198.19.7.0/24";
/// Short, so that rotations are seen within the test.
const REKEY_SECS: &str = "4";

fn peer(lab: &Lab, i: usize, name: &str) -> Result<PeerStatus> {
    lab.status(i)?
        .peers
        .into_iter()
        .find(|p| p.name == name)
        .with_context(|| format!("{name} not in h{}'s status", i + 1))
}

fn wait_control(lab: &Lab, i: usize, name: &str, want: &str, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    wait_for(limit, || {
        let p = peer(lab, i, name)?;
        match p.control.as_deref() {
            Some(c) if c == want && p.state == mesh_api::PeerState::Up => Ok(()),
            other => bail!("h{} sees {name} control {other:?} ({:?})", i + 1, p.state),
        }
    })?;
    Ok(start.elapsed())
}

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
        peer(&lab, 0, "h2").unwrap().control.as_deref(),
        Some("direct")
    );

    lab.block_udp_port(0, 1, 7800).unwrap();
    let blocked_at = Instant::now();
    let t1 = wait_control(&lab, 0, "h2", "relayed via h3", Duration::from_secs(20));
    let t2 = wait_control(&lab, 1, "h1", "relayed via h3", Duration::from_secs(10));
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
    let g0 = peer(&lab, 0, "h2").unwrap().key_generation.unwrap_or(0);
    wait_for(Duration::from_secs(30), || {
        let at1 = peer(&lab, 0, "h2")?.key_generation.unwrap_or(0);
        let at2 = peer(&lab, 1, "h1")?.key_generation.unwrap_or(0);
        if at1 >= g0 + 2 && at2 >= g0 + 2 {
            Ok(())
        } else {
            bail!("generations {at1}/{at2}, want ≥ {}", g0 + 2)
        }
    })
    .expect("keys rotate through the relay");
    assert_eq!(
        peer(&lab, 0, "h2").unwrap().control.as_deref(),
        Some("relayed via h3"),
        "still relayed (the block holds)"
    );
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(5))
        .expect("containers talk after rotations");

    lab.unblock_udp_port(0, 1, 7800).unwrap();
    let healed_at = Instant::now();
    wait_control(&lab, 0, "h2", "direct", Duration::from_secs(20)).unwrap();
    wait_control(&lab, 1, "h1", "direct", Duration::from_secs(10)).unwrap();
    println!(
        "control relayed→direct: {:.1} s",
        healed_at.elapsed().as_secs_f64()
    );
    lab.wait_ping(&c1, "198.19.7.2", Duration::from_secs(10))
        .expect("direct again");
}

/// Makes a lab router drop datagrams that arrive on its WAN side for no
/// mapping, as NAT gateways do, instead of taking them itself: the lab's
/// routers answer them from their own stack, and the conntrack entry that
/// leaves makes the router remap its host's own later packets to that peer
/// to another port — a clash that closes the very hole simultaneous open
/// needs (whichever side's first packet arrives before the other's left).
fn drop_unsolicited(lab: &Lab, router: &str) -> Result<()> {
    let rules = "table inet meshlab_gateway {\n chain input { type filter hook input priority 0; iifname \"wan\" ct state new drop; }\n}\n";
    let file = lab.dir.join(format!("gateway-{router}.nft"));
    std::fs::write(&file, rules)?;
    lab.exec_ok(router, &["nft", "-f", file.to_str().context("path")?])?;
    Ok(())
}

/// h2 and h3 each behind a masquerading router (no port forwarded): they
/// learn the reflexive control addresses peers saw them at, advertise
/// them, and open a direct QUIC link through both NATs by dialing each
/// other at once; once the NATs turn symmetric, their control goes through
/// h1.
#[test]
fn control_opens_through_nats_and_relays_when_they_turn_symmetric() {
    let Some(mut lab) = test_lab("cnat", 3) else {
        return;
    };
    for i in [1, 2] {
        let router = lab
            .put_behind_nat(i, integration::Nat::PortPreserving)
            .unwrap();
        drop_unsolicited(&lab, &router).unwrap();
    }
    lab.start_mesh().expect("mesh up through the NATs");
    let direct = wait_control(&lab, 1, "h3", "direct", Duration::from_secs(30))
        .and_then(|_| wait_control(&lab, 2, "h2", "direct", Duration::from_secs(10)));
    if direct.is_err() {
        lab.dump_logs();
    }
    direct.unwrap();
    let address = peer(&lab, 1, "h3").unwrap().address;
    assert!(
        address.starts_with("198.18.0.103:"),
        "h2 holds its link to h3 at h3's NAT, not {address}"
    );

    lab.set_nat(1, integration::Nat::Symmetric).unwrap();
    lab.set_nat(2, integration::Nat::Symmetric).unwrap();
    let start = Instant::now();
    let relayed = wait_control(&lab, 1, "h3", "relayed via h1", Duration::from_secs(30))
        .and_then(|_| wait_control(&lab, 2, "h2", "relayed via h1", Duration::from_secs(10)));
    if relayed.is_err() {
        lab.dump_logs();
    }
    relayed.unwrap();
    println!(
        "control behind symmetric NATs: relayed via h1 after {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
