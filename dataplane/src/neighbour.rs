//! Address resolution answered on this host, sans-IO: an ARP request
//! (RFC 826) or IPv6 neighbour solicitation (RFC 4861 4.3) that a local
//! container broadcasts for an attachment on another host is answered into
//! the TAP from the replicated endpoint records, instead of being flooded
//! to every member of the network.
//!
//! A flood costs one sealed datagram per member (O(N) per question) and
//! reaches hosts that have nothing to say; the records already bind each
//! attachment's address to its MAC and host, and the MAC is pinned to that
//! host (see [`crate::pins`]). The control plane hands over only addresses
//! the mesh's own state backs (the daemon's `macpins`: an address in a
//! range its host owns); the rest flood.
//!
//! Only plain questions are answered. ARP probes (sender 0.0.0.0, RFC 5227)
//! and IPv6 duplicate address detection (source `::`) ask whether anyone
//! *else* holds an address, and gratuitous announcements ask nothing: they
//! flood as before, so the holder itself answers. So do questions for
//! addresses no record names (one a container added to itself).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::icmp;
use crate::switch::Mac;
use crate::wire::ETHERNET_HEADER_LEN;
use crate::NetworkId;

/// Each attachment address of one network and the MAC it resolves to.
pub type NetworkAddresses = HashMap<IpAddr, Mac>;

/// Every network's addresses, as the control plane hands them over.
pub type AddressSet = HashMap<NetworkId, NetworkAddresses>;

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const IPV6_HEADER_LEN: usize = 40;
const IPPROTO_ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Type, code, checksum, reserved, target.
const ND_LEN: usize = 24;
/// A link-layer address option with an Ethernet MAC.
const LLADDR_OPTION_LEN: usize = 8;
const OPTION_TARGET_LLADDR: u8 = 2;
/// Solicited and Override (RFC 4861 4.4); not a router.
const NA_FLAGS: u8 = 0x60;
/// RFC 4861 7.1.1: neighbour discovery is only ever on-link.
const ND_HOP_LIMIT: u8 = 255;

/// The length of the largest answer [`answer`] writes.
pub const MAX_ANSWER_LEN: usize =
    ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + ND_LEN + LLADDR_OPTION_LEN;

/// Writes into `out` the answer to `frame` if it is a plain ARP request or
/// neighbour solicitation for an address `lookup` resolves, and returns the
/// answer's length. `None` for anything else (the frame goes on as usual).
pub fn answer(
    frame: &[u8],
    lookup: impl Fn(IpAddr) -> Option<Mac>,
    out: &mut [u8],
) -> Option<usize> {
    if frame.len() < ETHERNET_HEADER_LEN || out.len() < MAX_ANSWER_LEN {
        return None;
    }
    let body = &frame[ETHERNET_HEADER_LEN..];
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_ARP => arp(frame, body, lookup, out),
        ETHERTYPE_IPV6 => solicitation(frame, body, lookup, out),
        _ => None,
    }
}

