//! The thin driver around [`Engine`]. The hot path runs on dedicated OS
//! threads doing non-blocking I/O and sleeping in poll(2), never on tokio
//! tasks (no per-packet wakeups or task switches):
//!
//! - one receive thread: `recvmmsg` + UDP GRO → open → write to the TAP;
//! - one reader thread per network: TAP read (TSO super-segments split in
//!   userspace by [`crate::offload`]) → switch + seal → `sendmmsg` of UDP GSO
//!   groups.
//!
//! Housekeeping (key expiry, MAC ageing) stays a tokio task of the runtime
//! `start` is called in. All switching and crypto decisions are the engine's.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;

use crate::engine::{Engine, Outgoing};
use crate::keypair::SessionKeys;
use crate::offload::{self, Coalescer, VnetHdr, VNET_HDR_LEN};
use crate::pool::BufPool;
use crate::stats::{DropReason, Stats};
use crate::tap::{self, Tap, MAX_TAP_FRAME, MAX_TAP_READ};
use crate::udp::{self, UdpIo};
use crate::wire::MAX_DATAGRAM_LEN;
use crate::{Error, NetworkId, PeerIdx};

/// TAP reads drained before one `sendmmsg` (each may be a 64 KB super-frame).
const TAP_BATCH: usize = 16;
/// Sealed datagrams queued before they are flushed even if the TAP has more.
const FLUSH_AT: usize = 256;
/// How often expired keypairs and aged MAC entries are swept.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

type TapMap = Arc<RwLock<HashMap<NetworkId, Arc<Tap>>>>;

/// Which kernel offloads the data plane uses. All on by default; each can
/// be switched off for operations (a kernel or driver that misbehaves) and
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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            offload: true,
            gso: true,
            coalesce: true,
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
    udp: Arc<UdpIo>,
    local_addr: SocketAddr,
    /// Where the receive thread writes each network's frames.
    taps: TapMap,
    tasks: Mutex<Tasks>,
    /// Wakes and stops the receive thread.
    stop: Arc<Stop>,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// A stop signal a thread can sleep on in poll(2): an eventfd that becomes
/// (and stays) readable, plus a flag checked between batches.
#[derive(Debug)]
struct Stop {
    flag: AtomicBool,
    fd: OwnedFd,
}

