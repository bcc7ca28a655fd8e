//! The answer to a frame too big for its peer's path, sans-IO: an ICMPv4
//! "fragmentation needed" (type 3 code 4, RFC 1191) or ICMPv6 "packet too
//! big" (type 2, RFC 4443) frame, Ethernet-addressed back to the sender, to
//! be written into the local TAP so the container's kernel lowers its path
//! MTU instead of retransmitting into a black hole.
//!
//! Source address: the oversized packet's own destination (and its
//! destination MAC as the Ethernet source), as if the far end had answered.
//! The data plane then needs no per-network service address, the answer is
//! right on routed and bridged paths alike, and conntrack/firewalls in the
//! container match it as RELATED by the quoted header, which is all the
//! Linux stack checks (it never checks an ICMP error's source).

use crate::offload::{checksum_add, checksum_fold};
use crate::wire::ETHERNET_HEADER_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const ICMP_HEADER_LEN: usize = 8;
/// RFC 1812 4.3.2.3: the whole ICMPv4 error stays within 576 bytes.
const ICMPV4_MAX_PACKET: usize = 576;
/// RFC 4443 2.4(c): the whole ICMPv6 error stays within the minimum MTU.
const ICMPV6_MAX_PACKET: usize = 1280;
const TTL: u8 = 64;

/// Why an oversized frame gets no ICMP answer.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum NoAnswer {
    /// Not IPv4/IPv6, or headers that do not parse.
    NotIp,
    /// IPv4 without DF: the sender allows fragmenting, it expects no answer.
    MayFragment,
    /// RFC 1122 3.2.2 / RFC 4443 2.4(e): never for an ICMP error, a
    /// non-first fragment, or a source that is not one host.
    Forbidden,
    /// The output buffer cannot hold even the minimal answer.
    NoRoom,
}

/// Writes into `out` the ICMP answer to `frame` (an Ethernet frame that
/// does not fit) announcing `mtu` (the largest IP packet that fits) and
/// returns the answer's length.
pub fn answer_too_big(frame: &[u8], mtu: u32, out: &mut [u8]) -> Result<usize, NoAnswer> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(NoAnswer::NotIp);
    }
    let packet = &frame[ETHERNET_HEADER_LEN..];
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_IPV4 => v4(frame, packet, mtu, out),
        ETHERTYPE_IPV6 => v6(frame, packet, mtu, out),
        _ => Err(NoAnswer::NotIp),
    }
}

/// Ethernet header back to the sender: swapped MACs, the same ethertype.
fn ethernet_back(frame: &[u8], out: &mut [u8]) {
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    out[12..14].copy_from_slice(&frame[12..14]);
}

