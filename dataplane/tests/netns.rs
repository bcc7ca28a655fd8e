//! Root-only end-to-end test with real kernel devices: two `Dataplane`s, each
//! in its own network namespace, joined by a veth pair (198.18.0.0/24). A UDP
//! probe between addresses on the two TAPs (198.18.1.0/24) must arrive
//! intact, and a raw capture on the underlay must never see its plaintext.
//! Runs once with the default offloads and once with all of them off.
//! Skips (and says why) when not root or when `ip`/`/dev/net/tun` is missing.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dataplane::{overlay_mtu, Dataplane, DropReason, IpVersion, NetworkId, Options, SessionKeys};
use ring::rand::{SecureRandom, SystemRandom};

const NET: NetworkId = NetworkId(42);
const PORT: u16 = 7801;
const MARKER: &[u8] = b"MESH-PLAINTEXT-MARKER-do-not-leak-0123456789";

mod common;
use common::{in_netns, ip, skip_reason, Namespaces};

fn random_key(rng: &SystemRandom) -> [u8; 32] {
    let mut key = [0u8; 32];
    rng.fill(&mut key).expect("random");
    key
}

/// Raw AF_PACKET capture of everything on `ifname`, until `stop`.
fn capture(
    ifname: String,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<Vec<u8>> {
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol as libc::c_int) };
    assert!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a fresh, valid fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(ifname).expect("name");
    // SAFETY: valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "veth not found");
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol;
    address.sll_ifindex = ifindex as i32;
    // SAFETY: address is a properly sized sockaddr_ll.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &address as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: valid option pointer and length.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    ready.send(()).expect("signal ready");
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Acquire) {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n > 0 {
            frames.push(buf[..n as usize].to_vec());
        }
    }
    frames
}

fn is_underlay_datagram(frame: &[u8]) -> bool {
    // Ethernet + IPv4 (no options assumed as the kernel sends) + UDP dst port.
    frame.len() >= 42
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && u16::from_be_bytes([frame[36], frame[37]]) == PORT
}

#[test]
fn frames_cross_two_namespaces_sealed() {
    cross_two_namespaces("o", Options::default());
}

#[test]
fn frames_cross_two_namespaces_sealed_without_offloads() {
    cross_two_namespaces(
        "p",
        Options {
            offload: false,
            gso: false,
            coalesce: false,
            // Also the single-worker path: one socket sends and receives.
            workers: 1,
            busy_poll: Duration::ZERO,
        },
    );
}

