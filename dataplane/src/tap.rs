//! TAP device opened directly through `/dev/net/tun` ioctls, non-blocking,
//! with `IFF_VNET_HDR` and TSO/checksum offloads when the kernel offers them:
//! the bridge then hands us TCP super-segments (up to 64 KB) with a
//! `virtio_net_hdr` in front, which [`crate::offload`] splits in userspace.
//!
//! We only open (or create) the device: the daemon enslaves it to its bridge
//! and sets MTU and link state over netlink, so nothing here touches those.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::offload::VNET_HDR_LEN;

/// Largest frame read from or written to a TAP without offloads: a 9000-byte
/// jumbo MTU plus Ethernet and VLAN headers, rounded up. Also the size of the
/// pooled per-frame buffers.
pub const MAX_TAP_FRAME: usize = 9216 + 32;
/// Largest read from a TAP with offloads: vnet header + 64 KB super-frame.
pub const MAX_TAP_READ: usize = VNET_HDR_LEN + 65_536 + 64;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One open queue of a TAP device.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    /// Every read and write carries a `virtio_net_hdr` first.
    vnet_hdr: bool,
    /// TSO/checksum offloads are on: reads may be super-segments.
    offload: bool,
    /// The flags it was attached with (more queues must use the same).
    flags: libc::c_short,
}

/// Opens `name` as a non-blocking, multi-queue TAP with vnet headers and TCP
/// offloads, falling back step by step (single queue if the device exists
/// without IFF_MULTI_QUEUE; no vnet header; no offloads). Without `offload`
/// it opens a plain TAP (one MTU-sized frame per read, no vnet header).
pub fn open(name: &str, offload: bool) -> io::Result<Tap> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let mut last_error = None;
    for flags in [
        IFF_MULTI_QUEUE | IFF_VNET_HDR,
        IFF_VNET_HDR,
        IFF_MULTI_QUEUE,
        0,
    ] {
        if !offload && flags & IFF_VNET_HDR != 0 {
            continue;
        }
        match open_with(name, flags) {
            Ok(tap) => return Ok(tap),
            Err(error) => {
                tracing::debug!(name, flags, %error, "TAP open attempt failed");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("TAP open failed")))
}

/// Opens `/dev/net/tun` as device `name` with `flags` (`IFF_TAP` or
/// `IFF_TUN`, plus options; never a packet-info header), non-blocking.
/// Also the WireGuard gateway's TUN (`tun_device`).
fn open_device(name: &str, flags: libc::c_short) -> io::Result<OwnedFd> {
    // SAFETY: plain open(2) of a NUL-terminated path; the fd is owned right after.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!(
            "device name {name:?} is too long"
        )));
    }
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: flags | IFF_NO_PI,
        _pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads/writes a struct ifreq, which IfReq mirrors (40 bytes).
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut request as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A layer-3 TUN device `name` (IP packets, no header), non-blocking, in
/// the calling thread's network namespace.
pub fn tun_device(name: &str) -> io::Result<OwnedFd> {
    open_device(name, IFF_TUN)
}

fn open_with(name: &str, extra_flags: libc::c_short) -> io::Result<Tap> {
    let fd = open_device(name, IFF_TAP | extra_flags)?;
    let vnet_hdr = extra_flags & IFF_VNET_HDR != 0;
    let mut offload = false;
    if vnet_hdr {
        let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const libc::c_int) } < 0
        {
            return Err(io::Error::last_os_error());
        }
        let features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        offload =
            unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, features as libc::c_ulong) } == 0;
        if !offload {
            tracing::debug!(name, error = %io::Error::last_os_error(), "TAP offloads unavailable");
        }
    }
    tracing::debug!(
        name,
        vnet_hdr,
        offload,
        multi_queue = extra_flags & IFF_MULTI_QUEUE != 0,
        "TAP opened"
    );
    Ok(Tap {
        fd,
        name: name.to_string(),
        vnet_hdr,
        offload,
        flags: extra_flags,
    })
}

/// Attaches one more queue to the multi-queue TAP `first` belongs to, with
/// the same vnet header and offloads. The kernel spreads flows over the
/// queues and keeps each flow on one.
pub fn open_queue(first: &Tap) -> io::Result<Tap> {
    let queue = open_with(&first.name, first.flags)?;
    if queue.offload != first.offload {
        return Err(io::Error::other(
            "TAP queue offloads differ from the first queue's",
        ));
    }
    Ok(queue)
}

impl Tap {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    pub fn has_offload(&self) -> bool {
        self.offload
    }

    pub fn is_multi_queue(&self) -> bool {
        self.flags & IFF_MULTI_QUEUE != 0
    }

    /// One frame (with its vnet header if enabled); `WouldBlock` when empty.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut c_void,
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one frame (with its vnet header if enabled).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for reads of its length.
        let n = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                buf.as_ptr() as *const c_void,
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
