//! `meshd`, the mesh daemon, as a library: the binary is a thin `main`.
//! The local API's types come from `mesh-api` (re-exported as [`api`]).
//! What is replicated and the rules over it (record types, channel names,
//! admission guards, IPAM, the network and host model, the API's read
//! views) are the `mesh-model` crate, which does no I/O; the DNS server is
//! the `mesh-dns` crate, fed through its `RecordSource` (see
//! [`daemon`]). This crate does the I/O: it programs the kernel, keeps it
//! in line with the records, and serves the API. Docker's network plugin
//! is the `mesh-docker` crate, a client of that API like the CNI plugin;
//! `meshd --docker-plugin` runs it in this process (see `main.rs`), and
//! `daemon/runtime.rs` answers the runtime routes it uses.
//!
//! Modules depend downwards only: `mesh-model` knows nothing of the parts,
//! the parts nothing of [`daemon`], which wires them; only the API side
//! ([`error`], [`server`]) turns the model's errors into HTTP answers.
//! `docs/architecture.md` draws these layers, the packet path and the
//! control path.

/// The local API types live in the `mesh-api` crate, shared with every client.
pub use mesh_api as api;

// How the parts reach the kernel (the only module that spawns nft, ip,
// tc or bridge) and the one loop that keeps it in line with the records.
pub mod kernel;
mod layering;
pub mod reconcile;

// The parts of the daemon, each over its own state.
pub mod alloc;
pub mod attach;
pub mod carried;
pub mod edge;
pub mod fabric;
pub mod isolation;
pub mod journal;
pub mod liveness;
pub mod macpins;
pub mod mtu;
pub mod netdev;
pub mod netsecret;
pub mod paths;
pub mod peers;
pub mod reserve;
pub mod resolvconf;
pub mod roster;
pub mod services;
pub mod state;
pub mod tcp_shim;
pub mod traffic;
pub mod wireguard;

// Wiring and the edges.
pub mod config;
pub mod console;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod linkstats;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod version;
