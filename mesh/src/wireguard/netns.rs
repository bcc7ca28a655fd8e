//! A client's namespace on its gateway: a fresh network namespace that
//! meshd holds open (it dies with meshd, or when the client is removed),
//! holding a TUN device the tunnel reads and writes. The namespace is
//! attached to the client's network like a container's, so its veth gets
//! the client's address, MAC, port security, policy and DNS name; then
//! [`route`] makes it a router between the two: what arrives on the veth
//! for the client goes into the TUN (not to a local socket), what comes
//! out of the TUN goes out the veth with the client's own source.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::kernel::command::{self, Tool};

/// The TUN device's name inside a client's namespace.
pub const TUN_NAME: &str = "wg0";
/// The policy-routing table (and rule priority) that sends the client's
/// addresses to the TUN.
const TABLE: &str = "100";

/// A client's namespace and its TUN, held open by meshd.
pub struct ClientNetns {
    /// Keeps the namespace alive.
    pub ns: OwnedFd,
    pub tun: OwnedFd,
}

impl ClientNetns {
    /// Creates the namespace and the TUN inside it, on a thread of its own
    /// (a namespace belongs to the thread that entered it).
    pub fn create() -> Result<ClientNetns> {
        std::thread::spawn(|| -> Result<ClientNetns> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .context("creating a network namespace")?;
            let ns = mesh_sys::netns::open("/proc/thread-self/ns/net")?;
            let tun = dataplane::tap::tun_device(TUN_NAME).context("creating the TUN device")?;
            Ok(ClientNetns { ns, tun })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    }

    /// A path to the namespace any part of meshd can open (attach, policy,
    /// services): meshd's own descriptor of it.
    pub fn path(&self) -> PathBuf {
        path_of(&self.ns)
    }
}

/// The path of a namespace meshd holds open as `ns`.
pub fn path_of(ns: &OwnedFd) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        ns.as_raw_fd()
    ))
}

/// Makes the namespace at `path` route between its veth `eth` (which the
/// attachment gave the client's addresses) and the TUN. IPv4: a rule
/// ahead of the local table sends what arrives on `eth` for the client
/// into the TUN, proxy ARP answers for the address (no longer local to
/// `eth`'s arrivals), and the TUN accepts packets with the client's
/// (local) source, which leave through `eth`. IPv6 the plain way: the
/// address leaves `eth` (so neighbour discovery speaks from the
/// link-local address, and its answers are not routed to the client), a
/// host route sends it to the TUN, and a proxy entry answers for it.
pub fn route(
    path: &std::path::Path,
    eth: &str,
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    prefix6: ipnet::Ipv6Net,
    mtu: u32,
) -> Result<()> {
    let sysctls = [
        "ipv4/ip_forward".to_string(),
        "ipv4/conf/all/forwarding".into(),
        format!("ipv4/conf/{TUN_NAME}/accept_local"),
        "ipv4/conf/all/rp_filter".into(),
        format!("ipv4/conf/{TUN_NAME}/rp_filter"),
        format!("ipv4/conf/{eth}/rp_filter"),
        format!("ipv4/conf/{eth}/proxy_arp"),
        "ipv6/conf/all/forwarding".into(),
        format!("ipv6/conf/{eth}/proxy_ndp"),
        // No link-local address on the TUN: nothing of the namespace's
        // own goes to the client.
        format!("ipv6/conf/{TUN_NAME}/addr_gen_mode"),
    ];
    let (eth_owned, values) = (eth.to_string(), sysctls);
    let (failed, has_ipv6) = mesh_sys::netns::run_in_net(path, move || {
        let mut failed = Vec::new();
        for key in &values {
            let value = if key.ends_with("rp_filter") { "0" } else { "1" };
            // A namespace without IPv6 (disabled on the host) has no
            // ipv6 keys: IPv4 alone is what must work.
            let result = std::fs::write(format!("/proc/sys/net/{key}"), value);
            if let (Err(e), true) = (result, key.starts_with("ipv4")) {
                failed.push(format!("{key}: {e}"));
            }
        }
        // Proxy ARP and NDP answer at once, not after a random delay.
        for family in ["ipv4", "ipv6"] {
            let _ = std::fs::write(
                format!("/proc/sys/net/{family}/neigh/{eth_owned}/proxy_delay"),
                "0",
            );
        }
        let has_ipv6 = std::path::Path::new("/proc/sys/net/ipv6/conf/all").exists();
        (failed, has_ipv6)
    })?;
    if !failed.is_empty() {
        bail!("setting up forwarding: {}", failed.join(", "));
    }
    let ip4 = format!("{ip}/32");
    let ip6_host = format!("{ip6}/128");
    let ip6_eth = format!("{ip6}/{}", prefix6.prefix_len());
    let prefix6 = prefix6.to_string();
    let mtu = mtu.to_string();
    let v4: [&[&str]; 6] = [
        &["link", "set", "lo", "up"],
        &["link", "set", TUN_NAME, "mtu", &mtu, "up"],
        &[
            "-4", "route", "replace", &ip4, "dev", TUN_NAME, "table", TABLE,
        ],
        &[
            "-4", "rule", "add", "pref", TABLE, "iif", eth, "lookup", TABLE,
        ],
        &["-4", "rule", "add", "pref", "200", "lookup", "local"],
        &["-4", "rule", "del", "pref", "0", "lookup", "local"],
    ];
    let proxied = ip6.to_string();
    let v6: [&[&str]; 4] = [
        &["-6", "addr", "del", &ip6_eth, "dev", eth],
        &["-6", "route", "replace", &prefix6, "dev", eth],
        &["-6", "route", "replace", &ip6_host, "dev", TUN_NAME],
        &["-6", "neigh", "add", "proxy", &proxied, "dev", eth],
    ];
    // A namespace without IPv6 (disabled on the host): IPv4 alone.
    let v6: &[&[&str]] = if has_ipv6 { &v6 } else { &[] };
    for args in v4.iter().chain(v6) {
        command::run(Some(path), Tool::Ip, args)
            .with_context(|| format!("routing the client's namespace: ip {}", args.join(" ")))?;
    }
    Ok(())
}
