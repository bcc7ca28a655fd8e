//! The outside: namespaces on the lab's underlay that are not mesh hosts
//! (clients of floating IPs, the far end of egress, a machine owning an
//! address of the LAN), and an ARP probe to see who answers for an
//! address from there.

use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::Lab;

impl Lab {
    /// Adds namespace `<p>-out` with `ul0` at 198.18.0.`last`/24 on the
    /// underlay; returns its name.
    pub fn add_outside(&mut self, last: u8) -> Result<String> {
        self.add_lan_machine("out", last)
    }

    /// Adds namespace `<p>-<name>` (a machine of the LAN, not a mesh host)
    /// with `ul0` at 198.18.0.`last`/24 on the underlay bridge; returns its
    /// name. `name`: a few letters (the bridge port is `p<name>`).
    pub fn add_lan_machine(&mut self, name: &str, last: u8) -> Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        self.add_netns(&ns)?;
        let ul = self.underlay.clone();
        let port = format!("p{name}");
        self.exec_ok(
            &ul,
            &[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &ns,
            ],
        )?;
        self.exec_ok(&ul, &["ip", "link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("198.18.0.{last}/24");
        self.exec_ok(&ns, &["ip", "addr", "add", &addr, "dev", "ul0"])?;
        self.exec_ok(&ns, &["ip", "link", "set", "ul0", "up"])?;
        Ok(ns)
    }

    /// The MAC of `dev` in namespace `ns`.
    pub fn mac_of(&self, ns: &str, dev: &str) -> Result<String> {
        let out = self.exec_ok(ns, &["ip", "-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .context("no MAC in ip's answer")
    }

    /// Who answers ARP for `target` on `dev` of namespace `ns` (asking from
    /// `src`): the MACs of every reply within `wait`.
    pub fn arp_who_has(
        &self,
        ns: &str,
        dev: &str,
        src: Ipv4Addr,
        target: Ipv4Addr,
        wait: Duration,
    ) -> Result<std::collections::BTreeSet<String>> {
        let mac = crate::frames::parse_mac(&self.mac_of(ns, dev)?)?;
        let dev = dev.to_string();
        mesh_sys::netns::run_in_net(format!("/run/netns/{ns}"), move || {
            arp::who_has(&dev, mac, src, target, wait)
        })?
    }
}

/// A one-shot ARP client on a packet socket (no arping needed).
mod arp {
    use anyhow::Result;
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    use crate::frames::PacketSocket;

    const ETH_P_ARP: u16 = 0x0806;

    pub fn who_has(
        dev: &str,
        mac: [u8; 6],
        src: Ipv4Addr,
        target: Ipv4Addr,
        wait: Duration,
    ) -> Result<BTreeSet<String>> {
        let socket = PacketSocket::open(dev, ETH_P_ARP)?;
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        socket.send(&f)?;
        let mut seen = BTreeSet::new();
        let start = Instant::now();
        let mut buf = [0u8; 1514];
        while start.elapsed() < wait {
            let Some(n) = socket.recv(&mut buf) else {
                continue;
            };
            if n < 42 {
                continue;
            }
            let a = &buf[14..42];
            if a[6..8] == [0, 2] && a[14..18] == target.octets() {
                let m = &a[8..14];
                seen.insert(
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
        }
        Ok(seen)
    }
}
