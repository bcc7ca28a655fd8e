//! Kernel network devices through netlink: bridges, veth pairs, addresses.
//!
//! Network namespaces are per thread, so work inside a container's
//! namespace runs on a thread of its own ([`in_netns`], on
//! [`mesh_sys::netns`]) with its own netlink socket opened there.

use anyhow::{anyhow, bail, Context, Result};
use futures::{Stream, StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::MacVlanMode;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkMacVlan, LinkUnspec, LinkVeth};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A netlink connection in the namespace of the thread that opened it.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// What we need to know of a link.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub controller: Option<u32>,
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        controller: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                info.mac = Some(mac);
            }
            LinkAttribute::Controller(c) => info.controller = Some(*c),
            _ => {}
        }
    }
    info
}

/// `aa:bb:cc:dd:ee:ff` → bytes; anything else is None.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// ENODEV / "No such device": the link does not exist.
fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.map(|c| c.get()) == Some(-libc::ENODEV))
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's namespace. Needs a
    /// tokio runtime (the connection task is spawned on it).
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The names of links deleted in the calling thread's namespace, as
    /// the kernel announces them (`RTNLGRP_LINK`). A busy kernel may drop
    /// announcements: whoever relies on this also checks now and then.
    pub fn link_deletions() -> Result<impl Stream<Item = String>> {
        let (conn, _handle, messages) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
                .context("subscribing to link events")?;
        tokio::spawn(conn);
        Ok(messages.filter_map(|(msg, _)| async move {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    Some(link_info(&link).name)
                }
                _ => None,
            }
        }))
    }

    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_info(&msg))),
            Ok(None) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(anyhow!(e).context(format!("looking up link {name}"))),
        }
    }

    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing links")?;
        Ok(msgs.iter().map(link_info).collect())
    }

    async fn must_link(&self, name: &str) -> Result<LinkInfo> {
        self.link(name)
            .await?
            .ok_or_else(|| anyhow!("link {name} does not exist"))
    }

    /// Creates the bridge if missing (re-adopts it otherwise), with the
    /// given MAC and MTU, and brings it up. No IPv6 link-local address: the
    /// same bridge MAC exists on every host, and duplicate address
    /// detection across the overlay would only fail.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<LinkInfo> {
        if self.link(name).await?.is_none() {
            self.handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .with_context(|| format!("creating bridge {name}"))?;
        }
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/addr_gen_mode"), "1");
        // Overlay frames need not pass the host's iptables (br_netfilter):
        // that costs every frame a trip through the IP firewall hooks.
        for hook in ["nf_call_iptables", "nf_call_ip6tables", "nf_call_arptables"] {
            let _ = std::fs::write(format!("/sys/class/net/{name}/bridge/{hook}"), "0");
        }
        let info = self.must_link(name).await?;
        self.set(
            LinkUnspec::new_with_index(info.index)
                .mtu(mtu)
                .address(mac.to_vec())
                .up()
                .build(),
            name,
        )
        .await?;
        Ok(info)
    }

    /// Adds (or re-adds) an address; `nodad` skips duplicate address
    /// detection, for addresses that are unique by construction.
    pub async fn add_address(
        &self,
        dev: &str,
        addr: IpAddr,
        prefix: u8,
        nodad: bool,
    ) -> Result<()> {
        let info = self.must_link(dev).await?;
        let mut req = self
            .handle
            .address()
            .add(info.index, addr, prefix)
            .replace();
        if nodad {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .with_context(|| format!("adding {addr}/{prefix} to {dev}"))
    }

    /// Puts `dev` on `bridge` with the given MTU and brings it up.
    pub async fn enslave(&self, dev: &str, bridge: &LinkInfo, mtu: u32) -> Result<()> {
        let info = self.must_link(dev).await?;
        self.set(
            LinkUnspec::new_with_index(info.index)
                .mtu(mtu)
                .controller(bridge.index)
                .up()
                .build(),
            dev,
        )
        .await
    }

    pub async fn set_mtu(&self, dev: &str, mtu: u32) -> Result<()> {
        let info = self.must_link(dev).await?;
        self.set(LinkUnspec::new_with_index(info.index).mtu(mtu).build(), dev)
            .await
    }

    /// A macvlan (bridge mode) on the link with index `parent`.
    pub async fn create_macvlan(&self, name: &str, parent: u32) -> Result<()> {
        self.handle
            .link()
            .add(LinkMacVlan::new(name, parent, MacVlanMode::Bridge).build())
            .execute()
            .await
            .with_context(|| format!("creating macvlan {name}"))
    }

    pub async fn create_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).mtu(mtu).build())
            .execute()
            .await
            .with_context(|| format!("creating veth pair {name}/{peer}"))
    }

    pub async fn move_to_netns(&self, dev: &str, netns: &OwnedFd) -> Result<()> {
        let info = self.must_link(dev).await?;
        self.set(
            LinkUnspec::new_with_index(info.index)
                .setns_by_fd(netns.as_raw_fd())
                .build(),
            dev,
        )
        .await
    }

    /// Renames `dev` to `new_name`, sets MTU, adds the address and brings
    /// it up; returns its MAC.
    pub async fn configure_interface(
        &self,
        dev: &str,
        new_name: &str,
        mtu: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<[u8; 6]> {
        let info = self.must_link(dev).await?;
        if let Some(existing) = self.link(new_name).await? {
            if existing.index != info.index {
                bail!("an interface named {new_name} already exists in the container");
            }
        }
        self.set(
            LinkUnspec::new_with_index(info.index)
                .name(new_name.to_string())
                .mtu(mtu)
                .build(),
            dev,
        )
        .await?;
        self.handle
            .address()
            .add(info.index, addr, prefix)
            .execute()
            .await
            .with_context(|| format!("adding {addr}/{prefix} to {new_name}"))?;
        self.set(
            LinkUnspec::new_with_index(info.index).up().build(),
            new_name,
        )
        .await?;
        if let Some(lo) = self.link("lo").await? {
            self.set(LinkUnspec::new_with_index(lo.index).up().build(), "lo")
                .await?;
        }
        info.mac
            .ok_or_else(|| anyhow!("interface {new_name} has no MAC address"))
    }

    /// Brings `dev` up.
    pub async fn set_up(&self, dev: &str) -> Result<()> {
        let info = self.must_link(dev).await?;
        self.set(LinkUnspec::new_with_index(info.index).up().build(), dev)
            .await
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let Some(info) = self.link(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(info.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(anyhow!(e).context(format!("deleting link {name}"))),
        }
    }

    async fn set(&self, msg: LinkMessage, what: &str) -> Result<()> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("configuring link {what}"))
    }
}

