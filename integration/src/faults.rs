//! Fault topologies for the path tests: hosts behind NAT routers, a host
//! with a small underlay MTU, a host whose address changes, random loss on
//! the underlay, and one port blocked between two hosts. Everything lives
//! in the lab's own namespaces and is gone with them.
//!
//! ```text
//!   <p>-ul br0 ── w<n> ── <p>-r<n> (wan 198.18.0.<100+n>, masquerade)
//!                            └── lan 10.77.<n>.1 ── ul0 10.77.<n>.2 <p>-h<n>
//! ```

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;

use crate::Lab;

/// How a router namespace translates its host's traffic.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Nat {
    /// Linux's masquerade: keeps the source port where it can, so the
    /// mapping does not depend on the destination (hole punching works).
    PortPreserving,
    /// A random source port per destination (a "symmetric" NAT): the
    /// address a third host sees is useless to anyone else.
    Symmetric,
}

const NAT_TABLE: &str = "meshlab_nat";
const LOSS_TABLE: &str = "meshlab_loss";

impl Lab {
    /// Moves host `i` (index into `hosts`) behind a NAT router of its own:
    /// its underlay link now goes to router namespace `<p>-r<n>`, whose
    /// `wan` sits on the underlay at 198.18.0.<100+n>. Call before the
    /// host's daemon starts. Returns the router's namespace.
    pub fn put_behind_nat(&mut self, i: usize, nat: Nat) -> Result<String> {
        if self.hosts[i].daemon.is_some() {
            bail!("put {} behind a NAT before starting it", self.hosts[i].name);
        }
        let n = i + 1;
        let host_ns = self.hosts[i].netns.clone();
        let router = format!("{}-r{n}", self.prefix);
        let ul = self.underlay.clone();
        // The host's own port on the bridge goes (and its ul0 with it).
        self.exec_ok(&ul, &["ip", "link", "del", &format!("p{n}")])?;
        self.add_netns(&router)?;
        let wport = format!("w{n}");
        self.exec_ok(
            &ul,
            &[
                "ip", "link", "add", &wport, "type", "veth", "peer", "name", "wan", "netns",
                &router,
            ],
        )?;
        self.exec_ok(&ul, &["ip", "link", "set", &wport, "master", "br0", "up"])?;
        let wan = format!("198.18.0.{}/24", 100 + n);
        self.exec_ok(&router, &["ip", "addr", "add", &wan, "dev", "wan"])?;
        self.exec_ok(&router, &["ip", "link", "set", "wan", "up"])?;
        self.exec_ok(
            &router,
            &[
                "ip", "link", "add", "lan", "type", "veth", "peer", "name", "ul0", "netns",
                &host_ns,
            ],
        )?;
        let gw = format!("10.77.{n}.1");
        let addr = Ipv4Addr::new(10, 77, n as u8, 2);
        self.exec_ok(
            &router,
            &["ip", "addr", "add", &format!("{gw}/24"), "dev", "lan"],
        )?;
        self.exec_ok(&router, &["ip", "link", "set", "lan", "up"])?;
        self.exec_ok(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        self.exec_ok(
            &host_ns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "ul0"],
        )?;
        self.exec_ok(&host_ns, &["ip", "link", "set", "ul0", "up"])?;
        self.exec_ok(&host_ns, &["ip", "route", "add", "default", "via", &gw])?;
        self.hosts[i].underlay_ip = addr;
        self.routers.insert(i, router.clone());
        self.apply_nat(&router, nat)?;
        Ok(router)
    }

    /// Changes the translation of host `i`'s router and forgets every
    /// mapping it made (as a NAT reboot would).
    pub fn set_nat(&self, i: usize, nat: Nat) -> Result<()> {
        let router = self.router_of(i)?;
        self.apply_nat(router, nat)?;
        self.exec_ok(router, &["conntrack", "-F"])
            .context("flushing the router's mappings (conntrack)")?;
        Ok(())
    }

