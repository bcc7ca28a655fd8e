//! Counters. Everything bumped per packet is a relaxed atomic: no lock on the
//! hot path; `Stats` is a point-in-time snapshot for the daemon and tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::PeerIdx;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why a datagram or frame was dropped. Each has its own counter.
        #[derive(Copy, Clone, Debug, Eq, PartialEq, Hash)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Stable snake_case name used as the key in [`Stats::drops`].
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    Short => "short": "Datagram shorter than header + tag + Ethernet header.",
    BadVersion => "bad_version": "Protocol version other than 1.",
    UnknownType => "unknown_type": "Message type other than data.",
    BadReserved => "bad_reserved": "A header flag the receiver must understand and does not.",
    OversizedDatagram => "oversized_datagram": "Datagram longer than any a sender seals (forged; dropped before the AEAD pass).",
    UnknownIndex => "unknown_index": "No keypair with that receiver index.",
    BadTag => "bad_tag": "Authentication failed.",
    Replayed => "replayed": "Counter already seen.",
    TooOld => "too_old": "Counter behind the replay window.",
    StaleKey => "stale_key": "Keypair past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES.",
    WrongNetwork => "wrong_network": "Network not configured here, or peer not a member of it.",
    NoEndpoint => "no_endpoint": "Peer has no known UDP endpoint yet.",
    NoKey => "no_key": "Peer has no usable sending keypair.",
    UnknownPeer => "unknown_peer": "Destination peer not configured.",
    RuntFrame => "runt_frame": "Frame from the TAP shorter than an Ethernet header.",
    OversizedFrame => "oversized_frame": "Frame (or one segment of a super-segment) from the TAP larger than a packet buffer.",
    BadVnetHdr => "bad_vnet_hdr": "TAP read shorter than its virtio_net_hdr, or with a GSO type the TAP was not asked for.",
    GsoSplitFailed => "gso_split_failed": "TCP super-segment from the TAP whose headers or vnet offsets do not allow splitting it.",
    ChecksumOffloadFailed => "checksum_offload_failed": "Frame from the TAP asking for a checksum at offsets outside the frame.",
    NoPeers => "no_peers": "Flooded frame with no member peer to send to.",
    SendFailed => "send_failed": "UDP send error.",
    TapWriteFailed => "tap_write_failed": "Writing to the TAP device failed.",
    QosLoss => "qos_loss": "Frame dropped on purpose by a network's QoS loss setting.",
    QosQueueFull => "qos_queue_full": "Frame dropped because the QoS delay queue was full.",
    TooBig => "too_big": "UDP send refused with EMSGSIZE: larger than the local interface allows (the socket never fragments).",
    BadProbe => "bad_probe": "Authenticated probe with a malformed body or a non-zero network id.",
    RelayRefused => "relay_refused": "Relay envelope for an unknown host, for the sender itself, for a host not reached directly (one hop only), or whose inner datagram is not from the named origin.",
    TooBigAnswered => "too_big_answered": "Frame larger than the peer's path MTU; answered into the TAP with ICMP fragmentation-needed / packet-too-big.",
    TooBigUnfragmentable => "too_big_unfragmentable": "IPv4 frame without DF larger than the peer's path MTU that cannot be fragmented (IP options, bad lengths); others are fragmented.",
    TooBigUnanswered => "too_big_unanswered": "Frame larger than the peer's path MTU that no ICMP may answer (not IP, an ICMP error, a non-first fragment, a non-unicast source).",
    SpoofedSource => "spoofed_source": "Frame whose source MAC the control plane pins to another host (from a peer: not that peer; from the TAP: a remote attachment's MAC; from a peer: one of this host's).",
    LocalDestination => "local_destination": "Frame from the TAP to a MAC pinned to this host: the bridge delivers it, no peer needs a copy.",
}

impl DropReason {
    fn index(self) -> usize {
        // `ALL` lists the variants in declaration order.
        self as usize
    }
}

/// Global drop counters, one atomic per reason.
#[derive(Debug)]
pub struct DropCounters {
    counts: Vec<AtomicU64>,
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: DropReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl DropCounters {
    pub fn bump(&self, reason: DropReason) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .map(|reason| (reason.name(), self.get(*reason)))
            .collect()
    }
}

