//! Forwarding names outside the mesh to the operator's upstream servers.
//!
//! Spoof-resistant (RFC 5452): every UDP query goes out from a socket of
//! its own, on a port the kernel picks at random, connected to the
//! upstream (the kernel drops datagrams from any other address or port),
//! with a random id; an answer counts only if it is a response with the
//! query's id and question, anything else on the socket is ignored. An
//! off-path forger has to hit port and id at once, for one query only,
//! and no socket is shared between networks or outlives its query.
//!
//! Bounded: a cap on queries in flight (and so on sockets; beyond it
//! clients get SERVFAIL at once rather than piling up tasks), and a cache
//! that honours TTLs and negative TTLs. An upstream answer with TC is
//! asked again over TCP.

use hickory_proto::op::{Edns, Message, MessageType, Query};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::cache::{Cache, Key};
use super::wire::EDNS_UDP_LIMIT;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries waiting on upstreams at once, over every network and transport.
pub const MAX_IN_FLIGHT: usize = 256;
/// Larger than any answer we ask for (EDNS_UDP_LIMIT).
const RECV_BUFFER: usize = 4096;

pub struct Upstreams {
    /// Replaced whole by [`Upstreams::set`] (a reload); a query keeps the
    /// list it started with.
    servers: RwLock<Arc<Vec<Upstream>>>,
    in_flight: Arc<Semaphore>,
    cache: Mutex<Cache>,
    /// Bumped by every [`Upstreams::set`], so that answers kept elsewhere
    /// (a socket's repeats, see [`crate::answers`]) go with the cache.
    generation: AtomicU64,
}

struct Upstream {
    addr: SocketAddr,
}

pub fn cache_key(q: &Query) -> Key {
    (
        q.name().to_ascii().to_ascii_lowercase(),
        u16::from(q.query_type()),
        u16::from(q.query_class()),
    )
}

impl Upstreams {
    pub fn new(addrs: Vec<SocketAddr>) -> Upstreams {
        Upstreams {
            servers: RwLock::new(Arc::new(
                addrs.into_iter().map(|addr| Upstream { addr }).collect(),
            )),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            cache: Mutex::new(Cache::default()),
            generation: AtomicU64::new(0),
        }
    }

    /// How many times the upstreams were replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.servers().is_empty()
    }

    fn servers(&self) -> Arc<Vec<Upstream>> {
        self.servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The upstreams now.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers().iter().map(|u| u.addr).collect()
    }

    /// Replaces the upstreams (a reload of meshd.toml). The cache goes
    /// too: its answers came from the servers the operator just dropped.
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        let new = Arc::new(addrs.into_iter().map(|addr| Upstream { addr }).collect());
        *self.servers.write().unwrap_or_else(|p| p.into_inner()) = new;
        *self.lock_cache() = Cache::default();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cached(&self, q: &Query) -> Option<Message> {
        self.lock_cache().get(&cache_key(q), Instant::now())
    }

    /// A slot for one more query in flight, or None when all are taken.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Asks the upstreams in turn; the first answer is cached and returned.
    pub async fn resolve(&self, q: &Query, _slot: OwnedSemaphorePermit) -> Option<Message> {
        let servers = self.servers();
        for up in servers.iter() {
            match up.ask(q).await {
                Ok(ans) => {
                    // Not cached if the upstreams were replaced meanwhile.
                    if Arc::ptr_eq(&servers, &self.servers()) {
                        self.lock_cache().put(cache_key(q), &ans, Instant::now());
                    }
                    return Some(ans);
                }
                Err(e) => warn!(upstream = %up.addr, "upstream DNS query failed: {e}"),
            }
        }
        None
    }
}

/// A query for `q` with a fresh random id.
fn query_message(q: &Query) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.metadata.recursion_desired = true;
    m.add_query(q.clone());
    let mut e = Edns::new();
    e.set_max_payload(EDNS_UDP_LIMIT);
    m.set_edns(e);
    m
}

/// Whether `ans` answers the query `id` for `q` (RFC 5452 §9.1).
fn answers(ans: &Message, id: u16, q: &Query) -> bool {
    ans.metadata.message_type == MessageType::Response
        && ans.metadata.id == id
        && ans.queries.first() == Some(q)
}

impl Upstream {
    async fn ask(&self, q: &Query) -> std::io::Result<Message> {
        let ans = tokio::time::timeout(UPSTREAM_TIMEOUT, ask_udp(self.addr, q))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        if !ans.metadata.truncation {
            return Ok(ans);
        }
        debug!(upstream = %self.addr, "truncated upstream answer, asking over TCP");
        tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(self.addr, q))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no TCP answer"))?
    }
}

/// One query from a socket of its own; waits (the caller bounds how long)
/// until the answer to it arrives.
async fn ask_udp(addr: SocketAddr, q: &Query) -> std::io::Result<Message> {
    let bind: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Port 0: the kernel picks a random free ephemeral port.
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(addr).await?;
    let m = query_message(q);
    let bytes = m.to_vec().map_err(std::io::Error::other)?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        // An ICMP unreachable surfaces here: the next upstream is asked.
        let n = sock.recv(&mut buf).await?;
        match Message::from_vec(&buf[..n]) {
            Ok(ans) if answers(&ans, m.metadata.id, q) => return Ok(ans),
            _ => debug!(upstream = %addr, "ignoring a datagram that does not answer the query"),
        }
    }
}

async fn ask_tcp(addr: SocketAddr, q: &Query) -> std::io::Result<Message> {
    let m = query_message(q);
    let bytes = m.to_vec().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect(addr).await?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).await?;
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    let ans = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if !answers(&ans, m.metadata.id, q) {
        return Err(std::io::Error::other("TCP answer does not match the query"));
    }
    Ok(ans)
}
