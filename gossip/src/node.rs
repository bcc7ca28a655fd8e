//! The running node: the thin async layer over the protocol logic.
//!
//! Per host: one QUIC endpoint, an accept loop, an anti-entropy ticker, a
//! persistence ticker and one dial loop per member we are not connected to.
//! Per connection: a reader task (framing only), a writer task (framing only)
//! and a logic task (messages, heartbeats, key exchange). The logic task never
//! waits on the network: it queues frames with `try_send`, and whatever is
//! dropped under overload is repaired by anti-entropy or a key-exchange retry,
//! so two hosts can never deadlock on each other's flow control.
//!
//! Who initiates key exchange: the **dialer of the connection**. Every
//! connection has exactly one dialer, and when two hosts dial each other at
//! once only one connection survives (see [`prefer_new_link`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::auth::{self, Role, EKM_AUTH_LABEL};
use crate::error::BoxError;
use crate::keyexchange::{self, KxContext, PendingInit, ResponderTrack, EKM_KEYS_LABEL};
use crate::membership::{MemberRecord, MembershipTable};
use crate::state::{now_millis, Channel, DeltaSink, ErasedChannel, Mergeable};
use crate::transport::{self, close_code, ReadError, TransportTimers};
use crate::wire::{self, Digest, Hello, HelloAck, Message};
use crate::{Error, Identity, MeshSecret, PeerId, SessionKeys, PROTOCOL_VERSION};

/// Oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Default UDP port of the control plane.
pub const DEFAULT_PORT: u16 = 6783;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// While a peer is blocked its dial loop only polls for the unblock.
const BLOCKED_POLL: Duration = Duration::from_millis(250);
const OUTBOUND_QUEUE: usize = 1024;
/// Small on purpose: each queued message may be up to 4 MiB.
const INBOUND_QUEUE: usize = 16;
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// Limits on payloads kept for channels nobody registered yet.
const MAX_PENDING_CHANNELS: usize = 64;
const MAX_PENDING_PER_CHANNEL: usize = 16;
const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;
const MAX_DIGEST_CHANNELS: usize = 1024;

/// What the data plane learns about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: PeerId,
    pub name: String,
    /// The QUIC address we are connected to.
    pub remote: SocketAddr,
    pub meta: BTreeMap<String, String>,
}

/// Callbacks into the data plane.
///
/// Called synchronously from gossip tasks, in causal order per peer
/// (`peer_up` before its keys). Must be cheap and non-blocking, and must not
/// call back into the [`Node`] synchronously in a way that waits on it.
/// `peer_up` may be called again for a peer already up when its connection
/// was replaced (e.g. it restarted); treat it as an update.
pub trait PeerObserver: Send + Sync + 'static {
    fn peer_up(&self, peer: &PeerInfo);
    fn peer_down(&self, peer: &PeerId);
    fn install_keys(&self, peer: &PeerId, keys: SessionKeys, send_now: bool);
    fn confirm_keys(&self, peer: &PeerId, generation: u64);
}

/// An observer that ignores everything (tests, tools).
pub struct NoopObserver;

impl PeerObserver for NoopObserver {
    fn peer_up(&self, _: &PeerInfo) {}
    fn peer_down(&self, _: &PeerId) {}
    fn install_keys(&self, _: &PeerId, _: SessionKeys, _: bool) {}
    fn confirm_keys(&self, _: &PeerId, _: u64) {}
}

pub struct Config {
    pub identity: Identity,
    /// Used unless `state_dir` holds a `secret` file from an earlier run (or
    /// an earlier `join`), which wins so a restarted host stays in its mesh.
    pub secret: MeshSecret,
    pub listen: SocketAddr,
    pub name: String,
    /// Free-form, gossiped with the member record (e.g. `data_port`).
    pub meta: BTreeMap<String, String>,
    /// Extra addresses to advertise (`host:port`), e.g. a public name when
    /// listening on 0.0.0.0. The listen address is advertised when specific.
    pub advertise: Vec<String>,
    pub state_dir: Option<PathBuf>,
    /// Data-plane rekey period; capped at 120 s.
    pub rekey_interval: Duration,
    pub heartbeat_interval: Duration,
    pub dead_after: Duration,
    pub anti_entropy_interval: Duration,
    pub observer: Arc<dyn PeerObserver>,
}

impl Config {
    pub const DEFAULT_REKEY_INTERVAL: Duration = Duration::from_secs(110);
    pub const MAX_REKEY_INTERVAL: Duration = Duration::from_secs(120);
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(5);
    pub const DEFAULT_ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(3);

