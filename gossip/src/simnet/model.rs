//! What QUIC adds to the frames the simulation counts. quinn sends 1-RTT
//! packets with a short header (1 byte + an 8-byte connection id + a 1-2
//! byte packet number), a STREAM frame header (type, stream id, offset,
//! length: about 8 bytes once the offset is large) and a 16-byte AEAD tag,
//! in UDP/IPv4 (28 bytes); frames ride in packets of at most ~1200 bytes
//! of payload. The receiver acknowledges ack-eliciting packets; at idle
//! rates (one heartbeat a second per link) every packet gets its own ACK.
//! The figures were checked against nftables counters in the 50-host lab
//! (docs/scale.md).

/// Bytes a packet adds around its STREAM payload (headers, tag, UDP/IP).
pub const PACKET_OVERHEAD: u64 = 63;
/// Payload bytes per packet.
pub const PACKET_PAYLOAD: u64 = 1200;
/// One ACK-only packet on the wire.
pub const ACK_BYTES: u64 = 62;
/// One side's share of a QUIC handshake with a self-signed Ed25519
/// certificate and the mesh hello (Initial padded to 1200 bytes, then
/// handshake and 1-RTT packets).
pub const HANDSHAKE_BYTES: u64 = 2600;
pub const HANDSHAKE_PACKETS: u64 = 4;

/// (bytes, packets) on the wire for one frame of `frame` bytes.
pub fn on_wire(frame: usize) -> (u64, u64) {
    let frame = frame as u64;
    let packets = frame.div_ceil(PACKET_PAYLOAD).max(1);
    (frame + packets * PACKET_OVERHEAD, packets)
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_frames_span_packets() {
        assert_eq!(super::on_wire(5), (68, 1));
        assert_eq!(super::on_wire(2500).1, 3);
    }
}
