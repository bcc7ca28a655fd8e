//! The data-plane UDP socket, driven from dedicated OS threads: non-blocking,
//! waited on with poll(2) together with a stop eventfd.
//!
//! - Receive: `recvmmsg` + UDP GRO through quinn-udp (one buffer may carry
//!   many datagrams of `RecvMeta::stride` bytes).
//! - Send: one `sendmmsg` per batch, where every message is a *UDP GSO group*:
//!   consecutive datagrams to the same endpoint of equal length (the last may
//!   be shorter) go out as one message with `UDP_SEGMENT`, so the kernel walks
//!   the stack once per group. On the wire each datagram is unchanged.

use std::io::{self, IoSliceMut};
use std::mem;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use quinn_udp::{RecvMeta, UdpSocketState};

use crate::engine::Outgoing;

/// Messages (GSO groups) handed to the kernel per `sendmmsg` call.
const SEND_BATCH: usize = 64;
/// Datagrams per GSO group (kernel limit UDP_MAX_SEGMENTS is 64 or more).
const MAX_GSO_SEGMENTS: usize = 64;
/// Payload bytes per GSO group: the kernel refuses more than 64 KB per skb.
const MAX_GSO_BYTES: usize = 65_000;
/// iovecs per `sendmmsg` call (one per datagram).
const MAX_IOVECS: usize = 512;
/// Socket buffer size we ask for: bursts of frames from many containers.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// How long a full send buffer may block a batch before it is dropped.
const SEND_STALL_LIMIT_MS: i32 = 2_000;

pub struct UdpIo {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
    is_ipv6: bool,
    gso: AtomicBool,
}

impl std::fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIo")
            .field("local", &self.socket.local_addr().ok())
            .finish()
    }
}

/// Waits until `fd` is ready for `events` or `stop_fd` is readable, or the
/// timeout (ms, -1 = none) passes. Returns true if `fd` is ready.
pub fn wait(fd: RawFd, events: libc::c_short, stop_fd: Option<RawFd>, timeout_ms: i32) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: stop_fd.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of 2 pollfds (a negative fd is ignored).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    n > 0 && fds[0].revents != 0
}

