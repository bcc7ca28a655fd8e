//! Wire format, version 1 (see `PROTOCOL.md`).
//!
//! ```text
//!  0      1       2        4                 8                        16               20
//! +------+-------+--------+-----------------+------------------------+----------------+
//! | type | vers. | flags  | receiver index  | counter (u64)          | network id     |
//! | =1   | =1    | (2 B)  | (u32)           |                        | (u32)          |
//! +------+-------+--------+-----------------+------------------------+----------------+
//! | ChaCha20-Poly1305( Ethernet frame )   ...   | 16-byte tag |
//! +----------------------------------------------+-------------+
//! ```
//! All integers big-endian. The whole 20-byte header is the AEAD associated
//! data, so tampering with the network id (or anything else) fails the tag.
//! Nonce = 4 zero bytes || counter (u64 little-endian), as in WireGuard.

/// Message type of a data datagram.
pub const MSG_TYPE_DATA: u8 = 1;
/// Path probe (ping or pong), sealed like data with the pair's keys.
pub const MSG_TYPE_PROBE: u8 = 2;
/// Relay envelope from the origin to the relay (carries a sealed datagram
/// for a third host, authenticated with origin↔relay keys).
pub const MSG_TYPE_RELAY: u8 = 3;
/// Relay envelope from the relay to the destination (relay↔destination keys).
pub const MSG_TYPE_RELAYED: u8 = 4;
/// The only protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Byte 2: flags a receiver must understand; an unknown one drops the
/// datagram (`bad_reserved`). None are defined on data and probe
/// datagrams; envelopes have [`ENVELOPE_FLAG_COMPACT`].
pub const MUST_UNDERSTAND_FLAGS: u8 = 0;

/// Byte 3 holds flags a receiver may ignore (a newer sender's hints):
/// unknown ones are ignored; like the whole header they are associated data.
/// What it carries on datagrams this process sends: 0, or a flag no
/// build defines, for the mixed-version lab test ([`send_unknown_flag_for_tests`]).
static SENT_IGNORABLE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Makes every datagram this process sends carry an ignorable flag that no
/// build defines, as a newer sender's would (test-only).
pub fn send_unknown_flag_for_tests() {
    SENT_IGNORABLE.store(0x80, std::sync::atomic::Ordering::Relaxed);
}

fn sent_flags() -> [u8; 2] {
    [0, SENT_IGNORABLE.load(std::sync::atomic::Ordering::Relaxed)]
}

/// Whether header bytes 2..4 hold only flags this build may accept.
fn flags_acceptable(datagram: &[u8]) -> bool {
    datagram[2] & !MUST_UNDERSTAND_FLAGS == 0
}
/// Length of the cleartext header (also the AEAD associated data).
pub const HEADER_LEN: usize = 20;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes added to each Ethernet frame on the wire.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Smallest datagram that can be valid: header + tag + a 14-byte Ethernet header.
pub const MIN_DATAGRAM_LEN: usize = OVERHEAD + ETHERNET_HEADER_LEN;
/// Ethernet header carried inside the ciphertext (dst MAC, src MAC, ethertype).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Largest UDP payload; bounds buffer sizes.
pub const MAX_DATAGRAM_LEN: usize = 65_535;
/// Largest Ethernet frame we can carry in one datagram.
pub const MAX_FRAME_LEN: usize = MAX_DATAGRAM_LEN - OVERHEAD;
/// Largest datagram a sender ever seals: one TAP frame (jumbo at most;
/// super-segments are split first) plus the overhead. Anything longer is
/// forged and is dropped before the AEAD pass it would cost.
pub const MAX_SEALED_DATAGRAM_LEN: usize = HEADER_LEN + crate::tap::MAX_TAP_FRAME + TAG_LEN;

const UDP_HEADER_LEN: u32 = 8;

use std::net::SocketAddr;

