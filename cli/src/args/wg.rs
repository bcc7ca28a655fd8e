//! `meshctl wg …`: WireGuard clients (README, "Laptops and phones
//! (WireGuard)").

use clap::Subcommand;

use super::{parse_label, Output};

#[derive(Debug, Subcommand)]
pub enum WgCommand {
    /// Put a WireGuard client (laptop, phone) on NET; prints its wg-quick
    /// configuration (with a key pair made here unless --public-key).
    Add {
        /// A DNS label: the client answers as NAME.<network>.
        name: String,
        #[arg(long)]
        network: String,
        /// The gateway host (name or id prefix; default: this one).
        #[arg(long)]
        host: Option<String>,
        /// A label `key=value` that policy and services see (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A static address (default: allocated from NET).
        #[arg(long)]
        ip: Option<String>,
        /// The device's own public key (base64): its private key never
        /// leaves it, and the configuration printed has none.
        #[arg(long)]
        public_key: Option<String>,
        /// Also print the configuration as a QR code (for phone apps).
        #[arg(long)]
        qr: bool,
        /// Print the client as JSON (with the private key, if made here).
        #[arg(long)]
        json: bool,
    },
    /// WireGuard clients: network, address, gateway, last handshake, bytes.
    List(Output),
    /// Revoke a client: its tunnel ends at once, its address and name go.
    Rm { name: String },
    /// Make another host the client's gateway; prints the client's new
    /// [Peer] section.
    Move {
        name: String,
        #[arg(long)]
        host: String,
    },
}