    fn router_of(&self, i: usize) -> Result<&String> {
        self.routers
            .get(&i)
            .with_context(|| format!("{} is not behind a NAT", self.hosts[i].name))
    }

    fn apply_nat(&self, router: &str, nat: Nat) -> Result<()> {
        let flags = match nat {
            Nat::PortPreserving => "",
            Nat::Symmetric => " fully-random",
        };
        // Only what the host started gets back in: no port is forwarded.
        // Unsolicited datagrams to the router itself are dropped too, as a
        // NAT gateway does: accepted, they would leave a conntrack entry
        // on the router's own port that makes masquerade pick another port
        // for the host's next flow to that peer, defeating hole punching.
        let rules = format!(
            "table ip {NAT_TABLE} {{\n\
             chain post {{ type nat hook postrouting priority 100; oifname \"wan\" masquerade{flags}; }}\n\
             chain unsolicited {{ type filter hook input priority 0; iifname \"wan\" ct state new drop; }}\n\
             chain only_replies {{ type filter hook forward priority 0; policy drop;\n\
               ct state established,related accept; iifname \"lan\" oifname \"wan\" accept; }}\n\
             }}\n"
        );
        let _ = self.exec_ok(router, &["nft", "delete", "table", "ip", NAT_TABLE]);
        self.nft(router, &format!("nat-{router}"), &rules)
    }

    /// Sets the MTU of host `i`'s underlay link, at both of its ends (so the
    /// far end drops larger frames instead of delivering them: the black
    /// hole a small link in the path makes).
    pub fn set_underlay_mtu(&self, i: usize, mtu: u32) -> Result<()> {
        let n = i + 1;
        let mtu = mtu.to_string();
        let (far_ns, far_dev) = match self.routers.get(&i) {
            Some(router) => (router.clone(), "lan".to_string()),
            None => (self.underlay.clone(), format!("p{n}")),
        };
        self.exec_ok(&far_ns, &["ip", "link", "set", &far_dev, "mtu", &mtu])?;
        self.exec_ok(
            &self.hosts[i].netns,
            &["ip", "link", "set", "ul0", "mtu", &mtu],
        )?;
        Ok(())
    }

    /// Gives host `i` a new underlay address (same subnet, last octet
    /// `last`) and removes the old one, as a DHCP renumbering or a move
    /// would. Returns the new address.
    pub fn change_address(&mut self, i: usize, last: u8) -> Result<Ipv4Addr> {
        let ns = self.hosts[i].netns.clone();
        let old = self.hosts[i].underlay_ip;
        let [a, b, c, _] = old.octets();
        let new = Ipv4Addr::new(a, b, c, last);
        // Without this, removing the primary address takes the new
        // (secondary, same subnet) one with it.
        self.exec_ok(
            &ns,
            &["sysctl", "-qw", "net.ipv4.conf.ul0.promote_secondaries=1"],
        )?;
        self.exec_ok(
            &ns,
            &["ip", "addr", "add", &format!("{new}/24"), "dev", "ul0"],
        )?;
        self.exec_ok(
            &ns,
            &["ip", "addr", "del", &format!("{old}/24"), "dev", "ul0"],
        )?;
        if self.routers.contains_key(&i) {
            let gw = format!("{a}.{b}.{c}.1");
            let _ = self.exec_ok(&ns, &["ip", "route", "replace", "default", "via", &gw]);
        }
        self.hosts[i].underlay_ip = new;
        Ok(new)
    }

    /// Drops `percent` % of the frames crossing the underlay bridge, at
    /// random, in both directions (0 removes the loss).
    pub fn underlay_loss(&self, percent: u32) -> Result<()> {
        if percent > 100 {
            bail!("loss of {percent} % is not a percentage");
        }
        let ul = &self.underlay;
        let _ = self.exec_ok(ul, &["nft", "delete", "table", "bridge", LOSS_TABLE]);
        if percent == 0 {
            return Ok(());
        }
        let rule = match percent {
            100 => "drop".to_string(),
            p => format!("numgen random mod 100 < {p} drop"),
        };
        let rules = format!(
            "table bridge {LOSS_TABLE} {{\n\
             chain lossy {{ type filter hook forward priority 0; {rule}; }}\n\
             }}\n"
        );
        self.nft(ul, "loss", &rules)
    }

