//! mesh control plane: how the hosts of a mesh find each other, prove they
//! belong, agree on data-plane keys and keep shared state consistent — with
//! no central server.
//!
//! Layout (quinn-proto style: the protocol is plain state machines over
//! messages and time; the node only moves bytes between QUIC and them):
//! - [`identity`]: persistent Ed25519 host identity, [`PeerId`].
//! - [`token`]: the mesh secret ([`MeshSecret`]) and its join token.
//! - [`wire`]: every message on the wire, postcard-encoded, length-prefixed.
//! - [`auth`]: the connection-bound proof of the mesh secret (HMAC over TLS exporter).
//! - [`handshake`]: the hello/ack check both sides of a connection run — one
//!   function, returning what was admitted or the close reason.
//! - [`link`]: one connection's protocol as a sans-IO state machine
//!   (`handle(message, now)`, `tick(now)` → actions): heartbeats and
//!   liveness, key exchange with retries, anti-entropy replies.
//! - [`cipher`]: the per-peer choice of data-plane AEAD and its advertisement.
//! - [`keyexchange`]: ephemeral x25519 + HKDF data-plane key schedule and its 3-message handover.
//! - [`membership`]: versioned member records, signed by their subject, and their merge.
//! - [`journal`]: the audit hook: admitted and refused writes reported to
//!   the node's [`journal::JournalSink`].
//! - [`signed`]: Ed25519 signatures by host identities and the process keyring.
//! - [`relay`]: control traffic between two members through a third when
//!   they cannot connect directly, end-to-end authenticated.
//! - [`neighbours`]: the bounded neighbour set proposed for large meshes.
//! - `simnet` (feature `sim`): the whole mesh on virtual time, for the
//!   scale study (docs/scale.md).
//! - `peers`: who is known, each peer's current link and the simultaneous-
//!   connect tie-break ([`prefer_new_link`]), dial claims and the block list.
//! - `channels`: the channel registry and payloads held for channels not
//!   registered yet; `persist`: the members file kept for restarts.
//! - [`state`]: [`Mergeable`] values, [`Channel`]s and reusable CRDTs ([`LwwMap`], …).
//! - [`transport`]: QUIC/rustls setup and frame I/O.
//! - [`node`]: the running [`Node`]: its public API and host-wide wiring;
//!   `node/connection.rs` runs one QUIC connection (handshake, reader,
//!   writer, link driver), `node/dial.rs` the dial loops with backoff.

pub mod auth;
mod channels;
pub mod cipher;
mod error;
pub mod handshake;
pub mod identity;
pub mod journal;
pub mod keyexchange;
pub mod link;
pub mod membership;
pub mod neighbours;
pub mod node;
mod peers;
mod persist;
pub mod protocol;
pub mod relay;
pub mod signed;
#[cfg(test)]
mod sim;
#[cfg(any(test, feature = "sim"))]
pub mod simnet;
pub mod state;
pub mod tcp;
pub mod token;
pub mod transport;
pub mod wire;

pub use cipher::{Cipher, CipherOffer};
pub use error::Error;
pub use identity::{Identity, PeerId};
pub use keyexchange::SessionKeys;
pub use node::{
    prefer_new_link, Activity, Config, Member, Node, NoopObserver, PeerInfo, PeerObserver,
    PeerState,
};
pub use signed::{Signature, Signed};
pub use state::{
    Channel, DecodeError, GCounter, LwwMap, LwwRegister, Mergeable, Quota, QuotaError, Stamp,
};
pub use token::MeshSecret;

pub use protocol::{ALPN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
