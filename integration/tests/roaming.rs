//! Roaming: h2 listens on 0.0.0.0:7800 and its underlay address changes
//! (new address added, old one removed, as a DHCP renumbering would). With
//! no action on the other hosts, they see h2 up at its new address within
//! the 10 s and containers on h1 and h2 talk again. Run as root.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::{test_lab, wait_for, Lab};

const NET: &str = "198.19.8.0/24";
/// The bound for being reachable again.
const BOUND: Duration = Duration::from_secs(10);

fn sees_at(lab: &Lab, i: usize, name: &str, ip: &str) -> Result<()> {
    let s = lab.status(i)?;
    let p = s
        .peers
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("{name} unknown"))?;
    if p.state == mesh_api::PeerState::Up && p.address.starts_with(&format!("{ip}:")) {
        Ok(())
    } else {
        bail!("h{} sees {name} {:?} at {}", i + 1, p.state, p.address)
    }
}

#[test]
fn a_host_whose_address_changes_is_reachable_again() {
    let Some(mut lab) = test_lab("roam", 3) else {
        return;
    };
    lab.hosts[1].listen = Some("0.0.0.0:7800".into());
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", "roam", "--subnet", NET])
        .expect("network create");
    let c1 = lab.add_container("c1").unwrap();
    let c2 = lab.add_container("c2").unwrap();
    lab.attach_netns(0, &c1, "roam", &["--ip", "198.19.8.1/24"]);
    lab.attach_netns(1, &c2, "roam", &["--ip", "198.19.8.2/24"]);
    lab.wait_ping(&c1, "198.19.8.2", Duration::from_secs(10))
        .expect("ping before the move");

    let new = lab.change_address(1, 50).unwrap().to_string();
    let moved = Instant::now();
    let seen = wait_for(BOUND * 2, || {
        sees_at(&lab, 0, "h2", &new)?;
        sees_at(&lab, 2, "h2", &new)
    });
    let control = moved.elapsed();
    if seen.is_err() {
        lab.dump_logs();
    }
    seen.unwrap();
    let pinged = lab.wait_ping(&c1, "198.19.8.2", BOUND * 2);
    let data = moved.elapsed();
    println!(
        "roaming: control up at the new address after {:.1} s, ping after {:.1} s",
        control.as_secs_f64(),
        data.as_secs_f64()
    );
    if pinged.is_err() {
        lab.dump_logs();
    }
    pinged.expect("containers talk after the move");
    assert!(control <= BOUND, "control took {control:?}");
    assert!(data <= BOUND, "data took {data:?}");
    let log = lab.log_tail(1, 400);
    assert!(
        log.contains("underlay address changed"),
        "h2 noticed the move:\n{log}"
    );
    for line in log.lines().filter(|l| {
        l.contains("underlay address") || l.contains("advertising") || l.contains("peer up")
    }) {
        println!("h2: {line}");
    }
    for line in lab
        .log_tail(0, 100)
        .lines()
        .filter(|l| l.contains("peer up"))
    {
        println!("h1: {line}");
    }
    // And the other way round: h2's container reaches h1's.
    lab.wait_ping(&c2, "198.19.8.1", Duration::from_secs(5))
        .expect("ping from the roamed host");
}
