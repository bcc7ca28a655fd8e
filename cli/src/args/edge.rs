//! `meshctl fip …` (see docs/edge.md, Reaching in and out).

use clap::Subcommand;

use super::Output;

#[derive(Debug, Subcommand)]
pub enum FipCommand {
    /// Addresses of the hosts' own underlay handed to the mesh.
    #[command(subcommand)]
    Pool(FipPoolCommand),
    /// Take a floating IP (ADDR, or the lowest free one of the pools); prints it.
    Create {
        addr: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Put SERVICE behind FIP on PUBLIC_PORT (default: the service's port).
    Associate {
        fip: String,
        service: String,
        #[arg(long = "port")]
        port: Option<u16>,
        /// Only if the service name exists on several networks.
        #[arg(long)]
        network: Option<String>,
    },
    /// Take SERVICE from behind FIP.
    Dissociate {
        fip: String,
        service: String,
        #[arg(long)]
        network: Option<String>,
    },
    /// Floating IPs, their holder and their services.
    List(Output),
    /// Give a floating IP back (refused while it fronts services, unless --force).
    Release {
        fip: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FipPoolCommand {
    /// Add a pool (`ADDR/LEN` on the hosts' underlay).
    Add { cidr: String },
    /// Remove a pool (refused while floating IPs are taken from it).
    Rm { cidr: String },
    /// The pools and the hosts that may hold their addresses.
    List(Output),
}
