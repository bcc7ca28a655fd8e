//! One data-plane worker: an OS thread that moves packets both ways for
//! its share of the flows, doing non-blocking I/O and sleeping in poll(2).
//!
//! Worker `i` owns receive socket `i` of the `SO_REUSEPORT` group, a send
//! socket whose source port is ≡ `i`, and queue `i` of every network's
//! multi-queue TAP. The kernel keeps a flow on one TAP queue (and moves it
//! to the queue its replies are written to — ours), the peer's steering
//! keeps it on one receive socket: so each TCP flow is handled by exactly
//! one worker per host and is never reordered, while different flows
//! spread over the workers.
//!
//! Latency: one loop serves both directions, so a request written to the
//! TAP and the reply the kernel queues right behind it go out without a
//! thread wake-up; after traffic the worker keeps polling without sleeping
//! for `Options::busy_poll` (yielding the CPU between tries), then sleeps.
//! An idle data plane sleeps in poll(2) and costs nothing.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;

use crate::engine::{Engine, Outgoing};
use crate::impair::{DelayQueue, Shaping, Verdict};
use crate::offload::{self, Coalescer, VnetHdr, VNET_HDR_LEN};
use crate::pool::BufPool;
use crate::stats::DropReason;
use crate::tap::{Tap, MAX_TAP_FRAME, MAX_TAP_READ};
use crate::udp::UdpIo;
use crate::wire::MAX_DATAGRAM_LEN;
use crate::NetworkId;

/// TAP reads drained per queue per loop (each may be a 64 KB super-frame).
const TAP_BATCH: usize = 16;
/// Sealed datagrams queued before they are flushed even if the TAP has more.
const FLUSH_AT: usize = 256;

/// Every network's TAP queues, and a version bumped on each change so a
/// worker only takes the lock when something changed (not per packet).
#[derive(Default)]
pub(crate) struct TapTable {
    pub queues: RwLock<HashMap<NetworkId, Vec<Arc<Tap>>>>,
    /// Delay, jitter and loss of the networks that have them (see
    /// [`crate::impair`]); published with the same version.
    pub shaping: RwLock<HashMap<NetworkId, Arc<Shaping>>>,
    pub version: AtomicU64,
}

/// Frames one worker may hold for delay before it drops new ones.
const DELAY_QUEUE_FRAMES: usize = 8192;

/// Wakes one worker from poll(2): an eventfd plus what it was woken for.
#[derive(Debug)]
pub(crate) struct Wake {
    fd: OwnedFd,
    pub stop: AtomicBool,
    /// The last [`TapTable`] version this worker has switched to.
    pub seen_version: AtomicU64,
}

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: plain eventfd(2); the fd is owned right after.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Wake {
            // SAFETY: fresh fd we own.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            stop: AtomicBool::new(false),
            seen_version: AtomicU64::new(0),
        })
    }

    pub fn kick(&self) {
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

    fn drain(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut value as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }
}

/// What one worker runs with.
pub(crate) struct WorkerIo {
    pub index: usize,
    pub engine: Arc<Engine>,
    pub taps: Arc<TapTable>,
    pub rx: Arc<UdpIo>,
    pub tx: Arc<UdpIo>,
    pub wake: Arc<Wake>,
    pub coalesce: bool,
    pub busy_poll: Duration,
}

/// This worker's view of the TAP table.
#[derive(Default)]
struct MyQueues {
    /// Queues this worker reads (its own index, where the device has one),
    /// with the network's shaping if it has any.
    read: Vec<(NetworkId, Arc<Tap>, Option<Arc<Shaping>>)>,
    /// Where this worker writes each network's received frames.
    write: HashMap<NetworkId, Arc<Tap>>,
    shaping: HashMap<NetworkId, Arc<Shaping>>,
}

impl MyQueues {
    fn of(
        table: &HashMap<NetworkId, Vec<Arc<Tap>>>,
        shaping: &HashMap<NetworkId, Arc<Shaping>>,
        index: usize,
    ) -> MyQueues {
        let mut mine = MyQueues {
            shaping: shaping.clone(),
            ..MyQueues::default()
        };
        for (net, queues) in table {
            if let Some(queue) = queues.get(index) {
                mine.read
                    .push((*net, queue.clone(), shaping.get(net).cloned()));
            }
            if !queues.is_empty() {
                mine.write
                    .insert(*net, queues[index % queues.len()].clone());
            }
        }
        mine
    }
}