fn arp(
    frame: &[u8],
    arp: &[u8],
    lookup: impl Fn(IpAddr) -> Option<Mac>,
    out: &mut [u8],
) -> Option<usize> {
    // Ethernet and IPv4, a request.
    if arp.len() < ARP_LEN || arp[..8] != [0, 1, 8, 0, 6, 4, 0, ARP_REQUEST as u8] {
        return None;
    }
    let asker_mac = &arp[8..14];
    let asker_ip: [u8; 4] = arp[14..18].try_into().ok()?;
    let target_ip: [u8; 4] = arp[24..28].try_into().ok()?;
    // A probe or an announcement, or a sender that is not the frame's
    // source: not a plain question.
    if asker_ip == [0; 4] || asker_ip == target_ip || asker_mac != &frame[6..12] {
        return None;
    }
    let target_mac = lookup(IpAddr::V4(Ipv4Addr::from(target_ip)))?;
    let len = ETHERNET_HEADER_LEN + ARP_LEN;
    out[0..6].copy_from_slice(asker_mac);
    out[6..12].copy_from_slice(&target_mac);
    out[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let reply = &mut out[ETHERNET_HEADER_LEN..len];
    reply[..6].copy_from_slice(&arp[..6]);
    reply[6..8].copy_from_slice(&ARP_REPLY.to_be_bytes());
    reply[8..14].copy_from_slice(&target_mac);
    reply[14..18].copy_from_slice(&target_ip);
    reply[18..24].copy_from_slice(asker_mac);
    reply[24..28].copy_from_slice(&asker_ip);
    Some(len)
}

fn solicitation(
    frame: &[u8],
    ip: &[u8],
    lookup: impl Fn(IpAddr) -> Option<Mac>,
    out: &mut [u8],
) -> Option<usize> {
    if ip.len() < IPV6_HEADER_LEN + ND_LEN
        || ip[0] >> 4 != 6
        || ip[6] != IPPROTO_ICMPV6
        || ip[7] != ND_HOP_LIMIT
    {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = &ip[IPV6_HEADER_LEN..];
    if payload_len < ND_LEN || icmp.len() < payload_len || icmp[..2] != [NEIGHBOR_SOLICITATION, 0] {
        return None;
    }
    let asker: [u8; 16] = ip[8..24].try_into().ok()?;
    let destination: [u8; 16] = ip[24..40].try_into().ok()?;
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let target_ip = Ipv6Addr::from(target);
    // Duplicate address detection (from `::`), or not asked of the target's
    // solicited-node group (RFC 4861 7.2.2): not a plain question.
    if asker == [0; 16] || target_ip.is_multicast() || destination != solicited_node(&target) {
        return None;
    }
    let target_mac = lookup(IpAddr::V6(target_ip))?;
    let answer_len = ND_LEN + LLADDR_OPTION_LEN;
    let len = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + answer_len;
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&target_mac);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let hdr = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV6_HEADER_LEN];
    hdr[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    hdr[4..6].copy_from_slice(&(answer_len as u16).to_be_bytes());
    hdr[6] = IPPROTO_ICMPV6;
    hdr[7] = ND_HOP_LIMIT;
    hdr[8..24].copy_from_slice(&target);
    hdr[24..40].copy_from_slice(&asker);
    let message = &mut out[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..len];
    message.fill(0);
    message[0] = NEIGHBOR_ADVERTISEMENT;
    message[4] = NA_FLAGS;
    message[8..24].copy_from_slice(&target);
    message[24] = OPTION_TARGET_LLADDR;
    message[25] = 1; // in units of 8 bytes
    message[26..32].copy_from_slice(&target_mac);
    let sum = icmp::icmpv6_checksum(&target, &asker, message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// `ff02::1:ffXX:XXXX` with the target's low 24 bits (RFC 4291 2.7.1).
fn solicited_node(target: &[u8; 16]) -> [u8; 16] {
    let mut group = [0u8; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[11..13].copy_from_slice(&[0x01, 0xff]);
    group[13..].copy_from_slice(&target[13..]);
    group
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{checksum_add, checksum_fold};

    const ASKER: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const HELD: Mac = [0x02, 0, 0, 0, 0, 0xb];
    const BROADCAST: Mac = [0xff; 6];

    fn known(ip: IpAddr) -> Option<Mac> {
        let held: [IpAddr; 2] = ["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        held.contains(&ip).then_some(HELD)
    }

    fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&BROADCAST);
        f.extend_from_slice(&ASKER);
        f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&ASKER);
        f.extend_from_slice(&sender);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    /// A solicitation as Linux sends it: to the solicited-node group, with
    /// the source link-layer address option.
    fn solicitation(source: [u8; 16], target: [u8; 16]) -> Vec<u8> {
        let group = solicited_node(&target);
        let mut f = Vec::new();
        f.extend_from_slice(&[0x33, 0x33, group[12], group[13], group[14], group[15]]);
        f.extend_from_slice(&ASKER);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target);
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&ASKER);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
        f.extend_from_slice(&source);
        f.extend_from_slice(&group);
        f.extend_from_slice(&icmp);
        f
    }

    fn answered(frame: &[u8]) -> Option<Vec<u8>> {
        let mut out = [0u8; MAX_ANSWER_LEN];
        let len = answer(frame, known, &mut out)?;
        Some(out[..len].to_vec())
    }

    #[test]
    fn an_arp_request_for_a_known_address_gets_the_holders_mac() {
        let reply = answered(&arp_request([10, 0, 0, 1], [10, 0, 0, 2])).expect("answered");
        assert_eq!(reply.len(), 42);
        assert_eq!(&reply[0..6], &ASKER, "to the asker");
        assert_eq!(&reply[6..12], &HELD, "from the holder");
        assert_eq!(&reply[12..14], &[8, 6]);
        let arp = &reply[14..];
        assert_eq!(&arp[..8], &[0, 1, 8, 0, 6, 4, 0, 2], "a reply");
        assert_eq!(&arp[8..14], &HELD);
        assert_eq!(&arp[14..18], &[10, 0, 0, 2]);
        assert_eq!(&arp[18..24], &ASKER);
        assert_eq!(&arp[24..28], &[10, 0, 0, 1]);
    }

    #[test]
    fn a_solicitation_for_a_known_address_gets_a_valid_advertisement() {
        let frame = solicitation(v6("fd00::1"), v6("fd00::2"));
        let reply = answered(&frame).expect("answered");
        assert_eq!(&reply[0..6], &ASKER);
        assert_eq!(&reply[6..12], &HELD);
        let ip = &reply[14..];
        assert_eq!((ip[6], ip[7]), (IPPROTO_ICMPV6, 255));
        assert_eq!(&ip[8..24], &v6("fd00::2"), "from the target");
        assert_eq!(&ip[24..40], &v6("fd00::1"), "to the asker");
        let icmp = &ip[40..];
        assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), icmp.len());
        assert_eq!(
            (icmp[0], icmp[1], icmp[4]),
            (136, 0, 0x60),
            "solicited, override"
        );
        assert_eq!(&icmp[8..24], &v6("fd00::2"));
        assert_eq!(
            &icmp[24..32],
            &[2, 1, 2, 0, 0, 0, 0, 0xb],
            "target lladdr option"
        );
        let mut acc = checksum_add(0, &ip[8..40]);
        acc += icmp.len() as u64 + u64::from(IPPROTO_ICMPV6);
        assert_eq!(checksum_fold(checksum_add(acc, icmp)), 0xffff, "checksum");
    }

    #[test]
    fn probes_announcements_and_unknown_addresses_are_left_to_flood() {
        for (what, frame) in [
            ("unknown", arp_request([10, 0, 0, 1], [10, 0, 0, 9])),
            ("probe", arp_request([0; 4], [10, 0, 0, 2])),
            ("gratuitous", arp_request([10, 0, 0, 2], [10, 0, 0, 2])),
            ("v6 unknown", solicitation(v6("fd00::1"), v6("fd00::9"))),
            ("dad", solicitation([0; 16], v6("fd00::2"))),
        ] {
            assert_eq!(answered(&frame), None, "{what}");
        }
        let mut forged = arp_request([10, 0, 0, 1], [10, 0, 0, 2]);
        forged[22..28].copy_from_slice(&HELD);
        assert_eq!(
            answered(&forged),
            None,
            "sender hardware address not the source"
        );
        let mut elsewhere = solicitation(v6("fd00::1"), v6("fd00::2"));
        elsewhere[14 + 24..14 + 40].copy_from_slice(&v6("ff02::1"));
        assert_eq!(
            answered(&elsewhere),
            None,
            "not to the solicited-node group"
        );
        let mut hops = solicitation(v6("fd00::1"), v6("fd00::2"));
        hops[14 + 7] = 64;
        assert_eq!(answered(&hops), None, "routed, not on-link");
    }

    #[test]
    fn truncated_and_garbage_frames_are_not_answered() {
        let arp = arp_request([10, 0, 0, 1], [10, 0, 0, 2]);
        let nd = solicitation(v6("fd00::1"), v6("fd00::2"));
        for frame in [&arp, &nd] {
            for len in 0..frame.len() {
                assert_eq!(answered(&frame[..len]), None, "cut at {len}");
            }
        }
        let mut state = 7u32;
        for _ in 0..2000 {
            let mut frame = arp.clone();
            for b in frame.iter_mut().skip(12) {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *b = (state >> 16) as u8;
            }
            let mut out = [0u8; MAX_ANSWER_LEN];
            let _ = answer(&frame, |_| Some(HELD), &mut out);
        }
    }
}
