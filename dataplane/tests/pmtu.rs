//! Sans-IO tests of the path-MTU hook: frames too big for a peer's path
//! are answered with ICMP into the TAP, SYNs are clamped both ways.

use std::net::SocketAddr;
use std::time::Instant;

use dataplane::engine::Engine;
use dataplane::offload::{checksum_add, checksum_fold};
use dataplane::pool::BufPool;
use dataplane::wire::OVERHEAD;
use dataplane::{DropReason, NetworkId, SessionKeys};

const NET: NetworkId = NetworkId(7);
const PEER_A: u32 = 1;
const PEER_B: u32 = 2;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
const PATH: u32 = 1300;

fn keys(send: u8, recv: u8, local: u32, remote: u32) -> SessionKeys {
    SessionKeys {
        generation: 1,
        local_index: local,
        remote_index: remote,
        send_key: [send; 32],
        recv_key: [recv; 32],
        cipher: dataplane::Cipher::default(),
    }
}

struct Pair {
    now: Instant,
    a: Engine,
    b: Engine,
    pool: BufPool,
}

impl Pair {
    /// A and B with a session; A knows MAC_B is behind B and B's path MTU.
    fn new() -> Pair {
        let now = Instant::now();
        let (a, b) = (Engine::new(now), Engine::new(now));
        for (engine, peer, port) in [(&a, PEER_B, 2), (&b, PEER_A, 1)] {
            engine.add_network(NET);
            engine.upsert_peer(
                peer,
                Some(SocketAddr::from(([198, 18, 0, 1], port))),
                &[NET],
            );
        }
        a.install_keys(PEER_B, &keys(1, 2, 100, 200), true, now);
        b.install_keys(PEER_A, &keys(2, 1, 200, 100), true, now);
        let mut pair = Pair {
            now,
            a,
            b,
            pool: BufPool::new(9216, 4),
        };
        // B → A once, so that A learns where MAC_B is.
        let mut from_b = pair.seal(false, &ipv4_tcp(MAC_A, MAC_B, 100, true, 0x10, None));
        assert_eq!(from_b.len(), 1);
        let datagram = from_b[0].datagram.datagram_mut(usize::MAX);
        pair.a.open_datagram(datagram, now).expect("A opens");
        pair.a.set_path_mtu(PEER_B, PATH);
        pair
    }

    fn seal(&mut self, by_a: bool, frame: &[u8]) -> Vec<dataplane::engine::Outgoing> {
        let engine = if by_a { &self.a } else { &self.b };
        let mut buf = self.pool.get();
        assert!(buf.fill_frame(frame));
        let mut out = Vec::new();
        engine.seal_frame(NET, buf, self.now, &mut self.pool, &mut out);
        out
    }
}

/// An IPv4 TCP frame of `len` bytes (Ethernet included), checksums valid.
fn ipv4_tcp(
    dst: [u8; 6],
    src: [u8; 6],
    len: usize,
    df: bool,
    flags: u8,
    mss: Option<u16>,
) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[6] = if df { 0x40 } else { 0 };
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 9, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 9, 0, 2]);
    let sum = !checksum_fold(checksum_add(0, &ip[..20]));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let tcp = &mut ip[20..];
    tcp[12] = if mss.is_some() { 6 << 4 } else { 5 << 4 };
    tcp[13] = flags;
    if let Some(mss) = mss {
        tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    }
    let tcp_len = tcp.len();
    let acc = checksum_add(0, &[10, 9, 0, 1, 10, 9, 0, 2]) + tcp_len as u64 + 6;
    let sum = !checksum_fold(checksum_add(acc, tcp));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    f
}

fn tcp_ok(f: &[u8]) -> bool {
    let tcp = &f[34..];
    let acc = checksum_add(0, &f[26..34]) + tcp.len() as u64 + 6;
    checksum_fold(checksum_add(acc, tcp)) == 0xffff
}

#[test]
fn a_frame_that_fits_the_path_is_sealed() {
    let mut pair = Pair::new();
    let fits = PATH as usize - OVERHEAD;
    let out = pair.seal(true, &ipv4_tcp(MAC_B, MAC_A, fits, true, 0x10, None));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to_tap, None);
    assert_eq!(out[0].datagram.datagram().len(), PATH as usize);
}