/// A network namespace named by a process or a namespace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsTarget {
    /// The namespace file we opened (`/proc/PID/ns/net` or the path given).
    pub path: PathBuf,
    /// Device and inode of the namespace: its identity, stable across
    /// different paths to the same namespace.
    pub dev: u64,
    pub ino: u64,
}

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why a target does not name a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no target given: pass a PID or a network namespace path")]
    Empty,
    #[error("no process with PID {0}")]
    NoProcess(u32),
    #[error("{0:?} is not a valid PID")]
    BadPid(String),
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot inspect {path}: {source}")]
    Inspect { path: PathBuf, source: nix::Error },
    #[error("{0} is not a network namespace (not an nsfs file)")]
    NotNamespace(PathBuf),
}

impl TargetError {
    /// The target named something that does not exist (rather than
    /// something malformed).
    pub fn is_missing(&self) -> bool {
        matches!(self, TargetError::NoProcess(_))
    }
}

impl NetnsTarget {
    /// Parses `PID` or `/path/to/netns` and checks that it really is a
    /// network namespace.
    pub fn resolve(target: &str) -> Result<NetnsTarget, TargetError> {
        let target = target.trim();
        if target.is_empty() {
            return Err(TargetError::Empty);
        }
        let path = if target.chars().all(|c| c.is_ascii_digit()) {
            let pid: u32 = target
                .parse()
                .map_err(|_| TargetError::BadPid(target.to_string()))?;
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(TargetError::NoProcess(pid));
            }
            PathBuf::from(format!("/proc/{pid}/ns/net"))
        } else {
            PathBuf::from(target)
        };
        let open_err = |source| TargetError::Open {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(open_err)?;
        let stat = nix::sys::statfs::statfs(&path).map_err(|source| TargetError::Inspect {
            path: path.clone(),
            source,
        })?;
        if stat.filesystem_type().0 as i64 != NSFS_MAGIC {
            return Err(TargetError::NotNamespace(path));
        }
        // The file must open: nsfs files of dead namespaces do not.
        drop(std::fs::File::open(&path).map_err(open_err)?);
        use std::os::unix::fs::MetadataExt;
        Ok(NetnsTarget {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn open(&self) -> Result<OwnedFd> {
        let file = std::fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        Ok(OwnedFd::from(file))
    }

    /// Whether this namespace is the daemon's own (attaching there would
    /// move the veth into the host).
    pub fn is_current(&self) -> bool {
        Self::resolve("/proc/thread-self/ns/net")
            .map(|me| me.dev == self.dev && me.ino == self.ino)
            .unwrap_or(false)
    }

    /// Whether the namespace still exists at the recorded path.
    pub fn still_exists(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path)
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace `ns`,
/// with a current-thread tokio runtime so netlink can be used there.
pub async fn in_netns<T, F, Fut>(ns: &NetnsTarget, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let fd = ns.open()?;
    let what = ns.path.display().to_string();
    tokio::task::spawn_blocking(move || -> Result<T> {
        mesh_sys::netns::run_in_fd(fd, mesh_sys::netns::Kind::Net, &what, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a runtime inside the namespace")?
                .block_on(f())
        })?
    })
    .await
    .map_err(|e| anyhow!("namespace task failed: {e}"))?
}

/// The hostname a process sees (its UTS namespace).
pub fn hostname_of(pid: u32) -> Option<String> {
    mesh_sys::netns::run_in(
        format!("/proc/{pid}/ns/uts"),
        mesh_sys::netns::Kind::Uts,
        || nix::unistd::gethostname().ok()?.into_string().ok(),
    )
    .ok()
    .flatten()
}
