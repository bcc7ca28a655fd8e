//! The running node: the wiring that moves bytes between QUIC and the
//! protocol's state machines ([`crate::handshake`], [`crate::link`]) and
//! keeps the host-wide state (`peers.rs`, `channels.rs`).
//!
//! Per host: one QUIC endpoint, an accept loop, an anti-entropy ticker, a
//! persistence ticker, one dial loop per member we are not connected to
//! (`node/dial.rs`), the relayed-control ticker (`node/relay.rs`: sessions
//! through a third member with peers we cannot connect to) and the
//! address poll (`node/addrs.rs`: reflexive addresses, roaming). Per connection (`node/connection.rs`): a reader task (framing
//! only), a writer task (framing only) and a driver feeding its [`Link`]
//! with messages and timer ticks and carrying out the link's actions. The
//! driver never waits on the network: it queues frames with `try_send`, and
//! whatever is dropped under overload is repaired by anti-entropy or a
//! key-exchange retry, so two hosts can never deadlock on each other's flow
//! control.
//!
//! Who initiates key exchange: the **dialer of the connection**. Every
//! connection has exactly one dialer, and when two hosts dial each other at
//! once only one connection survives (see [`prefer_new_link`]).
//!
//! [`Link`]: crate::link::Link

mod activity;
mod addrs;
pub mod admission;
mod config;
mod conn;
mod connection;
mod dial;
mod expiry;
mod fallback;
mod observer;
mod outbound;
mod relay;
mod replica;
mod secrets;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::channels::Channels;
use crate::journal::JournalSink;
use crate::link::{LinkTimers, Replica};
use crate::membership::{MemberRecord, MembershipTable};
use crate::peers::Peers;
use crate::persist::{self, Persisted};
use crate::state::{now_millis, Channel, DeltaSink, Mergeable, Quota};
use crate::transport::{self, close_code, TransportTimers};
use crate::wire::{self, Message};
use crate::{Error, MeshSecret, PeerId};
use conn::Conn;
use connection::LinkHandle;

pub use crate::peers::{prefer_new_link, PeerState};
pub use activity::Activity;
pub use config::{Config, TCP_PORTS_META};
pub use dial::UNPROVEN_DIAL_PERMITS;
pub use observer::{NoopObserver, PeerInfo, PeerObserver};

const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// How long a join keeps trying a host that does not answer, all tries
/// together (each bounded by the handshakes' timeouts, 1, 2, 4, 8 s apart).
pub const JOIN_PATIENCE: Duration = Duration::from_secs(30);

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
    /// Control traffic with this peer goes through that member (no direct
    /// QUIC link); `None`: direct (or not up).
    pub relay: Option<PeerId>,
    /// The relay's member name, for display.
    pub relay_name: Option<String>,
    /// The direct link is over the TCP fallback (no UDP path worked).
    pub tcp: bool,
}