/// Per-peer traffic counters.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Frames switched to this peer alone (its MAC was learned): what
    /// makes its path active. Flood copies (ARP, neighbour discovery,
    /// unknown unicast) go to every member and would keep every path busy;
    /// what arrives is answered, and the answer is unicast.
    pub unicast_tx: AtomicU64,
    /// The peer's path is idle (not probed): the next unicast frame wakes
    /// the path loop ([`PeerCounters::note_unicast`]).
    pub path_idle: std::sync::atomic::AtomicBool,
    /// Authenticated frames from this peer whose source MAC is pinned to
    /// another host (dropped): which host spoofs.
    pub spoofed_rx: AtomicU64,
}

impl PeerCounters {
    /// Counts a frame switched to this peer alone; true if that ends an
    /// idle spell (once), so that its path is probed at once.
    pub fn note_unicast(&self) -> bool {
        self.unicast_tx.fetch_add(1, Ordering::Relaxed);
        self.path_idle.load(Ordering::Relaxed) && self.path_idle.swap(false, Ordering::Relaxed)
    }

    /// `bytes` counts the Ethernet frame (the overlay payload), not the datagram.
    pub fn record_tx(&self, bytes: usize) {
        self.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn record_rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Snapshot of one peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerStats {
    pub endpoint: Option<std::net::SocketAddr>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Generation of the keypair used for sending, if any.
    pub current_generation: Option<u64>,
    pub current_key_age: Option<Duration>,
    /// AEAD of the keypair used for sending, if any.
    pub cipher: Option<crate::Cipher>,
    /// Generation installed but not yet used (`send_now = false`).
    pub next_generation: Option<u64>,
    pub previous_generation: Option<u64>,
    /// How frames reach this peer now (see `path.rs`).
    pub path: PathStats,
    /// Frames from this peer dropped for a source MAC pinned elsewhere.
    pub spoofed_rx: u64,
    /// Envelopes relayed to this peer carry compact tags (it speaks
    /// protocol 2; see `wire::ENVELOPE_FLAG_COMPACT`).
    pub compact_envelopes: bool,
}

/// How frames reach one peer: the data path's state and what the probes
/// measured. Filled by the per-peer path state machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathStats {
    pub mode: PathMode,
    /// Where sealed datagrams go: the peer's endpoint when direct, the
    /// relay's when relayed.
    pub endpoint: Option<std::net::SocketAddr>,
    /// Largest UDP payload (sealed datagram) known to reach the peer on
    /// this path; `None` until probed.
    pub mtu: Option<u32>,
    /// Round trip of the data-path probes (smoothed).
    pub rtt: Option<Duration>,
    /// Fraction of the recent probes that got no answer (0.0–1.0).
    pub loss: Option<f64>,
    /// Peer's wall clock minus ours, from the probe answers (ms).
    pub clock_skew_ms: Option<f64>,
    /// Since the last authenticated datagram from the peer.
    pub last_heard: Option<Duration>,
}

/// Direct, through another peer, or no working path yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathMode {
    #[default]
    Unknown,
    Direct,
    Relayed(PeerIdx),
    /// Over the peer's TCP fallback link (no UDP way answers).
    Tcp,
}

/// Result of [`crate::Dataplane::probe_burst`]: a short burst of probes
/// over the peer's current path.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BurstReport {
    pub sent: u32,
    pub received: u32,
    pub rtt_min: Option<Duration>,
    pub rtt_avg: Option<Duration>,
    pub rtt_max: Option<Duration>,
}

/// Snapshot of the whole data plane.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Every [`DropReason`] by name, zeros included.
    pub drops: BTreeMap<&'static str, u64>,
    pub peers: BTreeMap<PeerIdx, PeerStats>,
    pub switch: SwitchStats,
}

/// The switches of every network, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// MACs the control plane pinned (on networks configured here).
    pub pinned: usize,
    /// MACs learned from frames (no attachment claims them).
    pub learned: usize,
    /// New or moved MACs not learned because their port (peer) or the
    /// network had its share (see [`crate::switch::MAX_MACS_PER_PORT`]).
    pub learn_refused: u64,
}

impl Stats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.name()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frame_after_an_idle_spell_wakes_the_path_loop_once() {
        let c = PeerCounters::default();
        assert!(!c.note_unicast(), "an active path wakes nothing");
        c.path_idle.store(true, Ordering::Relaxed);
        assert!(c.note_unicast());
        assert!(!c.note_unicast());
        assert_eq!(c.unicast_tx.load(Ordering::Relaxed), 3);
    }
}
