//! IPv4 fragmentation, sans-IO, for a frame without DF that is too big for
//! its peer's path: the sender allowed routers to fragment it, so the mesh
//! does what a router would (RFC 791) rather than drop it, e.g. a large
//! DNS answer over UDP, which servers often send without DF.

use crate::offload::{checksum_add, checksum_fold};
use crate::pool::PacketBuf;
use crate::wire::ETHERNET_HEADER_LEN;

const IPV4_HEADER_LEN: usize = 20;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// Why a frame was not fragmented.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum FragError {
    /// Not plain IPv4 (or IP options, whose copy rules we do not apply).
    Unsupported,
    /// Lengths that do not add up, or an MTU below one 8-byte block.
    Malformed,
}

/// Splits the IPv4 packet in `frame` into Ethernet frames whose IP packets
/// are at most `ip_mtu` bytes, each in a buffer from `next_buf`, handed to
/// `emit` in order. A fragment is fragmented again correctly (offsets add
/// up, MF kept on all but the original last piece).
pub fn fragment_v4(
    frame: &[u8],
    ip_mtu: u32,
    mut next_buf: impl FnMut() -> PacketBuf,
    mut emit: impl FnMut(PacketBuf),
) -> Result<usize, FragError> {
    let ip = frame
        .get(ETHERNET_HEADER_LEN..)
        .ok_or(FragError::Malformed)?;
    if ip.len() < IPV4_HEADER_LEN || ip[0] != 0x45 {
        return Err(FragError::Unsupported);
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total < IPV4_HEADER_LEN || total > ip.len() {
        return Err(FragError::Malformed);
    }
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    let base = usize::from(flags & OFFSET_MASK) * 8;
    let more_after = flags & FLAG_MF != 0;
    let chunk = (ip_mtu as usize).saturating_sub(IPV4_HEADER_LEN) / 8 * 8;
    if chunk == 0 {
        return Err(FragError::Malformed);
    }
    let payload = &ip[IPV4_HEADER_LEN..total];
    let mut count = 0;
    for (n, piece) in payload.chunks(chunk).enumerate() {
        let last = (n + 1) * chunk >= payload.len();
        let offset = (base + n * chunk) / 8;
        if offset > usize::from(OFFSET_MASK) {
            return Err(FragError::Malformed);
        }
        let mut buf = next_buf();
        let len = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + piece.len();
        if buf.frame_capacity() < len {
            return Err(FragError::Malformed);
        }
        let out = &mut buf.frame_space()[..len];
        out[..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN]
            .copy_from_slice(&frame[..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN]);
        out[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..].copy_from_slice(piece);
        let hdr = &mut out[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN];
        hdr[2..4].copy_from_slice(&((IPV4_HEADER_LEN + piece.len()) as u16).to_be_bytes());
        let mf = if !last || more_after { FLAG_MF } else { 0 };
        hdr[6..8].copy_from_slice(&(mf | offset as u16).to_be_bytes());
        hdr[10..12].fill(0);
        let sum = !checksum_fold(checksum_add(0, hdr));
        hdr[10..12].copy_from_slice(&sum.to_be_bytes());
        buf.set_frame_len(len);
        emit(buf);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(payload: usize, flags: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        ip[6..8].copy_from_slice(&flags.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
        for (i, b) in ip[20..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        f
    }

    fn split(frame: &[u8], mtu: u32) -> Result<Vec<Vec<u8>>, FragError> {
        let mut out = Vec::new();
        fragment_v4(
            frame,
            mtu,
            || PacketBuf::with_frame_capacity(9216),
            |b| out.push(b.frame().to_vec()),
        )?;
        Ok(out)
    }

    #[test]
    fn pieces_reassemble_to_the_original() {
        let frame = udp_frame(3000, 0);
        let pieces = split(&frame, 1222).unwrap();
        assert_eq!(pieces.len(), 3);
        let mut payload = Vec::new();
        for (n, p) in pieces.iter().enumerate() {
            let ip = &p[14..];
            assert!(ip.len() <= 1222);
            assert_eq!(checksum_fold(checksum_add(0, &ip[..20])), 0xffff);
            assert_eq!(&ip[4..6], &[0x12, 0x34], "same id");
            let flags = u16::from_be_bytes([ip[6], ip[7]]);
            assert_eq!(usize::from(flags & OFFSET_MASK) * 8, payload.len());
            assert_eq!(flags & FLAG_MF != 0, n < 2);
            assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
            payload.extend_from_slice(&ip[20..]);
        }
        assert_eq!(payload, &frame[34..]);
    }

    #[test]
    fn a_fragment_keeps_its_offset_and_more_fragments() {
        let frame = udp_frame(2000, FLAG_MF | 100);
        let pieces = split(&frame, 1222).unwrap();
        let last = &pieces[pieces.len() - 1][14..];
        let flags = u16::from_be_bytes([last[6], last[7]]);
        assert!(flags & FLAG_MF != 0, "the original had more after it");
        let first = &pieces[0][14..];
        assert_eq!(u16::from_be_bytes([first[6], first[7]]) & OFFSET_MASK, 100);
    }

    #[test]
    fn refuses_options_garbage_and_tiny_mtus() {
        let mut options = udp_frame(100, 0);
        options[14] = 0x46;
        assert_eq!(split(&options, 60), Err(FragError::Unsupported));
        let mut long = udp_frame(100, 0);
        long[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(split(&long, 60), Err(FragError::Malformed));
        assert_eq!(split(&udp_frame(100, 0), 27), Err(FragError::Malformed));
        for len in 0..40 {
            let _ = split(&udp_frame(100, 0)[..len], 60);
        }
    }
}
