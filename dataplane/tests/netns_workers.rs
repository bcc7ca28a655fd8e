//! Root-only: two `Dataplane`s with several workers each, in their own
//! network namespaces joined by a veth pair. Several UDP flows cross the
//! overlay at once; every flow must arrive in the order it was sent (loss
//! is tolerated, reordering is not) — one flow never spans two workers.
//! Skips (and says why) when not root or when `ip`/`/dev/net/tun` is missing.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use dataplane::{overlay_mtu, Cipher, Dataplane, IpVersion, NetworkId, Options, SessionKeys};

const NET: NetworkId = NetworkId(43);
const FLOWS: u16 = 6;
const PER_FLOW: u32 = 4_000;

mod common;
use common::{in_netns, ip, skip_reason, Namespaces};

#[test]
fn flows_stay_in_order_across_workers() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED flows_stay_in_order_across_workers: {reason}");
        return;
    }
    let pid = std::process::id();
    let (ns_a, ns_b) = (format!("dpw{pid}-a"), format!("dpw{pid}-b"));
    let (veth_a, veth_b) = (format!("dpw{pid}va"), format!("dpw{pid}vb"));
    ip(&["netns", "add", &ns_a]);
    let mut namespaces = Namespaces(vec![ns_a.clone()]);
    ip(&["netns", "add", &ns_b]);
    namespaces.0.push(ns_b.clone());
    ip(&[
        "link", "add", &veth_a, "netns", &ns_a, "type", "veth", "peer", "name", &veth_b, "netns",
        &ns_b,
    ]);
    for (ns, veth, address) in [
        (&ns_a, &veth_a, "198.18.0.1/24"),
        (&ns_b, &veth_b, "198.18.0.2/24"),
    ] {
        ip(&["-n", ns, "addr", "add", address, "dev", veth]);
        ip(&["-n", ns, "link", "set", veth, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let options = Options {
        workers: 3,
        ..Options::default()
    };
    let start = |ns: &str, bind: &'static str| {
        in_netns(ns, move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let dataplane = {
                let _guard = runtime.enter();
                let dataplane =
                    Dataplane::start(bind.parse().expect("addr"), options).expect("start");
                dataplane.add_network(NET, "dpwtap0").expect("add network");
                dataplane
            };
            (runtime, dataplane)
        })
        .join()
        .expect("namespace thread")
    };
    let (runtime_a, dp_a) = start(&ns_a, "198.18.0.1:7811");
    let (runtime_b, dp_b) = start(&ns_b, "198.18.0.2:7811");
    let mtu = overlay_mtu(1500, IpVersion::V4).to_string();
    for (ns, address) in [(&ns_a, "198.18.1.1/24"), (&ns_b, "198.18.1.2/24")] {
        ip(&["-n", ns, "link", "set", "dpwtap0", "mtu", &mtu]);
        ip(&["-n", ns, "addr", "add", address, "dev", "dpwtap0"]);
        ip(&["-n", ns, "link", "set", "dpwtap0", "up"]);
    }
    let keys = |local, remote, send, recv, cipher| SessionKeys {
        generation: 1,
        local_index: local,
        remote_index: remote,
        send_key: [send; 32],
        recv_key: [recv; 32],
        cipher,
    };
    let cipher = Cipher::fast_here()[0];
    dp_b.install_keys(1, keys(0xB0B, 0xA1A, 2, 1, cipher), true);
    dp_a.install_keys(2, keys(0xA1A, 0xB0B, 1, 2, cipher), true);
    dp_a.upsert_peer(2, "198.18.0.2:7811".parse().unwrap(), &[NET]);
    dp_b.upsert_peer(1, "198.18.0.1:7811".parse().unwrap(), &[NET]);

    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(&ns_b, move || {
        let socket = UdpSocket::bind("198.18.1.2:9997").expect("bind receiver");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        bound_tx.send(()).unwrap();
        // Per source port: the sequence numbers in arrival order.
        let mut flows: HashMap<u16, Vec<u32>> = HashMap::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n >= 4 {
                let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                flows.entry(from.port()).or_default().push(seq);
            }
        }
        flows
    });
    bound_rx.recv_timeout(Duration::from_secs(5)).unwrap();

    // Warm up ARP across the overlay (from a port no flow uses), then all
    // flows at once.
    let senders = in_netns(&ns_a, {
        move || {
            let probe = UdpSocket::bind("198.18.1.1:0").unwrap();
            for _ in 0..10 {
                let _ = probe.send_to(&u32::MAX.to_be_bytes(), "198.18.1.2:9997");
                thread::sleep(Duration::from_millis(100));
            }
            let threads: Vec<_> = (0..FLOWS)
                .map(|flow| {
                    thread::spawn(move || {
                        let socket = UdpSocket::bind("198.18.1.1:0").unwrap();
                        let mut payload = vec![0u8; 200 + flow as usize * 150];
                        for seq in 0..PER_FLOW {
                            payload[..4].copy_from_slice(&seq.to_be_bytes());
                            let _ = socket.send_to(&payload, "198.18.1.2:9997");
                            if seq % 8 == 7 {
                                // Paced a little: loss is tolerated, but a
                                // flow that gets nothing through proves nothing.
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                        socket.local_addr().unwrap().port()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<u16>>()
        }
    });
    let ports = senders.join().expect("senders");
    let flows = receiver.join().expect("receiver");
    for port in ports {
        let seqs = flows.get(&port).cloned().unwrap_or_default();
        assert!(
            seqs.len() as u32 > PER_FLOW / 10,
            "flow from port {port}: only {} of {PER_FLOW} arrived",
            seqs.len()
        );
        let reordered = seqs.windows(2).filter(|w| w[1] <= w[0]).count();
        println!(
            "flow from port {port}: {} of {PER_FLOW} arrived",
            seqs.len()
        );
        assert_eq!(
            reordered,
            0,
            "flow from port {port} reordered ({} received)",
            seqs.len()
        );
    }
    dp_a.shutdown();
    dp_b.shutdown();
    drop((runtime_a, runtime_b));
    drop(namespaces);
}
