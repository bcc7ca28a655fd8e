//! MACs the control plane knows win (issue 26), on the 3-host namespace
//! lab (root): web on host 1, db on host 2, and host 3 as the attacker.
//!
//! The attacker is a *host-level* spoofer: python3 writes raw frames
//! (AF_PACKET) into host 3's TAP of the network from host 3's own
//! namespace. The nftables source-MAC check on each container's veth does
//! not see those frames (they never cross a veth), so what stops them here
//! is the data plane: web's MAC is pinned to host 1 in every host's switch.
//! First the attacker claims web's MAC while db pings web (every reply must
//! arrive, and host 3 counts the spoofs); then it sprays thousands of
//! random source MACs (learning refuses past its per-peer share) and
//! web and db still talk.

use integration::{is_root, unique_prefix, wait_for, Lab};
use mesh_api::{Attachment, StatusResponse};
use std::time::Duration;

const NET: &str = "macp";
/// Learned MACs one peer may hold per network (dataplane::switch).
const MAX_MACS_PER_PORT: usize = 1024;
const SPRAY: usize = 5000;

/// Writes frames into the network's TAP on the host it runs on. The TAP
/// is `mst` + the first 4 bytes of SHA-256(network id), as meshd names it
/// with the default link prefix.
const SPOOFER: &str = r#"
import hashlib, random, socket, sys, time

mode, net = sys.argv[1], sys.argv[2]
tap = "mst" + hashlib.sha256(net.encode()).digest()[:4].hex()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((tap, 0))
bcast = b"\xff" * 6
if mode == "steal":
    # Gratuitous ARP replies "IP is at MAC", sent from MAC (someone else's).
    mac = bytes.fromhex(sys.argv[3].replace(":", ""))
    ip = socket.inet_aton(sys.argv[4])
    arp = bytes.fromhex("0001080006040002") + mac + ip + bcast + ip
    frame = bcast + mac + b"\x08\x06" + arp + b"\0" * 18
    end = time.time() + float(sys.argv[5])
    sent = 0
    while time.time() < end:
        s.send(frame)
        sent += 1
        time.sleep(0.01)
elif mode == "spray":
    count, rnd = int(sys.argv[3]), random.Random(int(sys.argv[4]))
    for sent in range(1, count + 1):
        src = bytes([(rnd.randrange(256) & 0xFE) | 0x02]) + rnd.randbytes(5)
        s.send(bcast + src + b"\x88\xb5" + b"\0" * 46)
        if sent % 500 == 0:
            time.sleep(0.02)  # a burst the underlay's socket buffers take
else:
    sys.exit("mode must be steal or spray")
print(sent)
"#;

fn bare(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

/// `count` pings from `ns` to `ip`: how many answered.
fn answered(lab: &Lab, ns: &str, ip: &str, count: u32) -> u32 {
    let out = lab
        .exec(
            ns,
            &[
                "ping",
                "-n",
                "-c",
                &count.to_string(),
                "-i",
                "0.3",
                "-W",
                "1",
                ip,
            ],
        )
        .output()
        .expect("running ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 5 received, 0% packet loss, time 1204ms"
    text.lines()
        .find_map(|l| {
            let (_, rest) = l.split_once("transmitted, ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
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
    if !is_root() || integration::which("python3").is_none() {
        eprintln!("skipping: needs root and python3");
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

    let script = lab.dir.join("spoofer.py");
    std::fs::write(&script, SPOOFER).unwrap();
    let script = script.to_str().unwrap().to_string();
    let attacker = lab.hosts[2].netns.clone();

    // 1. Host 3 claims web's MAC: a burst first, then on and on while db
    // pings web.
    let burst = lab
        .exec_ok(
            &attacker,
            &["python3", &script, "steal", NET, &w.mac, &web_ip, "1"],
        )
        .unwrap_or_else(|e| panic!("spoofer: {e:#}"));
    assert!(burst.trim().parse::<u32>().unwrap_or(0) > 10, "{burst}");
    let steal = lab.exec(
        &attacker,
        &["python3", &script, "steal", NET, &w.mac, &web_ip, "120"],
    );
    let steal = lab.spawn_helper(steal).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let got = answered(&lab, &db, &web_ip, 6);
    let back = answered(&lab, &web, &db_ip, 3);
    lab.stop_helper(steal).unwrap();
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
    let sent = lab
        .exec_ok(
            &attacker,
            &["python3", &script, "spray", NET, &SPRAY.to_string(), "26"],
        )
        .unwrap_or_else(|e| panic!("spoofer: {e:#}"));
    assert_eq!(sent.trim(), SPRAY.to_string());
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
        answered(&lab, &db, &web_ip, 4),
        4,
        "db → web after the spray"
    );
    assert_eq!(
        answered(&lab, &web, &db_ip, 4),
        4,
        "web → db after the spray"
    );
}
