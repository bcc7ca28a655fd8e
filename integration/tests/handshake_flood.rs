//! Strangers cannot block joins (issue 27, item 5): while spoofed QUIC
//! Initials from many source addresses hit a host, a new host still joins
//! through it within 5 s.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use integration::initials::InitialFlood;
use integration::*;

/// Spoofed sources: 256 addresses the attacker namespace owns, which the
/// target can never answer (a blackhole route back).
const SPOOFED: &str = "198.19.0.0/16";

#[test]
fn a_join_completes_during_a_spoofed_initial_flood() {
    let Some(mut lab) = test_lab("hsf", 3) else {
        return;
    };
    lab.start_daemon(0).unwrap();
    lab.start_daemon(1).unwrap();
    let target = lab.hosts[0].netns.clone();
    let attacker = lab.hosts[2].netns.clone();

    let sources: Vec<IpAddr> = (0..256u32)
        .map(|n| IpAddr::V4(Ipv4Addr::new(198, 19, (n / 250) as u8, (n % 250 + 1) as u8)))
        .collect();
    let batch: String = sources
        .iter()
        .map(|ip| format!("address add {ip}/32 dev ul0\n"))
        .collect();
    let batch_file = lab.dir.join("spoofed.batch");
    std::fs::write(&batch_file, batch).unwrap();
    lab.exec_ok(&attacker, &["ip", "-batch", batch_file.to_str().unwrap()])
        .unwrap();
    // The target's answers to the spoofed sources vanish, as they would for
    // addresses nobody there owns; its reverse-path filter must let their
    // packets in for that (a real spoofer picks routable addresses).
    lab.exec_ok(&target, &["ip", "route", "add", "blackhole", SPOOFED])
        .unwrap();
    for conf in ["all", "ul0"] {
        lab.exec_ok(
            &target,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.rp_filter=0"),
            ],
        )
        .unwrap();
    }

    let seed: SocketAddr = lab.hosts[0].control_address().parse().unwrap();
    let flood = InitialFlood::start(&attacker, sources, seed, 100).unwrap();
    // Long enough for today's 64 handshake slots to be taken.
    std::thread::sleep(Duration::from_secs(3));

    let token = lab.meshctl(0, &["token"]).unwrap().trim().to_string();
    let started = Instant::now();
    let joined = lab.meshctl(1, &["join", &seed.to_string(), "--token", &token]);
    let took = started.elapsed();
    let sent = flood.sent();
    drop(flood);
    eprintln!("join during the flood: {joined:?} after {took:?}; {sent} spoofed attempts sent");
    if joined.is_err() || took >= Duration::from_secs(5) {
        eprintln!("target's log:\n{}", lab.log_tail(0, 20));
    }
    assert!(joined.is_ok(), "the join failed during the flood");
    assert!(took < Duration::from_secs(5), "the join took {took:?}");
}
