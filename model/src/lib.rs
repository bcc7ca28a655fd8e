//! The mesh's replicated state and the rules over it, with no I/O: what
//! every host reads and writes on the gossip channels, and what a write
//! must satisfy before it enters a host's state. `meshd` (the `mesh`
//! crate) does the I/O and wires these into its parts; `mesh-dns` reads
//! the endpoint records and network definitions from here.
//!
//! Each area's records and channel names side by side:
//! - [`records`]: the core channels (networks, endpoints, the address
//!   ring, space requests, removed hosts, network settings) and the few
//!   operations a daemon needs on a last-writer-wins map;
//! - [`edge`]: floating-IP pools, floating IPs and their services;
//! - [`services`]: service definitions, container labels, target health,
//!   and checking user input ([`services::spec`]);
//! - [`traffic`]: policy rules and shaping, and checking them
//!   ([`traffic::spec`]);
//! - [`wireguard`]: WireGuard clients and their gateways.
//!
//! The rules over them:
//! - [`validate`]: the admission guards of every guarded channel;
//! - [`ipam`]: allocating from and splitting the address ring;
//! - [`networks`]: identifiers, subnets, device names, MTU bounds,
//!   containers' DNS labels, the checks of a new definition, and where a
//!   network lands ([`networks::landing`]);
//! - [`hosts`]: the hosts of the mesh at one moment, and resolving an
//!   operator's name or id prefix to one;
//! - [`views`]: the API's read views of networks, names and the ring.
//!
//! Each area returns its own error type ([`networks::NetworkError`],
//! [`networks::DefinitionError`], [`networks::landing::Refusal`],
//! [`services::spec::SpecError`], [`hosts::LookupError`],
//! [`ipam`]'s); the admission guards answer with the reason as text, as
//! [`gossip::LwwMap::guarded`] wants. Only `meshd`'s API server turns
//! them into HTTP answers.

#![warn(unreachable_pub)]

pub mod edge;
pub mod hosts;
pub mod ipam;
pub mod networks;
pub mod records;
pub mod services;
pub mod traffic;
pub mod validate;
pub mod views;
pub mod wireguard;
