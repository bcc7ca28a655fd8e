//! This host's own address on a network: a veth pair whose bridge end
//! (`<prefix>y<wire>`) is a port of the network's bridge and whose host end
//! (`<prefix>x<wire>`) carries the address. A veth rather than the bridge
//! itself, because every host's bridge has the same MAC (so containers
//! always reach their own host's DNS), while this address must be
//! reachable from containers on other hosts, which needs a MAC of its own.

use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::kernel::command::{self as kernel, Tool};
use crate::netdev::Netlink;
use crate::state::StateDir;
use mesh_model::networks;

pub fn host_ifname(prefix: &str, wire: u32) -> String {
    format!("{prefix}x{wire:08x}")
}

pub fn bridge_port_name(prefix: &str, wire: u32) -> String {
    format!("{prefix}y{wire:08x}")
}

/// Answer ARP only for addresses of the interface asked on: the host
/// address is on the veth, the service address on the bridge, and each
/// must answer with its own MAC only.
fn arp_ignore(dev: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{dev}/arp_ignore");
    std::fs::write(&path, "1").with_context(|| format!("writing {path}"))
}

/// Makes the devices carry `ip/len` (idempotent: an existing pair is
/// kept); returns the host end's MAC.
pub async fn ensure(
    nl: &Netlink,
    prefix: &str,
    wire: u32,
    mtu: u32,
    ip: Ipv4Addr,
    len: u8,
) -> Result<[u8; 6]> {
    let (x, y) = (host_ifname(prefix, wire), bridge_port_name(prefix, wire));
    let bridge_name = networks::bridge_name(prefix, wire);
    let bridge = nl
        .link(&bridge_name)
        .await?
        .context("the network's bridge is missing")?;
    if nl.link(&x).await?.is_none() || nl.link(&y).await?.is_none() {
        nl.delete(&x).await?;
        nl.create_veth(&x, &y, mtu).await?;
    }
    arp_ignore(&bridge_name)?;
    arp_ignore(&x)?;
    nl.enslave(&y, &bridge, mtu).await?;
    nl.add_address(&x, IpAddr::V4(ip), len, false).await?;
    nl.set_up(&x).await?;
    nl.link(&x)
        .await?
        .and_then(|l| l.mac)
        .with_context(|| format!("{x} has no MAC address"))
}

pub async fn remove(nl: &Netlink, prefix: &str, wire: u32) -> Result<()> {
    nl.delete(&host_ifname(prefix, wire)).await
}

/// Points the default route of the container at `netns` through `gw` on
/// `ifname` (`Some`), or takes that route away (`None`).
pub fn set_default_route(
    netns: &Path,
    ifname: &str,
    gw: Option<Ipv4Addr>,
    old: Option<Ipv4Addr>,
) -> Result<()> {
    let args: Vec<String> = match (gw, old) {
        (Some(gw), _) => [
            "route",
            "replace",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            ifname,
        ]
        .map(String::from)
        .to_vec(),
        (None, Some(old)) => [
            "route",
            "del",
            "default",
            "via",
            &old.to_string(),
            "dev",
            ifname,
        ]
        .map(String::from)
        .to_vec(),
        (None, None) => return Ok(()),
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kernel::run(Some(netns), Tool::Ip, &args)?;
    Ok(())
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// In the state directory: meshd turned forwarding on (it was off), so
/// `meshd --cleanup` turns it off again.
const FORWARDING_SET: &str = "ip-forward-set";

/// Lets this host route (floating IPs, egress); the isolation table keeps
/// everything else from being forwarded. Remembers when it was off.
pub fn enable_forwarding(state: &StateDir) -> Result<()> {
    if std::fs::read_to_string(IP_FORWARD)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(state.file(FORWARDING_SET), "net.ipv4.ip_forward was 0\n")
        .context("recording that forwarding was off")?;
    std::fs::write(IP_FORWARD, "1").with_context(|| format!("writing {IP_FORWARD}"))
}

/// Turns forwarding off again if meshd turned it on; whether it did.
pub fn restore_forwarding(state: &StateDir) -> Result<bool> {
    let marker = state.file(FORWARDING_SET);
    if !marker.exists() {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "0").with_context(|| format!("writing {IP_FORWARD}"))?;
    std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
    Ok(true)
}