/// IP version of the underlay (the network between hosts).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    fn header_len(self) -> u32 {
        match self {
            IpVersion::V4 => 20,
            IpVersion::V6 => 40,
        }
    }
}

/// MTU to configure on the overlay interfaces (TAP, bridge, container veths)
/// so that one sealed frame fits one underlay packet without fragmentation:
/// `underlay_mtu − IP header (20 v4 / 40 v6) − UDP 8 − OVERHEAD 36 − inner
/// Ethernet header 14`. 1422 over a 1500-byte IPv4 underlay, 1402 over IPv6.
/// Saturates at 0 for absurdly small underlays.
pub fn overlay_mtu(underlay_mtu: u32, underlay: IpVersion) -> u32 {
    underlay_mtu.saturating_sub(
        underlay.header_len() + UDP_HEADER_LEN + OVERHEAD as u32 + ETHERNET_HEADER_LEN as u32,
    )
}

/// Why a header was rejected before any cryptography ran.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum HeaderError {
    /// Shorter than header + tag + an Ethernet header.
    Short,
    UnknownType,
    BadVersion,
    /// A must-understand flag (byte 2) this build does not know.
    Reserved,
    /// Longer than any datagram a sender seals ([`MAX_SEALED_DATAGRAM_LEN`]).
    Oversized,
}

/// Parsed data header. Nothing in it is trustworthy until the tag verifies.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct DataHeader {
    pub receiver_index: u32,
    pub counter: u64,
    pub network_id: u32,
}

impl DataHeader {
    /// Serialises the header into `out`.
    pub fn encode(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = MSG_TYPE_DATA;
        out[1] = PROTOCOL_VERSION;
        out[2..4].copy_from_slice(&sent_flags());
        out[4..8].copy_from_slice(&self.receiver_index.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
        out[16..20].copy_from_slice(&self.network_id.to_be_bytes());
    }

    /// Parses and sanity-checks the header of a whole datagram (checks the
    /// length against the minimum datagram, not just the header).
    pub fn parse(datagram: &[u8]) -> Result<DataHeader, HeaderError> {
        if datagram.len() < 2 {
            return Err(HeaderError::Short);
        }
        if datagram[0] != MSG_TYPE_DATA && datagram[0] != MSG_TYPE_PROBE {
            return Err(HeaderError::UnknownType);
        }
        if datagram[1] != PROTOCOL_VERSION {
            return Err(HeaderError::BadVersion);
        }
        if datagram.len() < MIN_DATAGRAM_LEN {
            return Err(HeaderError::Short);
        }
        if datagram.len() > MAX_SEALED_DATAGRAM_LEN {
            return Err(HeaderError::Oversized);
        }
        if !flags_acceptable(datagram) {
            return Err(HeaderError::Reserved);
        }
        let be32 = |range: std::ops::Range<usize>| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&datagram[range]);
            u32::from_be_bytes(bytes)
        };
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&datagram[8..16]);
        Ok(DataHeader {
            receiver_index: be32(4..8),
            counter: u64::from_be_bytes(counter),
            network_id: be32(16..20),
        })
    }
}

/// Sets the message type of an encoded header (probes share the data layout).
pub fn set_type(header: &mut [u8; HEADER_LEN], msg_type: u8) {
    header[0] = msg_type;
}

/// AEAD nonce for a counter: 4 zero bytes || counter little-endian (WireGuard).
pub fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

/// Plaintext of a probe (type 2, same 20-byte header as data with network
/// id 0; the body is sealed). Layout, big-endian:
/// `[kind 1][probe id 4][wall clock ms 8][size 2][family 1][ip 16][port 2]`
/// then zero padding up to the probed size.
pub const PROBE_BODY_LEN: usize = 34;
/// Smallest sealed probe datagram.
pub const MIN_PROBE_DATAGRAM: usize = HEADER_LEN + PROBE_BODY_LEN + TAG_LEN;

