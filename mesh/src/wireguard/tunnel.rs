//! The gateway's data path: one UDP socket for every client, one
//! [`boringtun::noise::Tunn`] per client. A datagram is matched to its
//! client by the static key a handshake initiation carries (decrypted with
//! the gateway's key) or by the session index of everything else; what it
//! decapsulates to enters the network only with the client's own source
//! address (anything else is counted and dropped), through the client's
//! TUN. What the TUN gives back is encapsulated to the client's last
//! authenticated address (WireGuard's roaming). Those addresses are kept
//! in the state directory, so a restarted gateway starts the handshake
//! itself instead of waiting the client's 15 s or more to notice.

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use x25519_dalek::{PublicKey, StaticSecret};

/// Handshake initiations a second before cookies are demanded (boringtun's
/// device uses the same).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often each tunnel's timers run (keepalives, rekeys, expiry).
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Largest datagram or packet handled: a 64 KiB IP packet plus WireGuard's
/// overhead.
const BUF: usize = 65_536 + 256;

/// The tunnels of this gateway.
pub struct Tunnels {
    key: StaticSecret,
    public: PublicKey,
    socket: Arc<UdpSocket>,
    limiter: Arc<RateLimiter>,
    peers: RwLock<Peers>,
    /// Datagrams that matched no client (unknown key or index).
    pub unknown: AtomicU64,
    /// Where each client (by public key) was last seen, and the file
    /// that keeps it across a restart.
    saved: Mutex<BTreeMap<String, SocketAddr>>,
    saved_file: PathBuf,
    saved_stale: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Peers {
    by_key: HashMap<[u8; 32], Arc<Peer>>,
    by_index: HashMap<u32, Arc<Peer>>,
}

/// What a client is on the network side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddrs {
    pub name: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub public_key: [u8; 32],
}