pub(crate) fn run(io: WorkerIo) {
    let buffer_len = MAX_DATAGRAM_LEN.min(io.rx.gro_segments().max(1) * MAX_DATAGRAM_LEN);
    let mut storage: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE)
        .map(|_| vec![0u8; buffer_len])
        .collect();
    let mut meta = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut coalescer = Coalescer::<NetworkId>::new();
    let mut pool = BufPool::new(MAX_TAP_FRAME, FLUSH_AT);
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(FLUSH_AT * 2);
    let mut scratch = vec![0u8; MAX_TAP_READ];
    let mut version = u64::MAX;
    let mut mine = MyQueues::default();
    let mut last_traffic: Option<Instant> = None;
    // Loss and jitter draws differ per worker, host and run.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
    let mut held = DelayQueue::new(DELAY_QUEUE_FRAMES, seed ^ (io.index as u64) << 56);
    let mut hairpin = Vec::with_capacity(VNET_HDR_LEN + MAX_TAP_FRAME);

    while !io.wake.stop.load(Ordering::Acquire) {
        let current = io.taps.version.load(Ordering::Acquire);
        if current != version {
            let table = io.taps.queues.read().unwrap_or_else(|p| p.into_inner());
            let shaping = io.taps.shaping.read().unwrap_or_else(|p| p.into_inner());
            mine = MyQueues::of(&table, &shaping, io.index);
            held.forget(|net| mine.shaping.contains_key(&net), &mut pool);
            version = current;
            io.wake.seen_version.store(current, Ordering::Release);
        }
        let released = !held.is_empty()
            && release_held(
                &io,
                &mine,
                &mut held,
                &mut hairpin,
                &mut pool,
                &mut outgoing,
            );
        let received = receive_batch(
            &io,
            &mut storage,
            &mut meta,
            &mut coalescer,
            &mine,
            &mut pool,
            &mut outgoing,
        );
        let sent = seal_tap_reads(
            &io,
            &mine,
            &mut held,
            &mut hairpin,
            &mut scratch,
            &mut pool,
            &mut outgoing,
        );
        let now = Instant::now();
        if received || sent || released {
            last_traffic = Some(now);
            continue;
        }
        let due_soon = held
            .next_due()
            .is_some_and(|at| at.saturating_duration_since(now) < Duration::from_millis(1));
        if due_soon
            || last_traffic.is_some_and(|at| now.saturating_duration_since(at) < io.busy_poll)
        {
            // Traffic just passed: the next packet is likely microseconds
            // away, cheaper to catch than a sleep and wake-up.
            std::thread::yield_now();
            continue;
        }
        last_traffic = None;
        sleep_until_ready(&io, &mine, held.next_due());
    }
}

/// One `recvmmsg` batch: open each datagram, write it to the TAP; probe
/// answers and relayed envelopes go out at the end of the batch. Returns
/// whether anything was received.
fn receive_batch(
    io: &WorkerIo,
    storage: &mut [Vec<u8>],
    meta: &mut [RecvMeta],
    coalescer: &mut Coalescer<NetworkId>,
    mine: &MyQueues,
    pool: &mut BufPool,
    outgoing: &mut Vec<Outgoing>,
) -> bool {
    let received = {
        let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] = {
            let mut iter = storage.iter_mut();
            std::array::from_fn(|_| IoSliceMut::new(iter.next().expect("BATCH_SIZE buffers")))
        };
        match io.rx.try_recv_batch(&mut slices, meta) {
            Ok(count) => count,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return false
            }
            Err(error) => {
                tracing::warn!(%error, "UDP receive failed");
                std::thread::sleep(Duration::from_millis(10));
                return false;
            }
        }
    };
    let engine = &io.engine;
    let now = Instant::now();
    for (buf, meta) in storage.iter_mut().zip(meta.iter()).take(received) {
        let stride = meta.stride.max(1);
        let len = meta.len.min(buf.len());
        for datagram in buf[..len].chunks_mut(stride) {
            let Ok(Some(delivery)) = engine.receive(datagram, meta.addr, now, pool, outgoing)
            else {
                continue;
            };
            let Some(tap) = mine.write.get(&delivery.network) else {
                engine.count_drop(DropReason::WrongNetwork);
                continue;
            };
            if tap.has_vnet_hdr() && io.coalesce {
                // The 20-byte wire header is spent: its last 10 bytes are
                // room for the vnet header, so a frame that goes out alone
                // is written without a copy; TCP segments of one flow are
                // merged into one GSO write.
                coalescer.push(
                    &delivery.network,
                    &mut datagram[..delivery.frame.end],
                    delivery.frame.start,
                    |net, bytes| write_tap(engine, mine, net, bytes),
                );
            } else if tap.has_vnet_hdr() {
                let start = delivery.frame.start - VNET_HDR_LEN;
                VnetHdr {
                    flags: offload::VIRTIO_NET_HDR_F_DATA_VALID,
                    ..VnetHdr::default()
                }
                .encode(&mut datagram[start..delivery.frame.start]);
                write_tap(
                    engine,
                    mine,
                    &delivery.network,
                    &datagram[start..delivery.frame.end],
                );
            } else {
                write_tap(engine, mine, &delivery.network, &datagram[delivery.frame]);
            }
        }
    }
    coalescer.flush(|net, bytes| write_tap(engine, mine, net, bytes));
    flush(io, mine, pool, outgoing);
    received > 0
}

