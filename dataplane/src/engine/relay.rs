//! Relaying on the data plane (PROTOCOL.md "Relaying"): putting a sealed
//! datagram into an envelope to a relay (as A), re-authenticating one for
//! its destination (as C), and taking one apart (as B). Which relay a peer
//! goes through is the path state's business (`paths.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{header_drop, refusal_drop, Delivery, Engine, Outgoing, Tables};
use crate::keypair::Keypair;
use crate::pool::{BufPool, PacketBuf};
use crate::stats::DropReason;
use crate::wire::{
    envelope_aad, RelayHeader, COMPACT_AAD_LEN, MSG_TYPE_DATA, MSG_TYPE_PROBE, MSG_TYPE_RELAY,
    MSG_TYPE_RELAYED, RELAY_HEADER_LEN, TAG_LEN,
};
use crate::PeerIdx;

impl Engine {
    /// Puts the sealed datagram `inner` (for `dst`) into an envelope to
    /// `relay`, authenticated with our keys with the relay.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wrap_relay(
        &self,
        tables: &Tables,
        relay: PeerIdx,
        dst: PeerIdx,
        inner: PacketBuf,
        now: Instant,
        pool: &mut BufPool,
        from_data_port: bool,
    ) -> Result<Outgoing, DropReason> {
        let result = self.wrap_into(tables, relay, dst, &inner, now, pool, from_data_port);
        pool.put(inner);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn wrap_into(
        &self,
        tables: &Tables,
        relay: PeerIdx,
        dst: PeerIdx,
        inner: &PacketBuf,
        now: Instant,
        pool: &mut BufPool,
        from_data_port: bool,
    ) -> Result<Outgoing, DropReason> {
        let tag = tables
            .peers
            .get(&dst)
            .map(|p| p.tag)
            .filter(|t| *t != [0; 8])
            .ok_or(DropReason::RelayRefused)?;
        let via = tables.peers.get(&relay).ok_or(DropReason::UnknownPeer)?;
        let endpoint = via.endpoint.ok_or(DropReason::NoEndpoint)?;
        let keypair = via.keys.current.as_ref().ok_or(DropReason::NoKey)?;
        let counter = keypair
            .take_send_counter(now)
            .map_err(|_| DropReason::StaleKey)?;
        let inner = inner.datagram();
        let len = RELAY_HEADER_LEN + inner.len() + TAG_LEN;
        let mut buf = pool.get();
        let raw = buf.raw_mut();
        if len > raw.len() {
            pool.put(buf);
            return Err(DropReason::OversizedFrame);
        }
        RelayHeader {
            msg_type: MSG_TYPE_RELAY,
            compact: false,
            receiver_index: keypair.remote_index,
            counter,
            host: tag,
        }
        .encode(&mut raw[..RELAY_HEADER_LEN]);
        let body_end = RELAY_HEADER_LEN + inner.len();
        raw[RELAY_HEADER_LEN..body_end].copy_from_slice(inner);
        let mac = keypair.tag_only(counter, &raw[..body_end]);
        raw[body_end..len].copy_from_slice(&mac);
        buf.set_datagram_len(len);
        Ok(Outgoing {
            peer: dst,
            endpoint,
            datagram: buf,
            from_data_port,
            to_tap: None,
        })
    }

    /// Verifies an envelope's tag with the sender's keypair; returns the
    /// header, the sending peer and, for a compact envelope, the keypair
    /// whose replay window still has to take its counter.
    ///
    /// A full envelope's counter is taken at once. A compact tag does not
    /// cover the inner body, so an altered copy passes it: taking the
    /// counter then would let anyone who sees an envelope and gets a copy
    /// with a changed body in first have the genuine one refused as a
    /// replay. It is taken once the inner datagram has authenticated.
    fn verify_envelope(
        &self,
        tables: &Tables,
        datagram: &[u8],
        now: Instant,
    ) -> Result<(RelayHeader, PeerIdx, Option<Arc<Keypair>>), DropReason> {
        let header = RelayHeader::parse(datagram).map_err(header_drop)?;
        let entry = tables
            .by_index
            .get(&header.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| DropReason::Short)?;
        let mut scratch = [0u8; COMPACT_AAD_LEN];
        let aad = envelope_aad(body, &mut scratch);
        if header.compact {
            entry
                .keypair
                .verify_tag(header.counter, aad, tag, now)
                .map_err(refusal_drop)?;
            return Ok((header, entry.peer, Some(entry.keypair.clone())));
        }
        entry
            .keypair
            .verify_only(header.counter, aad, tag, now)
            .map_err(refusal_drop)?;
        Ok((header, entry.peer, None))
    }

    /// As the relay: re-authenticates the envelope for its destination and
    /// forwards it, the inner datagram untouched.
    pub(super) fn forward(
        &self,
        datagram: &mut [u8],
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), DropReason> {
        let tables = self.read();
        // Only type 4 envelopes are compact (RelayHeader::parse): a relay
        // forwards nothing whose every byte it has not authenticated.
        let (header, from, pending) = self.verify_envelope(&tables, datagram, now)?;
        if pending.is_some() {
            return Err(DropReason::BadReserved);
        }
        let to = *tables
            .by_tag
            .get(&header.host)
            .ok_or(DropReason::RelayRefused)?;
        let origin_tag = tables.peers.get(&from).map_or([0; 8], |p| p.tag);
        let dst = tables.peers.get(&to).ok_or(DropReason::RelayRefused)?;
        // One hop only: never to the sender, never onwards through a relay.
        if to == from || dst.relay.is_some() || origin_tag == [0; 8] {
            return Err(DropReason::RelayRefused);
        }
        let endpoint = dst.endpoint.ok_or(DropReason::NoEndpoint)?;
        let keypair = dst.keys.current.as_ref().ok_or(DropReason::NoKey)?;
        let counter = keypair
            .take_send_counter(now)
            .map_err(|_| DropReason::StaleKey)?;
        // The full form from A (the only one type 3 has), compact to B if
        // B reads it.
        RelayHeader {
            msg_type: MSG_TYPE_RELAYED,
            compact: dst.compact_envelopes,
            receiver_index: keypair.remote_index,
            counter,
            host: origin_tag,
        }
        .encode(&mut datagram[..RELAY_HEADER_LEN]);
        let body_end = datagram.len() - TAG_LEN;
        let mut scratch = [0u8; COMPACT_AAD_LEN];
        let mac = keypair.tag_only(counter, envelope_aad(&datagram[..body_end], &mut scratch));
        datagram[body_end..].copy_from_slice(&mac);
        let mut buf = pool.get();
        let raw = buf.raw_mut();
        if datagram.len() > raw.len() {
            pool.put(buf);
            return Err(DropReason::OversizedDatagram);
        }
        raw[..datagram.len()].copy_from_slice(datagram);
        buf.set_datagram_len(datagram.len());
        self.relay_forwards.fetch_add(1, Ordering::Relaxed);
        // Forwarding data is traffic on our path to the destination:
        // probed while it lasts, so a rebound NAT mapping is found again.
        // (Probes and keep-alives do not count, or idle pairs would keep
        // their relays' paths busy for ever.)
        if datagram.get(RELAY_HEADER_LEN) == Some(&MSG_TYPE_DATA) && dst.counters.note_unicast() {
            self.paths_changed();
        }
        out.push(Outgoing {
            peer: to,
            endpoint,
            datagram: buf,
            from_data_port: dst.nat,
            to_tap: None,
        });
        Ok(())
    }

    /// As the destination: verifies the relay's envelope, then opens the
    /// inner datagram, which must come from the origin the envelope names.
    pub(super) fn unwrap_relayed(
        &self,
        datagram: &mut [u8],
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) -> Result<Option<Delivery>, DropReason> {
        let (origin, relay, pending, counter) = {
            let tables = self.read();
            let (header, relay, pending) = self.verify_envelope(&tables, datagram, now)?;
            let origin = *tables
                .by_tag
                .get(&header.host)
                .ok_or(DropReason::RelayRefused)?;
            (origin, relay, pending, header.counter)
        };
        // A compact envelope's counter, once what it carries authenticated.
        let take_counter = || match &pending {
            Some(keypair) => keypair.accept_counter(counter).map_err(refusal_drop),
            None => Ok(()),
        };
        let end = datagram.len() - TAG_LEN;
        let inner = &mut datagram[RELAY_HEADER_LEN..end];
        if inner[0] == MSG_TYPE_PROBE {
            // Opened and acted on before the envelope's counter is taken: a
            // probe's own counter (the inner replay window) already keeps a
            // copy from being answered twice.
            self.handle_probe(inner, None, Some((relay, origin)), now, pool, out)?;
            return take_counter().map(|()| None);
        }
        let mut delivery = self.open_uncounted(inner, now)?;
        if delivery.peer != origin {
            return Err(DropReason::RelayRefused);
        }
        take_counter()?;
        delivery.frame =
            delivery.frame.start + RELAY_HEADER_LEN..delivery.frame.end + RELAY_HEADER_LEN;
        Ok(Some(delivery))
    }
}