struct Inner {
    id: PeerId,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    tls: fallback::TcpTls,
    /// Dial the TCP fallback when QUIC fails.
    tcp_fallback: bool,
    /// Where the TCP fallback listens (empty: off, or the port was taken).
    tcp_addrs: Vec<SocketAddr>,
    /// Bound to 0.0.0.0/[::]: advertised addresses are learned from peers.
    listen_unspecified: bool,
    /// Advertised whatever peers see (the specific listen address, `advertise`).
    configured_addrs: Vec<String>,
    /// This host's IP addresses as of the last poll (`node/addrs.rs`).
    local_ips: Mutex<std::collections::BTreeSet<std::net::IpAddr>>,
    observer: Arc<dyn PeerObserver>,
    link_timers: LinkTimers,
    /// The rekey period in ms now ([`Node::set_rekey_interval`]); wins
    /// over `link_timers.rekey`.
    rekey_ms: std::sync::atomic::AtomicU64,
    /// Member records flooded on as news since the start ([`Node::member_updates`]).
    member_updates: std::sync::atomic::AtomicU64,
    anti_entropy: Duration,
    state_dir: Option<PathBuf>,
    channel_quota: Quota,
    quotas: BTreeMap<String, Quota>,
    secret: RwLock<secrets::Secrets>,
    peers: Mutex<Peers<LinkHandle>>,
    channels: Mutex<Channels>,
    /// Relayed control sessions and forwarding (`node/relay.rs`).
    relay: Mutex<relay::RelayState>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Permits for accepted connections whose dialer proved nothing yet.
    unauthenticated: Arc<Mutex<admission::Slots>>,
    /// The same for the TCP fallback's listener, apart: strangers filling
    /// one cannot keep QUIC joins (or TCP ones) out.
    unauthenticated_tcp: Arc<Mutex<admission::Slots>>,
    /// Permits for dials to members never reached (see `dial.rs`).
    unproven_dials: Arc<tokio::sync::Semaphore>,
    /// Where channels report admitted and refused writes ([`Node::set_journal`]).
    journal: std::sync::OnceLock<Arc<dyn JournalSink>>,
    expiry: expiry::ExpiryState,
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

/// `base` plus up to a quarter more, so hosts do not tick in lockstep.
fn jitter(base: Duration) -> Duration {
    let spread = base.as_millis() as u64 / 4 + 1;
    base + Duration::from_millis(rand::thread_rng().gen_range(0..spread))
}

impl Node {
    pub async fn start(cfg: Config) -> Result<Node, Error> {
        let id = cfg.identity.peer_id();
        let link_timers = cfg.link_timers();
        let mut secret = cfg.secret;
        let mut persisted = Persisted::default();
        let mut last_contact = None;
        if let Some(dir) = &cfg.state_dir {
            std::fs::create_dir_all(dir)?;
            match MeshSecret::load(&dir.join("secret"))? {
                Some(saved) => secret = saved,
                None => secret.save(&dir.join("secret"))?,
            }
            persisted = persist::load(dir);
            // A state dir of a build before contact was noted: its
            // members file was saved at the latest then.
            last_contact = persist::load_contact(dir).or_else(|| persist::members_saved_at(dir));
        }
        let endpoint = transport::bind_endpoint(
            &cfg.identity,
            cfg.listen,
            TransportTimers {
                // Past the heartbeat, so QUIC pings only when heartbeats stop
                // (link.rs: the dialer's liveness is this idle timeout).
                keep_alive: (link_timers.dead_after / 2).max(link_timers.heartbeat),
                idle_timeout: link_timers.dead_after,
            },
        )?;
        let local_addr = endpoint.local_addr()?;
        let tls = fallback::TcpTls::new(&cfg.identity)?;
        let tcp_listeners =
            fallback::listen(cfg.tcp_fallback, &cfg.tcp_extra_ports, local_addr).await;
        let tcp_addrs: Vec<SocketAddr> = tcp_listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let meta = fallback::advertise(&cfg.meta, &tcp_addrs, local_addr.port());

        let mut addrs = cfg.advertise.clone();
        if !local_addr.ip().is_unspecified() {
            addrs.insert(0, local_addr.to_string());
        }
        let addrs_configured = addrs.clone();
        // Start time in ms, strictly above the last run's so the new self wins.
        let incarnation = now_millis().max(persisted.own_incarnation + 1);
        let mut own = MemberRecord {
            id,
            name: cfg.name.clone(),
            addrs,
            incarnation,
            version: 0,
            meta,
            signature: Default::default(),
        };
        // The identity registered its key when it was loaded.
        own.sign();
        own.validate()
            .map_err(|e| Error::Protocol(format!("own member record: {e}")))?;
        let mut table = MembershipTable::new(own);
        table.merge(persisted.records.iter().filter(|r| r.id != id).cloned());
        let mut peers = Peers::new(table);
        for (peer, addr) in persisted.last_remotes {
            if peers.table.get(&peer).is_some() && peer != id {
                peers.slots.entry(peer).or_default().last_remote = Some(addr);
            }
        }

        let inner = Arc::new_cyclic(|this| Inner {
            id,
            endpoint,
            local_addr,
            tls,
            tcp_fallback: cfg.tcp_fallback,
            tcp_addrs,
            listen_unspecified: local_addr.ip().is_unspecified(),
            configured_addrs: addrs_configured,
            local_ips: Mutex::new(mesh_sys::ifaddrs::local_ips().unwrap_or_default()),
            observer: cfg.observer,
            link_timers,
            rekey_ms: (link_timers.rekey.as_millis() as u64).into(),
            member_updates: 0.into(),
            anti_entropy: cfg.anti_entropy_interval.max(Duration::from_millis(10)),
            state_dir: cfg.state_dir,
            channel_quota: cfg.channel_quota,
            quotas: cfg.channel_quotas,
            secret: RwLock::new(secrets::Secrets::new(
                secret,
                persisted.secret_epoch,
                persisted
                    .previous_secrets
                    .iter()
                    .filter_map(|t| t.parse().ok())
                    .collect(),
            )),
            peers: Mutex::new(peers),
            channels: Mutex::new(Channels::default()),
            relay: Mutex::new(relay::RelayState::new(id, link_timers)),
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            unauthenticated: Default::default(),
            unauthenticated_tcp: Default::default(),
            unproven_dials: Arc::new(tokio::sync::Semaphore::new(dial::UNPROVEN_DIAL_PERMITS)),
            journal: Default::default(),
            expiry: expiry::ExpiryState::new(cfg.expiry_interval, last_contact),
            this: this.clone(),
        });
        info!(peer = %id, addr = %local_addr, incarnation, "gossip node started");

        let node = Node { inner };
        node.inner.spawn(accept_loop(node.inner.clone()));
        for listener in tcp_listeners {
            node.inner
                .spawn(fallback::accept_loop(node.inner.clone(), listener));
        }
        node.inner.spawn(anti_entropy_loop(node.inner.clone()));
        node.inner.spawn(persist_loop(node.inner.clone()));
        node.inner.spawn(relay::relay_loop(node.inner.clone()));
        node.inner.spawn(addrs::addrs_loop(node.inner.clone()));
        node.inner.spawn(expiry::expiry_loop(node.inner.clone()));
        let known: Vec<PeerId> = lock(&node.inner.peers)
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

    /// Where the TCP fallback listens (empty when it is off).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.inner.tcp_addrs.clone()
    }

