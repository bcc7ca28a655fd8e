//! The thin async driver around [`Engine`]: one task receiving batches from
//! the UDP socket, one task per network reading its TAP, one housekeeping
//! timer. All switching and crypto decisions are the engine's.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use tokio::task::JoinHandle;
use tun_rs::AsyncDevice;

use crate::engine::{Engine, Outgoing};
use crate::keypair::SessionKeys;
use crate::pool::BufPool;
use crate::stats::{DropReason, Stats};
use crate::tap::{self, MAX_TAP_FRAME};
use crate::udp::{UdpIo, SEND_BATCH};
use crate::wire::MAX_DATAGRAM_LEN;
use crate::{Error, NetworkId, PeerIdx};

/// Frames drained from a TAP before one `sendmmsg`.
const TAP_BATCH: usize = 32;
/// How often expired keypairs and aged MAC entries are swept.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

/// Cheap-clone handle to a running data plane. Send + Sync.
#[derive(Clone, Debug)]
pub struct Dataplane {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    udp: Arc<UdpIo>,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    /// Where the receive task writes each network's frames.
    taps: Arc<RwLock<HashMap<NetworkId, Arc<AsyncDevice>>>>,
    tasks: Mutex<Tasks>,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Tasks {
    background: Vec<JoinHandle<()>>,
    tap_readers: HashMap<NetworkId, JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Inner {
    fn stop_tasks(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let tasks = &mut *tasks;
        for task in tasks
            .background
            .drain(..)
            .chain(tasks.tap_readers.drain().map(|(_, task)| task))
        {
            task.abort();
        }
        self.taps.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Dataplane {
    /// Binds the data-plane UDP socket and starts the receive path. Must be
    /// called inside a tokio runtime; the tasks run on that runtime.
    pub fn start(udp_bind: SocketAddr) -> Result<Dataplane, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let udp = Arc::new(UdpIo::bind(udp_bind).map_err(|source| Error::Bind {
            addr: udp_bind,
            source,
        })?);
        let local_addr = udp.local_addr()?;
        let engine = Arc::new(Engine::new(Instant::now()));
        let taps: Arc<RwLock<HashMap<NetworkId, Arc<AsyncDevice>>>> = Arc::default();

        let receive = runtime.spawn(receive_loop(engine.clone(), udp.clone(), taps.clone()));
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
        tracing::info!(%local_addr, gro_segments = udp.gro_segments(), "data plane started");
        Ok(Dataplane {
            inner: Arc::new(Inner {
                engine,
                udp,
                local_addr,
                runtime,
                taps,
                tasks: Mutex::new(Tasks {
                    background: vec![receive, housekeeping],
                    tap_readers: HashMap::new(),
                }),
                shut_down: AtomicBool::new(false),
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

    /// Opens (creating if absent) the TAP `tap_name` and switches frames of
    /// `net` between it and the member peers.
    pub fn add_network(&self, net: NetworkId, tap_name: &str) -> Result<(), Error> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            return Err(Error::ShutDown);
        }
        if self.inner.engine.has_network(net) {
            return Err(Error::NetworkExists(net));
        }
        // tun-rs registers the fd with the reactor of the current runtime.
        let device = {
            let _guard = self.inner.runtime.enter();
            Arc::new(tap::open(tap_name).map_err(|source| Error::Tap {
                name: tap_name.to_string(),
                source,
            })?)
        };
        if !self.inner.engine.add_network(net) {
            return Err(Error::NetworkExists(net));
        }
        self.inner
            .taps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net, device.clone());
        let reader = self.inner.runtime.spawn(tap_read_loop(
            net,
            device,
            self.inner.engine.clone(),
            self.inner.udp.clone(),
        ));
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = tasks.tap_readers.insert(net, reader) {
            old.abort();
        }
        tracing::info!(?net, tap_name, "network attached");
        Ok(())
    }

    /// Stops switching `net` and closes its TAP.
    pub fn remove_network(&self, net: NetworkId) {
        if let Some(reader) = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tap_readers
            .remove(&net)
        {
            reader.abort();
        }
        self.inner
            .taps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&net);
        self.inner.engine.remove_network(net);
        tracing::info!(?net, "network detached");
    }

    pub fn upsert_peer(&self, peer: PeerIdx, endpoint: SocketAddr, networks: &[NetworkId]) {
        self.inner
            .engine
            .upsert_peer(peer, Some(endpoint), networks);
    }

    pub fn remove_peer(&self, peer: PeerIdx) {
        self.inner.engine.remove_peer(peer);
    }

    pub fn install_keys(&self, peer: PeerIdx, keys: SessionKeys, send_now: bool) {
        self.inner
            .engine
            .install_keys(peer, &keys, send_now, Instant::now());
    }

    pub fn confirm_keys(&self, peer: PeerIdx, generation: u64) {
        self.inner.engine.confirm_keys(peer, generation);
    }

    pub fn stats(&self) -> Stats {
        self.inner.engine.stats(Instant::now())
    }

    /// Stops every task and closes the TAPs. The UDP socket closes when the
    /// last handle is dropped. Idempotent.
    pub fn shutdown(&self) {
        if !self.inner.shut_down.swap(true, Ordering::AcqRel) {
            self.inner.stop_tasks();
            tracing::info!(local_addr = %self.inner.local_addr, "data plane shut down");
        }
    }
}

/// UDP → open → TAP. Buffers are allocated once; each can hold a GRO batch.
async fn receive_loop(
    engine: Arc<Engine>,
    udp: Arc<UdpIo>,
    taps: Arc<RwLock<HashMap<NetworkId, Arc<AsyncDevice>>>>,
) {
    let buffer_len = MAX_DATAGRAM_LEN.min(udp.gro_segments().max(1) * MAX_DATAGRAM_LEN);
    let mut storage: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE)
        .map(|_| vec![0u8; buffer_len])
        .collect();
    let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    loop {
        let received = {
            let mut slices: Vec<IoSliceMut<'_>> =
                storage.iter_mut().map(|buf| IoSliceMut::new(buf)).collect();
            match udp.recv_batch(&mut slices, &mut meta).await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(%error, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        };
        let now = Instant::now();
        let taps = taps.read().unwrap_or_else(|p| p.into_inner());
        for (buf, meta) in storage.iter_mut().zip(&meta).take(received) {
            let stride = meta.stride.max(1);
            let len = meta.len.min(buf.len());
            for datagram in buf[..len].chunks_mut(stride) {
                let Ok(delivery) = engine.open_datagram(datagram, now) else {
                    continue;
                };
                let Some(tap) = taps.get(&delivery.network) else {
                    engine.count_drop(DropReason::WrongNetwork);
                    continue;
                };
                // Non-blocking: a full TAP queue drops like a congested NIC would.
                if let Err(error) = tap.try_send(&datagram[delivery.frame]) {
                    engine.count_drop(DropReason::TapWriteFailed);
                    tracing::trace!(%error, "TAP write failed");
                }
            }
        }
    }
}

/// TAP → switch + seal → UDP, in batches: wait for one frame, drain up to
/// TAP_BATCH more without blocking, send them with one sendmmsg.
async fn tap_read_loop(
    net: NetworkId,
    device: Arc<AsyncDevice>,
    engine: Arc<Engine>,
    udp: Arc<UdpIo>,
) {
    let mut pool = BufPool::new(MAX_TAP_FRAME, TAP_BATCH * 2);
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(SEND_BATCH * 2);
    loop {
        let mut buf = pool.get();
        match device.recv(buf.frame_space()).await {
            Ok(len) => {
                buf.set_frame_len(len);
                engine.seal_frame(net, buf, Instant::now(), &mut pool, &mut outgoing);
            }
            Err(error) => {
                pool.put(buf);
                if fatal(&error) {
                    tracing::warn!(?net, %error, "TAP read failed; reader stops");
                    return;
                }
                continue;
            }
        }
        for _ in 1..TAP_BATCH {
            let mut buf = pool.get();
            match device.try_recv(buf.frame_space()) {
                Ok(len) => {
                    buf.set_frame_len(len);
                    engine.seal_frame(net, buf, Instant::now(), &mut pool, &mut outgoing);
                }
                Err(_) => {
                    pool.put(buf);
                    break;
                }
            }
        }
        udp.send_batch(&outgoing, |_, error| {
            engine.count_drop(DropReason::SendFailed);
            tracing::debug!(%error, "UDP send failed");
        })
        .await;
        for out in outgoing.drain(..) {
            pool.put(out.datagram);
        }
    }
}

fn fatal(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
    )
}
