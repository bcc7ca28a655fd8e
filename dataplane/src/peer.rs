//! What the data plane knows about one remote host: where to send, which
//! networks it is a member of, its keypairs, its counters.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Instant;

use crate::keypair::Keypair;
use crate::stats::{PeerCounters, PeerStats};
use crate::NetworkId;

/// Up to three keypairs, as in WireGuard:
/// - `current`: used for sending and receiving;
/// - `previous`: receive only, for packets still in flight after a rekey;
/// - `next`: installed but not yet sent with; promoted to `current` when the
///   first packet authenticates under it or on `confirm_keys`.
#[derive(Clone, Debug, Default)]
pub struct KeySlots {
    pub current: Option<Arc<Keypair>>,
    pub previous: Option<Arc<Keypair>>,
    pub next: Option<Arc<Keypair>>,
}

impl KeySlots {
    /// Installs `keypair`; returns the keypairs displaced (to unindex).
    pub fn install(&mut self, keypair: Arc<Keypair>, send_now: bool) -> Vec<Arc<Keypair>> {
        let mut displaced = Vec::new();
        if send_now {
            // A pending `next` from an older session is superseded; one from a
            // newer session (the peer may already be using it) is kept.
            if self
                .next
                .as_ref()
                .is_some_and(|next| next.generation <= keypair.generation)
            {
                displaced.extend(self.next.take());
            }
            displaced.extend(self.previous.take());
            self.previous = self.current.take();
            self.current = Some(keypair);
        } else {
            displaced.extend(self.next.replace(keypair));
        }
        displaced
    }

    /// Promotes `next` to `current` if it is `keypair` (by identity);
    /// returns the displaced `previous`, if any.
    pub fn promote_next(&mut self, keypair: &Arc<Keypair>) -> Option<Option<Arc<Keypair>>> {
        let is_next = self
            .next
            .as_ref()
            .is_some_and(|next| Arc::ptr_eq(next, keypair));
        if !is_next {
            return None;
        }
        let displaced = self.previous.take();
        self.previous = self.current.take();
        self.current = self.next.take();
        Some(displaced)
    }

    /// Removes keypairs past REJECT_AFTER_TIME; returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<Arc<Keypair>> {
        let mut expired = Vec::new();
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot.as_ref().is_some_and(|keypair| keypair.is_expired(now)) {
                expired.extend(slot.take());
            }
        }
        expired
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Keypair>> {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
    }
}

/// One remote host. Cloned when the engine's tables are (copy on write):
/// keypairs and counters are shared, so packets counted or keys used on
/// the old copy count on the new one too.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// None until `upsert_peer` tells us (keys may arrive first).
    pub endpoint: Option<SocketAddr>,
    pub networks: BTreeSet<NetworkId>,
    /// The control plane lost the host: no flood copies for it (it cannot
    /// answer), but frames to and from it still pass, since the data path
    /// may well be fine while the control connection recovers.
    pub down: bool,
    pub keys: KeySlots,
    pub counters: Arc<PeerCounters>,
    /// Largest sealed datagram (UDP payload) known to reach the peer on its
    /// current path, set by the path prober; 0 = not known yet (no limit
    /// is enforced). Shared between table copies like the counters.
    pub path_mtu: Arc<AtomicU32>,
    /// Frames go through this peer (a relay envelope to its endpoint)
    /// instead of to `endpoint`; chosen by the path state machine.
    pub relay: Option<crate::PeerIdx>,
    /// The peer's host tag on relay envelopes (zero: unknown).
    pub tag: crate::wire::HostTag,
    /// Upper bound on `path_mtu` from what both hosts' underlay interfaces
    /// allow (the daemon sets it from the `underlay_mtu` the peer
    /// advertises), so a smaller link is respected before probing found
    /// it; 0 = no bound. Shared between table copies.
    pub mtu_cap: Arc<AtomicU32>,
    /// The peer is behind a NAT (it says so): send to it from the data
    /// port, the only local port its NAT has a mapping for.
    pub nat: bool,
    /// The peer speaks protocol 2: envelopes to it carry compact tags
    /// ([`crate::wire::ENVELOPE_FLAG_COMPACT`]); an older one drops them.
    pub compact_envelopes: bool,
}

impl Peer {
    pub fn is_member(&self, net: NetworkId) -> bool {
        self.networks.contains(&net)
    }

    pub fn snapshot(&self, now: Instant) -> PeerStats {
        use std::sync::atomic::Ordering::Relaxed;
        PeerStats {
            endpoint: self.endpoint,
            tx_packets: self.counters.tx_packets.load(Relaxed),
            tx_bytes: self.counters.tx_bytes.load(Relaxed),
            rx_packets: self.counters.rx_packets.load(Relaxed),
            rx_bytes: self.counters.rx_bytes.load(Relaxed),
            current_generation: self.keys.current.as_ref().map(|k| k.generation),
            current_key_age: self.keys.current.as_ref().map(|k| k.age(now)),
            cipher: self.keys.current.as_ref().map(|k| k.cipher),
            next_generation: self.keys.next.as_ref().map(|k| k.generation),
            previous_generation: self.keys.previous.as_ref().map(|k| k.generation),
            path: Default::default(),
            spoofed_rx: self.counters.spoofed_rx.load(Relaxed),
            compact_envelopes: self.compact_envelopes,
        }
    }
}
