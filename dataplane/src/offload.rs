//! TAP offloads, sans-IO: the `virtio_net_hdr` that precedes every frame on a
//! TAP opened with `IFF_VNET_HDR`, finishing partial checksums, and splitting
//! a TCP super-segment (TSO, up to 64 KB) into MTU-sized Ethernet frames in
//! userspace (what a NIC would do), so that each frame still travels as one
//! sealed datagram exactly as `PROTOCOL.md` specifies.

use crate::pool::PacketBuf;
use crate::stats::DropReason;

/// Length of the `virtio_net_hdr` we ask the TAP for (`TUNSETVNETHDRSZ` default).
pub const VNET_HDR_LEN: usize = 10;

pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` (little-endian fields, as on every Linux host we run on).
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        if bytes.len() < VNET_HDR_LEN {
            return None;
        }
        let le16 = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        Some(VnetHdr {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: le16(2),
            gso_size: le16(4),
            csum_start: le16(6),
            csum_offset: le16(8),
        })
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// Why a frame read from the TAP could not be turned into plain frames.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum OffloadError {
    /// A GSO type we did not enable (or a malformed header).
    Unsupported,
    /// Offsets in the vnet header or the packet headers do not fit the frame.
    Malformed,
    /// A segment does not fit a pool buffer.
    TooBig,
}

impl OffloadError {
    /// The counter a super-segment that could not be split is dropped under.
    pub fn drop_reason(self) -> DropReason {
        match self {
            OffloadError::Unsupported => DropReason::BadVnetHdr,
            OffloadError::Malformed => DropReason::GsoSplitFailed,
            OffloadError::TooBig => DropReason::OversizedFrame,
        }
    }
}

/// Ones'-complement sum of `data` (big-endian 16-bit words) added to `initial`,
/// not folded. Sums 32-bit words into a u64 (no carry handling per word).
pub fn checksum_add(initial: u64, data: &[u8]) -> u64 {
    let mut acc = initial;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        acc += u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as u64;
        acc += u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]) as u64;
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(2);
    for word in &mut words {
        acc += u16::from_be_bytes([word[0], word[1]]) as u64;
    }
    if let [last] = words.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

/// Folds a sum from [`checksum_add`] to 16 bits (not complemented).
pub fn checksum_fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Completes a `CHECKSUM_PARTIAL` frame in place: the field at
/// `csum_start + csum_offset` holds the pseudo-header sum; the rest is summed
/// from `csum_start` to the end (as the kernel's `skb_checksum_help`).
pub fn finish_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), OffloadError> {
    let start = hdr.csum_start as usize;
    let field = start + hdr.csum_offset as usize;
    if field + 2 > frame.len() {
        return Err(OffloadError::Malformed);
    }
    let sum = !checksum_fold(checksum_add(0, &frame[start..]));
    // 0 means "no checksum" for UDP; the kernel sends 0xffff instead.
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Offset of the IP header and its ethertype (one 802.1Q tag allowed).
fn ip_offset(frame: &[u8]) -> Option<(usize, u16)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == ETHERTYPE_VLAN {
        let inner = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        return Some((18, inner));
    }
    Some((14, ethertype))
}

/// Splits a TCP super-segment (`gso_type` TCPV4/TCPV6) into frames of at most
/// `gso_size` payload bytes each, with correct IP lengths, IPv4 ids and header
/// checksums, TCP sequence numbers, flags and full TCP checksums. Each frame
/// is written into a buffer from `next_buf` and handed to `emit`.
/// Returns the number of frames emitted.
pub fn segment_tcp(
    frame: &[u8],
    hdr: &VnetHdr,
    mut next_buf: impl FnMut() -> PacketBuf,
    mut emit: impl FnMut(PacketBuf),
) -> Result<usize, OffloadError> {
    let (ip, ethertype) = ip_offset(frame).ok_or(OffloadError::Malformed)?;
    let is_v4 = match (hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN, ethertype) {
        (VIRTIO_NET_HDR_GSO_TCPV4, ETHERTYPE_IPV4) => true,
        (VIRTIO_NET_HDR_GSO_TCPV6, ETHERTYPE_IPV6) => false,
        _ => return Err(OffloadError::Unsupported),
    };
    let l4 = hdr.csum_start as usize;
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 || l4 + 20 > frame.len() {
        return Err(OffloadError::Malformed);
    }
    if is_v4 {
        let ihl = (frame[ip] & 0x0f) as usize * 4;
        if frame[ip] >> 4 != 4 || ip + ihl != l4 || frame[ip + 9] != IPPROTO_TCP {
            return Err(OffloadError::Malformed);
        }
    } else if frame[ip] >> 4 != 6 || l4 < ip + 40 {
        return Err(OffloadError::Malformed);
    }
    let tcp_len = (frame[l4 + 12] >> 4) as usize * 4;
    let headers = l4 + tcp_len;
    let mss = hdr.gso_size as usize;
    if tcp_len < 20 || headers > frame.len() || mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let payload = &frame[headers..];
    let seq0 = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().expect("4 bytes"));
    let flags0 = frame[l4 + 13];
    let id0 = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]);
    // Pseudo-header addresses: fixed for every segment.
    let addresses = if is_v4 {
        checksum_add(0, &frame[ip + 12..ip + 20])
    } else {
        checksum_add(0, &frame[ip + 8..ip + 40])
    };
    let count = payload.len().div_ceil(mss).max(1);
    for index in 0..count {
        let chunk =
            &payload[(index * mss).min(payload.len())..((index + 1) * mss).min(payload.len())];
        let mut buf = next_buf();
        let space = buf.frame_space();
        let len = headers + chunk.len();
        if len > space.len() {
            return Err(OffloadError::TooBig);
        }
        let out = &mut space[..len];
        out[..headers].copy_from_slice(&frame[..headers]);
        out[headers..].copy_from_slice(chunk);
        let l4_len = tcp_len + chunk.len();
        if is_v4 {
            let total = (l4 - ip + l4_len) as u16;
            out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            out[ip + 4..ip + 6].copy_from_slice(&id0.wrapping_add(index as u16).to_be_bytes());
            out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
            let sum = !checksum_fold(checksum_add(0, &out[ip..l4]));
            out[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
        } else {
            let payload_len = (l4 - ip - 40 + l4_len) as u16;
            out[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
        }
        let seq = seq0.wrapping_add((index * mss) as u32);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if index + 1 < count {
            flags &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
        }
        if index > 0 {
            flags &= !TCP_FLAG_CWR;
        }
        out[l4 + 13] = flags;
        out[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let pseudo = addresses + IPPROTO_TCP as u64 + l4_len as u64;
        let sum = !checksum_fold(checksum_add(pseudo, &out[l4..]));
        out[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
        buf.set_frame_len(len);
        emit(buf);
    }
    Ok(count)
}

/// Largest coalesced frame: IPv4 total length is 16 bits.
const MAX_COALESCED: usize = 65_535;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
const TCP_FLAG_URG: u8 = 0x20;

/// Where the headers of a TCP data frame are.
#[derive(Copy, Clone, Debug)]
struct TcpFrame {
    ip: usize,
    l4: usize,
    headers: usize,
    is_v4: bool,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// A plain (no options, unfragmented) IPv4/IPv6 TCP frame carrying data with
/// only ACK (and PSH) set, whose lengths agree with the frame: the kind that
/// can be merged.
fn tcp_data_frame(frame: &[u8]) -> Option<TcpFrame> {
    let (ip, ethertype) = ip_offset(frame)?;
    let (l4, is_v4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let h = frame.get(ip..ip + 20)?;
            let fragmented = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            let total = u16::from_be_bytes([h[2], h[3]]) as usize;
            if h[0] != 0x45 || h[9] != IPPROTO_TCP || fragmented || ip + total != frame.len() {
                return None;
            }
            (ip + 20, true)
        }
        ETHERTYPE_IPV6 => {
            let h = frame.get(ip..ip + 40)?;
            let payload_len = u16::from_be_bytes([h[4], h[5]]) as usize;
            if h[0] >> 4 != 6 || h[6] != IPPROTO_TCP || ip + 40 + payload_len != frame.len() {
                return None;
            }
            (ip + 40, false)
        }
        _ => return None,
    };
    let t = frame.get(l4..l4 + 20)?;
    let tcp_len = (t[12] >> 4) as usize * 4;
    let flags = t[13];
    let headers = l4 + tcp_len;
    if tcp_len < 20
        || headers >= frame.len()
        || flags & TCP_FLAG_ACK == 0
        || flags & (TCP_FLAG_SYN | TCP_FLAG_RST | TCP_FLAG_URG | TCP_FLAG_FIN) != 0
    {
        return None;
    }
    Some(TcpFrame {
        ip,
        l4,
        headers,
        is_v4,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags,
        payload: frame.len() - headers,
    })
}

/// Receive-side TCP coalescing (userspace GRO) for a TAP with vnet headers:
/// consecutive in-order segments of one flow become one super-frame written
/// with a GSO `virtio_net_hdr`, so the kernel bridge, veth and the
/// container's TCP stack handle one packet instead of up to ~45. Anything
/// else is written as is. `K` identifies the output (the TAP).
pub struct Coalescer<K> {
    /// `[vnet header | frame]`; the frame is the first segment's headers
    /// followed by every merged payload.
    buf: Vec<u8>,
    len: usize,
    key: Option<K>,
    first: Option<TcpFrame>,
    next_seq: u32,
    segments: usize,
}

impl<K: PartialEq + Clone> Default for Coalescer<K> {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl<K: PartialEq + Clone> Coalescer<K> {
    pub fn new() -> Coalescer<K> {
        Coalescer {
            buf: vec![0u8; VNET_HDR_LEN + MAX_COALESCED],
            len: 0,
            key: None,
            first: None,
            next_seq: 0,
            segments: 0,
        }
    }

    /// Offers an authenticated frame for output `key`. `write` is called
    /// with `(key, vnet header + frame)` for whatever is ready to go out.
    /// `frame_with_room` must have `VNET_HDR_LEN` spare bytes in front of the
    /// frame (`frame_start`), used when the frame goes out on its own.
    pub fn push(
        &mut self,
        key: &K,
        frame_with_room: &mut [u8],
        frame_start: usize,
        mut write: impl FnMut(&K, &[u8]),
    ) {
        let frame = &frame_with_room[frame_start..];
        let Some(tcp) = tcp_data_frame(frame) else {
            self.flush(&mut write);
            return write_single(key, frame_with_room, frame_start, write);
        };
        if self.can_merge(key, frame, &tcp) {
            let end = self.len + tcp.payload;
            self.buf[self.len..end].copy_from_slice(&frame[tcp.headers..]);
            self.len = end;
            self.segments += 1;
            self.next_seq = tcp.seq.wrapping_add(tcp.payload as u32);
            let first = self.first.expect("merging into a started frame");
            if tcp.flags & TCP_FLAG_PSH != 0 {
                self.buf[VNET_HDR_LEN + first.l4 + 13] |= TCP_FLAG_PSH;
            }
            if tcp.payload < first.payload || tcp.flags & TCP_FLAG_PSH != 0 {
                self.flush(&mut write);
            }
            return;
        }
        self.flush(&mut write);
        if tcp.flags & TCP_FLAG_PSH != 0 {
            return write_single(key, frame_with_room, frame_start, write);
        }
        self.buf[VNET_HDR_LEN..VNET_HDR_LEN + frame.len()].copy_from_slice(frame);
        self.len = VNET_HDR_LEN + frame.len();
        self.key = Some(key.clone());
        self.first = Some(tcp);
        self.next_seq = tcp.seq.wrapping_add(tcp.payload as u32);
        self.segments = 1;
    }

    fn can_merge(&self, key: &K, frame: &[u8], tcp: &TcpFrame) -> bool {
        let (Some(first), Some(current)) = (self.first.as_ref(), self.key.as_ref()) else {
            return false;
        };
        if current != key
            || tcp.seq != self.next_seq
            || tcp.payload > first.payload
            || tcp.headers != first.headers
            || tcp.is_v4 != first.is_v4
            || tcp.l4 != first.l4
            || self.len + tcp.payload > self.buf.len()
        {
            return false;
        }
        let held = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + first.headers];
        let ip = first.ip;
        // Ethernet header up to the IP header must match.
        if held[..ip] != frame[..ip] {
            return false;
        }
        // IP header except lengths, id and checksum.
        let same_ip = if first.is_v4 {
            held[ip] == frame[ip]
                && held[ip + 1] == frame[ip + 1]
                && held[ip + 6..ip + 10] == frame[ip + 6..ip + 10]
                && held[ip + 12..ip + 20] == frame[ip + 12..ip + 20]
        } else {
            held[ip..ip + 4] == frame[ip..ip + 4] && held[ip + 6..ip + 40] == frame[ip + 6..ip + 40]
        };
        let l4 = first.l4;
        // Ports, then ack + data offset + flags (but PSH) + window, then options.
        same_ip
            && held[l4..l4 + 4] == frame[l4..l4 + 4]
            && held[l4 + 8..l4 + 13] == frame[l4 + 8..l4 + 13]
            && held[l4 + 13] & !TCP_FLAG_PSH == frame[l4 + 13] & !TCP_FLAG_PSH
            && held[l4 + 14..l4 + 16] == frame[l4 + 14..l4 + 16]
            && held[l4 + 20..first.headers] == frame[l4 + 20..first.headers]
    }

    /// Writes out whatever is held.
    pub fn flush(&mut self, mut write: impl FnMut(&K, &[u8])) {
        let (Some(key), Some(first)) = (self.key.take(), self.first.take()) else {
            return;
        };
        let frame_len = self.len - VNET_HDR_LEN;
        let hdr = if self.segments == 1 {
            VnetHdr {
                flags: VIRTIO_NET_HDR_F_DATA_VALID,
                ..VnetHdr::default()
            }
        } else {
            let frame = &mut self.buf[VNET_HDR_LEN..self.len];
            let (ip, l4) = (first.ip, first.l4);
            let l4_len = frame_len - l4;
            let addresses = if first.is_v4 {
                let total = (frame_len - ip) as u16;
                frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
                let sum = !checksum_fold(checksum_add(0, &frame[ip..l4]));
                frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
                checksum_add(0, &frame[ip + 12..ip + 20])
            } else {
                frame[ip + 4..ip + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                checksum_add(0, &frame[ip + 8..ip + 40])
            };
            // CHECKSUM_PARTIAL: the field holds the pseudo-header sum.
            let pseudo = checksum_fold(addresses + IPPROTO_TCP as u64 + l4_len as u64);
            frame[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
            VnetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: if first.is_v4 {
                    VIRTIO_NET_HDR_GSO_TCPV4
                } else {
                    VIRTIO_NET_HDR_GSO_TCPV6
                },
                hdr_len: first.headers as u16,
                gso_size: first.payload as u16,
                csum_start: l4 as u16,
                csum_offset: 16,
            }
        };
        hdr.encode(&mut self.buf[..VNET_HDR_LEN]);
        write(&key, &self.buf[..self.len]);
        self.len = 0;
        self.segments = 0;
    }
}

fn write_single<K>(
    key: &K,
    frame_with_room: &mut [u8],
    frame_start: usize,
    mut write: impl FnMut(&K, &[u8]),
) {
    // The frame authenticated, so its checksums need no re-verification
    // (as WireGuard marks decrypted packets).
    let start = frame_start - VNET_HDR_LEN;
    VnetHdr {
        flags: VIRTIO_NET_HDR_F_DATA_VALID,
        ..VnetHdr::default()
    }
    .encode(&mut frame_with_room[start..frame_start]);
    write(key, &frame_with_room[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference RFC 1071 checksum, word by word.
    fn reference(data: &[u8]) -> u16 {
        let mut sum = 0u32;
        for pair in data.chunks(2) {
            let word = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            sum += word as u32;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Segments a super-frame and returns the frames it became.
    fn split(frame: &[u8], hdr: &VnetHdr) -> Vec<Vec<u8>> {
        let mut segments = Vec::new();
        segment_tcp(
            frame,
            hdr,
            || PacketBuf::with_frame_capacity(2048),
            |b| segments.push(b.frame().to_vec()),
        )
        .unwrap();
        segments
    }

    #[test]
    fn checksum_matches_reference_for_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8 ^ 0xa5).collect();
        for len in 0..data.len() {
            assert_eq!(
                checksum_fold(checksum_add(0, &data[..len])),
                reference(&data[..len]),
                "len {len}"
            );
        }
    }

    fn tcp_v4_super(payload_len: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 32];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = 14;
        f[ip] = 0x45;
        f[ip + 4..ip + 6].copy_from_slice(&0xfffeu16.to_be_bytes());
        f[ip + 6] = 0x40; // DF
        f[ip + 8] = 64;
        f[ip + 9] = IPPROTO_TCP;
        f[ip + 12..ip + 16].copy_from_slice(&[198, 19, 0, 1]);
        f[ip + 16..ip + 20].copy_from_slice(&[198, 19, 0, 2]);
        let l4 = ip + 20;
        f[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[l4 + 4..l4 + 8].copy_from_slice(&0xffff_ff00u32.to_be_bytes());
        f[l4 + 8..l4 + 12].copy_from_slice(&77u32.to_be_bytes());
        f[l4 + 12] = 8 << 4; // 32-byte header (timestamps)
        f[l4 + 13] = flags;
        f[l4 + 20] = 1; // NOP options
        f.extend((0..payload_len).map(|i| (i % 251) as u8));
        f
    }

    fn verify_v4(seg: &[u8]) {
        let ip = 14;
        let l4 = 34;
        assert_eq!(reference(&seg[ip..l4]), 0xffff, "IPv4 header checksum");
        let total = u16::from_be_bytes([seg[ip + 2], seg[ip + 3]]) as usize;
        assert_eq!(total, seg.len() - 14);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&seg[ip + 12..ip + 20]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&((seg.len() - l4) as u16).to_be_bytes());
        pseudo.extend_from_slice(&seg[l4..]);
        assert_eq!(reference(&pseudo), 0xffff, "TCP checksum");
    }

    #[test]
    fn splits_a_tcp_v4_super_segment() {
        let mss = 1370;
        let super_frame = tcp_v4_super(
            mss * 3 + 100,
            TCP_FLAG_PSH | TCP_FLAG_FIN | 0x10 | TCP_FLAG_CWR,
        );
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 66,
            gso_size: mss as u16,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut segments = Vec::new();
        let n = segment_tcp(
            &super_frame,
            &hdr,
            || PacketBuf::with_frame_capacity(2048),
            |b| segments.push(b.frame().to_vec()),
        )
        .unwrap();
        assert_eq!(n, 4);
        let mut payload = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            verify_v4(seg);
            let l4 = 34;
            let seq = u32::from_be_bytes(seg[l4 + 4..l4 + 8].try_into().unwrap());
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add((i * mss) as u32));
            let id = u16::from_be_bytes([seg[18], seg[19]]);
            assert_eq!(id, 0xfffeu16.wrapping_add(i as u16));
            let flags = seg[l4 + 13];
            assert_eq!(flags & TCP_FLAG_CWR != 0, i == 0);
            assert_eq!(flags & (TCP_FLAG_FIN | TCP_FLAG_PSH) != 0, i == 3);
            assert_eq!(&seg[..l4 + 32][..14], &super_frame[..14]);
            payload.extend_from_slice(&seg[l4 + 32..]);
            assert!(seg.len() - l4 - 32 <= mss);
        }
        assert_eq!(payload, super_frame[66..]);
    }

    #[test]
    fn splits_a_tcp_v6_super_segment() {
        let mss = 1000;
        let mut f = vec![0u8; 14 + 40 + 20];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[14 + 6] = IPPROTO_TCP;
        f[14 + 8..14 + 40]
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        f[54 + 12] = 5 << 4;
        f[54 + 13] = 0x18;
        f.extend((0..2500).map(|i| i as u8));
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            hdr_len: 74,
            gso_size: mss as u16,
            csum_start: 54,
            csum_offset: 16,
        };
        let segments = split(&f, &hdr);
        assert_eq!(segments.len(), 3);
        for seg in &segments {
            let plen = u16::from_be_bytes([seg[18], seg[19]]) as usize;
            assert_eq!(plen, seg.len() - 54);
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&seg[22..54]);
            pseudo.extend_from_slice(&(plen as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_TCP]);
            pseudo.extend_from_slice(&seg[54..]);
            assert_eq!(reference(&pseudo), 0xffff);
        }
    }

    #[test]
    fn finishes_a_partial_checksum() {
        let mut f = tcp_v4_super(333, 0x18);
        // Pseudo-header sum (not complemented) in the field, as the kernel leaves it.
        let l4_len = f.len() - 34;
        let pseudo = checksum_fold(checksum_add(IPPROTO_TCP as u64 + l4_len as u64, &f[26..34]));
        let total = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let ip_sum = !checksum_fold(checksum_add(0, &f[14..34]));
        f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
        f[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        finish_checksum(&mut f, &hdr).unwrap();
        verify_v4(&f);
    }

    #[test]
    fn rejects_bad_offsets_without_panicking() {
        let f = tcp_v4_super(100, 0x10);
        for csum_start in [0u16, 20, 40, 200, 65535] {
            let hdr = VnetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
                gso_size: 10,
                csum_start,
                csum_offset: 16,
                ..VnetHdr::default()
            };
            let _ = segment_tcp(&f, &hdr, || PacketBuf::with_frame_capacity(2048), |_| {});
            let mut g = f.clone();
            let _ = finish_checksum(&mut g, &hdr);
        }
        let hdr = VnetHdr {
            gso_type: 3,
            ..VnetHdr::default()
        };
        assert_eq!(
            segment_tcp(&f, &hdr, || PacketBuf::with_frame_capacity(2048), |_| {}),
            Err(OffloadError::Unsupported)
        );
    }

    #[test]
    fn coalesces_what_was_segmented() {
        let mss = 1370;
        let super_frame = tcp_v4_super(mss * 5 + 7, TCP_FLAG_PSH | TCP_FLAG_ACK);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 66,
            gso_size: mss as u16,
            csum_start: 34,
            csum_offset: 16,
        };
        let segments = split(&super_frame, &hdr);
        // An ARP-ish frame in the middle of another network's stream and one at the end.
        let mut writes: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut coalescer = Coalescer::<u8>::new();
        for seg in &segments {
            let mut room = vec![0u8; VNET_HDR_LEN];
            room.extend_from_slice(seg);
            coalescer.push(&1, &mut room, VNET_HDR_LEN, |k, b| {
                writes.push((*k, b.to_vec()))
            });
        }
        let mut arp = vec![0u8; VNET_HDR_LEN + 42];
        arp[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x08, 0x06]);
        coalescer.push(&2, &mut arp, VNET_HDR_LEN, |k, b| {
            writes.push((*k, b.to_vec()))
        });
        coalescer.flush(|k, b| writes.push((*k, b.to_vec())));
        assert_eq!(
            writes.len(),
            2,
            "one super-frame (flushed by PSH on the short last one) + ARP"
        );
        let (key, merged) = &writes[0];
        assert_eq!(*key, 1);
        let vh = VnetHdr::parse(merged).unwrap();
        assert_eq!(vh.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(vh.gso_size as usize, mss);
        assert_eq!((vh.csum_start, vh.csum_offset, vh.hdr_len), (34, 16, 66));
        let frame = &merged[VNET_HDR_LEN..];
        assert_eq!(frame.len(), super_frame.len());
        assert_eq!(frame[66..], super_frame[66..]);
        // Re-segmenting the coalesced frame gives back the very same segments.
        let mut again = Vec::new();
        segment_tcp(
            frame,
            &vh,
            || PacketBuf::with_frame_capacity(2048),
            |b| again.push(b.frame().to_vec()),
        )
        .unwrap();
        assert_eq!(again, segments);
        assert_eq!(writes[1].0, 2);
        assert_eq!(
            VnetHdr::parse(&writes[1].1).unwrap().flags,
            VIRTIO_NET_HDR_F_DATA_VALID
        );
    }

    #[test]
    fn does_not_merge_out_of_order_or_other_flows() {
        let mss = 1000;
        let super_frame = tcp_v4_super(mss * 3, TCP_FLAG_ACK);
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            gso_size: mss as u16,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let segments = split(&super_frame, &hdr);
        let order = [1usize, 0, 2];
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let mut coalescer = Coalescer::<u8>::new();
        for i in order {
            let mut room = vec![0u8; VNET_HDR_LEN];
            room.extend_from_slice(&segments[i]);
            coalescer.push(&1, &mut room, VNET_HDR_LEN, |_, b| writes.push(b.to_vec()));
        }
        coalescer.flush(|_, b| writes.push(b.to_vec()));
        // 1 alone, then 0 (no merge: 1 was before it), 0 can't take 2? It can: 0 then... 2 follows 1 not 0.
        assert_eq!(writes.len(), 3);
        for (w, i) in writes.iter().zip(order) {
            assert_eq!(&w[VNET_HDR_LEN..], &segments[i][..]);
            assert_eq!(VnetHdr::parse(w).unwrap().gso_type, VIRTIO_NET_HDR_GSO_NONE);
        }
    }
}