impl Stop {
    fn new() -> io::Result<Stop> {
        // SAFETY: plain eventfd(2); the fd is owned right after.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Stop {
            flag: AtomicBool::new(false),
            // SAFETY: fresh fd we own.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    fn signal(&self) {
        self.flag.store(true, Ordering::Release);
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

struct Worker {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(
        name: String,
        stop: Arc<Stop>,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Worker> {
        let thread = std::thread::Builder::new().name(name).spawn(body)?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.stop.signal();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[derive(Default)]
struct Tasks {
    housekeeping: Option<tokio::task::JoinHandle<()>>,
    receive: Option<Worker>,
    tap_readers: HashMap<NetworkId, Worker>,
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
        self.stop.signal();
        if let Some(worker) = tasks.receive.take() {
            worker.stop();
        }
        for (_, worker) in tasks.tap_readers.drain() {
            worker.stop();
        }
        self.taps.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Dataplane {
    /// Binds the data-plane UDP socket and starts the receive path. Must be
    /// called inside a tokio runtime (housekeeping runs on it); the packet
    /// paths run on their own threads.
    pub fn start(udp_bind: SocketAddr, options: Options) -> Result<Dataplane, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let udp = Arc::new(
            UdpIo::bind(udp_bind, options.gso).map_err(|source| Error::Bind {
                addr: udp_bind,
                source,
            })?,
        );
        let local_addr = udp.local_addr()?;
        let engine = Arc::new(Engine::new(Instant::now()));
        let taps: TapMap = Arc::default();
        let stop = Arc::new(Stop::new()?);

        let receive = Worker::spawn("mesh-dp-rx".into(), stop.clone(), {
            let (engine, udp, taps, stop) =
                (engine.clone(), udp.clone(), taps.clone(), stop.clone());
            move || receive_loop(engine, udp, taps, stop, options.coalesce)
        })?;
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
        tracing::info!(
            %local_addr,
            gro_segments = udp.gro_segments(),
            gso = udp.gso_enabled(),
            ?options,
            "data plane started"
        );
        Ok(Dataplane {
            inner: Arc::new(Inner {
                engine,
                options,
                udp,
                local_addr,
                taps,
                tasks: Mutex::new(Tasks {
                    housekeeping: Some(housekeeping),
                    receive: Some(receive),
                    tap_readers: HashMap::new(),
                }),
                stop,
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
        let device = Arc::new(tap::open(tap_name, self.inner.options.offload).map_err(
            |source| Error::Tap {
                name: tap_name.to_string(),
                source,
            },
        )?);
        if !self.inner.engine.add_network(net) {
            return Err(Error::NetworkExists(net));
        }
        self.inner
            .taps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(net, device.clone());
        let stop = Arc::new(Stop::new()?);
        let reader = Worker::spawn(format!("mesh-dp-tap{}", net.0), stop.clone(), {
            let (engine, udp) = (self.inner.engine.clone(), self.inner.udp.clone());
            let device = device.clone();
            move || tap_read_loop(net, device, engine, udp, stop)
        })?;
        let old = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tap_readers
            .insert(net, reader);
        if let Some(old) = old {
            old.stop();
        }
        tracing::info!(
            ?net,
            tap_name,
            vnet_hdr = device.has_vnet_hdr(),
            offload = device.has_offload(),
            "network attached"
        );
        Ok(())
    }

    /// Stops switching `net` and closes its TAP.
    pub fn remove_network(&self, net: NetworkId) {
        let reader = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tap_readers
            .remove(&net);
        if let Some(reader) = reader {
            reader.stop();
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

    pub fn confirm_keys(&self, peer: PeerIdx, generation: u64) {
        self.inner.engine.confirm_keys(peer, generation);
    }

    pub fn stats(&self) -> Stats {
        self.inner.engine.stats(Instant::now())
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

/// UDP → open → TAP. Buffers are allocated once; each can hold a GRO batch.
/// With `coalesce`, TCP segments of one flow are merged into GSO writes.
fn receive_loop(
    engine: Arc<Engine>,
    udp: Arc<UdpIo>,
    taps: TapMap,
    stop: Arc<Stop>,
    coalesce: bool,
) {
    let buffer_len = MAX_DATAGRAM_LEN.min(udp.gro_segments().max(1) * MAX_DATAGRAM_LEN);
    let mut storage: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE)
        .map(|_| vec![0u8; buffer_len])
        .collect();
    let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut coalescer = Coalescer::<NetworkId>::new();
    while !stop.is_set() {
        let received = {
            let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = {
                let mut iter = storage.iter_mut();
                std::array::from_fn(|_| IoSliceMut::new(iter.next().expect("BATCH_SIZE buffers")))
            };
            match udp.try_recv_batch(&mut slices, &mut meta) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    udp::wait(udp.as_raw_fd(), libc::POLLIN, Some(stop.raw()), -1);
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "UDP receive failed");
                    std::thread::sleep(Duration::from_millis(10));
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
                if tap.has_vnet_hdr() && coalesce {
                    // The 20-byte wire header is spent: its last 10 bytes
                    // are room for the vnet header, so a frame that goes out
                    // alone is written without a copy; TCP segments of one
                    // flow are merged into one GSO write.
                    coalescer.push(
                        &delivery.network,
                        &mut datagram[..delivery.frame.end],
                        delivery.frame.start,
                        |net, bytes| write_tap(&engine, &taps, net, bytes),
                    );
                } else if tap.has_vnet_hdr() {
                    let start = delivery.frame.start - VNET_HDR_LEN;
                    VnetHdr {
                        flags: offload::VIRTIO_NET_HDR_F_DATA_VALID,
                        ..VnetHdr::default()
                    }
                    .encode(&mut datagram[start..delivery.frame.start]);
                    write_tap(
                        &engine,
                        &taps,
                        &delivery.network,
                        &datagram[start..delivery.frame.end],
                    );
                } else {
                    write_tap(&engine, &taps, &delivery.network, &datagram[delivery.frame]);
                }
            }
        }
        coalescer.flush(|net, bytes| write_tap(&engine, &taps, net, bytes));
    }
}

fn write_tap(engine: &Engine, taps: &HashMap<NetworkId, Arc<Tap>>, net: &NetworkId, bytes: &[u8]) {
    let Some(tap) = taps.get(net) else {
        return;
    };
    // Non-blocking: a full TAP queue drops like a congested NIC would.
    if let Err(error) = tap.write(bytes) {
        engine.count_drop(DropReason::TapWriteFailed);
        tracing::trace!(%error, "TAP write failed");
    }
}

/// TAP → (split super-segments) → switch + seal → UDP GSO, in batches: drain
/// up to TAP_BATCH reads without blocking, send them with one sendmmsg,
/// sleep in poll(2) when the TAP is empty.
fn tap_read_loop(
    net: NetworkId,
    device: Arc<Tap>,
    engine: Arc<Engine>,
    udp: Arc<UdpIo>,
    stop: Arc<Stop>,
) {
    let mut pool = BufPool::new(MAX_TAP_FRAME, FLUSH_AT);
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(FLUSH_AT * 2);
    let mut scratch = vec![0u8; MAX_TAP_READ];
    let vnet = device.has_vnet_hdr();
    while !stop.is_set() {
        let mut drained = false;
        for _ in 0..TAP_BATCH {
            let len = match device.read(&mut scratch) {
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(?net, %error, "TAP read failed; reader stops");
                    return;
                }
            };
            engine.seal_tap_read(
                net,
                &mut scratch[..len],
                vnet,
                Instant::now(),
                &mut pool,
                &mut outgoing,
            );
            if outgoing.len() >= FLUSH_AT {
                break;
            }
        }
        if !outgoing.is_empty() {
            udp.send_batch(&outgoing, |_, error| {
                engine.count_drop(DropReason::SendFailed);
                tracing::debug!(%error, "UDP send failed");
            });
            for out in outgoing.drain(..) {
                pool.put(out.datagram);
            }
        }
        if drained {
            udp::wait(device.as_raw_fd(), libc::POLLIN, Some(stop.raw()), -1);
        }
    }
}
