//! The engine's side of [`crate::neighbour`]: which addresses it answers
//! for, and the answer as an [`Outgoing`] into the TAP.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::{Engine, Outgoing, Tables};
use crate::neighbour::{self, AddressSet, MAX_ANSWER_LEN};
use crate::pins::{MacOwner, NetworkPins};
use crate::pool::{BufPool, PacketBuf};
use crate::NetworkId;

impl Engine {
    /// Replaces every network's attachment addresses (address → MAC) that
    /// ARP requests and neighbour solicitations from the TAP are answered
    /// from. Only addresses whose MAC is pinned to a peer are answered: an
    /// attachment of this host answers for itself over the bridge.
    pub fn set_addresses(&self, addresses: AddressSet) {
        let addresses: HashMap<_, _> = addresses
            .into_iter()
            .filter(|(_, known)| !known.is_empty())
            .map(|(net, known)| (net, Arc::new(known)))
            .collect();
        let total: usize = addresses.values().map(|known| known.len()).sum();
        self.write().addresses = addresses;
        tracing::debug!(addresses = total, "attachment addresses replaced");
    }

    /// Answers `frame` (a group-addressed frame read from the TAP of `net`)
    /// into the TAP if it asks for the address of an attachment on a peer
    /// that is up and a member of the network; returns whether it did
    /// (then the frame needs no flood). A question for a host that is down
    /// is not answered, as the flood would not have reached it either.
    pub(super) fn answer_neighbour(
        &self,
        tables: &Tables,
        net: NetworkId,
        pins: &NetworkPins,
        frame: &PacketBuf,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) -> bool {
        let Some(known) = tables.addresses.get(&net) else {
            return false;
        };
        let lookup = |ip| {
            let mac = known.get(&ip)?;
            let Some(MacOwner::Peer(idx)) = pins.get(mac) else {
                return None;
            };
            let peer = tables.peers.get(idx)?;
            (peer.is_member(net) && !peer.down).then_some(*mac)
        };
        let mut reply = [0u8; MAX_ANSWER_LEN];
        let Some(len) = neighbour::answer(frame.frame(), lookup, &mut reply) else {
            return false;
        };
        let mut answer = pool.get();
        if !answer.fill_frame(&reply[..len]) {
            pool.put(answer);
            return false;
        }
        out.push(Outgoing {
            peer: 0,
            endpoint: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            datagram: answer,
            from_data_port: false,
            to_tap: Some(net),
        });
        true
    }
}
