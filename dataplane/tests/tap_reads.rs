//! What one TAP read becomes (`Engine::seal_tap_read`), sans-IO: plain
//! frames, checksum-offloaded frames and TCP super-segments with a
//! `virtio_net_hdr`, and every way such a read is refused, each counted
//! under its own drop reason.

use std::net::SocketAddr;
use std::time::Instant;

use dataplane::engine::{Engine, Outgoing};
use dataplane::offload::{
    VnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VNET_HDR_LEN,
};
use dataplane::pool::BufPool;
use dataplane::tap::MAX_TAP_FRAME;
use dataplane::{DropReason, NetworkId, SessionKeys};

const NET: NetworkId = NetworkId(7);
const PEER: u32 = 2;
const MSS: usize = 1370;
/// Ethernet + IPv4 + TCP with 12 bytes of options.
const HEADERS: usize = 14 + 20 + 32;

/// An engine with one peer on NET that has an endpoint and a sending key,
/// so every frame that survives parsing becomes one datagram.
fn engine() -> (Engine, BufPool, Instant) {
    let now = Instant::now();
    let engine = Engine::new(now);
    engine.add_network(NET);
    engine.upsert_peer(
        PEER,
        Some(SocketAddr::from(([198, 18, 0, 2], 7801))),
        &[NET],
    );
    let keys = SessionKeys {
        generation: 1,
        local_index: 10,
        remote_index: 20,
        send_key: [1; 32],
        recv_key: [2; 32],
        cipher: dataplane::Cipher::default(),
    };
    engine.install_keys(PEER, &keys, true, now);
    (engine, BufPool::new(MAX_TAP_FRAME, 4), now)
}

/// A TCP/IPv4 frame carrying `payload_len` bytes, unicast to a MAC nobody
/// learned (so it floods to the one peer).
fn tcp_v4(payload_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; HEADERS];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = 14;
    f[ip] = 0x45;
    f[ip + 2..ip + 4].copy_from_slice(&((HEADERS - 14 + payload_len) as u16).to_be_bytes());
    f[ip + 8] = 64;
    f[ip + 9] = 6; // TCP
    f[ip + 12..ip + 16].copy_from_slice(&[198, 19, 0, 1]);
    f[ip + 16..ip + 20].copy_from_slice(&[198, 19, 0, 2]);
    let l4 = ip + 20;
    f[l4 + 12] = 8 << 4; // 32-byte TCP header
    f[l4 + 13] = 0x18; // PSH ACK
    f.extend((0..payload_len).map(|i| (i % 251) as u8));
    f
}

/// `hdr` followed by `frame`, as one read from a TAP with IFF_VNET_HDR.
fn with_vnet(hdr: VnetHdr, frame: &[u8]) -> Vec<u8> {
    let mut read = vec![0u8; VNET_HDR_LEN];
    hdr.encode(&mut read);
    read.extend_from_slice(frame);
    read
}

fn tso_header() -> VnetHdr {
    VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: HEADERS as u16,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    }
}