    /// The current mesh secret as a join token.
    pub fn token(&self) -> String {
        self.inner.secret().to_token()
    }

    /// Revokes the current secret: a fresh one at the next epoch goes to
    /// every connected member over its authenticated connection (see
    /// `node/secrets.rs` for who may still use the old one). Returns the new
    /// join token.
    pub fn rotate_secret(&self) -> Result<String, Error> {
        let (epoch, token) = {
            let mut secrets = self.inner.secrets_mut();
            let next = secrets.rotate();
            (secrets.epoch, next.to_token())
        };
        self.inner.save_secrets()?;
        info!(epoch, "rotated the mesh secret");
        self.inner.broadcast(
            &Message::Secret {
                epoch,
                token: wire::SecretToken(token.clone()),
            },
            None,
        );
        Ok(token)
    }

    /// Rotations the current secret is the result of.
    pub fn secret_epoch(&self) -> u64 {
        self.inner.secrets().epoch
    }

    /// Joins the mesh `addr` (`host:port`) belongs to, adopting `token`'s
    /// secret (persisted in the state dir). Returns the id of the host we
    /// joined through; the rest of the mesh is learned from it and dialed in
    /// the background. A host that does not answer (busy, or starting) is
    /// tried again for up to [`JOIN_PATIENCE`]; an answer that refuses is
    /// final.
    pub async fn join(&self, addr: &str, token: &MeshSecret) -> Result<PeerId, Error> {
        if self.inner.is_shutting_down() {
            return Err(Error::Shutdown);
        }
        let adopted = self.inner.secrets_mut().adopt_token(token.clone());
        if adopted {
            info!("adopted the mesh secret of the join token");
        }
        self.inner.save_secrets()?;
        let targets = dial::resolve(addr).await?;
        let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
        let mut pause = Duration::from_secs(1);
        loop {
            // A round gets what is left of the patience, so the join ends
            // within it whatever the handshakes' timeouts.
            let round = tokio::time::timeout_at(deadline, self.join_once(addr, &targets));
            let result = round.await.unwrap_or_else(|_| {
                Err(Error::Unreachable {
                    addr: addr.to_string(),
                    source: format!("no answer within {JOIN_PATIENCE:?}").into(),
                })
            });
            match result {
                Err(e @ Error::Unreachable { .. })
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    info!(%addr, error = %e, "no answer to the join yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(8));
                    if self.inner.is_shutting_down() {
                        return Err(Error::Shutdown);
                    }
                }
                result => return result,
            }
        }
    }