/// The whole scenario; `tag` keeps the namespaces of parallel runs apart.
fn cross_two_namespaces(tag: &str, options: Options) {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED cross_two_namespaces({options:?}): {reason}");
        return;
    }
    let pid = std::process::id();
    let (ns_a, ns_b) = (format!("dpt{pid}{tag}-a"), format!("dpt{pid}{tag}-b"));
    let (veth_a, veth_b) = (format!("dpt{pid}{tag}va"), format!("dpt{pid}{tag}vb"));
    let tap = "dptap0";
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

    // Each side's runtime, socket and TAP are created inside its namespace.
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
                dataplane.add_network(NET, "dptap0").expect("add network");
                dataplane
            };
            (runtime, dataplane)
        })
        .join()
        .expect("namespace thread")
    };
    let (runtime_a, dp_a) = start(&ns_a, "198.18.0.1:7801");
    let (runtime_b, dp_b) = start(&ns_b, "198.18.0.2:7801");
    assert_eq!(
        dp_a.local_addr(),
        "198.18.0.1:7801".parse::<SocketAddr>().unwrap()
    );

    let mtu = overlay_mtu(1500, IpVersion::V4).to_string();
    for (ns, address) in [(&ns_a, "198.18.1.1/24"), (&ns_b, "198.18.1.2/24")] {
        ip(&["-n", ns, "link", "set", tap, "mtu", &mtu]);
        ip(&["-n", ns, "addr", "add", address, "dev", tap]);
        ip(&["-n", ns, "link", "set", tap, "up"]);
    }

    let rng = SystemRandom::new();
    let (a_to_b, b_to_a) = (random_key(&rng), random_key(&rng));
    // B's keys arrive before its endpoint is known (allowed by the contract).
    dp_b.install_keys(
        1,
        SessionKeys {
            generation: 1,
            local_index: 0xB0B,
            remote_index: 0xA1A,
            send_key: b_to_a,
            recv_key: a_to_b,
            cipher: dataplane::Cipher::default(),
        },
        false,
    );
    dp_a.install_keys(
        2,
        SessionKeys {
            generation: 1,
            local_index: 0xA1A,
            remote_index: 0xB0B,
            send_key: a_to_b,
            recv_key: b_to_a,
            cipher: dataplane::Cipher::default(),
        },
        true,
    );
    dp_a.upsert_peer(2, "198.18.0.2:7801".parse().unwrap(), &[NET]);
    dp_b.upsert_peer(1, "198.18.0.1:7801".parse().unwrap(), &[NET]);

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let capturer = in_netns(&ns_b, {
        let (stop, veth_b) = (stop.clone(), veth_b.clone());
        move || capture(veth_b, stop, ready_tx)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("capture ready");

    let receiver = in_netns(&ns_b, || {
        let socket = UdpSocket::bind("198.18.1.2:9999").expect("bind probe receiver");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = socket
            .recv_from(&mut buf)
            .expect("probe arrives through the overlay");
        (buf[..n].to_vec(), from)
    });
    let sender_done = Arc::new(AtomicBool::new(false));
    let sender = in_netns(&ns_a, {
        let done = sender_done.clone();
        move || {
            let socket = UdpSocket::bind("198.18.1.1:0").expect("bind probe sender");
            let deadline = Instant::now() + Duration::from_secs(10);
            // Resend until received: the first may wait on ARP across the overlay.
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                let _ = socket.send_to(MARKER, "198.18.1.2:9999");
                thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let (payload, from) = receiver.join().expect("receiver thread");
    sender_done.store(true, Ordering::Release);
    sender.join().expect("sender thread");

    // Bulk TCP both ways: exercises TSO super-frames read from the TAP and
    // split in userspace, UDP GSO/GRO, and the coalesced GSO writes into
    // the receiving TAP. Every byte must arrive in order and intact.
    let bulk = |i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    const BULK: usize = 8 << 20;
    let (listening_tx, listening_rx) = std::sync::mpsc::channel();
    let tcp_receiver = in_netns(&ns_b, move || {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("198.18.1.2:9998").expect("bind tcp");
        listening_tx.send(()).expect("signal listening");
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut received = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        let mut intact = true;
        loop {
            let n = stream.read(&mut buf).expect("tcp read");
            if n == 0 {
                break;
            }
            for (offset, byte) in buf[..n].iter().enumerate() {
                intact &= *byte == bulk(received + offset);
            }
            received += n;
        }
        // And back: the reverse direction, same check on the other side.
        stream
            .write_all(&(0..BULK / 4).map(bulk).collect::<Vec<u8>>())
            .expect("tcp write back");
        (received, intact)
    });
    listening_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("tcp listener up");
    let back = in_netns(&ns_a, move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect("198.18.1.2:9998").expect("tcp connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let data: Vec<u8> = (0..BULK).map(bulk).collect();
        stream.write_all(&data).expect("tcp write");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        let mut back = Vec::new();
        stream.read_to_end(&mut back).expect("read back");
        back
    })
    .join()
    .expect("tcp sender thread");
    let (received, intact) = tcp_receiver.join().expect("tcp receiver thread");
    assert_eq!(received, BULK, "every TCP byte arrived");
    assert!(intact, "TCP stream content intact");
    assert_eq!(back.len(), BULK / 4, "reverse TCP stream complete");
    assert!(
        back.iter().enumerate().all(|(i, b)| *b == bulk(i)),
        "reverse stream intact"
    );
    stop.store(true, Ordering::Release);
    let frames = capturer.join().expect("capture thread");

    assert_eq!(payload, MARKER, "frame arrived intact");
    assert_eq!(from.ip().to_string(), "198.18.1.1");
    let sealed: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|frame| is_underlay_datagram(frame))
        .collect();
    assert!(
        !sealed.is_empty(),
        "capture saw the sealed datagrams ({} frames captured)",
        frames.len()
    );
    for frame in &frames {
        assert!(
            frame.windows(MARKER.len()).all(|window| window != MARKER),
            "plaintext marker leaked onto the underlay"
        );
    }
    // Each sealed datagram has the v1 header: data with our network id,
    // or a path probe (type 2, network id 0).
    for frame in &sealed {
        let udp_payload = &frame[42..];
        match udp_payload[0] {
            1 => assert_eq!(&udp_payload[16..20], &NET.0.to_be_bytes()),
            2 => assert_eq!(&udp_payload[16..20], &[0, 0, 0, 0]),
            other => panic!("unexpected message type {other}"),
        }
        assert_eq!(&udp_payload[1..4], &[1, 0, 0]);
    }

    let stats_a = dp_a.stats();
    let stats_b = dp_b.stats();
    assert!(
        stats_a.peers[&2].tx_packets > 0 && stats_a.peers[&2].rx_packets > 0,
        "{stats_a:?}"
    );
    assert!(stats_b.peers[&1].rx_packets > 0, "{stats_b:?}");
    // B's `next` keypair was promoted by A's first packet.
    assert_eq!(stats_b.peers[&1].current_generation, Some(1));
    assert_eq!(stats_b.dropped(DropReason::BadTag), 0);

    dp_a.shutdown();
    dp_b.shutdown();
    drop((dp_a, dp_b));
    runtime_a.shutdown_timeout(Duration::from_secs(2));
    runtime_b.shutdown_timeout(Duration::from_secs(2));
    drop(namespaces);
}
