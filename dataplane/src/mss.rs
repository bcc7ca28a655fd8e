//! TCP MSS clamping, sans-IO: the MSS option of a SYN or SYN-ACK crossing
//! the mesh is lowered so that full-sized segments of the connection fit
//! the peer's path (`Peer::path_mtu`), and TCP never needs an ICMP answer
//! to find it (RFC 4459 §3.2, what every tunnel router does). Plain
//! untagged Ethernet frames with complete checksums: TAP reads with a
//! partial checksum are completed in `offload` before they get here.

use crate::wire::{ETHERNET_HEADER_LEN, OVERHEAD};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_HEADER_LEN: usize = 20;
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// The largest MSS whose segments, sealed, fit a path carrying `path_mtu`
/// bytes of UDP payload; None when the path is unknown (0: no limit).
pub fn mss_for_path(path_mtu: u32, ipv6: bool) -> Option<u16> {
    if path_mtu == 0 {
        return None;
    }
    let ip_header = if ipv6 { 40 } else { 20 };
    let fixed = (OVERHEAD + ETHERNET_HEADER_LEN + ip_header + TCP_HEADER_LEN) as u32;
    Some(path_mtu.saturating_sub(fixed).min(u32::from(u16::MAX)) as u16)
}

/// Lowers the MSS option of a TCP SYN in `frame` to fit `path_mtu`;
/// returns the MSS written, if it changed one. Anything else (not TCP,
/// not a SYN, fragments, IPv6 extension headers, malformed options) is
/// left as it is.
pub fn clamp(frame: &mut [u8], path_mtu: u32) -> Option<u16> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get_mut(ETHERNET_HEADER_LEN..)?;
    let (tcp_start, ipv6) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0;
            if *ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != IPPROTO_TCP || fragment {
                return None;
            }
            (ihl, false)
        }
        ETHERTYPE_IPV6 => {
            if *ip.first()? >> 4 != 6 || *ip.get(6)? != IPPROTO_TCP {
                return None;
            }
            (40, true)
        }
        _ => return None,
    };
    let limit = mss_for_path(path_mtu, ipv6)?;
    let tcp = ip.get_mut(tcp_start..)?;
    if tcp.len() < TCP_HEADER_LEN || tcp[13] & TCP_SYN == 0 {
        return None;
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < TCP_HEADER_LEN || header_len > tcp.len() {
        return None;
    }
    let at = find_mss(&tcp[TCP_HEADER_LEN..header_len])? + TCP_HEADER_LEN;
    let old = u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    if old <= limit {
        return None;
    }
    tcp[at..at + 2].copy_from_slice(&limit.to_be_bytes());
    // An option at an odd offset straddles two checksum words: its bytes
    // count swapped in the ones'-complement sum.
    let (old_word, new_word) = match at % 2 {
        0 => (old, limit),
        _ => (old.swap_bytes(), limit.swap_bytes()),
    };
    let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
    tcp[16..18].copy_from_slice(&update_checksum(sum, old_word, new_word).to_be_bytes());
    Some(limit)
}

/// Offset (in `options`) of the MSS option's value.
fn find_mss(options: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            OPT_END => return None,
            OPT_NOP => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == OPT_MSS && len == 4 {
                    return Some(i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn update_checksum(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::{checksum_add, checksum_fold};

    /// A SYN with options [NOP, MSS mss, `options`...] (the MSS value at an
    /// odd offset, the hard case) and a correct checksum.
    fn syn(ipv6: bool, mss: u16, flags: u8, options: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14]
            .copy_from_slice(&(if ipv6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }).to_be_bytes());
        let mut opts = vec![OPT_NOP, OPT_MSS, 4];
        opts.extend_from_slice(&mss.to_be_bytes());
        opts.extend_from_slice(options);
        while opts.len() % 4 != 0 {
            opts.push(OPT_END);
        }
        let tcp_len = 20 + opts.len();
        let mut tcp = vec![0u8; tcp_len];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[20..].copy_from_slice(&opts);
        let (ip, pseudo) = if ipv6 {
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip[6] = IPPROTO_TCP;
            ip[8] = 0xfd;
            ip[23] = 1;
            ip[24] = 0xfd;
            ip[39] = 2;
            let acc = checksum_add(0, &ip[8..40]) + tcp_len as u64 + 6;
            (ip, acc)
        } else {
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[9] = IPPROTO_TCP;
            ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let acc = checksum_add(0, &ip[12..20]) + tcp_len as u64 + 6;
            (ip, acc)
        };
        let sum = !checksum_fold(checksum_add(pseudo, &tcp));
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }

    fn tcp_checksum_ok(f: &[u8], ipv6: bool) -> bool {
        let ip = &f[14..];
        let (hl, pseudo) = if ipv6 {
            (40, &ip[8..40])
        } else {
            (20, &ip[12..20])
        };
        let tcp = &ip[hl..];
        let acc = checksum_add(0, pseudo) + tcp.len() as u64 + 6;
        checksum_fold(checksum_add(acc, tcp)) == 0xffff
    }

    fn mss_of(f: &[u8], ipv6: bool) -> u16 {
        let at = 14 + if ipv6 { 40 } else { 20 } + 20 + 1 + 2;
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    #[test]
    fn path_limits() {
        // 1500-byte underlay, IPv4: 1472 payload → 1436 frame → 1422 IP → 1382 MSS.
        assert_eq!(mss_for_path(1472, false), Some(1382));
        assert_eq!(mss_for_path(1472, true), Some(1362));
        assert_eq!(mss_for_path(0, false), None);
        assert_eq!(mss_for_path(10, false), Some(0));
    }

    #[test]
    fn clamps_syn_and_syn_ack_keeping_the_checksum_valid() {
        for ipv6 in [false, true] {
            for flags in [TCP_SYN, TCP_SYN | 0x10] {
                let mut f = syn(ipv6, 1460, flags, &[4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8]);
                assert!(tcp_checksum_ok(&f, ipv6));
                let want = mss_for_path(1272, ipv6).unwrap();
                assert_eq!(clamp(&mut f, 1272), Some(want));
                assert_eq!(mss_of(&f, ipv6), want);
                assert!(tcp_checksum_ok(&f, ipv6), "ipv6={ipv6} flags={flags}");
            }
        }
    }

    #[test]
    fn leaves_small_mss_non_syn_and_unknown_path_alone() {
        let mut small = syn(false, 500, TCP_SYN, &[]);
        let before = small.clone();
        assert_eq!(clamp(&mut small, 1272), None);
        assert_eq!(small, before);
        let mut ack = syn(false, 1460, 0x10, &[]);
        assert_eq!(clamp(&mut ack, 1272), None);
        let mut unknown = syn(true, 1460, TCP_SYN, &[]);
        assert_eq!(clamp(&mut unknown, 0), None);
        assert_eq!(mss_of(&unknown, true), 1460);
    }

    #[test]
    fn malformed_options_and_truncation_do_not_panic() {
        let good = syn(false, 1460, TCP_SYN, &[]);
        for len in 0..good.len() {
            let _ = clamp(&mut good[..len].to_vec(), 1272);
        }
        let mut zero_len = syn(false, 1460, TCP_SYN, &[]);
        zero_len[14 + 20 + 20 + 2] = 0; // MSS option length 0
        assert_eq!(clamp(&mut zero_len, 1272), None);
        let mut long = syn(false, 1460, TCP_SYN, &[]);
        long[14 + 20 + 20 + 2] = 40; // runs past the header
        assert_eq!(clamp(&mut long, 1272), None);
    }
}