    pub fn new(
        identity: Identity,
        secret: MeshSecret,
        listen: SocketAddr,
        observer: Arc<dyn PeerObserver>,
    ) -> Config {
        let name = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| identity.peer_id().to_string());
        Config {
            identity,
            secret,
            listen,
            name,
            meta: BTreeMap::new(),
            advertise: Vec::new(),
            state_dir: None,
            rekey_interval: Self::DEFAULT_REKEY_INTERVAL,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            dead_after: Self::DEFAULT_DEAD_AFTER,
            anti_entropy_interval: Self::DEFAULT_ANTI_ENTROPY_INTERVAL,
            observer,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Known but never connected yet.
    Connecting,
    Up,
    /// Was up; lost; being redialed.
    Down,
}

/// One other member as seen from this host.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: PeerId,
    pub name: String,
    /// Connected address if up, else the last one known (unspecified if none).
    pub addr: SocketAddr,
    pub state: PeerState,
    pub rtt: Option<Duration>,
    pub key_generation: Option<u64>,
    pub key_age: Option<Duration>,
    pub incarnation: u64,
    pub meta: BTreeMap<String, String>,
    /// UDP bytes over all connections with this peer since this node started.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// Which of two connections between the same hosts survives. Both hosts
/// evaluate this with the same inputs, so they keep the same connection.
/// - a newer incarnation of the peer always wins (the old link is stale);
/// - same dialer: the newer one wins (the dialer reconnected);
/// - else: the one dialed by the lower peer id.
pub fn prefer_new_link(
    local: PeerId,
    remote: PeerId,
    existing: (PeerId, u64),
    new: (PeerId, u64),
) -> bool {
    let (existing_dialer, existing_incarnation) = existing;
    let (new_dialer, new_incarnation) = new;
    if new_incarnation != existing_incarnation {
        return new_incarnation > existing_incarnation;
    }
    if new_dialer == existing_dialer {
        return true;
    }
    new_dialer == local.min(remote)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkSide {
    Dialer,
    Acceptor,
}

struct Link {
    conn: quinn::Connection,
    dialer: PeerId,
    /// The peer's incarnation when this link was established.
    incarnation: u64,
    outbound: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct PeerSlot {
    ever_up: bool,
    link: Option<Link>,
    last_remote: Option<SocketAddr>,
    dialing: bool,
    last_key_generation: u64,
    key_installed_at: Option<Instant>,
    current_generation: Option<u64>,
    bytes_sent_closed: u64,
    bytes_received_closed: u64,
}

impl PeerSlot {
    fn state(&self) -> PeerState {
        match (&self.link, self.ever_up) {
            (Some(_), _) => PeerState::Up,
            (None, true) => PeerState::Down,
            (None, false) => PeerState::Connecting,
        }
    }
}

struct Shared {
    table: MembershipTable,
    peers: HashMap<PeerId, PeerSlot>,
    blocked: HashSet<PeerId>,
    persist_dirty: bool,
}

struct ChannelEntry {
    any: Arc<dyn std::any::Any + Send + Sync>,
    erased: Arc<dyn ErasedChannel>,
}

#[derive(Default)]
struct Channels {
    registered: HashMap<String, ChannelEntry>,
    /// Payloads for channels this host has not registered (yet).
    pending: HashMap<String, Vec<Vec<u8>>>,
}

/// What survives a restart (file `members` in the state dir).
#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    own_incarnation: u64,
    records: Vec<MemberRecord>,
    last_remotes: Vec<(PeerId, SocketAddr)>,
}

struct Timers {
    rekey: Duration,
    heartbeat: Duration,
    dead_after: Duration,
    anti_entropy: Duration,
}

struct Inner {
    id: PeerId,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    /// Bound to 0.0.0.0/[::]: advertised addresses are learned from peers.
    listen_unspecified: bool,
    observer: Arc<dyn PeerObserver>,
    timers: Timers,
    state_dir: Option<PathBuf>,
    secret: RwLock<MeshSecret>,
    shared: Mutex<Shared>,
    channels: Mutex<Channels>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<AbortHandle>>,
    this: Weak<Inner>,
}

/// Handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; if user code did, keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn jitter(base: Duration) -> Duration {
    let spread = base.as_millis() as u64 / 4 + 1;
    base + Duration::from_millis(rand::thread_rng().gen_range(0..spread))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

impl Node {
    pub async fn start(cfg: Config) -> Result<Node, Error> {
        let id = cfg.identity.peer_id();
        let rekey = cfg.rekey_interval.min(Config::MAX_REKEY_INTERVAL);
        let timers = Timers {
            rekey,
            heartbeat: cfg.heartbeat_interval.max(Duration::from_millis(10)),
            dead_after: cfg.dead_after.max(cfg.heartbeat_interval * 2),
            anti_entropy: cfg.anti_entropy_interval.max(Duration::from_millis(10)),
        };
        let mut secret = cfg.secret;
        let mut persisted = Persisted::default();
        if let Some(dir) = &cfg.state_dir {
            std::fs::create_dir_all(dir)?;
            match MeshSecret::load(&dir.join("secret"))? {
                Some(saved) => secret = saved,
                None => secret.save(&dir.join("secret"))?,
            }
            persisted = load_persisted(dir);
        }
        let endpoint = transport::bind_endpoint(
            &cfg.identity,
            cfg.listen,
            TransportTimers {
                keep_alive: timers.heartbeat,
                idle_timeout: timers.dead_after,
            },
        )?;
        let local_addr = endpoint.local_addr()?;

        let mut addrs = cfg.advertise.clone();
        if !local_addr.ip().is_unspecified() {
            addrs.insert(0, local_addr.to_string());
        }
        // Start time in ms, strictly above the last run's so the new self wins.
        let incarnation = now_millis().max(persisted.own_incarnation + 1);
        let own = MemberRecord {
            id,
            name: cfg.name.clone(),
            addrs,
            incarnation,
            version: 0,
            meta: cfg.meta.clone(),
        };
        own.validate().map_err(Error::Protocol)?;
        let mut table = MembershipTable::new(own);
        table.merge(persisted.records.iter().filter(|r| r.id != id).cloned());
        let mut peers: HashMap<PeerId, PeerSlot> = HashMap::new();
        for (peer, addr) in persisted.last_remotes {
            if table.get(&peer).is_some() && peer != id {
                peers.entry(peer).or_default().last_remote = Some(addr);
            }
        }

        let inner = Arc::new_cyclic(|this| Inner {
            id,
            endpoint,
            local_addr,
            listen_unspecified: local_addr.ip().is_unspecified(),
            observer: cfg.observer,
            timers,
            state_dir: cfg.state_dir,
            secret: RwLock::new(secret),
            shared: Mutex::new(Shared {
                table,
                peers,
                blocked: HashSet::new(),
                persist_dirty: true,
            }),
            channels: Mutex::new(Channels::default()),
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            this: this.clone(),
        });
        info!(peer = %id, addr = %local_addr, incarnation, "gossip node started");

        let node = Node { inner };
        node.inner.spawn(accept_loop(node.inner.clone()));
        node.inner.spawn(anti_entropy_loop(node.inner.clone()));
        node.inner.spawn(persist_loop(node.inner.clone()));
        let known: Vec<PeerId> = lock(&node.inner.shared)
            .table
            .others()
            .map(|r| r.id)
            .collect();
        for peer in known {
            node.inner.ensure_dialing(peer);
        }
        Ok(node)
    }

    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The current mesh secret as a join token.
    pub fn token(&self) -> String {
        self.inner
            .secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .to_token()
    }

    /// Joins the mesh `addr` (`host:port`) belongs to, adopting `token`'s
    /// secret (persisted in the state dir). Returns the id of the host we
    /// joined through; the rest of the mesh is learned from it and dialed in
    /// the background.
    pub async fn join(&self, addr: &str, token: &MeshSecret) -> Result<PeerId, Error> {
        if *self.inner.shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        {
            let mut secret = self.inner.secret.write().unwrap_or_else(|p| p.into_inner());
            if *secret != *token {
                *secret = token.clone();
                info!("adopted the mesh secret of the join token");
            }
        }
        if let Some(dir) = &self.inner.state_dir {
            token.save(&dir.join("secret"))?;
        }
        let targets = resolve(addr).await?;
        let mut last_error = None;
        for target in targets {
            match self.inner.clone().dial_addr(target, None).await {
                Ok(peer) => {
                    info!(via = %peer, addr = %target, "joined mesh");
                    return Ok(peer);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Resolve {
            addr: addr.to_string(),
            reason: "no addresses".into(),
        }))
    }

    /// Every other known member (the local host is not included).
    pub fn members(&self) -> Vec<Member> {
        let shared = lock(&self.inner.shared);
        shared
            .table
            .others()
            .map(|record| {
                let slot = shared.peers.get(&record.id);
                let link = slot.and_then(|s| s.link.as_ref());
                let stats = link.map(|l| l.conn.stats());
                let addr = link
                    .map(|l| l.conn.remote_address())
                    .or_else(|| slot.and_then(|s| s.last_remote))
                    .or_else(|| record.addrs.iter().find_map(|a| a.parse().ok()))
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                Member {
                    id: record.id,
                    name: record.name.clone(),
                    addr,
                    state: slot.map(|s| s.state()).unwrap_or(PeerState::Connecting),
                    rtt: link.map(|l| l.conn.rtt()),
                    key_generation: slot.and_then(|s| s.current_generation),
                    key_age: slot.and_then(|s| s.key_installed_at.map(|t| t.elapsed())),
                    incarnation: record.incarnation,
                    meta: record.meta.clone(),
                    bytes_sent: slot.map(|s| s.bytes_sent_closed).unwrap_or(0)
                        + stats.as_ref().map(|s| s.udp_tx.bytes).unwrap_or(0),
                    bytes_received: slot.map(|s| s.bytes_received_closed).unwrap_or(0)
                        + stats.as_ref().map(|s| s.udp_rx.bytes).unwrap_or(0),
                }
            })
            .collect()
    }

    /// Registers (or returns the already registered) channel `name`.
    /// `initial` is merged into it and sent to the mesh.
    /// Registering the same name with another type replaces the old channel.
    pub fn channel<S: Mergeable>(&self, name: &str, initial: S) -> Channel<S> {
        let mut channels = lock(&self.inner.channels);
        if let Some(entry) = channels.registered.get(name) {
            if let Some(existing) = Channel::<S>::from_any(entry.any.clone()) {
                drop(channels);
                existing.update(initial);
                return existing;
            }
            warn!(
                channel = name,
                "channel re-registered with another type; replacing it"
            );
        }
        let sink: Weak<dyn DeltaSink> = self.inner.this.clone();
        let channel = Channel {
            inner: Arc::new(crate::state::ChannelInner::new(name, initial, sink)),
        };
        for payload in channels.pending.remove(name).unwrap_or_default() {
            if let Err(e) = channel.erased().merge_encoded(&payload) {
                warn!(channel = name, error = %e, "dropping undecodable state received earlier");
            }
        }
        channels.registered.insert(
            name.to_string(),
            ChannelEntry {
                any: channel.as_any(),
                erased: channel.erased(),
            },
        );
        drop(channels);
        let state = channel.erased().encoded();
        self.inner.broadcast_delta(name, state);
        channel
    }

    /// Test hook simulating a partition: closes connections with `peers` and
    /// refuses/does not dial them until [`Node::unblock_all`].
    pub fn block_peers(&self, peers: &[PeerId]) {
        let mut shared = lock(&self.inner.shared);
        for peer in peers {
            shared.blocked.insert(*peer);
            if let Some(link) = shared.peers.get(peer).and_then(|s| s.link.as_ref()) {
                transport::close(
                    &link.conn,
                    close_code::BLOCKED,
                    "traffic with this host is blocked",
                );
            }
        }
    }

    pub fn unblock_all(&self) {
        lock(&self.inner.shared).blocked.clear();
    }

    /// Closes every connection and the endpoint and stops all tasks. No
    /// observer callback is made afterwards.
    pub async fn shutdown(&self) {
        if self.inner.shutdown.send_replace(true) {
            return;
        }
        self.inner.endpoint.close(
            quinn::VarInt::from_u32(close_code::SHUTDOWN),
            b"host shutting down",
        );
        self.inner.save_state();
        for task in lock(&self.inner.tasks).drain(..) {
            task.abort();
        }
        // Lets the CONNECTION_CLOSE frames go out (they leave on the next
        // driver poll). Bounded short: half-open dials to vanished peers would
        // otherwise hold `wait_idle` for their whole 3×PTO drain period.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.inner.endpoint.wait_idle()).await;
        info!(peer = %self.inner.id, "gossip node stopped");
    }
}

async fn resolve(addr: &str) -> Result<Vec<SocketAddr>, Error> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Error::Resolve {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    if resolved.is_empty() {
        return Err(Error::Resolve {
            addr: addr.to_string(),
            reason: "no addresses".into(),
        });
    }
    Ok(resolved)
}

fn load_persisted(dir: &std::path::Path) -> Persisted {
    match std::fs::read(dir.join("members")) {
        Ok(bytes) => wire::decode_body(&bytes).unwrap_or_else(|e| {
            warn!(error = %e, "ignoring unreadable members file");
            Persisted::default()
        }),
        Err(_) => Persisted::default(),
    }
}

/// Maps the error that ended a handshake to what `join()` reports.
fn handshake_error(addr: SocketAddr, error: ReadError) -> Error {
    match error {
        ReadError::Connection(quinn::ConnectionError::ApplicationClosed(close)) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let code = close.error_code.into_inner();
            if code == close_code::AUTH_FAILED as u64 {
                Error::AuthRejected { reason }
            } else {
                Error::Refused { code, reason }
            }
        }
        ReadError::Connection(e) => Error::Unreachable {
            addr: addr.to_string(),
            source: Box::new(e),
        },
        other => Error::Protocol(other.to_string()),
    }
}

impl DeltaSink for Inner {
    fn broadcast_delta(&self, channel: &str, data: Vec<u8>) {
        let message = Message::ChannelDelta {
            channel: channel.to_string(),
            data,
        };
        self.broadcast(&message, None);
    }
}

impl Inner {
    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(fut);
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle.abort_handle());
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn secret(&self) -> MeshSecret {
        self.secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn is_blocked(&self, peer: &PeerId) -> bool {
        lock(&self.shared).blocked.contains(peer)
    }

    fn own_record(&self) -> MemberRecord {
        lock(&self.shared).table.local().clone()
    }

    fn last_key_generation(&self, peer: &PeerId) -> u64 {
        lock(&self.shared)
            .peers
            .get(peer)
            .map(|s| s.last_key_generation)
            .unwrap_or(0)
    }

    /// Encodes once and queues to every up peer but `except`.
    fn broadcast(&self, message: &Message, except: Option<PeerId>) {
        let frame = match wire::encode_frame(message) {
            Ok(frame) => Bytes::from(frame),
            Err(e) => {
                warn!(error = %e, "not sending message");
                return;
            }
        };
        let shared = lock(&self.shared);
        for (peer, slot) in &shared.peers {
            if Some(*peer) == except {
                continue;
            }
            if let Some(link) = &slot.link {
                if link.outbound.try_send(frame.clone()).is_err() {
                    debug!(peer = %peer, "outbound queue full; anti-entropy will repair");
                }
            }
        }
    }

    fn ensure_dialing(&self, peer: PeerId) {
        if peer == self.id || self.is_shutting_down() {
            return;
        }
        {
            let mut shared = lock(&self.shared);
            if shared.table.get(&peer).is_none() {
                return;
            }
            let slot = shared.peers.entry(peer).or_default();
            if slot.link.is_some() || slot.dialing {
                return;
            }
            slot.dialing = true;
        }
        if let Some(this) = self.this.upgrade() {
            self.spawn(dial_loop(this, peer));
        }
    }

    /// Dials one address and runs the handshake; registers the connection.
    async fn dial_addr(
        self: Arc<Self>,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerId, Error> {
        let unreachable = |e: BoxError| Error::Unreachable {
            addr: addr.to_string(),
            source: e,
        };
        let connecting = self
            .endpoint
            .connect(addr, transport::SERVER_NAME)
            .map_err(|e| unreachable(Box::new(e)))?;
        let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unreachable(Box::new(e))),
            Err(_) => return Err(unreachable("QUIC handshake timed out".into())),
        };
        let remote = transport::remote_peer_id(&conn)
            .ok_or_else(|| Error::protocol("peer certificate carries no Ed25519 key"))?;
        if remote == self.id {
            transport::close(&conn, close_code::NORMAL, "connected to self");
            return Err(Error::protocol("that address is this host itself"));
        }
        if let Some(expected) = expected {
            if expected != remote {
                debug!(expected = %expected, got = %remote, %addr, "address now belongs to another member");
            }
        }
        if self.is_blocked(&remote) {
            transport::close(
                &conn,
                close_code::BLOCKED,
                "traffic with this host is blocked",
            );
            return Err(Error::Refused {
                code: close_code::BLOCKED as u64,
                reason: "blocked locally".into(),
            });
        }
        let secret = self.secret();
        let ekm = transport::exported_secret(&conn, EKM_AUTH_LABEL)?;
        let hello = Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            proof: auth::membership_proof(&secret, Role::Dialer, &ekm, &self.id, &remote),
            record: self.own_record(),
            last_key_generation: self.last_key_generation(&remote),
            observed: addr,
        };
        let handshake = async {
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| unreachable(Box::new(e)))?;
            transport::write_frame(&mut send, &hello).await?;
            match transport::read_frame::<HelloAck>(&mut recv).await {
                Ok(Some((ack, _))) => Ok((send, recv, ack)),
                Ok(None) => Err(Error::protocol(
                    "peer closed the stream during the handshake",
                )),
                Err(e) => Err(handshake_error(addr, e)),
            }
        };
        let (send, recv, ack) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                if matches!(e, Error::Protocol(_)) {
                    transport::close(&conn, close_code::PROTOCOL_ERROR, "bad handshake");
                }
                if let Error::AuthRejected { reason } = &e {
                    warn!(peer = %remote, %addr, reason = %reason, "peer refused our membership proof");
                }
                return Err(e);
            }
            Err(_) => {
                transport::close(&conn, close_code::PROTOCOL_ERROR, "handshake timed out");
                return Err(unreachable("mesh handshake timed out".into()));
            }
        };
        if !auth::verify_membership_proof(
            &secret,
            Role::Acceptor,
            &ekm,
            &self.id,
            &remote,
            &ack.proof,
        ) {
            warn!(peer = %remote, %addr, "peer failed to prove the mesh secret; closing");
            transport::close(
                &conn,
                close_code::AUTH_FAILED,
                "acceptor failed to prove the mesh secret",
            );
            return Err(Error::AuthRejected {
                reason: "the remote host does not hold this mesh secret".into(),
            });
        }
        if ack.version < MIN_PROTOCOL_VERSION || ack.version > PROTOCOL_VERSION {
            transport::close(
                &conn,
                close_code::VERSION_MISMATCH,
                "unsupported protocol version",
            );
            return Err(Error::Protocol(format!(
                "peer chose unsupported version {}",
                ack.version
            )));
        }
        if ack.record.id != remote || ack.record.validate().is_err() {
            transport::close(
                &conn,
                close_code::PROTOCOL_ERROR,
                "member record does not match certificate",
            );
            return Err(Error::protocol("peer's member record is invalid"));
        }
        self.learn_own_address(ack.observed);
        self.register(
            conn,
            send,
            recv,
            remote,
            LinkSide::Dialer,
            ack.record,
            ack.last_key_generation,
        )?;
        Ok(remote)
    }

    async fn accept(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote_addr = incoming.remote_address();
        let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(addr = %remote_addr, error = %e, "incoming QUIC handshake failed");
                return;
            }
            Err(_) => return,
        };
        let Some(remote) = transport::remote_peer_id(&conn) else {
            transport::close(
                &conn,
                close_code::PROTOCOL_ERROR,
                "certificate carries no Ed25519 key",
            );
            return;
        };
        if remote == self.id {
            transport::close(&conn, close_code::NORMAL, "connected to self");
            return;
        }
        if self.is_blocked(&remote) {
            transport::close(
                &conn,
                close_code::BLOCKED,
                "traffic with this host is blocked",
            );
            return;
        }
        let handshake = async {
            let (send, mut recv) = conn.accept_bi().await.ok()?;
            match transport::read_frame::<Hello>(&mut recv).await {
                Ok(Some((hello, _))) => Some((send, recv, hello)),
                Ok(None) => None,
                Err(e) => {
                    debug!(peer = %remote, error = %e, "bad hello");
                    None
                }
            }
        };
        let Ok(Some((mut send, recv, hello))) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await
        else {
            transport::close(&conn, close_code::PROTOCOL_ERROR, "no valid hello");
            return;
        };
        let secret = self.secret();
        let Ok(ekm) = transport::exported_secret(&conn, EKM_AUTH_LABEL) else {
            transport::close(
                &conn,
                close_code::PROTOCOL_ERROR,
                "TLS exporter unavailable",
            );
            return;
        };
        if !auth::verify_membership_proof(
            &secret,
            Role::Dialer,
            &ekm,
            &remote,
            &self.id,
            &hello.proof,
        ) {
            warn!(peer = %remote, addr = %remote_addr, "refused connection: peer did not prove the mesh secret");
            transport::close(
                &conn,
                close_code::AUTH_FAILED,
                "mesh secret mismatch: the token used does not belong to this mesh",
            );
            return;
        }
        let version = hello.max_version.min(PROTOCOL_VERSION);
        if version < hello.min_version || version < MIN_PROTOCOL_VERSION {
            transport::close(
                &conn,
                close_code::VERSION_MISMATCH,
                "no common protocol version",
            );
            return;
        }
        if hello.record.id != remote || hello.record.validate().is_err() {
            transport::close(
                &conn,
                close_code::PROTOCOL_ERROR,
                "member record does not match certificate",
            );
            return;
        }
        let ack = HelloAck {
            version,
            proof: auth::membership_proof(&secret, Role::Acceptor, &ekm, &remote, &self.id),
            record: self.own_record(),
            last_key_generation: self.last_key_generation(&remote),
            observed: conn.remote_address(),
        };
        self.learn_own_address(hello.observed);
        if transport::write_frame(&mut send, &ack).await.is_err() {
            return;
        }
        if let Err(e) = self.register(
            conn,
            send,
            recv,
            remote,
            LinkSide::Acceptor,
            hello.record,
            hello.last_key_generation,
        ) {
            debug!(peer = %remote, error = %e, "connection not kept");
        }
    }

    /// Installs an authenticated connection (or drops it after the
    /// tie-break) and starts its tasks.
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        remote: PeerId,
        side: LinkSide,
        record: MemberRecord,
        remote_last_generation: u64,
    ) -> Result<(), Error> {
        let dialer = match side {
            LinkSide::Dialer => self.id,
            LinkSide::Acceptor => remote,
        };
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(OUTBOUND_QUEUE);
        let incarnation = record.incarnation;
        let (info, changed) = {
            let mut shared = lock(&self.shared);
            if self.is_shutting_down() {
                transport::close(&conn, close_code::SHUTDOWN, "host shutting down");
                return Err(Error::Shutdown);
            }
            if shared.blocked.contains(&remote) {
                transport::close(
                    &conn,
                    close_code::BLOCKED,
                    "traffic with this host is blocked",
                );
                return Err(Error::Refused {
                    code: close_code::BLOCKED as u64,
                    reason: "blocked".into(),
                });
            }
            let outcome = shared.table.merge([record]);
            let slot = shared.peers.entry(remote).or_default();
            if let Some(existing) = &slot.link {
                let keep_new = prefer_new_link(
                    self.id,
                    remote,
                    (existing.dialer, existing.incarnation),
                    (dialer, incarnation),
                );
                if !keep_new {
                    transport::close(&conn, close_code::DUPLICATE, "duplicate connection");
                    return Err(Error::Refused {
                        code: close_code::DUPLICATE as u64,
                        reason: "duplicate connection".into(),
                    });
                }
                transport::close(
                    &existing.conn,
                    close_code::DUPLICATE,
                    "replaced by a newer connection",
                );
            }
            slot.link = Some(Link {
                conn: conn.clone(),
                dialer,
                incarnation,
                outbound: out_tx.clone(),
            });
            slot.ever_up = true;
            slot.last_remote = Some(conn.remote_address());
            slot.last_key_generation = slot.last_key_generation.max(remote_last_generation);
            shared.persist_dirty = true;
            let record = shared.table.get(&remote).cloned();
            let info = PeerInfo {
                id: remote,
                name: record.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                remote: conn.remote_address(),
                meta: record.map(|r| r.meta).unwrap_or_default(),
            };
            (info, outcome.changed)
        };
        info!(peer = %remote, addr = %info.remote, name = %info.name, ?side, "peer up");
        self.observer.peer_up(&info);
        self.after_merge(changed, Some(remote));

        let (in_tx, in_rx) = mpsc::channel::<Message>(INBOUND_QUEUE);
        self.spawn(writer_task(send, out_rx));
        self.spawn(reader_task(conn.clone(), recv, in_tx, remote));
        if let Some(this) = self.this.upgrade() {
            let link = LinkCtx {
                node: this,
                conn,
                peer: remote,
                initiator: side == LinkSide::Dialer,
                outbound: out_tx,
            };
            self.spawn(link.run(in_rx));
        }
        Ok(())
    }

    /// A host bound to a wildcard address cannot know what to advertise;
    /// it adopts the addresses its peers reached it at (as STUN would). With
    /// one UDP socket per host the port seen is the listen port.
    fn learn_own_address(&self, observed: SocketAddr) {
        if !self.listen_unspecified || observed.ip().is_unspecified() {
            return;
        }
        let observed = SocketAddr::new(observed.ip(), self.local_addr.port()).to_string();
        let changed = {
            let mut shared = lock(&self.shared);
            if shared.table.local().addrs.contains(&observed) {
                return;
            }
            shared.table.update_local(|own| {
                if own.addrs.len() >= crate::membership::MAX_ADDRS {
                    own.addrs.remove(0);
                }
                own.addrs.push(observed.clone());
            })
        };
        info!(addr = %observed, "advertising an address peers reached us at");
        self.after_merge(vec![changed], None);
    }

    /// Floods changed member records and dials members we just learned of.
    fn after_merge(&self, changed: Vec<MemberRecord>, source: Option<PeerId>) {
        if changed.is_empty() {
            return;
        }
        lock(&self.shared).persist_dirty = true;
        let ids: Vec<PeerId> = changed.iter().map(|r| r.id).collect();
        self.broadcast(&Message::Members(changed), source);
        for id in ids {
            self.ensure_dialing(id);
        }
    }

    fn merge_members(&self, records: Vec<MemberRecord>, source: PeerId) {
        let outcome = lock(&self.shared).table.merge(records);
        if outcome.rejected > 0 {
            warn!(peer = %source, rejected = outcome.rejected, "dropped member records over limits");
        }
        // A refuted self record must also reach the source.
        let source = if outcome.refuted_self {
            None
        } else {
            Some(source)
        };
        self.after_merge(outcome.changed, source);
    }

    fn connection_lost(&self, peer: PeerId, conn: &quinn::Connection, reason: &str) {
        let stats = conn.stats();
        let was_current = {
            let mut shared = lock(&self.shared);
            let slot = shared.peers.entry(peer).or_default();
            slot.bytes_sent_closed += stats.udp_tx.bytes;
            slot.bytes_received_closed += stats.udp_rx.bytes;
            let current = slot
                .link
                .as_ref()
                .is_some_and(|l| l.conn.stable_id() == conn.stable_id());
            if current {
                slot.link = None;
            }
            current
        };
        if !was_current || self.is_shutting_down() {
            return;
        }
        info!(peer = %peer, reason, "peer down");
        self.observer.peer_down(&peer);
        self.ensure_dialing(peer);
    }

    fn is_current(&self, peer: &PeerId, conn: &quinn::Connection) -> bool {
        !self.is_shutting_down()
            && lock(&self.shared)
                .peers
                .get(peer)
                .and_then(|s| s.link.as_ref())
                .is_some_and(|l| l.conn.stable_id() == conn.stable_id())
    }

    fn keys_installed(&self, peer: &PeerId, generation: u64) {
        let mut shared = lock(&self.shared);
        let slot = shared.peers.entry(*peer).or_default();
        slot.last_key_generation = slot.last_key_generation.max(generation);
        slot.current_generation = Some(generation);
        slot.key_installed_at = Some(Instant::now());
    }

    fn digest(&self) -> Digest {
        let members = lock(&self.shared).table.digest();
        let channels: Vec<(String, Arc<dyn ErasedChannel>)> = lock(&self.channels)
            .registered
            .iter()
            .take(MAX_DIGEST_CHANNELS)
            .map(|(name, entry)| (name.clone(), entry.erased.clone()))
            .collect();
        Digest {
            members,
            channels: channels
                .into_iter()
                .map(|(name, ch)| (name, sha256(&ch.encoded())))
                .collect(),
        }
    }

    fn channel_named(&self, name: &str) -> Option<Arc<dyn ErasedChannel>> {
        lock(&self.channels)
            .registered
            .get(name)
            .map(|e| e.erased.clone())
    }

    /// Merges a remote channel payload; keeps it for later if the channel is
    /// not registered here. Returns our encoding after the merge, if registered.
    fn merge_channel(&self, peer: PeerId, name: &str, data: Vec<u8>) -> Option<Vec<u8>> {
        let Some(channel) = self.channel_named(name) else {
            let mut channels = lock(&self.channels);
            let held: usize = channels.pending.values().flatten().map(Vec::len).sum();
            if held + data.len() > MAX_PENDING_BYTES
                || (channels.pending.len() >= MAX_PENDING_CHANNELS
                    && !channels.pending.contains_key(name))
            {
                debug!(
                    channel = name,
                    "not keeping state for an unregistered channel: budget exhausted"
                );
                return None;
            }
            let queue = channels.pending.entry(name.to_string()).or_default();
            if queue.len() >= MAX_PENDING_PER_CHANNEL {
                queue.remove(0);
            }
            queue.push(data);
            return None;
        };
        if let Err(e) = channel.merge_encoded(&data) {
            // An opaque payload we cannot read is the channel owner's problem
            // (e.g. a newer daemon's type); the connection itself is fine.
            warn!(peer = %peer, channel = name, error = %e, "dropping undecodable channel update");
        }
        Some(channel.encoded())
    }

    fn save_state(&self) {
        let Some(dir) = &self.state_dir else { return };
        let persisted = {
            let mut shared = lock(&self.shared);
            shared.persist_dirty = false;
            Persisted {
                own_incarnation: shared.table.local().incarnation,
                records: shared.table.others().cloned().collect(),
                last_remotes: shared
                    .peers
                    .iter()
                    .filter_map(|(id, s)| s.last_remote.map(|a| (*id, a)))
                    .collect(),
            }
        };
        let bytes = postcard::to_stdvec(&persisted).unwrap_or_default();
        if let Err(e) = crate::identity::write_private_file(&dir.join("members"), &bytes) {
            warn!(error = %e, "cannot persist members");
        }
    }
}

