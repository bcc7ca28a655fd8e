//! MACs the control plane knows win (issue 26), on the 3-host namespace
//! lab (root): web on host 1, db on host 2, and host 3 as the attacker.
//!
//! The attacker is a *host-level* spoofer: it writes raw frames
//! (AF_PACKET, `integration::frames`) into host 3's TAP of the network from host 3's own
//! namespace. The nftables source-MAC check on each container's veth does
//! not see those frames (they never cross a veth), so what stops them here
//! is the data plane: web's MAC is pinned to host 1 in every host's switch.
//! First the attacker claims web's MAC while db pings web (every reply must
//! arrive, and host 3 counts the spoofs); then it sprays thousands of
//! random source MACs (learning refuses past its per-peer share) and
//! web and db still talk.

use integration::frames::{self, parse_mac};
use integration::{is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Attachment, StatusResponse};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const NET: &str = "macp";
/// Learned MACs one peer may hold per network (dataplane::switch).
const MAX_MACS_PER_PORT: usize = 1024;
const SPRAY: usize = 5000;

/// The network's TAP on the attacker's host (the lab has one network).
fn tap_of(lab: &Lab, host_ns: &str) -> String {
    let links = lab.exec_ok(host_ns, &["ip", "-o", "link"]).unwrap();
    links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .find(|n| n.starts_with("mst"))
        .unwrap_or_else(|| panic!("no TAP on the attacker's host:\n{links}"))
}

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

fn status(lab: &Lab, host: usize) -> StatusResponse {
    lab.status(host)
        .unwrap_or_else(|e| panic!("status of host {host}: {e:#}"))
}

fn drops(s: &StatusResponse, reason: &str) -> u64 {
    s.drops.get(reason).copied().unwrap_or(0)
}

#[test]
fn a_host_spoofing_a_mac_steals_nothing_and_a_mac_spray_flushes_nothing() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let prefix = unique_prefix("mac");
    let mut lab = Lab::new(&prefix, 3).expect("building the lab");
    lab.start_mesh().expect("mesh up");
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.94.0.0/24"])
        .unwrap();
    let web = lab.add_container("web").unwrap();
    let db = lab.add_container("db").unwrap();
    let w: Attachment = lab.attach_netns(0, &web, NET, &["--name", "web"]);
    let d: Attachment = lab.attach_netns(1, &db, NET, &["--name", "db"]);
    let (web_ip, db_ip) = (bare(&w.ip), bare(&d.ip));
    lab.wait_ping(&db, &web_ip, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Every host has pinned both MACs before the attack starts (the test
    // is about the data plane, not about how fast records spread).
    wait_for(Duration::from_secs(10), || {
        for host in 0..3 {
            let n = status(&lab, host).switch.pinned_macs;
            anyhow::ensure!(n >= 2, "host {host} pinned {n} MACs");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    let attacker = lab.hosts[2].netns.clone();
    let tap = tap_of(&lab, &attacker);
    let claim = frames::arp_announce(parse_mac(&w.mac).unwrap(), web_ip.parse().unwrap());

    // 1. Host 3 claims web's MAC: a burst first, then on and on while db
    // pings web.
    lab.send_frames(&attacker, &tap, vec![claim.clone(); 50])
        .unwrap_or_else(|e| panic!("spoofer: {e:#}"));
    let stop = AtomicBool::new(false);
    let (got, back) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                lab.send_frames(&attacker, &tap, vec![claim.clone()])
                    .unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let got = lab.ping_replies(&db, &web_ip, 6);
        let back = lab.ping_replies(&web, &db_ip, 3);
        stop.store(true, Ordering::Relaxed);
        (got, back)
    });
    assert_eq!(
        got, 6,
        "db → web lost replies while host 3 claimed web's MAC"
    );
    assert_eq!(
        back, 3,
        "web → db lost replies while host 3 claimed web's MAC"
    );
    let spoofer = status(&lab, 2);
    assert!(
        drops(&spoofer, "spoofed_source") >= 10,
        "host 3 counted {:?}",
        spoofer.drops
    );
    let metrics = lab.meshctl(2, &["metrics"]).unwrap();
    let line = metrics
        .lines()
        .find(|l| l.contains("reason=\"spoofed_source\""))
        .unwrap_or_else(|| panic!("no spoofed_source in the metrics:\n{metrics}"));
    let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= 10.0, "{line}");

    // 2. Host 3 sprays random source MACs (no attachment claims them).
    // In bursts the underlay's socket buffers take.
    for _ in 0..SPRAY / 500 {
        let spray = frames::random_mac_spray(500, db_ip.parse().unwrap());
        lab.send_frames(&attacker, &tap, spray)
            .unwrap_or_else(|e| panic!("spoofer: {e:#}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(Duration::from_secs(10), || {
        for host in 0..2 {
            let s = status(&lab, host).switch;
            anyhow::ensure!(s.learn_refused > 0, "host {host} refused nothing: {s:?}");
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    for host in 0..2 {
        // Host 3's share, plus the few MACs no attachment claims that the
        // other host's bridge sends from (its own, for IPv6 neighbours).
        let s = status(&lab, host).switch;
        assert!(
            s.learned_macs <= MAX_MACS_PER_PORT + 8,
            "host {host} learned past host 3's share: {s:?}"
        );
    }
    assert_eq!(
        lab.ping_replies(&db, &web_ip, 4),
        4,
        "db → web after the spray"
    );
    assert_eq!(
        lab.ping_replies(&web, &db_ip, 4),
        4,
        "web → db after the spray"
    );
}