#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum ProbeKind {
    Ping,
    Pong,
}

/// A probe's plaintext. In a ping, `wall_ms` is the sender's clock at send
/// time and `size` the whole datagram's length; in a pong, `wall_ms` is the
/// responder's clock when the ping arrived, `size` the ping's length as
/// received and `observed` the ping's source address (None when relayed).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct ProbeBody {
    pub kind: ProbeKind,
    pub id: u32,
    pub wall_ms: u64,
    pub size: u16,
    pub observed: Option<SocketAddr>,
}

impl ProbeBody {
    pub fn encode(&self, out: &mut [u8]) {
        out[..PROBE_BODY_LEN].fill(0);
        out[0] = match self.kind {
            ProbeKind::Ping => 1,
            ProbeKind::Pong => 2,
        };
        out[1..5].copy_from_slice(&self.id.to_be_bytes());
        out[5..13].copy_from_slice(&self.wall_ms.to_be_bytes());
        out[13..15].copy_from_slice(&self.size.to_be_bytes());
        match self.observed {
            None => out[15] = 0,
            Some(SocketAddr::V4(addr)) => {
                out[15] = 4;
                out[16..20].copy_from_slice(&addr.ip().octets());
                out[32..34].copy_from_slice(&addr.port().to_be_bytes());
            }
            Some(SocketAddr::V6(addr)) => {
                out[15] = 6;
                out[16..32].copy_from_slice(&addr.ip().octets());
                out[32..34].copy_from_slice(&addr.port().to_be_bytes());
            }
        }
    }

    /// Parses an authenticated probe plaintext; None if malformed.
    pub fn parse(body: &[u8]) -> Option<ProbeBody> {
        if body.len() < PROBE_BODY_LEN {
            return None;
        }
        let kind = match body[0] {
            1 => ProbeKind::Ping,
            2 => ProbeKind::Pong,
            _ => return None,
        };
        let port = u16::from_be_bytes([body[32], body[33]]);
        let observed = match body[15] {
            0 => None,
            4 => {
                let ip: [u8; 4] = body[16..20].try_into().ok()?;
                Some(SocketAddr::from((ip, port)))
            }
            6 => {
                let ip: [u8; 16] = body[16..32].try_into().ok()?;
                Some(SocketAddr::from((ip, port)))
            }
            _ => return None,
        };
        Some(ProbeBody {
            kind,
            id: u32::from_be_bytes(body[1..5].try_into().ok()?),
            wall_ms: u64::from_be_bytes(body[5..13].try_into().ok()?),
            size: u16::from_be_bytes([body[13], body[14]]),
            observed,
        })
    }
}

/// Relay envelope header: `[type 3|4][version][flags 2][receiver index
/// 4][counter 8][host tag 8]`, then the inner sealed datagram, then a tag
/// over nothing with associated data from [`envelope_aad`] (authenticated,
/// not re-encrypted: the inner datagram is already sealed end to end).
pub const RELAY_HEADER_LEN: usize = 24;
/// Bytes a relay hop adds around a sealed datagram.
pub const RELAY_OVERHEAD: usize = RELAY_HEADER_LEN + TAG_LEN;

/// Byte 2 of a type 4 envelope (must understand, protocol 2): its tag
/// covers the envelope header and the inner datagram's header, length and
/// tag, not every byte of it. The inner tag already binds the rest end to
/// end, and the destination opens the inner datagram anyway. Type 3
/// envelopes never carry it: the relay cannot open what it forwards, so it
/// authenticates every byte.
pub const ENVELOPE_FLAG_COMPACT: u8 = 0x01;
/// Length of a compact envelope's associated data.
pub const COMPACT_AAD_LEN: usize = RELAY_HEADER_LEN + HEADER_LEN + 4 + TAG_LEN;

