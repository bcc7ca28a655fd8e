//! The node's side of the TCP fallback (`crate::tcp`): its listeners, the
//! join that falls back to TCP, and the data plane's handle to a TCP link.
//! Dialing it (and retrying QUIC while on it) is in `dial.rs`; the
//! connection itself is handled by `connection.rs` like a QUIC one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::conn::Conn;
use super::{Inner, TCP_PORTS_META};
use crate::tcp::DatagramLink;
use crate::{transport, Error, Identity, PeerId};

/// The TLS configurations of the TCP fallback (the same as QUIC's).
pub(super) struct TcpTls {
    pub client: Arc<rustls::ClientConfig>,
    pub server: Arc<rustls::ServerConfig>,
}

impl TcpTls {
    pub fn new(identity: &Identity) -> Result<TcpTls, Error> {
        let tls = transport::tls_configs(identity)?;
        Ok(TcpTls {
            client: Arc::new(tls.client),
            server: Arc::new(tls.server),
        })
    }
}

/// Binds the TCP listeners: the QUIC port's number, and the extra ports.
/// One that cannot be bound is logged and skipped (UDP still works).
pub(super) async fn listen(
    enabled: bool,
    extra_ports: &[u16],
    quic: SocketAddr,
) -> Vec<tokio::net::TcpListener> {
    let mut listeners = Vec::new();
    if !enabled {
        return listeners;
    }
    let ports = std::iter::once(quic.port()).chain(extra_ports.iter().copied());
    for port in ports {
        let at = SocketAddr::new(quic.ip(), port);
        match tokio::net::TcpListener::bind(at).await {
            Ok(listener) => listeners.push(listener),
            Err(e) => warn!(addr = %at, error = %e, "cannot listen on TCP: no TCP fallback there"),
        }
    }
    listeners
}

/// The member metadata to start with: the extra TCP ports advertised,
/// those actually listened on (not the QUIC port's, which peers try anyway).
pub(super) fn advertise(
    meta: &BTreeMap<String, String>,
    listening: &[SocketAddr],
    quic_port: u16,
) -> BTreeMap<String, String> {
    let mut meta = meta.clone();
    let ports: Vec<String> = listening
        .iter()
        .map(SocketAddr::port)
        .filter(|port| *port != quic_port)
        .map(|port| port.to_string())
        .collect();
    if !ports.is_empty() {
        meta.insert(TCP_PORTS_META.to_string(), ports.join(","));
    }
    meta
}

pub(super) async fn accept_loop(node: Arc<Inner>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                if node.is_shutting_down() {
                    break;
                }
                let this = node.clone();
                node.spawn(this.accept_tcp(stream, remote));
            }
            // Out of descriptors and the like: wait rather than spin.
            Err(e) => {
                debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Inner {
    /// A join whose QUIC dials could not reach `targets`: the same
    /// addresses over TCP. `None`: no fallback here; otherwise the first
    /// success, else a refusal (an answer, final), else the last error.
    pub(super) async fn join_tcp(
        self: Arc<Self>,
        targets: &[SocketAddr],
    ) -> Option<Result<PeerId, Error>> {
        if !self.tcp_fallback {
            return None;
        }
        let mut last = None;
        for target in targets {
            match self.clone().dial_tcp(*target, None).await {
                Ok(peer) => {
                    info!(via = %peer, addr = %target, "joined mesh over the TCP fallback");
                    return Some(Ok(peer));
                }
                Err(e @ Error::Unreachable { .. }) => {
                    debug!(addr = %target, error = %e, "TCP fallback dial failed");
                    last = Some(e);
                }
                Err(refused) => return Some(Err(refused)),
            }
        }
        last.map(Err)
    }

    /// The data plane's handle to `conn` if it is a TCP link; its
    /// datagrams go to the observer from now on.
    pub(super) fn tcp_datagrams(&self, conn: &Conn, peer: PeerId) -> Option<DatagramLink> {
        let Conn::Tcp(tcp) = conn else { return None };
        let observer = self.observer.clone();
        Some(tcp.authenticated(Arc::new(move |datagram| observer.datagram(&peer, datagram))))
    }
}
