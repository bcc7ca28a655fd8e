//! The broadcast/multicast bound of port security on the 2-host namespace
//! lab (root): a container that floods broadcasts (ARP announcements of
//! its own, valid address, from a packet socket) has all but its rate
//! bound's worth dropped at its port and counted as `flood`, so they are
//! not copied to every peer; meanwhile another container on the network
//! still resolves and pings a container on the other host, and the
//! flooder itself does once it stops.

use integration::frames::{self, parse_mac};
use integration::{test_mesh, Lab};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NET: &str = "fld";
/// Frames the flooder sends at least, in batches.
const MIN_SENT: u64 = 30_000;
const BATCH: usize = 5_000;

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

/// Frames the interface `dev` in namespace `ns` has received.
fn rx_packets(lab: &Lab, ns: &str, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/rx_packets");
    lab.exec_ok(ns, &["cat", &path])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_broadcast_flood_is_cut_at_the_port() {
    let Some(mut lab) = test_mesh("flood", 2) else {
        return;
    };
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.94.0.0/24"])
        .unwrap();
    let mut attach = |host: usize, name: &str| {
        let ns = lab.add_container(name).unwrap();
        let a = lab.attach_netns(host, &ns, NET, &["--name", name]);
        (ns, a)
    };
    let (flooder_ns, flooder) = attach(0, "flooder");
    let (a_ns, a) = attach(0, "a");
    let (b_ns, b) = attach(1, "b");
    let (flooder_ip, a_ip, b_ip) = (bare(&flooder.ip), bare(&a.ip), bare(&b.ip));
    let mac = parse_mac(&flooder.mac).unwrap();
    let own: Ipv4Addr = flooder_ip.parse().unwrap();
    let frame = frames::arp_announce(mac, own);
    let b_rx = rx_packets(&lab, &b_ns, &b.ifname);

    // Flood until a (no neighbour entries yet: it has to ARP) has reached
    // b on the other host, and for at least MIN_SENT frames.
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (sent, flood_took) = std::thread::scope(|s| {
        let (lab, stop, ns, dev) = (&lab, &stop, &flooder_ns, &flooder.ifname);
        let flood = s.spawn(move || {
            let mut sent = 0;
            while sent < MIN_SENT || !stop.load(Ordering::Relaxed) {
                lab.send_frames(ns, dev, vec![frame.clone(); BATCH])
                    .unwrap();
                sent += BATCH as u64;
            }
            (sent, start.elapsed())
        });
        let reached = lab.wait_ping(&a_ns, &b_ip, Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        let out = flood.join().unwrap();
        reached.expect("a reaches b during the flood");
        out
    });
    eprintln!("{sent} broadcasts sent in {flood_took:?}");

    let dropped = integration::wait_for(Duration::from_secs(5), || {
        let n = lab.port_drops(0, &flooder_ip, Some("flood"));
        if n >= sent / 2 {
            Ok(n)
        } else {
            anyhow::bail!("{n} flood drops at the flooder, want at least {}", sent / 2)
        }
    })
    .unwrap();
    let passed = sent - dropped;
    let allowed = 400 + 200 * (flood_took.as_secs() + 1);
    eprintln!("dropped {dropped}, passed {passed} (bound: {allowed})");
    assert!(
        passed <= allowed,
        "{passed} passed, the bound allows {allowed}"
    );
    let b_got = rx_packets(&lab, &b_ns, &b.ifname) - b_rx;
    eprintln!("b received {b_got} frames meanwhile");
    assert!(b_got <= allowed + 100, "b received {b_got} frames");
    assert_eq!(
        lab.port_drops(0, &a_ip, Some("flood")),
        0,
        "a never flooded"
    );
    // The flooder's own ARP works again once it stops.
    lab.wait_ping(&flooder_ns, &b_ip, Duration::from_secs(10))
        .expect("the flooder reaches b after the flood");
    lab.wait_ping(&a_ns, &flooder_ip, Duration::from_secs(10))
        .expect("a reaches the flooder");
}