/// The associated data an envelope's tag covers. `body` is the envelope
/// without its tag (header, then the inner datagram). Full form: all of
/// it. Compact form ([`ENVELOPE_FLAG_COMPACT`] set in the header, which is
/// part of both forms, so neither can pass for the other): the header,
/// the inner header, the inner length (u32 BE) and the inner tag.
pub fn envelope_aad<'a>(body: &'a [u8], scratch: &'a mut [u8; COMPACT_AAD_LEN]) -> &'a [u8] {
    let compact = body.get(2).is_some_and(|f| f & ENVELOPE_FLAG_COMPACT != 0);
    // A parsed envelope's inner datagram is at least a header and a tag;
    // anything shorter is hashed whole (and fails the tag).
    if !compact || body.len() < RELAY_HEADER_LEN + OVERHEAD {
        return body;
    }
    let (header, inner) = body.split_at(RELAY_HEADER_LEN);
    let inner_len = u32::try_from(inner.len()).unwrap_or(u32::MAX);
    let (h, rest) = scratch.split_at_mut(RELAY_HEADER_LEN);
    h.copy_from_slice(header);
    let (ih, rest) = rest.split_at_mut(HEADER_LEN);
    ih.copy_from_slice(&inner[..HEADER_LEN]);
    let (len, tag) = rest.split_at_mut(4);
    len.copy_from_slice(&inner_len.to_be_bytes());
    tag.copy_from_slice(&inner[inner.len() - TAG_LEN..]);
    scratch
}

/// 8 bytes naming a host on relay envelopes (from its identity).
pub type HostTag = [u8; 8];

#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct RelayHeader {
    /// [`MSG_TYPE_RELAY`] or [`MSG_TYPE_RELAYED`].
    pub msg_type: u8,
    /// [`ENVELOPE_FLAG_COMPACT`]: only towards hosts that speak protocol 2.
    pub compact: bool,
    pub receiver_index: u32,
    pub counter: u64,
    /// Destination host (type 3) or origin host (type 4).
    pub host: HostTag,
}

