//! The data plane's side of the TCP fallback (`gossip::tcp`): for each
//! peer whose link is over TCP, a local UDP socket stands for the peer.
//!
//! The data plane knows that socket's address as the peer's fallback
//! candidate ([`dataplane::path::PathState::set_fallback`]) and sends the
//! peer's sealed datagrams there from its own socket, exactly as it would
//! on the underlay; the shim puts them on the TCP link. Datagrams arriving
//! on the link leave the shim for the data plane's socket, so they enter
//! it as if from UDP: same opening, same replay window, keys unchanged.
//! Only datagrams from the data plane's own address are forwarded (the
//! kernel drops ones from outside that claim a local source address).
//! Nothing blocks: the link's queue drops (and counts) what does not fit,
//! and a datagram the data plane's socket cannot take now is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gossip::tcp::DatagramLink;
use gossip::PeerId;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Datagrams a shim refused (not from the data plane's own socket), over
/// the life of the process.
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Datagrams from a TCP link the data plane's socket could not take now.
static UNDELIVERED: AtomicU64 = AtomicU64::new(0);

/// Datagrams the shims refused: not from the data plane's own socket.
pub fn refused_total() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Datagrams from TCP links dropped because the data plane's socket was full.
pub fn undelivered_total() -> u64 {
    UNDELIVERED.load(Ordering::Relaxed)
}

struct Shim {
    socket: Arc<UdpSocket>,
    task: tokio::task::AbortHandle,
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every peer's shim (only peers whose link is over TCP have one).
pub struct TcpShims {
    /// Where the data plane's socket receives.
    data_addr: SocketAddr,
    shims: Mutex<HashMap<PeerId, Shim>>,
}

impl TcpShims {
    /// `data_local`: the data plane's bound address (an unspecified IP is
    /// reached on loopback).
    pub fn new(data_local: SocketAddr) -> TcpShims {
        let ip = match data_local.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            // A dual-stack socket takes IPv4 loopback too.
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        TcpShims {
            data_addr: SocketAddr::new(ip, data_local.port()),
            shims: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Shim>> {
        self.shims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer's link is over TCP now: its shim (a fresh one per link)
    /// forwards onto `link`. Returns the shim's address for the data plane.
    pub fn attach(&self, peer: PeerId, link: DatagramLink) -> Option<SocketAddr> {
        let std_socket = match std::net::UdpSocket::bind(SocketAddr::new(self.data_addr.ip(), 0))
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
        {
            Ok(socket) => socket,
            Err(e) => {
                warn!(peer = %peer, error = %e, "cannot open the TCP fallback's local socket");
                return None;
            }
        };
        let socket = match UdpSocket::from_std(std_socket) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                warn!(peer = %peer, error = %e, "cannot open the TCP fallback's local socket");
                return None;
            }
        };
        let addr = socket.local_addr().ok()?;
        let task = tokio::spawn(forward(socket.clone(), self.data_addr, link)).abort_handle();
        self.lock().insert(peer, Shim { socket, task });
        debug!(peer = %peer, %addr, "data over the TCP fallback");
        Some(addr)
    }

    /// The peer's link is not over TCP any more.
    pub fn detach(&self, peer: &PeerId) -> bool {
        self.lock().remove(peer).is_some()
    }

    /// A datagram from the peer's TCP link: into the data plane.
    pub fn deliver(&self, peer: &PeerId, datagram: Bytes) {
        let socket = match self.lock().get(peer) {
            Some(shim) => shim.socket.clone(),
            None => return,
        };
        // Full socket buffer: dropped, like a lost UDP datagram.
        if socket.try_send_to(&datagram, self.data_addr).is_err() {
            UNDELIVERED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether `from` is one of the data plane's sockets (a dual-stack one may
/// show IPv4 as mapped, or loopback as `::1`).
fn is_data_plane(from: SocketAddr, data: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    // Any port: the data plane sends from its data port only to peers
    // behind a NAT, from its workers' own sockets otherwise.
    let (ip, data_ip) = (canonical(from.ip()), canonical(data.ip()));
    ip == data_ip || (ip.is_loopback() && data_ip.is_loopback())
}

async fn forward(socket: Arc<UdpSocket>, data_addr: SocketAddr, link: DatagramLink) {
    let mut buf = vec![0u8; gossip::tcp::MAX_DATAGRAM];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                debug!(error = %e, "TCP fallback shim stopped");
                return;
            }
        };
        if !is_data_plane(from, data_addr) {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if link.is_closed() {
            return;
        }
        link.send(Bytes::copy_from_slice(&buf[..len]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_planes_own_socket_is_forwarded() {
        let data: SocketAddr = "127.0.0.1:7801".parse().unwrap();
        assert!(is_data_plane(data, data));
        assert!(is_data_plane(
            "[::ffff:127.0.0.1]:7801".parse().unwrap(),
            data
        ));
        let specific: SocketAddr = "198.18.0.2:7801".parse().unwrap();
        assert!(is_data_plane(specific, specific));
        assert!(!is_data_plane("198.18.0.3:7801".parse().unwrap(), specific));
    }

    #[test]
    fn an_unspecified_data_address_is_reached_on_loopback() {
        let shims = TcpShims::new("0.0.0.0:7801".parse().unwrap());
        assert_eq!(shims.data_addr, "127.0.0.1:7801".parse().unwrap());
        let shims = TcpShims::new("198.18.0.2:7801".parse().unwrap());
        assert_eq!(shims.data_addr, "198.18.0.2:7801".parse().unwrap());
    }
}
