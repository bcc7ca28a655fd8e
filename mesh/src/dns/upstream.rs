//! Forwarding names outside the mesh to the operator's upstream servers.
//!
//! Bounded: one UDP socket per upstream, opened on first use and shared
//! by every query (answers are matched to waiters by id and question), a
//! cap on queries in flight (beyond it clients get SERVFAIL at once rather
//! than piling up tasks), and a cache that honours TTLs and negative TTLs.
//! An upstream answer with TC is asked again over TCP.

use hickory_proto::op::{Edns, Message, Query};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{oneshot, OnceCell, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::cache::{Cache, Key};
use super::wire::EDNS_UDP_LIMIT;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries waiting on upstreams at once, over every network and transport.
pub const MAX_IN_FLIGHT: usize = 256;

pub struct Upstreams {
    servers: Vec<Upstream>,
    in_flight: Arc<Semaphore>,
    cache: Mutex<Cache>,
}

struct Upstream {
    addr: SocketAddr,
    channel: OnceCell<Arc<Channel>>,
}

/// One connected UDP socket to one upstream and the queries waiting on it.
struct Channel {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u16, Waiter>>,
}

struct Waiter {
    /// Tells this waiter from a later one that reuses its id.
    token: u64,
    query: Query,
    tx: oneshot::Sender<Message>,
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
            servers: addrs
                .into_iter()
                .map(|addr| Upstream {
                    addr,
                    channel: OnceCell::new(),
                })
                .collect(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            cache: Mutex::new(Cache::default()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
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
        for up in &self.servers {
            match up.ask(q).await {
                Ok(ans) => {
                    self.lock_cache().put(cache_key(q), &ans, Instant::now());
                    return Some(ans);
                }
                Err(e) => warn!(upstream = %up.addr, "upstream DNS query failed: {e}"),
            }
        }
        None
    }
}

fn query_message(q: &Query) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(q.clone());
    let mut e = Edns::new();
    e.set_max_payload(EDNS_UDP_LIMIT);
    m.set_edns(e);
    m
}

impl Upstream {
    async fn ask(&self, q: &Query) -> std::io::Result<Message> {
        let ch = self
            .channel
            .get_or_try_init(|| Channel::open(self.addr))
            .await?;
        let ans = tokio::time::timeout(UPSTREAM_TIMEOUT, ch.ask(q))
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

impl Channel {
    async fn open(addr: SocketAddr) -> std::io::Result<Arc<Channel>> {
        let bind: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).await?;
        // Connected: the kernel drops datagrams from anyone else.
        sock.connect(addr).await?;
        let ch = Arc::new(Channel {
            sock,
            waiting: Mutex::new(HashMap::new()),
        });
        tokio::spawn(ch.clone().read_answers());
        Ok(ch)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read_answers(self: Arc<Channel>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match self.sock.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    // ICMP unreachable surfaces here; the waiter times out.
                    debug!("upstream socket: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(ans) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut waiting = self.lock();
            let matches = waiting
                .get(&ans.metadata.id)
                .is_some_and(|w| ans.queries.first() == Some(&w.query));
            if matches {
                if let Some(w) = waiting.remove(&ans.metadata.id) {
                    let _ = w.tx.send(ans);
                }
            }
        }
    }

    async fn ask(&self, q: &Query) -> std::io::Result<Message> {
        let mut m = query_message(q);
        let (tx, rx) = oneshot::channel();
        let token: u64 = rand::random();
        {
            let mut waiting = self.lock();
            // At most MAX_IN_FLIGHT of 65536 ids are taken: a free one is
            // found within a few draws.
            while waiting.contains_key(&m.metadata.id) {
                m.metadata.id = rand::random();
            }
            waiting.insert(
                m.metadata.id,
                Waiter {
                    token,
                    query: q.clone(),
                    tx,
                },
            );
        }
        let id = m.metadata.id;
        let _forget = Forget {
            ch: self,
            id,
            token,
        };
        let bytes = m.to_vec().map_err(std::io::Error::other)?;
        self.sock.send(&bytes).await?;
        rx.await
            .map_err(|_| std::io::Error::other("upstream reader ended"))
    }
}

/// Removes a waiter that gave up (timeout, error) so its id is free again.
struct Forget<'a> {
    ch: &'a Channel,
    id: u16,
    token: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut waiting = self.ch.lock();
        if waiting.get(&self.id).is_some_and(|w| w.token == self.token) {
            waiting.remove(&self.id);
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
    if ans.metadata.id != m.metadata.id || ans.queries.first() != Some(q) {
        return Err(std::io::Error::other("TCP answer does not match the query"));
    }
    Ok(ans)
}