impl RelayHeader {
    pub fn encode(&self, out: &mut [u8]) {
        out[0] = self.msg_type;
        out[1] = PROTOCOL_VERSION;
        out[2..4].copy_from_slice(&sent_flags());
        if self.compact {
            out[2] |= ENVELOPE_FLAG_COMPACT;
        }
        out[4..8].copy_from_slice(&self.receiver_index.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
        out[16..24].copy_from_slice(&self.host);
    }

    /// Parses an envelope (length, type, version, reserved; the inner
    /// datagram must be a data or probe datagram: one hop only).
    pub fn parse(datagram: &[u8]) -> Result<RelayHeader, HeaderError> {
        if datagram.len() < 2 {
            return Err(HeaderError::Short);
        }
        let msg_type = datagram[0];
        if msg_type != MSG_TYPE_RELAY && msg_type != MSG_TYPE_RELAYED {
            return Err(HeaderError::UnknownType);
        }
        if datagram[1] != PROTOCOL_VERSION {
            return Err(HeaderError::BadVersion);
        }
        if datagram.len() < RELAY_OVERHEAD + MIN_DATAGRAM_LEN.min(MIN_PROBE_DATAGRAM) {
            return Err(HeaderError::Short);
        }
        if datagram.len() > MAX_SEALED_DATAGRAM_LEN + RELAY_OVERHEAD {
            return Err(HeaderError::Oversized);
        }
        // Compact tags only from the relay: it forwards nothing whose every
        // byte it has not authenticated.
        let known = match msg_type {
            MSG_TYPE_RELAYED => MUST_UNDERSTAND_FLAGS | ENVELOPE_FLAG_COMPACT,
            _ => MUST_UNDERSTAND_FLAGS,
        };
        if datagram[2] & !known != 0 {
            return Err(HeaderError::Reserved);
        }
        let inner_type = datagram[RELAY_HEADER_LEN];
        if inner_type != MSG_TYPE_DATA && inner_type != MSG_TYPE_PROBE {
            return Err(HeaderError::UnknownType);
        }
        Ok(RelayHeader {
            msg_type,
            compact: datagram[2] & ENVELOPE_FLAG_COMPACT != 0,
            receiver_index: u32::from_be_bytes(datagram[4..8].try_into().expect("4 bytes")),
            counter: u64::from_be_bytes(datagram[8..16].try_into().expect("8 bytes")),
            host: datagram[16..24].try_into().expect("8 bytes"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_body_round_trips() {
        for observed in [
            None,
            Some("198.18.0.1:7801".parse().unwrap()),
            Some("[fd00::1]:9".parse().unwrap()),
        ] {
            let body = ProbeBody {
                kind: ProbeKind::Pong,
                id: 7,
                wall_ms: 1_700_000_000_123,
                size: 1400,
                observed,
            };
            let mut bytes = [0u8; PROBE_BODY_LEN];
            body.encode(&mut bytes);
            assert_eq!(ProbeBody::parse(&bytes), Some(body));
        }
        assert_eq!(ProbeBody::parse(&[2u8; PROBE_BODY_LEN - 1]), None);
        let mut bad = [0u8; PROBE_BODY_LEN];
        bad[0] = 9;
        assert_eq!(ProbeBody::parse(&bad), None);
    }

    #[test]
    fn relay_header_refuses_nesting_and_junk() {
        let mut datagram = vec![0u8; RELAY_OVERHEAD + MIN_DATAGRAM_LEN];
        let header = RelayHeader {
            msg_type: MSG_TYPE_RELAY,
            compact: false,
            receiver_index: 5,
            counter: 6,
            host: [1, 2, 3, 4, 5, 6, 7, 8],
        };
        header.encode(&mut datagram);
        datagram[RELAY_HEADER_LEN] = MSG_TYPE_DATA;
        assert_eq!(RelayHeader::parse(&datagram), Ok(header));
        // Compact: from the relay (type 4) only.
        let compact = RelayHeader {
            msg_type: MSG_TYPE_RELAYED,
            compact: true,
            ..header
        };
        compact.encode(&mut datagram);
        assert_eq!(datagram[2], ENVELOPE_FLAG_COMPACT);
        assert_eq!(RelayHeader::parse(&datagram), Ok(compact));
        datagram[0] = MSG_TYPE_RELAY;
        assert_eq!(RelayHeader::parse(&datagram), Err(HeaderError::Reserved));
        header.encode(&mut datagram);
        // A relay envelope inside a relay envelope: refused (one hop only).
        datagram[RELAY_HEADER_LEN] = MSG_TYPE_RELAYED;
        assert_eq!(RelayHeader::parse(&datagram), Err(HeaderError::UnknownType));
        datagram[RELAY_HEADER_LEN] = MSG_TYPE_DATA;
        datagram[3] = 1;
        assert!(RelayHeader::parse(&datagram).is_ok());
        // Must-understand bits other than the compact one are refused, on
        // envelopes as on data datagrams (where no bit is defined).
        datagram[2] = 2;
        assert_eq!(RelayHeader::parse(&datagram), Err(HeaderError::Reserved));
        assert_eq!(
            RelayHeader::parse(&datagram[..RELAY_OVERHEAD]),
            Err(HeaderError::Short)
        );
        let mut data = [0u8; MIN_DATAGRAM_LEN];
        data[0] = MSG_TYPE_DATA;
        data[1] = PROTOCOL_VERSION;
        data[2] = ENVELOPE_FLAG_COMPACT;
        assert_eq!(DataHeader::parse(&data), Err(HeaderError::Reserved));
    }

    #[test]
    fn compact_envelope_aad_names_header_inner_header_length_and_tag() {
        let mut body: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut scratch = [0u8; COMPACT_AAD_LEN];
        // Full form: the whole body.
        body[2] = 0;
        assert_eq!(envelope_aad(&body, &mut scratch), &body[..]);
        body[2] = ENVELOPE_FLAG_COMPACT;
        let aad = envelope_aad(&body, &mut scratch).to_vec();
        assert_eq!(aad.len(), 64);
        assert_eq!(&aad[..24], &body[..24]);
        assert_eq!(&aad[24..44], &body[24..44]);
        assert_eq!(&aad[44..48], &176u32.to_be_bytes());
        assert_eq!(&aad[48..], &body[184..]);
        // The inner body is not covered; its length and tag are.
        let mut other = body.clone();
        other[100] ^= 1;
        assert_eq!(envelope_aad(&other, &mut scratch), &aad[..]);
        other.push(0);
        assert_ne!(envelope_aad(&other, &mut scratch), &aad[..]);
        // Too short to hold an inner header and tag: hashed whole.
        let short = &body[..RELAY_HEADER_LEN + OVERHEAD - 1];
        assert_eq!(envelope_aad(short, &mut scratch), short);
    }

    #[test]
    fn overlay_mtu_matches_the_contract() {
        assert_eq!(overlay_mtu(1500, IpVersion::V4), 1422);
        assert_eq!(overlay_mtu(1500, IpVersion::V6), 1402);
        assert_eq!(overlay_mtu(9000, IpVersion::V4), 8922);
        assert_eq!(overlay_mtu(10, IpVersion::V6), 0);
    }

    #[test]
    fn header_round_trips_big_endian() {
        let header = DataHeader {
            receiver_index: 0x0102_0304,
            counter: 0x1122_3344_5566_7788,
            network_id: 0xAABB_CCDD,
        };
        let mut bytes = [0u8; HEADER_LEN];
        header.encode(&mut bytes);
        assert_eq!(
            bytes,
            [
                1, 1, 0, 0, 1, 2, 3, 4, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0xAA, 0xBB,
                0xCC, 0xDD
            ]
        );
        let mut datagram = bytes.to_vec();
        datagram.resize(MIN_DATAGRAM_LEN, 0);
        assert_eq!(DataHeader::parse(&datagram), Ok(header));
    }

    #[test]
    fn header_rejections() {
        let mut datagram = vec![0u8; MIN_DATAGRAM_LEN];
        DataHeader {
            receiver_index: 1,
            counter: 2,
            network_id: 3,
        }
        .encode((&mut datagram[..HEADER_LEN]).try_into().unwrap());
        assert_eq!(
            DataHeader::parse(&datagram[..MIN_DATAGRAM_LEN - 1]),
            Err(HeaderError::Short)
        );
        assert_eq!(DataHeader::parse(&[]), Err(HeaderError::Short));
        let mut forged = vec![0u8; MAX_SEALED_DATAGRAM_LEN + 1];
        forged[0] = MSG_TYPE_DATA;
        forged[1] = PROTOCOL_VERSION;
        assert_eq!(DataHeader::parse(&forged), Err(HeaderError::Oversized));
        forged.pop();
        assert!(DataHeader::parse(&forged).is_ok());
        let mut bad = datagram.clone();
        bad[0] = 4;
        assert_eq!(DataHeader::parse(&bad), Err(HeaderError::UnknownType));
        let mut bad = datagram.clone();
        bad[1] = 2;
        assert_eq!(DataHeader::parse(&bad), Err(HeaderError::BadVersion));
        let mut bad = datagram.clone();
        bad[2] = 1;
        assert_eq!(DataHeader::parse(&bad), Err(HeaderError::Reserved));
        // An ignorable flag this build does not know: parsed (the tag judges).
        let mut newer = datagram.clone();
        newer[3] = 0x80;
        assert!(DataHeader::parse(&newer).is_ok());
    }

    #[test]
    fn nonce_is_zero_prefixed_little_endian_counter() {
        assert_eq!(nonce_bytes(0x0102), [0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    }
}