fn write_tap(engine: &Engine, mine: &MyQueues, net: &NetworkId, bytes: &[u8]) {
    let Some(tap) = mine.write.get(net) else {
        return;
    };
    // Non-blocking: a full TAP queue drops like a congested NIC would.
    if let Err(error) = tap.write(bytes) {
        engine.count_drop(DropReason::TapWriteFailed);
        tracing::trace!(%error, "TAP write failed");
    }
}

/// Drains up to TAP_BATCH reads from each of this worker's TAP queues,
/// seals them and sends them with one `sendmmsg` as soon as the queues are
/// empty (or FLUSH_AT datagrams are ready). Returns whether anything went out.
fn seal_tap_reads(
    io: &WorkerIo,
    mine: &MyQueues,
    held: &mut DelayQueue,
    hairpin: &mut Vec<u8>,
    scratch: &mut [u8],
    pool: &mut BufPool,
    outgoing: &mut Vec<Outgoing>,
) -> bool {
    let mut any = false;
    for (net, device, shaping) in &mine.read {
        for _ in 0..TAP_BATCH {
            let len = match device.read(scratch) {
                Ok(len) => len,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::debug!(?net, %error, "TAP read failed");
                    break;
                }
            };
            any = true;
            if let Some(shaping) = shaping {
                let read = &mut scratch[..len];
                shape_tap_read(
                    io, mine, *net, shaping, held, hairpin, read, device, pool, outgoing,
                );
            } else {
                io.engine.seal_tap_read(
                    *net,
                    &mut scratch[..len],
                    device.has_vnet_hdr(),
                    Instant::now(),
                    pool,
                    outgoing,
                );
            }
            if outgoing.len() >= FLUSH_AT {
                flush(io, mine, pool, outgoing);
            }
        }
    }
    flush(io, mine, pool, outgoing);
    any
}

/// A TAP read of a shaped network: each frame is lost, held or forwarded
/// (see [`crate::impair`]).
#[allow(clippy::too_many_arguments)]
fn shape_tap_read(
    io: &WorkerIo,
    mine: &MyQueues,
    net: NetworkId,
    shaping: &Shaping,
    held: &mut DelayQueue,
    hairpin: &mut Vec<u8>,
    read: &mut [u8],
    device: &Tap,
    pool: &mut BufPool,
    outgoing: &mut Vec<Outgoing>,
) {
    let now = Instant::now();
    io.engine
        .split_tap_read(read, device.has_vnet_hdr(), pool, |buf, pool| {
            match held.admit(shaping, net, buf, now) {
                Verdict::Held => {}
                Verdict::Lost(buf) => {
                    io.engine.count_drop(DropReason::QosLoss);
                    pool.put(buf);
                }
                Verdict::Full(buf) => {
                    io.engine.count_drop(DropReason::QosQueueFull);
                    pool.put(buf);
                }
                Verdict::Now(buf) => {
                    forward_shaped(io, mine, net, shaping, buf, now, hairpin, pool, outgoing)
                }
            }
        });
}

/// Frames whose delay is over go on.
fn release_held(
    io: &WorkerIo,
    mine: &MyQueues,
    held: &mut DelayQueue,
    hairpin: &mut Vec<u8>,
    pool: &mut BufPool,
    outgoing: &mut Vec<Outgoing>,
) -> bool {
    let now = Instant::now();
    let mut any = false;
    held.release_due(now, |net, buf| {
        any = true;
        match mine.shaping.get(&net) {
            Some(shaping) => {
                forward_shaped(io, mine, net, shaping, buf, now, hairpin, pool, outgoing)
            }
            None => pool.put(buf),
        }
    });
    if any {
        flush(io, mine, pool, outgoing);
    }
    any
}

