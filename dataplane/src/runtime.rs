//! The thin driver around [`Engine`]. The hot path runs on dedicated OS
//! threads doing non-blocking I/O and sleeping in poll(2), never on tokio
//! tasks (no per-packet wakeups or task switches): `Options::workers`
//! workers (see [`crate::worker`]), each serving both directions for its
//! share of the flows — its receive socket of a `SO_REUSEPORT` group
//! (`recvmmsg` + UDP GRO → open → TAP write) and its queue of every
//! network's multi-queue TAP (read, TSO super-segments split by
//! [`crate::offload`] → switch + seal → `sendmmsg` of UDP GSO groups).
//!
//! Housekeeping (key expiry, MAC ageing) stays a tokio task of the runtime
//! `start` is called in. All switching and crypto decisions are the engine's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::keypair::SessionKeys;
use crate::stats::Stats;
use crate::tap::{self, Tap};
use crate::udp::UdpIo;
use crate::worker::{self, TapTable, Wake, WorkerIo};
use crate::{Error, NetworkId, PeerIdx};

/// How often expired keypairs and aged MAC entries are swept.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);
/// How long `remove_network` waits for the workers to let go of its TAP.
const DETACH_WAIT: Duration = Duration::from_secs(2);

/// How the data plane runs. Offloads are all on by default; each can be
/// switched off for operations (a kernel or driver that misbehaves) and
/// for A/B measurements. The daemon decides; this crate reads no environment.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct Options {
    /// Open TAPs with a `virtio_net_hdr` and TSO/checksum offloads, so one
    /// read may be a 64 KB TCP super-segment. Off: plain TAPs, one frame
    /// per read and write.
    pub offload: bool,
    /// Send runs of equal-sized datagrams to one endpoint as one UDP GSO
    /// message (`UDP_SEGMENT`), if the kernel supports it.
    pub gso: bool,
    /// Merge received TCP segments of one flow into one GSO write to the
    /// TAP (needs `offload`).
    pub coalesce: bool,
    /// Worker threads, each serving both directions for its share of the
    /// flows (one TAP queue and one receive socket each). Default: one per
    /// core. Peers should run the same number for an even spread (any
    /// number works and never reorders a flow).
    pub workers: usize,
    /// After traffic, a worker keeps polling (yielding the CPU between
    /// tries) this long before it sleeps in poll(2): the next packet of a
    /// request/response exchange is usually closer than a wake-up. Zero:
    /// sleep at once.
    pub busy_poll: Duration,
}

/// Default of [`Options::busy_poll`].
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