/// Opens a UDP socket with `SO_REUSEPORT` (when `reuse_port`) and binds it.
fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2); the fd is owned right after.
    let raw = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    let socket = unsafe { std::net::UdpSocket::from_raw_fd(raw) };
    if reuse_port {
        set_int_option(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    let address = SockaddrStorage::from(addr);
    // SAFETY: `address` is a valid sockaddr of `address.len()` bytes.
    if unsafe { libc::bind(raw, address.as_ptr(), address.len()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int through the pointer.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Steers each datagram to receive socket `source port % sockets` of a
/// `SO_REUSEPORT` group (classic BPF), instead of the kernel's 4-tuple
/// hash: with two hosts the hash could put every sender worker on one
/// receive socket. A sender's worker `i` sends from a port ≡ i, so one
/// flow always lands on one receive worker, and the workers spread evenly.
/// Assumes IPv4 headers without options (or IPv6 without extension
/// headers); anything else still maps each flow to a fixed socket.
fn attach_port_steering(fd: RawFd, sockets: u32) -> io::Result<()> {
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const ALU_RSH_K: u16 = 0x74;
    const ALU_MOD_K: u16 = 0x94;
    const JMP_JEQ_K: u16 = 0x15;
    const JMP_JA: u16 = 0x05;
    const RET_A: u16 = 0x16;
    const SKF_NET_OFF: u32 = (-0x100000i32) as u32;
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let program = [
        insn(LD_B_ABS, 0, 0, SKF_NET_OFF), // A = first byte of the IP header
        insn(ALU_RSH_K, 0, 0, 4),          // A = IP version
        insn(JMP_JEQ_K, 2, 0, 6),          // IPv6? skip to 5
        insn(LD_H_ABS, 0, 0, SKF_NET_OFF + 20), // IPv4: UDP source port
        insn(JMP_JA, 0, 0, 1),
        insn(LD_H_ABS, 0, 0, SKF_NET_OFF + 40), // IPv6: UDP source port
        insn(ALU_MOD_K, 0, 0, sockets),
        insn(RET_A, 0, 0, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: setsockopt copies the program the sock_fprog points at.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl UdpIo {
    /// Binds `addr`; `gso` allows UDP GSO sends where the kernel has them.
    pub fn bind(addr: SocketAddr, gso: bool) -> io::Result<UdpIo> {
        UdpIo::from_socket(bind_socket(addr, false)?, gso)
    }

    /// `count` receive sockets sharing `addr` through `SO_REUSEPORT`, with
    /// datagrams steered by source port (see `attach_port_steering`). The
    /// first binds `addr` (port 0: any); the rest join its port.
    pub fn bind_group(addr: SocketAddr, count: usize, gso: bool) -> io::Result<Vec<UdpIo>> {
        if count <= 1 {
            return Ok(vec![UdpIo::bind(addr, gso)?]);
        }
        let first = bind_socket(addr, true)?;
        let bound = first.local_addr()?;
        if let Err(error) = attach_port_steering(first.as_raw_fd(), count as u32) {
            tracing::debug!(%error, "reuseport steering unavailable; kernel hash spreads flows");
        }
        let mut group = vec![UdpIo::from_socket(first, gso)?];
        for _ in 1..count {
            group.push(UdpIo::from_socket(bind_socket(bound, true)?, gso)?);
        }
        Ok(group)
    }

    /// A send-only socket on `ip` for worker `worker` of `count`: an
    /// ephemeral port ≡ `worker` (mod `count`), so the receiver's steering
    /// puts this worker's flows on its receive worker of the same number.
    pub fn bind_sender(
        ip: std::net::IpAddr,
        worker: usize,
        count: usize,
        gso: bool,
    ) -> io::Result<UdpIo> {
        let mut fallback = None;
        for _ in 0..64 {
            let socket = bind_socket(SocketAddr::new(ip, 0), false)?;
            if socket.local_addr()?.port() as usize % count.max(1) == worker % count.max(1) {
                return UdpIo::from_socket(socket, gso);
            }
            fallback.get_or_insert(socket);
        }
        // Unlucky or a tiny port range: any port still keeps flows in order.
        UdpIo::from_socket(fallback.expect("at least one socket"), gso)
    }

    fn from_socket(socket: std::net::UdpSocket, gso: bool) -> io::Result<UdpIo> {
        let addr = socket.local_addr()?;
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        never_fragment(&socket, addr.is_ipv6())?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES);
        let gso = gso && state.max_gso_segments() > 1;
        Ok(UdpIo {
            is_ipv6: addr.is_ipv6(),
            socket,
            state,
            gso: AtomicBool::new(gso),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// How many GRO segments one receive buffer may hold (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    pub fn gso_enabled(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Receives a batch without blocking (`WouldBlock` when empty). Returns how
    /// many `meta` entries are filled; with GRO one entry may carry several
    /// datagrams of `meta.stride` bytes.
    pub fn try_recv_batch(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv((&self.socket).into(), bufs, meta)
    }

    /// Sends every datagram; calls `on_error` for each one the kernel refused
    /// (it is skipped, the rest still go out). Waits (bounded) while the
    /// socket buffer is full.
    pub fn send_batch(&self, datagrams: &[Outgoing], mut on_error: impl FnMut(usize, io::Error)) {
        let mut next = 0;
        let mut stalled_ms = 0;
        // Datagrams before this index go out without GSO (a group failed).
        let mut singles_until = 0;
        while next < datagrams.len() {
            let gso = next >= singles_until && self.gso.load(Ordering::Relaxed);
            let end = if gso {
                datagrams.len()
            } else {
                singles_until.max(next + 1).min(datagrams.len())
            };
            match self.sendmmsg(&datagrams[next..end], gso) {
                Ok(sent) => {
                    next += sent.max(1);
                    stalled_ms = 0;
                }
                Err((error, _)) if error.kind() == io::ErrorKind::WouldBlock => {
                    if stalled_ms >= SEND_STALL_LIMIT_MS {
                        for index in next..datagrams.len() {
                            on_error(index, io::Error::from(io::ErrorKind::WouldBlock));
                        }
                        return;
                    }
                    wait(self.socket.as_raw_fd(), libc::POLLOUT, None, 100);
                    stalled_ms += 100;
                }
                Err((error, group)) => {
                    if group > 1 {
                        if error.raw_os_error() == Some(libc::EIO)
                            && self.gso.swap(false, Ordering::Relaxed)
                        {
                            // The route's device cannot segment: plain sendmmsg from now on.
                            tracing::warn!(%error, "UDP GSO failed; disabled");
                        }
                        // Retry this group datagram by datagram (e.g. one
                        // larger than the path MTU, which GSO refuses).
                        singles_until = next + group;
                        continue;
                    }
                    // The first group failed (e.g. EMSGSIZE, unreachable):
                    // skip it, keep the others.
                    for index in next..next + group {
                        on_error(
                            index,
                            io::Error::from_raw_os_error(error.raw_os_error().unwrap_or(libc::EIO)),
                        );
                    }
                    next += group;
                }
            }
        }
    }

    /// One `sendmmsg` of as many GSO groups as fit. Returns the number of
    /// datagrams sent, or the error with the size of the first group.
    fn sendmmsg(&self, datagrams: &[Outgoing], gso: bool) -> Result<usize, (io::Error, usize)> {
        // Fixed-size stack arrays: no allocation per batch.
        let mut addresses: [mem::MaybeUninit<SockaddrStorage>; SEND_BATCH] =
            [const { mem::MaybeUninit::uninit() }; SEND_BATCH];
        let mut iovecs: [libc::iovec; MAX_IOVECS] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        // Room for one cmsg with a u16 (CMSG_SPACE(2) = 24 on 64-bit), u64-aligned.
        let mut controls = [[0u64; 4]; SEND_BATCH];
        let mut group_sizes = [0usize; SEND_BATCH];
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { mem::zeroed() };

        let mut messages = 0;
        let mut used_iovecs = 0;
        let mut index = 0;
        while index < datagrams.len() && messages < SEND_BATCH && used_iovecs < MAX_IOVECS {
            let first = &datagrams[index];
            let segment = first.datagram.datagram().len();
            let mut end = index + 1;
            let mut bytes = segment;
            if gso {
                while end < datagrams.len()
                    && end - index < MAX_GSO_SEGMENTS
                    && used_iovecs + (end - index) < MAX_IOVECS
                {
                    let candidate = &datagrams[end];
                    let len = candidate.datagram.datagram().len();
                    if candidate.endpoint != first.endpoint
                        || len > segment
                        || len == 0
                        || bytes + len > MAX_GSO_BYTES
                    {
                        break;
                    }
                    bytes += len;
                    end += 1;
                    if len < segment {
                        break; // only the last segment may be shorter
                    }
                }
            }
            let group = end - index;
            for (offset, outgoing) in datagrams[index..end].iter().enumerate() {
                let payload = outgoing.datagram.datagram();
                iovecs[used_iovecs + offset] = libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: payload.len(),
                };
            }
            let address = addresses[messages]
                .write(SockaddrStorage::from(self.family_matched(first.endpoint)));
            let header = &mut headers[messages].msg_hdr;
            header.msg_name = address.as_ptr() as *mut libc::c_void;
            header.msg_namelen = address.len();
            header.msg_iov = &mut iovecs[used_iovecs];
            header.msg_iovlen = group;
            if group > 1 {
                let control = &mut controls[messages];
                header.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                // SAFETY: CMSG_SPACE is a pure computation.
                header.msg_controllen =
                    unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
                // SAFETY: msg_control points at 32 writable, aligned bytes,
                // enough for CMSG_SPACE(2); CMSG_FIRSTHDR/CMSG_DATA stay inside.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(header);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment as u16);
                }
            }
            group_sizes[messages] = group;
            messages += 1;
            used_iovecs += group;
            index = end;
        }
        // SAFETY: `headers[..messages]` point into `addresses`, `iovecs`,
        // `controls` and the payload slices, all alive and unmoved for the call.
        let sent = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                headers.as_mut_ptr(),
                messages as libc::c_uint,
                0,
            )
        };
        if sent < 0 {
            return Err((io::Error::last_os_error(), group_sizes[0]));
        }
        Ok(group_sizes[..sent as usize].iter().sum())
    }

    /// An IPv6 socket reaches IPv4 peers through v4-mapped addresses.
    fn family_matched(&self, endpoint: SocketAddr) -> SocketAddr {
        match endpoint {
            SocketAddr::V4(v4) if self.is_ipv6 => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }
}

/// DF on every datagram and no kernel PMTU cache in the way: a datagram
/// too large for the local interface fails with EMSGSIZE (counted), one
/// too large for the path is lost, which the path prober measures.
fn never_fragment(socket: &std::net::UdpSocket, ipv6: bool) -> io::Result<()> {
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt with a c_int option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    if ipv6 {
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )?;
        // A dual-stack socket also sends IPv4.
        let _ = set(
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        );
        Ok(())
    } else {
        set(
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    }
}

impl AsRawFd for UdpIo {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
