//! Changes of the host's interfaces, addresses and routes, as the kernel
//! announces them (rtnetlink multicast groups), so that what follows them
//! re-reads on a change instead of dumping the tables on a timer.
//!
//! Only "something changed" is reported: a reader re-reads what it needs
//! (`getifaddrs`, a route dump), so a lost or unparsed message can only
//! cost a re-read, never a wrong view. A receive queue that overflowed
//! (`ENOBUFS`: messages were dropped) counts as a change for that reason.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use tokio::io::unix::AsyncFd;

/// What is subscribed to (`<linux/rtnetlink.h>` `RTMGRP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Groups(u32);

impl Groups {
    /// Interfaces appearing, going, going up or down, changing MTU.
    pub const LINKS: Groups = Groups(libc::RTMGRP_LINK as u32);
    /// IPv4 and IPv6 addresses added or removed.
    pub const ADDRESSES: Groups =
        Groups((libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32);
    /// IPv4 and IPv6 routes added or removed.
    pub const ROUTES: Groups = Groups((libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE) as u32);

    pub const fn with(self, other: Groups) -> Groups {
        Groups(self.0 | other.0)
    }
}

/// One subscription, in the network namespace of the thread that made it.
pub struct NetWatch {
    fd: AsyncFd<OwnedFd>,
}

impl NetWatch {
    /// Subscribes to `groups`. Needs a tokio runtime; no privilege.
    pub fn new(groups: Groups) -> io::Result<NetWatch> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups.0))?;
        // SAFETY: `fd` is an open socket that the `AsyncFd` owns from here
        // on: nothing else closes it or registers it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(NetWatch { fd })
    }

    /// Waits until the kernel announces a change, then takes every message
    /// queued so far (a burst is one change). An error other than an
    /// overflow means the subscription is broken; the caller falls back to
    /// polling.
    pub async fn changed(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            let mut ready = self.fd.readable().await?;
            let mut got = false;
            loop {
                match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(_) => got = true,
                    Err(nix::errno::Errno::ENOBUFS) => got = true,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            ready.clear_ready();
            if got {
                return Ok(());
            }
        }
    }
}

/// A [`NetWatch`], or a poll where one cannot be had (said once, in the
/// log): what a follower of changes waits on.
pub struct Changes {
    watch: Option<NetWatch>,
    poll: std::time::Duration,
    what: &'static str,
}

impl Changes {
    /// Follows `groups`; `what` names them in the log.
    pub fn new(groups: Groups, poll: std::time::Duration, what: &'static str) -> Changes {
        let watch = NetWatch::new(groups)
            .map_err(|e| tracing::warn!("cannot follow {what}, re-reading every {poll:?}: {e}"))
            .ok();
        Changes { watch, poll, what }
    }

    /// Returns at the kernel's next announcement, or after the poll
    /// interval without a subscription (or once it broke).
    pub async fn next(&mut self) {
        let (what, poll) = (self.what, self.poll);
        match self.watch.as_mut() {
            Some(w) => {
                if let Err(e) = w.changed().await {
                    tracing::warn!("lost {what}, re-reading every {poll:?}: {e}");
                    self.watch = None;
                }
            }
            None => tokio::time::sleep(poll).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// In a namespace of its own (so nothing else moves it), bringing `lo`
    /// up is announced, and nothing is announced before.
    #[test]
    fn an_address_or_link_change_is_announced() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        std::thread::spawn(|| {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("skipped: no network namespace of its own: {e}");
                return;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut watch = NetWatch::new(Groups::LINKS.with(Groups::ADDRESSES)).unwrap();
                let quiet = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
                assert!(
                    quiet.is_err(),
                    "a change announced in an untouched namespace"
                );
                // `ip` forked from this thread runs in its namespace.
                let up = std::process::Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()
                    .unwrap();
                assert!(up.success());
                tokio::time::timeout(Duration::from_secs(5), watch.changed())
                    .await
                    .expect("bringing lo up was not announced")
                    .unwrap();
            });
        })
        .join()
        .unwrap();
    }
}
