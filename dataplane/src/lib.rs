//! mesh data plane: carries a container's Ethernet frame from one host's TAP
//! device to another host's TAP, sealed with AES-256-GCM or ChaCha20-Poly1305 (negotiated per
//! peer, see [`cipher`]) over UDP.
//!
//! Layout (one concept per module, like wireguard-go's `device/`):
//! - sans-IO core, testable without root: [`wire`] (framing), [`keypair`]
//!   (session keys, sealing, key lifetime), [`replay`] (sliding window),
//!   [`switch`] (per-network MAC learning), [`pins`] (MACs the control
//!   plane places on a host), [`peer`], [`engine`] (the
//!   seal/open decisions, including what one TAP read becomes), [`offload`]
//!   (`virtio_net_hdr`, splitting TCP super-segments, coalescing them back),
//!   [`stats`] (drop reasons and counters), [`pool`] (buffers with headroom),
//!   [`icmp`], [`mss`] and [`frag`] (fitting frames to a peer's path MTU);
//! - thin Linux I/O edge: [`tap`], [`udp`], `worker` (one thread per core,
//!   both directions for its share of the flows), [`runtime`] (the
//!   [`Dataplane`] handle the daemon drives, started with [`Options`]).
//!
//! The wire format is specified in `PROTOCOL.md` and in [`wire`].
//! This crate deliberately knows nothing about gossip or the daemon: keys,
//! peers and networks are pushed in through [`Dataplane`]'s methods.

pub mod cipher;
pub mod engine;
pub mod frag;
mod gcm_tag;
pub mod icmp;
pub mod impair;
pub mod keypair;
pub mod mss;
pub mod offload;
pub mod path;
mod path_mtu;
pub mod peer;
pub mod pins;
mod pmtu;
pub mod pool;
pub mod replay;
pub mod runtime;
pub mod stats;
pub mod switch;
pub mod tap;
pub mod udp;
pub mod wire;
mod worker;

pub use cipher::Cipher;
pub use engine::Engine;
pub use keypair::SessionKeys;
pub use pins::{MacOwner, NetworkPins, PinSet};
pub use runtime::{Dataplane, Options};
pub use stats::{BurstReport, DropReason, PathMode, PathStats, PeerStats, Stats, SwitchStats};
pub use wire::{overlay_mtu, IpVersion};

/// Daemon-assigned handle for a remote host.
pub type PeerIdx = u32;

/// Identifies one overlay L2 network; carried (authenticated) in every datagram.
#[derive(Copy, Clone, Eq, PartialEq, Hash, Debug, PartialOrd, Ord)]
pub struct NetworkId(pub u32);

/// Errors of the control-facing API. Per-packet problems are never errors:
/// they are drops counted under a [`DropReason`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the data-plane UDP socket on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("opening TAP device {name:?}: {source}")]
    Tap {
        name: String,
        source: std::io::Error,
    },
    #[error("network {0:?} is already attached to a TAP device")]
    NetworkExists(NetworkId),
    #[error("Dataplane::start must be called inside a tokio runtime")]
    NoRuntime,
    #[error("the data plane has been shut down")]
    ShutDown,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