    /// Drops UDP traffic to and from `port` between hosts `i` and `j`
    /// (nftables in host `i`'s namespace, both directions), e.g. 7801 for
    /// the data plane only or 7800 for the control plane only.
    pub fn block_udp_port(&self, i: usize, j: usize, port: u16) -> Result<()> {
        self.block_port(i, j, "udp", port)
    }

    /// As [`Lab::block_udp_port`], for TCP (e.g. 7800: the TCP fallback's
    /// listener at the control port).
    pub fn block_tcp_port(&self, i: usize, j: usize, port: u16) -> Result<()> {
        self.block_port(i, j, "tcp", port)
    }

    fn block_port(&self, i: usize, j: usize, proto: &str, port: u16) -> Result<()> {
        let peer = self.hosts[j].underlay_ip;
        let table = if proto == "udp" {
            format!("meshlab_block_{j}_{port}")
        } else {
            format!("meshlab_block_{j}_{proto}{port}")
        };
        let rules = format!(
            "table inet {table} {{\n\
             chain input {{ type filter hook input priority 0;\n\
               ip saddr {peer} {proto} sport {port} drop; ip saddr {peer} {proto} dport {port} drop; }}\n\
             chain output {{ type filter hook output priority 0;\n\
               ip daddr {peer} {proto} dport {port} drop; ip daddr {peer} {proto} sport {port} drop; }}\n\
             }}\n"
        );
        self.nft(&self.hosts[i].netns, &table, &rules)
    }

    /// Drops all UDP between host `i` and the hosts `others` (nftables in
    /// host `i`'s namespace, both directions); TCP still passes.
    pub fn block_udp(&self, i: usize, others: &[usize]) -> Result<()> {
        self.block_proto(i, others, "udp")
    }

    /// Lifts [`Lab::block_udp`].
    pub fn unblock_udp(&self, i: usize) -> Result<()> {
        self.unblock_proto(i, "udp")
    }

    /// Drops all TCP between host `i` and the hosts `others`, like
    /// [`Lab::block_udp`].
    pub fn block_tcp(&self, i: usize, others: &[usize]) -> Result<()> {
        self.block_proto(i, others, "tcp")
    }

    fn block_proto(&self, i: usize, others: &[usize], proto: &str) -> Result<()> {
        let set: Vec<String> = others
            .iter()
            .map(|o| self.hosts[*o].underlay_ip.to_string())
            .collect();
        let set = set.join(", ");
        let table = format!("meshlab_block_{proto}");
        let rules = format!(
            "table inet {table} {{\n\
             chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} meta l4proto {proto} drop; }}\n\
             chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} meta l4proto {proto} drop; }}\n\
             }}\n"
        );
        self.nft(&self.hosts[i].netns, &table, &rules)
    }

    fn unblock_proto(&self, i: usize, proto: &str) -> Result<()> {
        let table = format!("meshlab_block_{proto}");
        self.exec_ok(
            &self.hosts[i].netns,
            &["nft", "delete", "table", "inet", &table],
        )?;
        Ok(())
    }

    /// Lifts [`Lab::block_udp_port`].
    pub fn unblock_udp_port(&self, i: usize, j: usize, port: u16) -> Result<()> {
        let table = format!("meshlab_block_{j}_{port}");
        self.exec_ok(
            &self.hosts[i].netns,
            &["nft", "delete", "table", "inet", &table],
        )?;
        Ok(())
    }

    fn nft(&self, ns: &str, name: &str, rules: &str) -> Result<()> {
        let file = self.dir.join(format!("{name}.nft"));
        std::fs::write(&file, rules)?;
        self.exec_ok(
            ns,
            &["nft", "-f", file.to_str().context("path is not UTF-8")?],
        )?;
        Ok(())
    }
}
