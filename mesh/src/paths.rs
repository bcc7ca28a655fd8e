//! Keeps the data paths' inputs current: publishes where peers see this
//! host's data port (`data_addrs`, from the data plane's probe answers) in
//! the signed member record, and hands every peer's `data_addrs` to the
//! data plane as candidate endpoints. Everything travels over the
//! authenticated control plane: no STUN or any other outside service.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dataplane::Dataplane;
use gossip::Node;

use crate::peers::{PeerTable, META_DATA_ADDRS, META_DATA_NAT};

/// How often reflexive addresses and candidates are synchronised.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// At most this many reflexive addresses are advertised.
const MAX_ADVERTISED: usize = 4;

/// The `data_addrs` value for these reflexive addresses (sorted, bounded;
/// None when there are none).
pub fn data_addrs_value(mut addrs: Vec<SocketAddr>) -> Option<String> {
    addrs.sort();
    addrs.dedup();
    addrs.truncate(MAX_ADVERTISED);
    (!addrs.is_empty()).then(|| {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// This host's interface addresses.
fn interface_ips() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let addr = ifa.address?;
            match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                _ => None,
            }
        })
        .collect()
}

/// Whether peers see the data port at an address that is not one of
/// ours: a NAT in between. Bound to one address, that address is ours;
/// bound to a wildcard, any interface address is.
pub fn behind_nat(bound: IpAddr, reflexive: &[SocketAddr], interfaces: &[IpAddr]) -> bool {
    reflexive.iter().any(|seen| {
        if bound.is_unspecified() {
            !interfaces.contains(&seen.ip())
        } else {
            seen.ip() != bound
        }
    })
}

/// The data addresses this host advertises, and whether it is behind a
/// NAT: changed by what peers report, never by silence. Without traffic no
/// peer probes us and the data plane's reflexive addresses expire (60 s);
/// withdrawing them then would re-sign this host's member record and flood
/// it to every host each time the mesh goes quiet and busy again: O(N)
/// messages per host per cycle, for addresses that did not change.
#[derive(Debug, Default)]
pub struct Advertised {
    /// Oldest first.
    addrs: Vec<SocketAddr>,
    interfaces: Vec<IpAddr>,
    nat: bool,
}

impl Advertised {
    /// Takes this round's reflexive addresses (`seen`) and interface
    /// addresses. New addresses are added (beyond [`MAX_ADVERTISED`] the
    /// oldest not seen now leave); one of ours that left the interfaces
    /// (roaming) is dropped; nothing seen keeps the rest. Returns what to
    /// advertise and whether we are behind a NAT (the last verdict while
    /// nothing is seen).
    pub fn observe(
        &mut self,
        seen: &[SocketAddr],
        bound: IpAddr,
        interfaces: Vec<IpAddr>,
    ) -> (&[SocketAddr], bool) {
        let before = std::mem::replace(&mut self.interfaces, interfaces);
        let now = &self.interfaces;
        self.addrs
            .retain(|a| !(before.contains(&a.ip()) && !now.contains(&a.ip())));
        for a in seen {
            if !self.addrs.contains(a) {
                self.addrs.push(*a);
            }
        }
        while self.addrs.len() > MAX_ADVERTISED {
            let oldest_unseen = self.addrs.iter().position(|a| !seen.contains(a));
            self.addrs.remove(oldest_unseen.unwrap_or(0));
        }
        if !seen.is_empty() {
            self.nat = behind_nat(bound, seen, &self.interfaces);
        }
        (&self.addrs, self.nat)
    }
}

/// One synchronisation round.
pub fn sync(node: &Node, peers: &PeerTable, dp: &Dataplane, advertised: &mut Advertised) {
    let (addrs, nat) =
        advertised.observe(&dp.reflexive_addrs(), dp.local_addr().ip(), interface_ips());
    // Idle paths need keep-alives behind a NAT (`dataplane/src/path.rs`).
    dp.set_local_nat(nat);
    node.set_meta(META_DATA_ADDRS, data_addrs_value(addrs.to_vec()));
    node.set_meta(META_DATA_NAT, nat.then(|| "1".to_string()));
    for member in node.members() {
        peers.update_paths(&member.id, &member.meta);
    }
}

