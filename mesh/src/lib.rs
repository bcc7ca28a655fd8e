//! `meshd`, the mesh daemon, as a library: the binary is a thin `main`, and
//! [`api`] is the one definition of the local API shared with `meshctl`.

pub mod api;
pub mod config;
pub mod daemon;
pub mod error;
pub mod netdev;
pub mod networks;
pub mod peers;
pub mod replicated;
pub mod server;
pub mod state;