impl Default for Options {
    fn default() -> Options {
        Options {
            offload: true,
            gso: true,
            coalesce: true,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

/// Cheap-clone handle to a running data plane. Send + Sync.
#[derive(Clone, Debug)]
pub struct Dataplane {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    options: Options,
    local_addr: SocketAddr,
    /// Every network's TAP queues, read by the workers.
    taps: Arc<TapTable>,
    wakes: Vec<Arc<Wake>>,
    /// The data-port socket probes are sent from.
    probe_socket: Arc<UdpIo>,
    tasks: Mutex<Tasks>,
    shut_down: AtomicBool,
    /// QoS losses of shaping since replaced (see [`Dataplane::qos_losses`]).
    retired_losses: Mutex<std::collections::BTreeMap<(NetworkId, Option<crate::switch::Mac>), u64>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("local_addr", &self.local_addr)
            .field("workers", &self.wakes.len())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Tasks {
    housekeeping: Option<tokio::task::JoinHandle<()>>,
    paths: Option<tokio::task::JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Inner {
    fn stop_tasks(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = tasks.housekeeping.take() {
            task.abort();
        }
        if let Some(task) = tasks.paths.take() {
            task.abort();
        }
        for wake in &self.wakes {
            wake.stop.store(true, Ordering::Release);
            wake.kick();
        }
        for thread in tasks.workers.drain(..) {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        self.taps
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Publishes a TAP table change and waits (bounded) until every worker
    /// switched to it, so a removed TAP is really closed on return.
    fn publish_taps(&self) {
        let version = self.taps.version.fetch_add(1, Ordering::AcqRel) + 1;
        for wake in &self.wakes {
            wake.kick();
        }
        let deadline = Instant::now() + DETACH_WAIT;
        while self.wakes.iter().any(|w| {
            !w.stop.load(Ordering::Acquire) && w.seen_version.load(Ordering::Acquire) < version
        }) {
            if Instant::now() >= deadline {
                tracing::warn!("data-plane workers slow to pick up a network change");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Dataplane {
    /// Binds the data-plane UDP sockets and starts the workers. Must be
    /// called inside a tokio runtime (housekeeping runs on it); the packet
    /// paths run on their own threads.
    pub fn start(udp_bind: SocketAddr, options: Options) -> Result<Dataplane, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let workers = options.workers.max(1);
        let bind_error = |source| Error::Bind {
            addr: udp_bind,
            source,
        };
        let receivers: Vec<Arc<UdpIo>> = UdpIo::bind_group(udp_bind, workers, options.gso)
            .map_err(bind_error)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let local_addr = receivers[0].local_addr()?;
        let engine = Arc::new(Engine::new(Instant::now()));
        let taps = Arc::new(TapTable::default());
        let mut wakes = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for (index, rx) in receivers.iter().enumerate() {
            // One worker: the receive socket sends too (source port = ours).
            let tx = if workers == 1 {
                rx.clone()
            } else {
                Arc::new(
                    UdpIo::bind_sender(udp_bind.ip(), index, workers, options.gso)
                        .map_err(bind_error)?,
                )
            };
            let wake = Arc::new(Wake::new()?);
            let io = WorkerIo {
                index,
                engine: engine.clone(),
                taps: taps.clone(),
                rx: rx.clone(),
                tx,
                wake: wake.clone(),
                coalesce: options.coalesce,
                busy_poll: options.busy_poll,
            };
            let thread = std::thread::Builder::new()
                .name(format!("mesh-dp{index}"))
                .spawn(move || worker::run(io))?;
            wakes.push(wake);
            threads.push(thread);
        }
        let housekeeping = runtime.spawn({
            let engine = engine.clone();
            async move {
                let mut ticks = tokio::time::interval(HOUSEKEEPING_INTERVAL);
                loop {
                    ticks.tick().await;
                    engine.housekeeping(Instant::now());
                }
            }
        });
        // Probes leave from the data port (receive socket 0): the address
        // peers observe, and the one a NAT maps, is the data port's.
        let paths = runtime.spawn(run_paths(engine.clone(), receivers[0].clone()));
        tracing::info!(
            %local_addr,
            gro_segments = receivers[0].gro_segments(),
            gso = receivers[0].gso_enabled(),
            ?options,
            "data plane started"
        );
        Ok(Dataplane {
            inner: Arc::new(Inner {
                engine,
                options,
                local_addr,
                taps,
                wakes,
                probe_socket: receivers[0].clone(),
                tasks: Mutex::new(Tasks {
                    housekeeping: Some(housekeeping),
                    paths: Some(paths),
                    workers: threads,
                }),
                shut_down: AtomicBool::new(false),
                retired_losses: Mutex::new(Default::default()),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The sans-IO core, for inspection in tests and tools.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Opens (creating if absent) the TAP `tap_name` with one queue per
    /// worker and switches frames of `net` between it and the member peers.
    pub fn add_network(&self, net: NetworkId, tap_name: &str) -> Result<(), Error> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        if self.inner.engine.has_network(net) {
            return Err(Error::NetworkExists(net));
        }
        let queues = open_queues(tap_name, self.inner.options.offload, self.inner.wakes.len())?;
        if !self.inner.engine.add_network(net) {
            return Err(Error::NetworkExists(net));
        }
        let (vnet_hdr, offload, count) = (
            queues[0].has_vnet_hdr(),
            queues[0].has_offload(),
            queues.len(),
        );
        self.inner
            .taps
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net, queues);
        self.inner.publish_taps();
        tracing::info!(
            ?net,
            tap_name,
            vnet_hdr,
            offload,
            queues = count,
            "network attached"
        );
        Ok(())
    }

    /// Stops switching `net` and closes its TAP.
    pub fn remove_network(&self, net: NetworkId) {
        let removed = self
            .inner
            .taps
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&net);
        if removed.is_some() {
            self.inner.publish_taps();
        }
        self.inner.engine.remove_network(net);
        tracing::info!(?net, "network detached");
    }

    /// Sets (or with `None` removes) the delay, jitter and loss of `net`
    /// (see [`crate::impair`]). A network without shaping pays nothing.
    pub fn set_shaping(&self, net: NetworkId, shaping: Option<crate::impair::Shaping>) {
        let old = {
            let mut table = self
                .inner
                .taps
                .shaping
                .write()
                .unwrap_or_else(|p| p.into_inner());
            match shaping {
                Some(s) => table.insert(net, Arc::new(s)),
                None => table.remove(&net),
            }
        };
        if let Some(old) = old {
            let (lost, by_mac) = old.losses();
            let mut retired = self
                .inner
                .retired_losses
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *retired.entry((net, None)).or_default() += lost;
            for (mac, n) in by_mac {
                *retired.entry((net, Some(mac))).or_default() += n;
            }
        }
        self.inner.publish_taps();
    }

    /// Frames lost on purpose by QoS since the start: per network (`None`)
    /// and per source container MAC.
    pub fn qos_losses(
        &self,
    ) -> std::collections::BTreeMap<(NetworkId, Option<crate::switch::Mac>), u64> {
        let mut out = self
            .inner
            .retired_losses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let table = self
            .inner
            .taps
            .shaping
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for (net, s) in table.iter() {
            let (lost, by_mac) = s.losses();
            *out.entry((*net, None)).or_default() += lost;
            for (mac, n) in by_mac {
                *out.entry((*net, Some(mac))).or_default() += n;
            }
        }
        out
    }

    pub fn upsert_peer(&self, peer: PeerIdx, endpoint: SocketAddr, networks: &[NetworkId]) {
        self.inner
            .engine
            .upsert_peer(peer, Some(endpoint), networks);
    }

    pub fn remove_peer(&self, peer: PeerIdx) {
        self.inner.engine.remove_peer(peer);
    }

    /// See [`Engine::set_mtu_cap`].
    pub fn set_mtu_cap(&self, peer: PeerIdx, cap: u32) {
        self.inner.engine.set_mtu_cap(peer, cap);
    }

    /// See [`Engine::set_peer_down`].
    pub fn set_peer_down(&self, peer: PeerIdx, down: bool) {
        self.inner.engine.set_peer_down(peer, down);
    }

    pub fn install_keys(&self, peer: PeerIdx, keys: SessionKeys, send_now: bool) {
        self.inner
            .engine
            .install_keys(peer, &keys, send_now, Instant::now());
    }

    /// See [`Engine::set_network_secret`].
    pub fn set_network_secret(&self, net: NetworkId, secret: Option<[u8; 32]>) {
        self.inner.engine.set_network_secret(net, secret);
    }

    /// See [`Engine::set_pinned_macs`].
    pub fn set_pinned_macs(&self, pins: crate::PinSet) {
        self.inner.engine.set_pinned_macs(pins);
    }

    pub fn confirm_keys(&self, peer: PeerIdx, generation: u64) {
        self.inner.engine.confirm_keys(peer, generation);
    }

    pub fn stats(&self) -> Stats {
        self.inner.engine.stats(Instant::now())
    }

    /// Since each peer's path last heard from it (peers never heard are
    /// left out).
    pub fn last_heard(&self) -> std::collections::BTreeMap<PeerIdx, Duration> {
        self.inner.engine.last_heard(Instant::now())
    }

    /// Other data addresses of `peer` (its `data_addrs`), probed as
    /// candidates next to the endpoint of `upsert_peer`.
    pub fn set_candidates(&self, peer: PeerIdx, addrs: &[SocketAddr]) {
        self.inner.engine.set_candidates(peer, addrs);
    }

    /// Where datagrams reach `peer` over its TCP fallback link (see
    /// [`crate::path::PathState::set_fallback`]).
    pub fn set_fallback(&self, peer: PeerIdx, addr: Option<SocketAddr>) {
        self.inner.engine.set_fallback(peer, addr);
    }

    /// Tags naming hosts on relay envelopes (see [`crate::wire::HostTag`]).
    pub fn set_local_tag(&self, tag: crate::wire::HostTag) {
        self.inner.engine.set_local_tag(tag);
    }

    pub fn set_peer_tag(&self, peer: PeerIdx, tag: crate::wire::HostTag) {
        self.inner.engine.set_peer_tag(peer, tag);
    }

    /// See [`Engine::probes_sent`].
    pub fn probes_sent(&self) -> crate::engine::ProbeCounts {
        self.inner.engine.probes_sent()
    }

    /// See [`Engine::active_paths`].
    pub fn active_paths(&self) -> usize {
        self.inner.engine.active_paths(Instant::now())
    }

    /// See [`Engine::set_local_nat`] (the daemon knows which interface
    /// addresses a wildcard-bound socket stands for).
    pub fn set_local_nat(&self, nat: bool) {
        self.inner.engine.set_local_nat(nat);
    }

    /// See [`Engine::set_peer_nat`].
    pub fn set_peer_nat(&self, peer: PeerIdx, nat: bool) {
        self.inner.engine.set_peer_nat(peer, nat);
    }

    /// See [`Engine::set_peer_compact_envelopes`].
    pub fn set_peer_compact_envelopes(&self, peer: PeerIdx, compact: bool) {
        self.inner.engine.set_peer_compact_envelopes(peer, compact);
    }

    /// Where peers saw this host's data port (from their probe answers).
    pub fn reflexive_addrs(&self) -> Vec<SocketAddr> {
        self.inner.engine.reflexive_addrs()
    }

    /// Forgets reflexive addresses at these IPs (they left the interfaces).
    pub fn forget_reflexive(&self, ips: &[std::net::IpAddr]) {
        self.inner.engine.forget_reflexive(ips);
    }

    /// Sends `count` probes `interval` apart over the peer's current path
    /// and reports how many came back and their round trips (waiting up to
    /// a second after the last).
    pub fn probe_burst(
        &self,
        peer: PeerIdx,
        count: u32,
        interval: Duration,
    ) -> impl std::future::Future<Output = crate::BurstReport> + Send + 'static {
        let engine = self.inner.engine.clone();
        let socket = self.inner.probe_socket.clone();
        async move {
            let mut pool = crate::pool::BufPool::new(crate::tap::MAX_TAP_FRAME, 1);
            let mut ids = Vec::new();
            let mut sent = 0;
            for i in 0..count {
                if i > 0 {
                    tokio::time::sleep(interval).await;
                }
                sent += 1;
                match engine.send_burst_probe(peer, Instant::now(), &mut pool) {
                    Ok((id, outgoing)) => {
                        ids.push(id);
                        let batch = [outgoing];
                        socket.send_batch(&batch, |_, error| {
                            worker::count_send_error(&engine, &error)
                        });
                        let [outgoing] = batch;
                        pool.put(outgoing.datagram);
                    }
                    Err(reason) => tracing::debug!(peer, ?reason, "burst probe not sent"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut report = engine.burst_result(&ids);
            report.sent = sent;
            report
        }
    }

    /// One probe over the peer's current path: its round trip, `None` if
    /// no answer came within `timeout`, an error if it could not be sent
    /// (no key, no endpoint). For a question asked once, such as whether a
    /// silent host is still there.
    pub fn probe_once(
        &self,
        peer: PeerIdx,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Option<Duration>, crate::DropReason>> + Send + 'static
    {
        let engine = self.inner.engine.clone();
        let socket = self.inner.probe_socket.clone();
        async move {
            let mut pool = crate::pool::BufPool::new(crate::tap::MAX_TAP_FRAME, 1);
            let (id, outgoing) = engine.send_burst_probe(peer, Instant::now(), &mut pool)?;
            let batch = [outgoing];
            socket.send_batch(&batch, |_, error| worker::count_send_error(&engine, &error));
            let deadline = Instant::now() + timeout;
            let rtt = loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Some(rtt) = engine.burst_rtt(id) {
                    break Some(rtt);
                }
                if Instant::now() >= deadline {
                    break None;
                }
            };
            engine.burst_result(&[id]);
            Ok(rtt)
        }
    }

    /// Stops every thread and task and closes the TAPs. The UDP socket closes
    /// when the last handle is dropped. Idempotent.
    pub fn shutdown(&self) {
        if !self.inner.shut_down.swap(true, Ordering::AcqRel) {
            self.inner.stop_tasks();
            tracing::info!(local_addr = %self.inner.local_addr, "data plane shut down");
        }
    }
}

/// Drives every peer's path state machine: probes out of the data port,
/// route changes into the engine's tables.
async fn run_paths(engine: Arc<Engine>, socket: Arc<UdpIo>) {
    let mut pool = crate::pool::BufPool::new(crate::tap::MAX_TAP_FRAME, 16);
    let mut out = Vec::new();
    loop {
        let next = engine.poll_paths(Instant::now(), &mut pool, &mut out);
        if !out.is_empty() {
            socket.send_batch(&out, |_, error| {
                // A probe larger than the local interface is how the MTU
                // search learns the local limit: not a drop.
                if error.raw_os_error() == Some(libc::EMSGSIZE) {
                    tracing::trace!("path MTU probe over the local MTU");
                } else {
                    worker::count_send_error(&engine, &error);
                }
            });
            for outgoing in out.drain(..) {
                pool.put(outgoing.datagram);
            }
        }
        // Until a path's next timer, or sooner when something its timers
        // do not foresee happened (a pong, new candidates, keys), and at
        // least once a second: traffic for an idle peer is noticed here.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let polled = Instant::now();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = engine.paths_due() => {}
        }
        // Answers arriving together are taken in one pass.
        tokio::time::sleep_until((polled + Duration::from_millis(20)).into()).await;
    }
}

/// Opens `count` queues of the TAP `name` (fewer if the device is not
/// multi-queue: then every worker writes to its one queue and one reads it).
fn open_queues(name: &str, offload: bool, count: usize) -> Result<Vec<Arc<Tap>>, Error> {
    let tap_error = |source| Error::Tap {
        name: name.to_string(),
        source,
    };
    let first = tap::open(name, offload).map_err(tap_error)?;
    let mut queues = vec![Arc::new(first)];
    while queues.len() < count && queues[0].is_multi_queue() {
        match tap::open_queue(&queues[0]) {
            Ok(queue) => queues.push(Arc::new(queue)),
            Err(error) => {
                tracing::debug!(name, %error, "no more TAP queues");
                break;
            }
        }
    }
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With nothing to probe, the path loop runs once a second (it ran
    /// every 100 ms), on tokio's virtual clock.
    #[tokio::test(start_paused = true)]
    async fn an_idle_path_loop_runs_once_a_second() {
        let engine = Arc::new(Engine::new(Instant::now()));
        let socket = Arc::new(UdpIo::bind("127.0.0.1:0".parse().unwrap(), false).unwrap());
        let task = tokio::spawn(run_paths(engine.clone(), socket));
        tokio::time::sleep(Duration::from_secs(60)).await;
        task.abort();
        let passes = engine.path_passes();
        assert!((55..=62).contains(&passes), "{passes} passes in 60 s");
    }
}