/// Names this host on relay envelopes and keeps [`sync`] running.
pub fn spawn(node: Node, peers: Arc<PeerTable>, dp: Dataplane) {
    dp.set_local_tag(crate::peers::host_tag(&node.id()));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SYNC_INTERVAL);
        let mut advertised = Advertised::default();
        loop {
            ticks.tick().await;
            sync(&node, &peers, &dp, &mut advertised);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::parse_data_addrs;

    #[test]
    fn data_addrs_are_sorted_deduplicated_bounded_and_round_trip() {
        let addrs: Vec<SocketAddr> = ["198.18.0.9:7801", "10.0.0.1:4000", "198.18.0.9:7801"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let value = data_addrs_value(addrs).unwrap();
        assert_eq!(value, "10.0.0.1:4000,198.18.0.9:7801");
        assert_eq!(parse_data_addrs(&value).len(), 2);
        assert_eq!(data_addrs_value(vec![]), None);
        let many = (0..10)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], 1000 + p)))
            .collect();
        assert_eq!(parse_data_addrs(&data_addrs_value(many).unwrap()).len(), 4);
        assert_eq!(
            parse_data_addrs("junk, 1.2.3.4:5 ,::"),
            vec!["1.2.3.4:5".parse().unwrap()]
        );
    }

    #[test]
    fn advertised_addresses_change_by_observation_not_by_silence() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let bound = ip("0.0.0.0");
        let ifs = || vec![ip("10.1.0.7")];
        let mut adv = Advertised::default();
        assert_eq!(adv.observe(&[], bound, ifs()), (&[][..], false));
        let own = a("10.1.0.7:7801");
        assert_eq!(adv.observe(&[own], bound, ifs()), (&[own][..], false));
        // Nothing heard (every path idle): still advertised.
        assert_eq!(adv.observe(&[], bound, ifs()), (&[own][..], false));
        // A peer sees us through a NAT: added, and the verdict holds
        // while nothing is heard.
        let mapped = a("198.51.100.9:40000");
        assert_eq!(
            adv.observe(&[mapped], bound, ifs()),
            (&[own, mapped][..], true)
        );
        assert_eq!(adv.observe(&[], bound, ifs()), (&[own, mapped][..], true));
        // Beyond the bound the oldest not seen now leave.
        let seen: Vec<SocketAddr> = (1..=4).map(|p| a(&format!("198.51.100.9:{p}"))).collect();
        assert_eq!(adv.observe(&seen, bound, ifs()).0, &seen[..]);
        // An address added to an interface (a floating IP) changes nothing.
        let more = vec![ip("10.1.0.7"), ip("10.1.0.99")];
        assert_eq!(adv.observe(&[], bound, more).0, &seen[..]);
        // Roaming: an address of ours that left is dropped; the verdict
        // follows what is seen from the new one.
        let mut adv = Advertised::default();
        adv.observe(&[own], bound, ifs());
        let moved = vec![ip("10.2.0.7")];
        assert_eq!(adv.observe(&[], bound, moved.clone()), (&[][..], false));
        let own2 = a("10.2.0.7:7801");
        assert_eq!(adv.observe(&[own2], bound, moved), (&[own2][..], false));
    }

    #[test]
    fn nat_is_judged_against_the_bound_address_or_every_interface() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let seen = |s: &str| vec![s.parse::<SocketAddr>().unwrap()];
        let ifs = [ip("192.0.2.7"), ip("10.1.0.7")];
        assert!(!behind_nat(ip("192.0.2.7"), &seen("192.0.2.7:7801"), &ifs));
        assert!(behind_nat(
            ip("192.0.2.7"),
            &seen("198.51.100.9:40000"),
            &ifs
        ));
        // Bound to the wildcard: any interface address is ours.
        assert!(!behind_nat(ip("0.0.0.0"), &seen("10.1.0.7:7801"), &ifs));
        assert!(behind_nat(ip("0.0.0.0"), &seen("198.51.100.9:40000"), &ifs));
        assert!(!behind_nat(ip("0.0.0.0"), &[], &ifs));
    }
}
