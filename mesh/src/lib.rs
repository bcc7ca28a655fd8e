//! `meshd`, the mesh daemon, as a library: the binary is a thin `main`, and
//! [`api`] is the one definition of the local API shared with `meshctl`.

/// The local API types live in the `mesh-api` crate, shared with every client.
pub use mesh_api as api;

pub mod alloc;
pub mod attach;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod metrics;
pub mod netdev;
pub mod netsecret;
pub mod networks;
pub mod peers;
pub mod replicated;
pub mod server;
pub mod state;