fn v4(frame: &[u8], ip: &[u8], mtu: u32, out: &mut [u8]) -> Result<usize, NoAnswer> {
    if ip.len() < IPV4_HEADER_LEN || ip[0] >> 4 != 4 {
        return Err(NoAnswer::NotIp);
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < IPV4_HEADER_LEN || ip.len() < ihl || total < ihl {
        return Err(NoAnswer::NotIp);
    }
    let flags_frag = u16::from_be_bytes([ip[6], ip[7]]);
    if flags_frag & 0x4000 == 0 {
        return Err(NoAnswer::MayFragment);
    }
    let (src, dst): ([u8; 4], [u8; 4]) = (
        ip[12..16].try_into().expect("4 bytes"),
        ip[16..20].try_into().expect("4 bytes"),
    );
    let not_one_host = |a: [u8; 4]| a == [0; 4] || a == [255; 4] || (a[0] & 0xf0) == 0xe0;
    let icmp_error = ip[9] == IPPROTO_ICMP
        && ip
            .get(ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
    if flags_frag & 0x1fff != 0 || not_one_host(src) || not_one_host(dst) || icmp_error {
        return Err(NoAnswer::Forbidden);
    }
    let quote_len = total
        .min(ip.len())
        .min(ICMPV4_MAX_PACKET - IPV4_HEADER_LEN - ICMP_HEADER_LEN);
    let ip_len = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quote_len;
    let len = ETHERNET_HEADER_LEN + ip_len;
    if out.len() < len {
        return Err(NoAnswer::NoRoom);
    }
    ethernet_back(frame, out);
    let hdr = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN];
    hdr.fill(0);
    hdr[0] = 0x45;
    hdr[1] = 0xc0; // internetwork control, as Linux sends its own ICMP
    hdr[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    hdr[8] = TTL;
    hdr[9] = IPPROTO_ICMP;
    hdr[12..16].copy_from_slice(&dst);
    hdr[16..20].copy_from_slice(&src);
    let sum = !checksum_fold(checksum_add(0, hdr));
    hdr[10..12].copy_from_slice(&sum.to_be_bytes());
    let icmp = &mut out[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..len];
    icmp[..ICMP_HEADER_LEN].fill(0);
    icmp[0] = 3;
    icmp[1] = 4;
    icmp[6..8].copy_from_slice(&(mtu.min(u32::from(u16::MAX)) as u16).to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&ip[..quote_len]);
    let sum = !checksum_fold(checksum_add(0, icmp));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(len)
}

fn v6(frame: &[u8], ip: &[u8], mtu: u32, out: &mut [u8]) -> Result<usize, NoAnswer> {
    if ip.len() < IPV6_HEADER_LEN || ip[0] >> 4 != 6 {
        return Err(NoAnswer::NotIp);
    }
    let (src, dst): ([u8; 16], [u8; 16]) = (
        ip[8..24].try_into().expect("16 bytes"),
        ip[24..40].try_into().expect("16 bytes"),
    );
    // ICMPv6 errors have types below 128 (RFC 4443 2.1).
    let icmp_error = ip[6] == IPPROTO_ICMPV6 && ip.get(IPV6_HEADER_LEN).is_some_and(|t| *t < 128);
    if src == [0; 16] || src[0] == 0xff || icmp_error {
        return Err(NoAnswer::Forbidden);
    }
    let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let quote_len = total
        .min(ip.len())
        .min(ICMPV6_MAX_PACKET - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
    let payload_len = ICMP_HEADER_LEN + quote_len;
    let len = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + payload_len;
    if out.len() < len {
        return Err(NoAnswer::NoRoom);
    }
    ethernet_back(frame, out);
    let hdr = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV6_HEADER_LEN];
    hdr[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    hdr[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    hdr[6] = IPPROTO_ICMPV6;
    hdr[7] = TTL;
    hdr[8..24].copy_from_slice(&dst);
    hdr[24..40].copy_from_slice(&src);
    let icmp = &mut out[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..len];
    icmp[..ICMP_HEADER_LEN].fill(0);
    icmp[0] = 2;
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&ip[..quote_len]);
    // Pseudo-header: source, destination, upper-layer length, next header.
    let mut acc = checksum_add(0, &dst);
    acc = checksum_add(acc, &src);
    acc += payload_len as u64 + u64::from(IPPROTO_ICMPV6);
    let sum = !checksum_fold(checksum_add(acc, icmp));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

    fn eth(ethertype: u16, ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&B);
        f.extend_from_slice(&A);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn ipv4(len: usize, df: bool, proto: u8) -> Vec<u8> {
        let mut ip = vec![0u8; len];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        ip[6] = if df { 0x40 } else { 0 };
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        for (i, b) in ip[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        eth(ETHERTYPE_IPV4, &ip)
    }

    fn ipv6(len: usize, next: u8) -> Vec<u8> {
        let mut ip = vec![0u8; len];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        ip[6] = next;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        eth(ETHERTYPE_IPV6, &ip)
    }

    fn valid(sum: u64) -> bool {
        checksum_fold(sum) == 0xffff
    }

    #[test]
    fn v4_frag_needed_is_addressed_back_with_mtu_and_checksums() {
        let frame = ipv4(1400, true, 6);
        let mut out = [0u8; 2000];
        let len = answer_too_big(&frame, 1242, &mut out).unwrap();
        let out = &out[..len];
        assert_eq!(len, 14 + 576, "quote fills the 576-byte limit");
        assert_eq!(&out[0..6], &A);
        assert_eq!(&out[6..12], &B);
        let ip = &out[14..];
        assert!(valid(checksum_add(0, &ip[..20])), "IPv4 header checksum");
        assert_eq!(&ip[12..16], &[10, 0, 0, 2], "from the original destination");
        assert_eq!(&ip[16..20], &[10, 0, 0, 1], "to the sender");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        let icmp = &ip[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1242);
        assert!(valid(checksum_add(0, icmp)), "ICMP checksum");
        assert_eq!(&icmp[8..], &frame[14..14 + 548], "quotes the original");
    }

    #[test]
    fn v6_packet_too_big_has_a_valid_pseudo_header_checksum() {
        let frame = ipv6(1500, 17);
        let mut out = [0u8; 2000];
        let len = answer_too_big(&frame, 1280, &mut out).unwrap();
        let out = &out[..len];
        assert_eq!(len, 14 + 1280, "quote fills the minimum MTU");
        let ip = &out[14..];
        assert_eq!(&ip[8..24], &frame[14 + 24..14 + 40]);
        assert_eq!(&ip[24..40], &frame[14 + 8..14 + 24]);
        let icmp = &ip[40..];
        assert_eq!(icmp[0], 2);
        assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1280);
        let mut acc = checksum_add(0, &ip[8..40]);
        acc += icmp.len() as u64 + 58;
        assert!(valid(checksum_add(acc, icmp)));
    }

    #[test]
    fn short_packets_are_quoted_whole() {
        let frame = ipv4(100, true, 17);
        let mut out = [0u8; 2000];
        let len = answer_too_big(&frame, 60, &mut out).unwrap();
        assert_eq!(len, 14 + 20 + 8 + 100);
    }

    #[test]
    fn refuses_what_the_rfcs_forbid() {
        let mut out = [0u8; 2000];
        assert_eq!(
            answer_too_big(&ipv4(1400, false, 6), 1200, &mut out),
            Err(NoAnswer::MayFragment)
        );
        let mut icmp_err = ipv4(1400, true, 1);
        icmp_err[14 + 20] = 3;
        assert_eq!(
            answer_too_big(&icmp_err, 1200, &mut out),
            Err(NoAnswer::Forbidden)
        );
        let mut fragment = ipv4(1400, true, 6);
        fragment[14 + 7] = 10;
        assert_eq!(
            answer_too_big(&fragment, 1200, &mut out),
            Err(NoAnswer::Forbidden)
        );
        let mut multicast = ipv4(1400, true, 6);
        multicast[14 + 16] = 224;
        assert_eq!(
            answer_too_big(&multicast, 1200, &mut out),
            Err(NoAnswer::Forbidden)
        );
        let mut v6_err = ipv6(1400, 58);
        v6_err[14 + 40] = 2;
        assert_eq!(
            answer_too_big(&v6_err, 1280, &mut out),
            Err(NoAnswer::Forbidden)
        );
        assert_eq!(
            answer_too_big(&ipv4(1400, true, 6), 1200, &mut [0u8; 100]),
            Err(NoAnswer::NoRoom)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = [0u8; 2000];
        for len in 0..80 {
            let mut frame = vec![0xffu8; len];
            if len >= 14 {
                frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            }
            let _ = answer_too_big(&frame, 1200, &mut out);
            if len >= 14 {
                frame[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                frame[14..].fill(0x60);
            }
            let _ = answer_too_big(&frame, 1200, &mut out);
        }
        let mut bad_ihl = ipv4(60, true, 6);
        bad_ihl[14] = 0x4f;
        bad_ihl.truncate(14 + 30);
        assert_eq!(
            answer_too_big(&bad_ihl, 1200, &mut out),
            Err(NoAnswer::NotIp)
        );
    }
}
