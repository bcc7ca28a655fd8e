//! The data-plane UDP socket with batched I/O: `recvmmsg` (+ UDP GRO) through
//! quinn-udp on receive, one `sendmmsg` per batch of sealed datagrams on send
//! (fan-out to many peers, so GSO's "one destination" rule does not fit).

use std::io::{self, IoSliceMut};
use std::mem;
use std::net::{SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;

use crate::engine::Outgoing;

/// Datagrams handed to the kernel per `sendmmsg` call.
pub const SEND_BATCH: usize = 64;
/// Socket buffer size we ask for: bursts of frames from many containers.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

pub struct UdpIo {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    is_ipv6: bool,
}

impl std::fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpIo")
            .field("local", &self.socket.local_addr().ok())
            .finish()
    }
}

impl UdpIo {
    /// Binds `addr`. Must run inside a tokio runtime (registers with its reactor).
    pub fn bind(addr: SocketAddr) -> io::Result<UdpIo> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = state.set_recv_buffer_size((&std_socket).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((&std_socket).into(), SOCKET_BUFFER_BYTES);
        let socket = tokio::net::UdpSocket::from_std(std_socket)?;
        Ok(UdpIo {
            is_ipv6: addr.is_ipv6(),
            socket,
            state,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// How many GRO segments one receive buffer may hold (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Waits for and receives a batch. Returns how many `meta` entries are filled;
    /// with GRO one entry may carry several datagrams of `meta.stride` bytes.
    pub async fn recv_batch(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        loop {
            self.socket.readable().await?;
            match self.socket.try_io(Interest::READABLE, || {
                self.state.recv((&self.socket).into(), bufs, meta)
            }) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    /// Sends every datagram; calls `on_error` for each one the kernel refused
    /// (it is skipped, the rest still go out). Waits while the socket is full.
    pub async fn send_batch(
        &self,
        datagrams: &[Outgoing],
        mut on_error: impl FnMut(usize, io::Error),
    ) {
        let mut next = 0;
        while next < datagrams.len() {
            let end = (next + SEND_BATCH).min(datagrams.len());
            let chunk = &datagrams[next..end];
            let result = self
                .socket
                .try_io(Interest::WRITABLE, || self.sendmmsg(chunk));
            match result {
                // sendmmsg never returns 0 for a non-empty batch; max(1) guards the loop anyway.
                Ok(sent) => next += sent.max(1),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    // The first datagram of the chunk failed (e.g. EMSGSIZE,
                    // unreachable): skip it, keep the others.
                    on_error(next, error);
                    next += 1;
                }
            }
        }
    }

    fn sendmmsg(&self, datagrams: &[Outgoing]) -> io::Result<usize> {
        let count = datagrams.len().min(SEND_BATCH);
        // Fixed-size stack arrays: no allocation per batch.
        let mut addresses: [mem::MaybeUninit<SockaddrStorage>; SEND_BATCH] =
            [const { mem::MaybeUninit::uninit() }; SEND_BATCH];
        let mut iovecs: [libc::iovec; SEND_BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; SEND_BATCH];
        // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
        let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { mem::zeroed() };
        for (slot, outgoing) in datagrams.iter().take(count).enumerate() {
            let payload = outgoing.datagram.datagram();
            let address = addresses[slot].write(SockaddrStorage::from(
                self.family_matched(outgoing.endpoint),
            ));
            iovecs[slot] = libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            };
            let header = &mut headers[slot].msg_hdr;
            header.msg_name = address.as_ptr() as *mut libc::c_void;
            header.msg_namelen = address.len();
            header.msg_iov = &mut iovecs[slot];
            header.msg_iovlen = 1;
        }
        // SAFETY: `headers[..count]` point into `addresses`, `iovecs` and the
        // payload slices, all alive and unmoved for the duration of the call.
        let sent = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
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