#[test]
fn a_df_frame_too_big_is_answered_with_frag_needed_into_the_tap() {
    let mut pair = Pair::new();
    let big = ipv4_tcp(MAC_B, MAC_A, PATH as usize - OVERHEAD + 1, true, 0x10, None);
    let out = pair.seal(true, &big);
    assert_eq!(out.len(), 1, "only the answer, nothing sent");
    assert_eq!(out[0].to_tap, Some(NET));
    let icmp = out[0].datagram.frame();
    assert_eq!(&icmp[..6], &MAC_A, "back to the sender");
    assert_eq!(
        &icmp[26..30],
        &[10, 9, 0, 2],
        "from the original destination"
    );
    assert_eq!((icmp[34], icmp[35]), (3, 4));
    let mtu = u16::from_be_bytes([icmp[40], icmp[41]]) as u32;
    assert_eq!(mtu, PATH - OVERHEAD as u32 - 14, "the IP MTU that fits");
    assert_eq!(pair.a.drops().get(DropReason::TooBigAnswered), 1);
}

#[test]
fn without_df_it_is_fragmented_to_fit() {
    let mut pair = Pair::new();
    let big = ipv4_tcp(MAC_B, MAC_A, 3000, false, 0x10, None);
    let mut out = pair.seal(true, &big);
    assert_eq!(out.len(), 3, "3000 bytes in pieces of at most 1250 of IP");
    let mut payload = Vec::new();
    for o in &mut out {
        assert_eq!(o.to_tap, None);
        assert!(o.datagram.datagram().len() <= PATH as usize);
        let d = pair
            .b
            .open_datagram(o.datagram.datagram_mut(usize::MAX), pair.now)
            .expect("B opens every piece");
        payload.extend_from_slice(&o.datagram.datagram()[d.frame][34..]);
    }
    assert_eq!(payload, &big[34..], "the pieces carry the whole packet");
    let mut options = big.clone();
    options[14] = 0x46;
    assert!(pair.seal(true, &options).is_empty());
    assert_eq!(pair.a.drops().get(DropReason::TooBigUnfragmentable), 1);
}

#[test]
fn unknown_path_mtu_sets_no_limit() {
    let mut pair = Pair::new();
    pair.a.set_path_mtu(PEER_B, 0);
    let out = pair.seal(true, &ipv4_tcp(MAC_B, MAC_A, 1500, true, 0x10, Some(1460)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to_tap, None);
}

#[test]
fn syn_mss_is_clamped_on_send_and_on_receive() {
    let mut pair = Pair::new();
    let want = (PATH as usize - OVERHEAD - 14 - 40) as u16;
    // A → B: clamped by A before sealing.
    let mut out = pair.seal(
        true,
        &ipv4_tcp(MAC_B, MAC_A, 14 + 44, true, 0x02, Some(1460)),
    );
    assert_eq!(out.len(), 1);
    let delivery = pair
        .b
        .open_datagram(out[0].datagram.datagram_mut(usize::MAX), pair.now)
        .expect("B opens");
    let frame = &out[0].datagram.datagram()[delivery.frame];
    assert_eq!(u16::from_be_bytes([frame[56], frame[57]]), want);
    assert!(tcp_ok(frame));
    // B → A SYN-ACK: B knows no path MTU, A clamps it on receipt.
    let mut out = pair.seal(
        false,
        &ipv4_tcp(MAC_A, MAC_B, 14 + 44, true, 0x12, Some(1460)),
    );
    let delivery = pair
        .a
        .open_datagram(out[0].datagram.datagram_mut(usize::MAX), pair.now)
        .expect("A opens");
    let frame = &out[0].datagram.datagram()[delivery.frame];
    assert_eq!(u16::from_be_bytes([frame[56], frame[57]]), want);
    assert!(tcp_ok(frame));
}

#[test]
fn the_underlay_cap_bounds_the_probed_path() {
    let mut pair = Pair::new();
    pair.a.set_path_mtu(PEER_B, 0);
    pair.a.set_mtu_cap(PEER_B, PATH - 100);
    let frame = ipv4_tcp(MAC_B, MAC_A, PATH as usize - OVERHEAD, true, 0x10, None);
    assert_eq!(
        pair.seal(true, &frame)[0].to_tap,
        Some(NET),
        "cap alone limits"
    );
    pair.a.set_path_mtu(PEER_B, PATH + 200);
    assert_eq!(
        pair.seal(true, &frame)[0].to_tap,
        Some(NET),
        "the smaller wins"
    );
    pair.a.set_mtu_cap(PEER_B, 0);
    pair.a.set_path_mtu(PEER_B, PATH);
    assert_eq!(pair.seal(true, &frame)[0].to_tap, None);
}