    /// One round of [`Self::join`]: each address over QUIC, then TCP.
    async fn join_once(&self, addr: &str, targets: &[SocketAddr]) -> Result<PeerId, Error> {
        let mut last_error = None;
        for target in targets {
            match self.inner.clone().dial_addr(*target, None).await {
                Ok(peer) => {
                    info!(via = %peer, addr = %target, "joined mesh");
                    return Ok(peer);
                }
                Err(e) => last_error = Some(e),
            }
        }
        // No UDP path: the same port over TCP, when the error says the
        // host could not be reached (a refusal is an answer).
        if matches!(last_error, Some(Error::Unreachable { .. })) {
            match self.inner.clone().join_tcp(targets).await {
                Some(Err(Error::Unreachable { .. })) | None => {}
                Some(answer) => return answer,
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Resolve {
            addr: addr.to_string(),
            reason: "no addresses".into(),
        }))
    }

    /// Sets (`None`: removes) one key of this host's member metadata; the
    /// record is re-signed with a new version and gossiped. A value the
    /// record could not carry (over the metadata limits) is refused with a
    /// warning; an unchanged value costs nothing.
    pub fn set_meta(&self, key: &str, value: Option<String>) {
        let changed = {
            let mut peers = lock(&self.inner.peers);
            let own = peers.table.local();
            if own.meta.get(key) == value.as_ref() {
                return;
            }
            let mut changed = own.clone();
            changed.version = changed.version.saturating_add(1);
            match &value {
                Some(value) => changed.meta.insert(key.to_string(), value.clone()),
                None => changed.meta.remove(key),
            };
            if let Err(e) = changed.check_size() {
                warn!(key, error = %e, "member metadata not advertised");
                return;
            }
            peers.table.update_local(|own| match value {
                Some(value) => {
                    own.meta.insert(key.to_string(), value);
                }
                None => {
                    own.meta.remove(key);
                }
            })
        };
        debug!(key, "own member metadata changed");
        self.inner.after_merge(vec![changed], None);
    }

    /// Registers (or returns the already registered) channel `name`.
    /// `initial` is merged into it and sent to the mesh.
    /// Registering the same name with another type replaces the old channel.
    /// Every writer is held to the channel's quota (`Config::channel_quota`,
    /// or its entry in `Config::channel_quotas`).
    pub fn channel<S: Mergeable>(&self, name: &str, mut initial: S) -> Channel<S> {
        let mut channels = lock(&self.inner.channels);
        if let Some(existing) = channels.get::<S>(name) {
            drop(channels);
            existing.update(initial);
            return existing;
        }
        initial.limit_writers(name, self.inner.quota(name));
        let sink: Weak<dyn DeltaSink> = self.inner.this.clone();
        let channel = channels.register(name, initial, sink);
        drop(channels);
        let state = channel.erased().encoded_parts(wire::MAX_PART_LEN);
        self.inner.broadcast_delta(name, state);
        channel
    }

    /// Test hook simulating a partition: closes connections with `peers` and
    /// refuses/does not dial them until [`Node::unblock_all`].
    pub fn block_peers(&self, peers: &[PeerId]) {
        let mut table = lock(&self.inner.peers);
        for link in table.block(peers) {
            link.conn
                .close(close_code::BLOCKED, "traffic with this host is blocked");
        }
    }

    /// Test hook simulating a firewall between this host and `peers`:
    /// closes the direct connections and refuses them (dial loops keep
    /// trying) until [`Node::unblock_all`]; control through a relay stays
    /// allowed (see `gossip::relay`).
    pub fn block_direct(&self, peers: &[PeerId]) {
        let mut table = lock(&self.inner.peers);
        table.direct_blocked.extend(peers.iter().copied());
        for peer in peers {
            if let Some(link) = table.slots.get(peer).and_then(|s| s.link.as_ref()) {
                link.handle
                    .conn
                    .close(close_code::BLOCKED, "direct traffic blocked");
            }
        }
    }

