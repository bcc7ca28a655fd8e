//! The engine's one hook for path MTU (called from `Engine::seal_frame`'s
//! unicast branch and the receive path): TCP SYNs get their MSS clamped to
//! the peer's path, and a frame that still would not fit once sealed is not
//! sent into a black hole: answered into the local TAP with ICMP, or, for
//! IPv4 without DF, fragmented.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use crate::engine::Outgoing;
use crate::frag;
use crate::icmp::{self, NoAnswer};
use crate::mss;
use crate::peer::Peer;
use crate::pool::{BufPool, PacketBuf};
use crate::stats::{DropCounters, DropReason};
use crate::wire::{ETHERNET_HEADER_LEN, OVERHEAD, RELAY_OVERHEAD};
use crate::{NetworkId, PeerIdx};

/// The largest datagram the peer's path takes: what probing found, within
/// what the underlay interfaces allow; 0 = unknown (no limit).
fn limit(peer: &Peer) -> u32 {
    let probed = peer.path_mtu.load(Ordering::Relaxed);
    let mut cap = peer.mtu_cap.load(Ordering::Relaxed);
    // Through a relay the datagram travels inside an envelope: until the
    // probes have measured the relayed path, the underlays' bound must
    // leave room for it, or full-size frames die at our own socket.
    if peer.relay.is_some() && cap != 0 {
        cap = cap.saturating_sub(RELAY_OVERHEAD as u32).max(1);
    }
    match (probed, cap) {
        (0, cap) => cap,
        (probed, 0) => probed,
        (probed, cap) => probed.min(cap),
    }
}

/// Fits `buf` (a frame for unicast peer `peer_idx`) to the peer's path
/// and hands what fits to `seal`: the frame itself, or its IPv4 fragments
/// (no DF); a frame with DF or IPv6 is answered with ICMP instead. Every
/// frame not sent is counted.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_to_path(
    peer: &Peer,
    peer_idx: PeerIdx,
    net: NetworkId,
    mut buf: PacketBuf,
    pool: &mut BufPool,
    out: &mut Vec<Outgoing>,
    drops: &DropCounters,
    mut seal: impl FnMut(PacketBuf, &mut BufPool, &mut Vec<Outgoing>),
) {
    let path_mtu = limit(peer);
    if path_mtu == 0 {
        return seal(buf, pool, out);
    }
    mss::clamp(buf.frame_mut(), path_mtu);
    if OVERHEAD + buf.frame_len() <= path_mtu as usize {
        return seal(buf, pool, out);
    }
    // The MTU the container's kernel understands: the largest IP packet.
    let ip_mtu = path_mtu.saturating_sub((OVERHEAD + ETHERNET_HEADER_LEN) as u32);
    let mut answer = pool.get();
    let reason = match icmp::answer_too_big(buf.frame(), ip_mtu, answer.frame_space()) {
        Ok(len) => {
            answer.set_frame_len(len);
            out.push(Outgoing {
                peer: peer_idx,
                endpoint: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                datagram: answer,
                from_data_port: false,
                to_tap: Some(net),
            });
            DropReason::TooBigAnswered
        }
        Err(NoAnswer::MayFragment) => {
            pool.put(answer);
            let mut pieces = Vec::new();
            let split = frag::fragment_v4(buf.frame(), ip_mtu, || pool.get(), |p| pieces.push(p));
            if split.is_ok() {
                pool.put(buf);
                for piece in pieces {
                    seal(piece, pool, out);
                }
                return;
            }
            for piece in pieces {
                pool.put(piece);
            }
            DropReason::TooBigUnfragmentable
        }
        Err(refusal) => {
            pool.put(answer);
            match refusal {
                NoAnswer::MayFragment => DropReason::TooBigUnfragmentable,
                NoAnswer::NotIp | NoAnswer::Forbidden | NoAnswer::NoRoom => {
                    DropReason::TooBigUnanswered
                }
            }
        }
    };
    tracing::trace!(
        peer = peer_idx,
        path_mtu,
        len = buf.frame_len(),
        ?reason,
        "frame too big for the path"
    );
    drops.bump(reason);
    pool.put(buf);
}

/// A frame received from `peer`: SYNs toward our containers are clamped to
/// what the path back to that peer carries (the direction the MSS limits).
pub(crate) fn clamp_received(peer: &Peer, frame: &mut [u8]) {
    let path_mtu = limit(peer);
    if path_mtu != 0 {
        mss::clamp(frame, path_mtu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_smaller_bound_and_leaves_room_for_a_relay_envelope() {
        let peer = Peer::default();
        assert_eq!(limit(&peer), 0, "nothing known: no limit");
        peer.mtu_cap.store(1472, Ordering::Relaxed);
        assert_eq!(limit(&peer), 1472);
        peer.path_mtu.store(1464, Ordering::Relaxed);
        assert_eq!(limit(&peer), 1464, "probed below the underlays' bound");
        let relayed = Peer {
            relay: Some(3),
            ..peer.clone()
        };
        relayed.path_mtu.store(0, Ordering::Relaxed);
        assert_eq!(limit(&relayed), 1472 - RELAY_OVERHEAD as u32);
        relayed.path_mtu.store(1424, Ordering::Relaxed);
        assert_eq!(limit(&relayed), 1424, "the relayed path as probed");
    }
}