/// One client's tunnel.
pub struct Peer {
    pub addrs: ClientAddrs,
    index: u32,
    tunn: Mutex<Tunn>,
    tun: AsyncFd<OwnedFd>,
    endpoint: Mutex<Option<SocketAddr>>,
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub spoofed: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A tunnel's counters now.
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub last_handshake_ms: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub spoofed: u64,
    pub endpoint: Option<SocketAddr>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tunnels {
    /// Binds the gateway's socket on `addr` and starts serving it;
    /// `saved_file` keeps the clients' last addresses.
    pub async fn start(
        addr: SocketAddr,
        key: StaticSecret,
        saved_file: PathBuf,
    ) -> std::io::Result<Arc<Tunnels>> {
        let socket = Arc::new(UdpSocket::bind(addr).await?);
        let public = PublicKey::from(&key);
        let saved = std::fs::read(&saved_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let t = Arc::new(Tunnels {
            limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            key,
            public,
            socket,
            peers: RwLock::default(),
            unknown: AtomicU64::new(0),
            saved: Mutex::new(saved),
            saved_file,
            saved_stale: Default::default(),
        });
        tokio::spawn(t.clone().save_endpoints());
        tokio::spawn(t.clone().receive());
        let limiter = t.limiter.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                limiter.reset_count();
            }
        });
        Ok(t)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Starts `addrs`' tunnel over its TUN `tun`; replaces one of the same
    /// name.
    pub fn add(self: &Arc<Self>, addrs: ClientAddrs, tun: OwnedFd) -> std::io::Result<Arc<Peer>> {
        let key = mesh_model::wireguard::encode_key(&addrs.public_key);
        // Where the client was (before a restart, or before this re-plumb).
        let saved = lock(&self.saved).get(&key).copied();
        self.remove(&addrs.name);
        {
            // One tunnel per key: a second client of the same key would
            // shadow the first, which could then never be revoked.
            let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = peers.by_key.get(&addrs.public_key) {
                return Err(std::io::Error::other(format!(
                    "its public key is client {}'s already",
                    other.addrs.name
                )));
            }
        }
        // SAFETY: the OwnedFd is open and moves into the AsyncFd, which
        // owns it (and nothing else closes it) for its whole lifetime.
        let tun =
            unsafe { AsyncFd::register(tun) }.map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        let index = loop {
            let i = rand::random::<u32>() & 0x00ff_ffff;
            if !peers.by_index.contains_key(&i) {
                break i;
            }
        };
        let tunn = Tunn::new(
            self.key.clone(),
            PublicKey::from(addrs.public_key),
            None,
            None,
            index,
            Some(self.limiter.clone()),
        );
        let peer = Arc::new(Peer {
            addrs,
            index,
            tunn: Mutex::new(tunn),
            tun,
            endpoint: Mutex::new(None),
            rx_bytes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            spoofed: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let out = tokio::spawn(peer.clone().pump_out(self.socket.clone()));
        let timers = tokio::spawn(peer.clone().timers(self.socket.clone()));
        lock(&peer.tasks).extend([out, timers]);
        peers.by_key.insert(peer.addrs.public_key, peer.clone());
        peers.by_index.insert(index, peer.clone());
        if let Some(to) = saved {
            lock(&self.saved).insert(key, to);
            // Greet it there.
            *lock(&peer.endpoint) = Some(to);
            let mut dst = vec![0u8; 256];
            if let TunnResult::WriteToNetwork(p) =
                lock(&peer.tunn).format_handshake_initiation(&mut dst, false)
            {
                debug!(client = %peer.addrs.name, %to, "greeting the client where it was");
                let _ = self.socket.try_send_to(p, to);
            }
        }
        info!(client = %peer.addrs.name, network = %peer.addrs.network, ip = %peer.addrs.ip, "WireGuard tunnel up");
        Ok(peer)
    }

    /// Ends `name`'s tunnel at once: its session keys are dropped, its
    /// datagrams match nothing from now on.
    pub fn remove(&self, name: &str) -> Option<Arc<Peer>> {
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        let peer = peers
            .by_key
            .values()
            .find(|p| p.addrs.name == name)
            .cloned()?;
        peers.by_key.remove(&peer.addrs.public_key);
        peers.by_index.remove(&peer.index);
        let key = mesh_model::wireguard::encode_key(&peer.addrs.public_key);
        if lock(&self.saved).remove(&key).is_some() {
            self.saved_stale.store(true, Ordering::Relaxed);
        }
        for task in lock(&peer.tasks).drain(..) {
            task.abort();
        }
        info!(client = %name, "WireGuard tunnel down");
        Some(peer)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Peer>> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers
            .by_key
            .values()
            .find(|p| p.addrs.name == name)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Peer>> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.by_key.values().cloned().collect()
    }

    /// Writes the clients' last addresses when they change (0600: they
    /// say where the devices are).
    async fn save_endpoints(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let now: BTreeMap<String, SocketAddr> = self
                .all()
                .iter()
                .filter_map(|p| {
                    let ep = (*lock(&p.endpoint))?;
                    Some((mesh_model::wireguard::encode_key(&p.addrs.public_key), ep))
                })
                .collect();
            let text = {
                // Clients not plumbed (yet) keep their entry: only `remove`
                // takes one out (and marks the file stale).
                let mut saved = lock(&self.saved);
                let mut merged = saved.clone();
                merged.extend(now);
                if merged == *saved && !self.saved_stale.swap(false, Ordering::Relaxed) {
                    continue;
                }
                *saved = merged;
                serde_json::to_vec(&*saved).unwrap_or_default()
            };
            let file = self.saved_file.clone();
            let written = tokio::task::spawn_blocking(move || {
                mesh_sys::fs::write_atomic(&file, &text, 0o600)
            })
            .await;
            match written {
                Ok(Err(e)) => warn!("saving the WireGuard clients' addresses: {e}"),
                Err(e) => warn!("saving the WireGuard clients' addresses: {e}"),
                Ok(Ok(())) => debug!("saved the WireGuard clients' addresses"),
            }
        }
    }

    async fn receive(self: Arc<Self>) {
        let mut buf = vec![0u8; BUF];
        let mut dst = vec![0u8; BUF];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    warn!("WireGuard socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            self.datagram(&buf[..n], from, &mut dst);
        }
    }

    fn datagram(&self, datagram: &[u8], from: SocketAddr, dst: &mut [u8]) {
        let packet = match self.limiter.verify_packet(Some(from.ip()), datagram, dst) {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let _ = self.socket.try_send_to(cookie, from);
                return;
            }
            Err(_) => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        let peer = match packet {
            Packet::HandshakeInit(p) => parse_handshake_anon(&self.key, &self.public, &p)
                .ok()
                .and_then(|h| peers.by_key.get(&h.peer_static_public)),
            Packet::HandshakeResponse(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
            Packet::PacketCookieReply(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
            Packet::PacketData(p) => peers.by_index.get(&(p.receiver_idx >> 8)),
        }
        .cloned();
        drop(peers);
        match peer {
            Some(peer) => peer.decapsulate(&self.socket, datagram, from, dst),
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "WireGuard datagram of no client");
            }
        }
    }
}

impl Peer {
    fn decapsulate(&self, socket: &UdpSocket, datagram: &[u8], from: SocketAddr, dst: &mut [u8]) {
        let mut tunn = lock(&self.tunn);
        let mut flush = false;
        match tunn.decapsulate(Some(from.ip()), datagram, dst) {
            TunnResult::Done => {}
            TunnResult::Err(e) => {
                debug!(client = %self.addrs.name, "WireGuard: {e:?}");
                return;
            }
            TunnResult::WriteToNetwork(reply) => {
                let _ = socket.try_send_to(reply, from);
                flush = true;
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                self.deliver(packet, IpAddr::V4(src) == IpAddr::V4(self.addrs.ip));
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                self.deliver(packet, src == self.addrs.ip6);
            }
        }
        // Authenticated: this is where the client is now.
        *lock(&self.endpoint) = Some(from);
        // Packets queued while the handshake was under way.
        while flush {
            match tunn.decapsulate(None, &[], dst) {
                TunnResult::WriteToNetwork(p) => {
                    let _ = socket.try_send_to(p, from);
                }
                _ => flush = false,
            }
        }
    }