    /// Lifts every block and dials again whoever needs it.
    pub fn unblock_all(&self) {
        let redial = lock(&self.inner.peers).unblock_all();
        for peer in redial {
            self.inner.spawn_dial_loop(peer);
        }
    }

    /// Closes every connection and the endpoint and stops all tasks. No
    /// observer callback is made afterwards.
    pub async fn shutdown(&self) {
        if self.inner.shutdown.send_replace(true) {
            return;
        }
        // Before the links close: the contact is what they were.
        self.inner.note_contact(true);
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

    /// Reports every write the channels admit or refuse to `sink` from now
    /// on (see [`crate::journal`]); set once, before channels are opened so
    /// state held for them is reported too. False if one was set already.
    pub fn set_journal(&self, sink: Arc<dyn JournalSink>) -> bool {
        self.inner.journal.set(sink).is_ok()
    }

    /// Peers a dial loop currently runs for (diagnostics and tests).
    pub fn dialing(&self) -> usize {
        lock(&self.inner.peers).dialing()
    }

    /// Member records (this host's and others') taken as news and flooded
    /// on since the start. Each costs a message on every link, so while
    /// nothing joins, leaves or changes this must stand still.
    pub fn member_updates(&self) -> u64 {
        self.inner
            .member_updates
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl DeltaSink for Inner {
    fn broadcast_delta(&self, channel: &str, parts: Vec<Vec<u8>>) {
        for data in parts {
            let message = Message::ChannelDelta {
                channel: channel.to_string(),
                data,
            };
            self.broadcast(&message, None);
        }
    }

    fn journal(&self) -> Option<Arc<dyn JournalSink>> {
        self.journal.get().cloned()
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

    /// The per-writer quota of channel `name`.
    fn quota(&self, name: &str) -> Quota {
        self.quotas.get(name).copied().unwrap_or(self.channel_quota)
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn secret(&self) -> MeshSecret {
        self.secrets().current
    }

    fn secrets(&self) -> secrets::Secrets {
        self.secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn secrets_mut(&self) -> std::sync::RwLockWriteGuard<'_, secrets::Secrets> {
        self.secret.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the current secret (`secret`) and the rotation state (in
    /// the members file).
    fn save_secrets(&self) -> Result<(), Error> {
        if let Some(dir) = &self.state_dir {
            self.secret().save(&dir.join("secret"))?;
        }
        self.save_state();
        Ok(())
    }

    /// A peer's `(epoch, secret)`: adopted if newer (and re-sent to the
    /// others, so it spreads beyond the rotating host's links).
    fn offer_secret(&self, from: PeerId, epoch: u64, token: &str) {
        let Ok(secret) = token.parse::<MeshSecret>() else {
            crate::signed::note_rejection(from, "secret", "unreadable token");
            return;
        };
        if !self.secrets_mut().offer(epoch, secret) {
            return;
        }
        info!(peer = %from, epoch, "adopted a rotated mesh secret");
        if let Err(e) = self.save_secrets() {
            warn!(error = %e, "cannot save the rotated mesh secret");
        }
        self.broadcast(
            &Message::Secret {
                epoch,
                token: wire::SecretToken(token.to_string()),
            },
            Some(from),
        );
    }

    /// Whether direct connections with `peer` are refused.
    fn is_blocked(&self, peer: &PeerId) -> bool {
        let peers = lock(&self.peers);
        peers.is_blocked(peer) || peers.direct_blocked.contains(peer)
    }

    fn own_record(&self) -> MemberRecord {
        lock(&self.peers).table.local().clone()
    }

    fn last_key_generation(&self, peer: &PeerId) -> u64 {
        lock(&self.peers).last_key_generation(peer)
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
        let peers = lock(&self.peers);
        for (peer, link) in peers.up_links() {
            if Some(peer) == except {
                continue;
            }
            if link.outbound.try_send(frame.clone()).is_err() {
                debug!(peer = %peer, "outbound queue full; anti-entropy will repair");
            }
        }
    }

    /// Starts a dial loop for `peer` unless it needs none (see
    /// [`Peers::claim_dial`]).
    fn ensure_dialing(&self, peer: PeerId) {
        if self.is_shutting_down() {
            return;
        }
        if lock(&self.peers).claim_dial(peer) {
            self.spawn_dial_loop(peer);
        }
    }

    /// For a peer already claimed for dialing.
    fn spawn_dial_loop(&self, peer: PeerId) {
        if self.is_shutting_down() {
            return;
        }
        if let Some(this) = self.this.upgrade() {
            self.spawn(dial::dial_loop(this, peer));
        }
    }

    /// Floods changed member records and dials members we just learned of.
    fn after_merge(&self, changed: Vec<MemberRecord>, source: Option<PeerId>) {
        if changed.is_empty() {
            return;
        }
        lock(&self.peers).persist_dirty = true;
        self.member_updates
            .fetch_add(changed.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<PeerId> = changed.iter().map(|r| r.id).collect();
        // A joiner's whole table can change at once: in parts, like a full state.
        for part in wire::split_by_size(changed, wire::MAX_PART_LEN) {
            self.broadcast(&Message::Members(part), source);
        }
        for id in ids {
            self.ensure_dialing(id);
        }
    }

    fn merge_members(&self, records: Vec<MemberRecord>, source: PeerId) {
        let outcome = lock(&self.peers).table.merge(records);
        if let Some((subject, reason)) = &outcome.first_rejection {
            crate::signed::note_rejection(
                source,
                "members",
                &format!(
                    "{} member record(s), first about {subject}: {reason}",
                    outcome.rejected
                ),
            );
        }
        // A refuted self record must also reach the source.
        let source = if outcome.refuted_self {
            None
        } else {
            Some(source)
        };
        self.after_merge(outcome.changed, source);
    }

    fn connection_lost(&self, peer: PeerId, conn: &Conn, reason: &str) {
        let (sent, received) = conn.bytes();
        {
            let mut peers = lock(&self.peers);
            let was_current = peers.link_lost(peer, conn.stable_id(), sent, received);
            if !was_current || self.is_shutting_down() {
                return;
            }
            info!(peer = %peer, reason, tcp = conn.is_tcp(), "peer down");
            if conn.is_tcp() {
                self.observer.tcp_link(&peer, None);
            }
            // Under the lock that admits links: see `register`.
            self.observer.peer_down(&peer);
        }
        self.relay_link_lost(peer);
        self.ensure_dialing(peer);
    }

    fn is_current(&self, peer: &PeerId, conn: &Conn) -> bool {
        !self.is_shutting_down() && lock(&self.peers).is_current(peer, conn.stable_id())
    }

    fn save_state(&self) {
        let Some(dir) = &self.state_dir else { return };
        let mut persisted = Persisted::capture(&mut lock(&self.peers));
        let secrets = self.secrets();
        persisted.secret_epoch = secrets.epoch;
        persisted.previous_secrets = secrets.previous.iter().map(|s| s.to_token()).collect();
        if let Err(e) = persist::save(dir, &persisted) {
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

async fn anti_entropy_loop(node: Arc<Inner>) {
    loop {
        tokio::time::sleep(jitter(node.anti_entropy)).await;
        let target: Option<(PeerId, outbound::Outbound)> = {
            let peers = lock(&node.peers);
            let up: Vec<(PeerId, &LinkHandle)> = peers.up_links().collect();
            if up.is_empty() {
                None
            } else {
                let (peer, link) = up[rand::thread_rng().gen_range(0..up.len())];
                Some((peer, link.outbound.clone()))
            }
        };
        if let Some((peer, outbound)) = target {
            let digest = (&*node).digest_for(&peer);
            if let Ok(frame) = wire::encode_frame(&Message::Digest(digest)) {
                let _ = outbound.try_send(Bytes::from(frame));
            }
        }
    }
}

async fn persist_loop(node: Arc<Inner>) {
    loop {
        tokio::time::sleep(PERSIST_INTERVAL).await;
        if lock(&node.peers).persist_dirty {
            node.save_state();
        }
        node.note_contact(false);
    }
}