/// Seals one read; returns the datagrams and the drops counted by it.
fn seal(read: &mut [u8], vnet: bool) -> (Vec<Outgoing>, Vec<(&'static str, u64)>) {
    let (engine, mut pool, now) = engine();
    let mut out = Vec::new();
    engine.seal_tap_read(NET, read, vnet, now, &mut pool, &mut out);
    let drops = engine
        .stats(now)
        .drops
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    (out, drops)
}

#[test]
fn a_plain_read_is_one_frame() {
    let (out, drops) = seal(&mut tcp_v4(100), false);
    assert_eq!(out.len(), 1);
    assert!(drops.is_empty(), "{drops:?}");
}

#[test]
fn a_super_segment_is_split_into_mss_sized_frames() {
    let mut read = with_vnet(tso_header(), &tcp_v4(MSS * 3 + 10));
    let (out, drops) = seal(&mut read, true);
    assert!(drops.is_empty(), "{drops:?}");
    assert_eq!(out.len(), 4);
    let overhead = dataplane::wire::OVERHEAD;
    let lengths: Vec<usize> = out
        .iter()
        .map(|o| o.datagram.datagram().len() - overhead)
        .collect();
    assert_eq!(
        lengths,
        [HEADERS + MSS, HEADERS + MSS, HEADERS + MSS, HEADERS + 10]
    );
}

#[test]
fn a_read_shorter_than_the_vnet_header_is_bad_vnet_hdr() {
    let (out, drops) = seal(&mut [0u8; VNET_HDR_LEN - 1], true);
    assert!(out.is_empty());
    assert_eq!(drops, [(DropReason::BadVnetHdr.name(), 1)]);
}

#[test]
fn a_gso_type_never_enabled_is_bad_vnet_hdr() {
    // 3 is UDP fragmentation offload: the TAP is only asked for TCP TSO.
    let hdr = VnetHdr {
        gso_type: 3,
        ..tso_header()
    };
    let (out, drops) = seal(&mut with_vnet(hdr, &tcp_v4(MSS * 2)), true);
    assert!(out.is_empty());
    assert_eq!(drops, [(DropReason::BadVnetHdr.name(), 1)]);
    // Nor does TCPv4 segmentation fit a frame whose ethertype says IPv6.
    let mut frame = tcp_v4(MSS * 2);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    let (_, drops) = seal(&mut with_vnet(tso_header(), &frame), true);
    assert_eq!(drops, [(DropReason::BadVnetHdr.name(), 1)]);
}

#[test]
fn a_super_segment_with_offsets_outside_its_headers_is_gso_split_failed() {
    for hdr in [
        VnetHdr {
            csum_start: 40, // not where the IPv4 header ends
            ..tso_header()
        },
        VnetHdr {
            gso_size: 0,
            ..tso_header()
        },
        VnetHdr {
            flags: 0, // TSO without a partial checksum
            ..tso_header()
        },
    ] {
        let (out, drops) = seal(&mut with_vnet(hdr, &tcp_v4(MSS * 2)), true);
        assert!(out.is_empty(), "{hdr:?}");
        assert_eq!(drops, [(DropReason::GsoSplitFailed.name(), 1)], "{hdr:?}");
    }
}

#[test]
fn segments_larger_than_a_packet_buffer_are_oversized() {
    let hdr = VnetHdr {
        gso_size: (MAX_TAP_FRAME + 1) as u16,
        ..tso_header()
    };
    let (_, drops) = seal(&mut with_vnet(hdr, &tcp_v4(MAX_TAP_FRAME * 2)), true);
    assert_eq!(drops, [(DropReason::OversizedFrame.name(), 1)]);
    // And a single frame that big, without GSO.
    let mut big = tcp_v4(MAX_TAP_FRAME);
    let (_, drops) = seal(&mut big, false);
    assert_eq!(drops, [(DropReason::OversizedFrame.name(), 1)]);
}

#[test]
fn a_partial_checksum_outside_the_frame_is_checksum_offload_failed() {
    let frame = tcp_v4(200);
    let hdr = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        csum_start: frame.len() as u16,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let (out, drops) = seal(&mut with_vnet(hdr, &frame), true);
    assert!(out.is_empty());
    assert_eq!(drops, [(DropReason::ChecksumOffloadFailed.name(), 1)]);
}

#[test]
fn a_partial_checksum_is_completed_and_the_frame_sent() {
    let frame = tcp_v4(200);
    let hdr = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let (out, drops) = seal(&mut with_vnet(hdr, &frame), true);
    assert!(drops.is_empty(), "{drops:?}");
    assert_eq!(out.len(), 1);
}

#[test]
fn a_runt_behind_a_vnet_header_is_still_a_runt() {
    let (_, drops) = seal(&mut with_vnet(VnetHdr::default(), &[0u8; 13]), true);
    assert_eq!(drops, [(DropReason::RuntFrame.name(), 1)]);
}
