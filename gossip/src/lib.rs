//! mesh control plane: how the hosts of a mesh find each other, prove they
//! belong, agree on data-plane keys and keep shared state consistent — with
//! no central server.
//!
//! Layout (quinn-proto style: protocol logic is plain code, I/O is thin):
//! - [`identity`]: persistent Ed25519 host identity, [`PeerId`].
//! - [`token`]: the mesh secret ([`MeshSecret`]) and its join token.
//! - [`wire`]: every message on the wire, postcard-encoded, length-prefixed.
//! - [`auth`]: the connection-bound proof of the mesh secret (HMAC over TLS exporter).
//! - [`keyexchange`]: ephemeral x25519 + HKDF data-plane key schedule and its 3-message handover.
//! - [`membership`]: versioned member records and their merge.
//! - [`state`]: [`Mergeable`] values, [`Channel`]s and reusable CRDTs ([`LwwMap`], …).
//! - [`transport`]: QUIC/rustls setup and frame I/O.
//! - [`node`]: the running [`Node`] tying it together.

pub mod auth;
mod error;
pub mod identity;
pub mod keyexchange;
pub mod membership;
pub mod node;
pub mod state;
pub mod token;
pub mod transport;
pub mod wire;

pub use error::Error;
pub use identity::{Identity, PeerId};
pub use keyexchange::SessionKeys;
pub use node::{Config, Member, Node, PeerInfo, PeerObserver, PeerState};
pub use state::{Channel, DecodeError, GCounter, LwwMap, LwwRegister, Mergeable, Stamp};
pub use token::MeshSecret;

/// ALPN protocol id; a peer speaking another major version fails the TLS handshake.
pub const ALPN: &[u8] = b"mesh/1";
/// Version carried in the hello, for minor evolutions within `mesh/1`.
pub const PROTOCOL_VERSION: u32 = 1;
