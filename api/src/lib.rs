//! The local control API of `meshd`: HTTP/1.1 + JSON over a Unix socket.
//!
//! The one definition shared by the daemon (server side) and its clients
//! (`meshctl`, the CNI and Docker plugins, the namespace lab):
//! - [`types`]: request and response bodies ([`observe`]: doctor and top;
//!   [`runtime`]: runtimes that plumb containers themselves),
//! - [`services`]: services and their requests,
//! - [`wireguard`]: WireGuard clients (`meshctl wg`),
//! - [`journal`]: the audit trail (`meshctl log`),
//! - [`routes`]: the paths,
//! - [`error`]: the error body with its machine-readable [`ErrorKind`],
//! - [`client`]: a typed client,
//! - the defaults every side agrees on ([`DEFAULT_SOCKET`], the ports).
//!
//! The book's Local API page (`docs/api.md`) lists the routes and error
//! kinds; `README.md` has examples.

pub mod client;
pub mod error;
pub mod journal;
pub mod observe;
pub mod origin;
pub mod routes;
pub mod runtime;
pub mod services;
pub mod types;
pub mod wireguard;

pub use client::{Client, ClientError};
pub use error::{ErrorBody, ErrorKind};
pub use journal::{LogEntry, LogOp, LogQuery};
pub use observe::*;
pub use origin::{BadOrigin, Origin};
pub use runtime::*;
pub use services::*;
pub use types::*;
pub use wireguard::*;

/// Where meshd serves this API unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mesh/meshd.sock";
/// meshd's control (QUIC) port unless told otherwise.
pub const DEFAULT_CONTROL_PORT: u16 = 7800;
/// The data-plane (UDP) port: by default the one after the control port.
pub const DEFAULT_DATA_PORT: u16 = DEFAULT_CONTROL_PORT + 1;

/// The default data port for a control port (`None` for 65535, which
/// leaves none).
pub fn default_data_port(control: u16) -> Option<u16> {
    control.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_adjacent() {
        assert_eq!(
            default_data_port(DEFAULT_CONTROL_PORT),
            Some(DEFAULT_DATA_PORT)
        );
        assert_eq!(default_data_port(u16::MAX), None);
    }
}