async fn accept_loop(node: Arc<Inner>) {
    while let Some(incoming) = node.endpoint.accept().await {
        if node.is_shutting_down() {
            break;
        }
        let this = node.clone();
        node.spawn(this.accept(incoming));
    }
}

async fn dial_loop(node: Arc<Inner>, peer: PeerId) {
    // Lower id dials at once; the higher one waits a little so that two hosts
    // learning of each other at the same time rarely both dial.
    if node.id > peer {
        tokio::time::sleep(jitter(Duration::from_millis(500))).await;
    }
    let mut backoff = BACKOFF_START;
    loop {
        if node.is_shutting_down() {
            return;
        }
        let (candidates, blocked) = {
            let mut shared = lock(&node.shared);
            let blocked = shared.blocked.contains(&peer);
            let Some(record) = shared.table.get(&peer).cloned() else {
                if let Some(slot) = shared.peers.get_mut(&peer) {
                    slot.dialing = false;
                }
                return;
            };
            let slot = shared.peers.entry(peer).or_default();
            if slot.link.is_some() {
                slot.dialing = false;
                return;
            }
            let mut candidates: Vec<String> = Vec::new();
            if let Some(addr) = slot.last_remote {
                candidates.push(addr.to_string());
            }
            for addr in record.addrs {
                if !candidates.contains(&addr) {
                    candidates.push(addr);
                }
            }
            (candidates, blocked)
        };
        if blocked {
            tokio::time::sleep(BLOCKED_POLL).await;
            continue;
        }
        let mut connected = false;
        for candidate in candidates {
            // Re-resolved on every attempt: a member's DNS name may move.
            let Ok(targets) = resolve(&candidate).await else {
                debug!(peer = %peer, addr = %candidate, "cannot resolve");
                continue;
            };
            for target in targets {
                match node.clone().dial_addr(target, Some(peer)).await {
                    Ok(id) if id == peer => connected = true,
                    Ok(_) => {}
                    Err(e) => debug!(peer = %peer, addr = %target, error = %e, "dial failed"),
                }
                if connected {
                    break;
                }
            }
            if connected {
                break;
            }
        }
        if !connected {
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }
}

async fn anti_entropy_loop(node: Arc<Inner>) {
    loop {
        tokio::time::sleep(jitter(node.timers.anti_entropy)).await;
        let target = {
            let shared = lock(&node.shared);
            let up: Vec<(PeerId, mpsc::Sender<Bytes>)> = shared
                .peers
                .iter()
                .filter_map(|(id, s)| s.link.as_ref().map(|l| (*id, l.outbound.clone())))
                .collect();
            if up.is_empty() {
                None
            } else {
                Some(up[rand::thread_rng().gen_range(0..up.len())].clone())
            }
        };
        if let Some((_, outbound)) = target {
            if let Ok(frame) = wire::encode_frame(&Message::Digest(node.digest())) {
                let _ = outbound.try_send(Bytes::from(frame));
            }
        }
    }
}

async fn persist_loop(node: Arc<Inner>) {
    loop {
        tokio::time::sleep(PERSIST_INTERVAL).await;
        if lock(&node.shared).persist_dirty {
            node.save_state();
        }
    }
}

async fn writer_task(mut send: quinn::SendStream, mut outbound: mpsc::Receiver<Bytes>) {
    while let Some(frame) = outbound.recv().await {
        if send.write_chunk(frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Framing only: anything malformed or oversized closes the connection.
async fn reader_task(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    inbound: mpsc::Sender<Message>,
    peer: PeerId,
) {
    loop {
        match transport::read_frame::<Message>(&mut recv).await {
            Ok(Some((message, _))) => {
                if inbound.send(message).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                transport::close(&conn, close_code::NORMAL, "control stream finished");
                return;
            }
            Err(ReadError::Connection(e)) => {
                debug!(peer = %peer, error = %e, "connection closed");
                return;
            }
            Err(e) => {
                warn!(peer = %peer, error = %e, "closing connection: bad frame");
                let reason = format!("protocol error: {e}");
                transport::close(
                    &conn,
                    close_code::PROTOCOL_ERROR,
                    &reason[..reason.len().min(200)],
                );
                return;
            }
        }
    }
}

/// Per-connection protocol driver.
struct LinkCtx {
    node: Arc<Inner>,
    conn: quinn::Connection,
    peer: PeerId,
    /// We dialed this connection, so we initiate key exchanges on it.
    initiator: bool,
    outbound: mpsc::Sender<Bytes>,
}

impl LinkCtx {
    fn send(&self, message: &Message) {
        match wire::encode_frame(message) {
            Ok(frame) => {
                if self.outbound.try_send(Bytes::from(frame)).is_err() {
                    debug!(peer = %self.peer, "outbound queue full; message dropped");
                }
            }
            Err(e) => warn!(peer = %self.peer, error = %e, "not sending message"),
        }
    }

    fn protocol_violation(&self, reason: &str) {
        warn!(peer = %self.peer, reason, "closing connection: protocol violation");
        transport::close(&self.conn, close_code::PROTOCOL_ERROR, reason);
    }

    fn kx_context(&self) -> Option<KxContext> {
        let connection_secret = transport::exported_secret(&self.conn, EKM_KEYS_LABEL).ok()?;
        let (initiator, responder) = if self.initiator {
            (self.node.id, self.peer)
        } else {
            (self.peer, self.node.id)
        };
        Some(KxContext {
            initiator,
            responder,
            connection_secret,
        })
    }

    fn start_key_exchange(&self, pending: &mut Option<(PendingInit, Instant)>) {
        let floor = pending.as_ref().map(|(p, _)| p.generation()).unwrap_or(0);
        let generation = self.node.last_key_generation(&self.peer).max(floor) + 1;
        let (state, init) = keyexchange::initiate(generation);
        *pending = Some((state, Instant::now()));
        debug!(peer = %self.peer, generation, "key exchange: init");
        self.send(&Message::KeyInit(init));
    }

    async fn run(self, mut inbound: mpsc::Receiver<Message>) {
        let timers = &self.node.timers;
        let Some(kx) = self.kx_context() else {
            self.protocol_violation("TLS exporter unavailable");
            self.node
                .connection_lost(self.peer, &self.conn, "no exporter");
            return;
        };
        let mut shutdown = self.node.shutdown.subscribe();
        let mut pending: Option<(PendingInit, Instant)> = None;
        let mut responder = ResponderTrack::default();
        let mut rekey = tokio::time::interval(timers.rekey);
        let mut heartbeat = tokio::time::interval(timers.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rekey.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        // A lost KeyInit/KeyResp (dropped under overload) is retried this fast.
        let kx_retry_after = (timers.heartbeat * 3).max(Duration::from_secs(2));

        // Push-pull anti-entropy right away: a joiner learns the mesh at once.
        self.send(&Message::Digest(self.node.digest()));

        let reason = loop {
            tokio::select! {
                _ = shutdown.changed() => break "shutdown",
                message = inbound.recv() => {
                    let Some(message) = message else { break "connection closed" };
                    last_heard = Instant::now();
                    if let Err(reason) = self.handle(message, &kx, &mut pending, &mut responder) {
                        self.protocol_violation(reason);
                        break "protocol violation";
                    }
                }
                _ = rekey.tick(), if self.initiator => self.start_key_exchange(&mut pending),
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > timers.dead_after {
                        transport::close(&self.conn, close_code::DEAD, "no heartbeat");
                        break "heartbeat timeout";
                    }
                    self.send(&Message::Heartbeat);
                    if self.initiator && pending.as_ref().is_some_and(|(_, t)| t.elapsed() > kx_retry_after) {
                        self.start_key_exchange(&mut pending);
                    }
                }
            }
        };
        self.node.connection_lost(self.peer, &self.conn, reason);
    }

    fn handle(
        &self,
        message: Message,
        kx: &KxContext,
        pending: &mut Option<(PendingInit, Instant)>,
        responder: &mut ResponderTrack,
    ) -> Result<(), &'static str> {
        let node = &self.node;
        match message {
            Message::Heartbeat => {}
            Message::KeyInit(init) => {
                if self.initiator {
                    return Err("KeyInit from the responder side");
                }
                if let Err(e) = responder.accept_init(init.generation) {
                    debug!(peer = %self.peer, error = %e, "ignoring stale KeyInit");
                    return Ok(());
                }
                let (keys, resp) =
                    keyexchange::respond(kx, &init).map_err(|_| "invalid key exchange")?;
                if !node.is_current(&self.peer, &self.conn) {
                    return Ok(());
                }
                let generation = keys.generation;
                // Install before replying: the initiator starts sending with
                // these keys as soon as it has our reply.
                node.observer.install_keys(&self.peer, keys, false);
                node.keys_installed(&self.peer, generation);
                responder.installed(generation);
                self.send(&Message::KeyResp(resp));
            }
            Message::KeyResp(resp) => {
                if !self.initiator {
                    return Err("KeyResp from the initiator side");
                }
                let matches = pending
                    .as_ref()
                    .is_some_and(|(p, _)| p.generation() == resp.generation);
                if !matches {
                    debug!(peer = %self.peer, generation = resp.generation, "ignoring stale KeyResp");
                    return Ok(());
                }
                let Some((state, _)) = pending.take() else {
                    return Ok(());
                };
                let keys = state
                    .complete(kx, &resp)
                    .map_err(|_| "invalid key exchange")?;
                if !node.is_current(&self.peer, &self.conn) {
                    return Ok(());
                }
                let generation = keys.generation;
                node.observer.install_keys(&self.peer, keys, true);
                node.keys_installed(&self.peer, generation);
                self.send(&Message::KeyConfirm { generation });
                debug!(peer = %self.peer, generation, "key exchange complete");
            }
            Message::KeyConfirm { generation } => {
                if self.initiator {
                    return Err("KeyConfirm from the responder side");
                }
                if let Some(generation) = responder.confirm(generation) {
                    if node.is_current(&self.peer, &self.conn) {
                        node.observer.confirm_keys(&self.peer, generation);
                    }
                }
            }
            Message::Members(records) => node.merge_members(records, self.peer),
            Message::MembersFull {
                records,
                want_reply,
            } => {
                let theirs: HashSet<(PeerId, u64, u64)> = records
                    .iter()
                    .map(|r| (r.id, r.incarnation, r.version))
                    .collect();
                node.merge_members(records, self.peer);
                if want_reply {
                    let ours: Vec<MemberRecord> =
                        lock(&node.shared).table.records().cloned().collect();
                    let differs = ours.len() != theirs.len()
                        || ours
                            .iter()
                            .any(|r| !theirs.contains(&(r.id, r.incarnation, r.version)));
                    if differs {
                        self.send(&Message::MembersFull {
                            records: ours,
                            want_reply: false,
                        });
                    }
                }
            }
            Message::ChannelDelta { channel, data } => {
                node.merge_channel(self.peer, &channel, data);
            }
            Message::ChannelFull {
                channel,
                data,
                want_reply,
            } => {
                let theirs = sha256(&data);
                if let Some(ours) = node.merge_channel(self.peer, &channel, data) {
                    if want_reply && sha256(&ours) != theirs {
                        self.send(&Message::ChannelFull {
                            channel,
                            data: ours,
                            want_reply: false,
                        });
                    }
                }
            }
            Message::Digest(digest) => {
                if digest.members != lock(&node.shared).table.digest() {
                    let records = lock(&node.shared).table.records().cloned().collect();
                    self.send(&Message::MembersFull {
                        records,
                        want_reply: true,
                    });
                }
                let theirs: HashMap<String, [u8; 32]> = digest.channels.into_iter().collect();
                for (name, hash) in self.node.digest().channels {
                    if theirs.get(&name) != Some(&hash) {
                        if let Some(channel) = node.channel_named(&name) {
                            self.send(&Message::ChannelFull {
                                channel: name,
                                data: channel.encoded(),
                                want_reply: true,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_hosts_keep_the_same_link() {
        let low = PeerId([1; 32]);
        let high = PeerId([2; 32]);
        // Simultaneous dials: the link dialed by the lower id survives, seen
        // from either side and whichever arrived first.
        for local in [low, high] {
            let remote = if local == low { high } else { low };
            assert!(prefer_new_link(local, remote, (high, 7), (low, 7)));
            assert!(!prefer_new_link(local, remote, (low, 7), (high, 7)));
            // A reconnect by the same dialer replaces the stale link.
            assert!(prefer_new_link(local, remote, (high, 7), (high, 7)));
            // A restarted peer (newer incarnation) always wins.
            assert!(prefer_new_link(local, remote, (low, 7), (high, 8)));
        }
    }
}