/// Switches a frame of a shaped network: to this host's own containers it
/// is written back to the TAP (the bridge ports are isolated, so the data
/// plane does the local switching); broadcast goes both ways; the rest is
/// sealed for peers as usual.
#[allow(clippy::too_many_arguments)]
fn forward_shaped(
    io: &WorkerIo,
    mine: &MyQueues,
    net: NetworkId,
    shaping: &Shaping,
    buf: crate::pool::PacketBuf,
    now: Instant,
    hairpin: &mut Vec<u8>,
    pool: &mut BufPool,
    outgoing: &mut Vec<Outgoing>,
) {
    let dst = crate::switch::destination(buf.frame());
    let group = crate::switch::is_group(&dst);
    if group || shaping.local.contains(&dst) {
        let vnet = mine.write.get(&net).is_some_and(|t| t.has_vnet_hdr());
        hairpin.clear();
        if vnet {
            let mut hdr = [0u8; VNET_HDR_LEN];
            VnetHdr {
                flags: offload::VIRTIO_NET_HDR_F_DATA_VALID,
                ..VnetHdr::default()
            }
            .encode(&mut hdr);
            hairpin.extend_from_slice(&hdr);
        }
        hairpin.extend_from_slice(buf.frame());
        write_tap(&io.engine, mine, &net, hairpin);
        if !group {
            return pool.put(buf);
        }
    }
    io.engine.seal_frame(net, buf, now, pool, outgoing);
}

fn flush(io: &WorkerIo, mine: &MyQueues, pool: &mut BufPool, outgoing: &mut Vec<Outgoing>) {
    if outgoing.is_empty() {
        return;
    }
    // ICMP answers of the path-MTU check go back into our own TAP (rare:
    // the partition allocates only when there is one).
    if outgoing.iter().any(|out| out.to_tap.is_some()) {
        let (local, remote): (Vec<Outgoing>, Vec<Outgoing>) =
            outgoing.drain(..).partition(|out| out.to_tap.is_some());
        outgoing.extend(remote);
        for mut answer in local {
            let net = answer.to_tap.expect("partitioned");
            let vnet = mine.write.get(&net).is_some_and(|t| t.has_vnet_hdr());
            let bytes = if vnet {
                let bytes = answer.datagram.frame_with_prefix_mut(VNET_HDR_LEN);
                VnetHdr {
                    flags: offload::VIRTIO_NET_HDR_F_DATA_VALID,
                    ..VnetHdr::default()
                }
                .encode(&mut bytes[..VNET_HDR_LEN]);
                &*bytes
            } else {
                answer.datagram.frame()
            };
            write_tap(&io.engine, mine, &net, bytes);
            pool.put(answer.datagram);
        }
    }
    // Probes, their answers and data to peers behind a NAT leave from the
    // data port (what the peer observes, what its NAT mapped), the rest
    // from the sending socket: each run of one kind is one batch, so the
    // order is kept and nothing is allocated.
    let mut start = 0;
    while start < outgoing.len() {
        let from_port = outgoing[start].from_data_port;
        let end = outgoing[start..]
            .iter()
            .position(|out| out.from_data_port != from_port)
            .map_or(outgoing.len(), |n| start + n);
        let socket = if from_port { &io.rx } else { &io.tx };
        socket.send_batch(&outgoing[start..end], |_, error| {
            count_send_error(&io.engine, &error)
        });
        start = end;
    }
    for out in outgoing.drain(..) {
        pool.put(out.datagram);
    }
}

/// EMSGSIZE is its own drop: the sockets never fragment
/// (`IP_PMTUDISC_PROBE`), so a datagram over the local MTU is refused.
pub(crate) fn count_send_error(engine: &Engine, error: &io::Error) {
    let reason = match error.raw_os_error() {
        Some(libc::EMSGSIZE) => DropReason::TooBig,
        _ => DropReason::SendFailed,
    };
    engine.count_drop(reason);
    tracing::debug!(%error, "UDP send failed");
}

/// Sleeps in poll(2) until the receive socket, one of this worker's TAP
/// queues or the wake eventfd is readable.
fn sleep_until_ready(io: &WorkerIo, mine: &MyQueues, due: Option<Instant>) {
    let pollfd = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(2 + mine.read.len());
    fds.push(pollfd(io.wake.fd.as_raw_fd()));
    fds.push(pollfd(io.rx.as_raw_fd()));
    fds.extend(mine.read.iter().map(|(_, tap, _)| pollfd(tap.as_raw_fd())));
    // Held frames wake the worker when the first is due (rounded up to ms).
    let timeout = due.map_or(-1, |at| {
        let us = at.saturating_duration_since(Instant::now()).as_micros();
        us.div_ceil(1000).min(i32::MAX as u128) as i32
    });
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ready > 0 && fds[0].revents != 0 {
        io.wake.drain();
    }
    let broken = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
    if ready > 0 && fds[1..].iter().any(|fd| fd.revents & broken != 0) {
        // A device going away: do not spin until the table drops it.
        std::thread::sleep(Duration::from_millis(10));
    }
}