    /// Into the network, if the source is the client's own.
    fn deliver(&self, packet: &[u8], own_source: bool) {
        if packet.is_empty() {
            return; // a keepalive
        }
        if !own_source {
            self.spoofed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: the buffer is valid for reads of its length.
        let n = unsafe {
            libc::write(
                self.tun.get_ref().as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
            )
        };
        if n > 0 {
            self.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// From the network to the client.
    async fn pump_out(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0u8; BUF];
        let mut dst = vec![0u8; BUF];
        loop {
            let Ok(mut ready) = self.tun.readable().await else {
                return;
            };
            let read = ready.try_io(|fd| {
                // SAFETY: the buffer is valid for writes of its length.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    warn!(client = %self.addrs.name, "reading the TUN: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(_would_block) => continue,
            };
            // A client never seen has nowhere to be sent to: no
            // handshake is started for it (it starts its own).
            let Some(to) = *lock(&self.endpoint) else {
                continue;
            };
            let mut tunn = lock(&self.tunn);
            if let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&buf[..n], &mut dst) {
                if socket.try_send_to(p, to).is_ok() {
                    self.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    async fn timers(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut dst = vec![0u8; BUF];
        let mut tick = tokio::time::interval(TIMER_TICK);
        loop {
            tick.tick().await;
            let endpoint = *lock(&self.endpoint);
            let mut tunn = lock(&self.tunn);
            if let TunnResult::WriteToNetwork(p) = tunn.update_timers(&mut dst) {
                if let Some(to) = endpoint {
                    let _ = socket.try_send_to(p, to);
                }
            }
        }
    }

    pub fn stats(&self) -> PeerStats {
        let since = lock(&self.tunn).time_since_last_handshake();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        PeerStats {
            last_handshake_ms: since
                .and_then(|d| now.checked_sub(d))
                .map(|t| t.as_millis() as u64),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            spoofed: self.spoofed.load(Ordering::Relaxed),
            endpoint: *lock(&self.endpoint),
        }
    }
}
