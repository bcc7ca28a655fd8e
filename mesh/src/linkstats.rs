//! Read-only facts about this host's links over netlink, for metrics and
//! `meshctl doctor`: per-device counters and MTU, and which device carries
//! the underlay. Netlink rather than `/sys/class/net`: sysfs shows the
//! namespace that mounted it, not necessarily the one meshd runs in.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// One link's MTU and counters (the kernel's `rtnl_link_stats64`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mtu: u32,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

fn handle() -> Result<rtnetlink::Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink socket")?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Every link of meshd's namespace, by name.
pub async fn links() -> Result<BTreeMap<String, Link>> {
    let msgs: Vec<_> = handle()?
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing links")?;
    let mut out = BTreeMap::new();
    for msg in msgs {
        let mut name = None;
        let mut link = Link {
            index: msg.header.index,
            ..Link::default()
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n),
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Stats64(s) => {
                    link.rx_bytes = s.rx_bytes;
                    link.rx_packets = s.rx_packets;
                    link.rx_dropped = s.rx_dropped;
                    link.tx_bytes = s.tx_bytes;
                    link.tx_packets = s.tx_packets;
                    link.tx_dropped = s.tx_dropped;
                }
                _ => {}
            }
        }
        if let Some(n) = name {
            out.insert(n, link);
        }
    }
    Ok(out)
}

/// The index of the link holding address `ip`.
async fn link_with_address(ip: IpAddr) -> Result<Option<u32>> {
    let msgs: Vec<_> = handle()?
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing addresses")?;
    Ok(msgs
        .iter()
        .find(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip)
            })
        })
        .map(|m| m.header.index))
}

/// The source address the kernel would use toward `peer`. A connected
/// UDP socket sends nothing: connect only runs the route lookup.
pub fn source_toward(peer: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match peer {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(peer, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// The underlay device and its MTU: the one holding the listen address,
/// or (listening on 0.0.0.0) the one the route toward a peer leaves by.
pub async fn underlay(listen: IpAddr, peers: &[IpAddr]) -> Result<Option<(String, u32)>> {
    let local = if listen.is_unspecified() {
        match peers.iter().find_map(|p| source_toward(*p)) {
            Some(a) => a,
            None => return Ok(None),
        }
    } else {
        listen
    };
    let Some(index) = link_with_address(local).await? else {
        return Ok(None);
    };
    Ok(links()
        .await?
        .into_iter()
        .find(|(_, l)| l.index == index)
        .map(|(name, l)| (name, l.mtu)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_is_listed_with_its_mtu_and_found_by_address() {
        let links = links().await.unwrap();
        let lo = links.get("lo").expect("lo exists in every namespace");
        assert!(lo.mtu > 0, "{lo:?}");
        let (name, mtu) = underlay("127.0.0.1".parse().unwrap(), &[])
            .await
            .unwrap()
            .expect("127.0.0.1 is on lo");
        assert_eq!((name.as_str(), mtu), ("lo", lo.mtu));
        assert_eq!(
            source_toward("127.0.0.1".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
