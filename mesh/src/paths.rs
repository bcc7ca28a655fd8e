//! Keeps the data paths' inputs current: publishes where peers see this
//! host's data port (`data_addrs`, from the data plane's probe answers) in
//! the signed member record, and hands every peer's `data_addrs` to the
//! data plane as candidate endpoints. Everything travels over the
//! authenticated control plane: no STUN or any other outside service.

use std::collections::BTreeSet;
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

/// Whether peers see the data port at an address that is not one of
/// ours: a NAT in between. Bound to one address, that address is ours;
/// bound to a wildcard, any interface address is.
pub fn behind_nat(bound: IpAddr, reflexive: &[SocketAddr], interfaces: &BTreeSet<IpAddr>) -> bool {
    reflexive.iter().any(|seen| {
        if bound.is_unspecified() {
            !interfaces.contains(&seen.ip())
        } else {
            seen.ip() != bound
        }
    })
}

/// The interface addresses as of the last read, to tell when one left,
/// and whether they must be read again (the kernel announced a change
/// since, or the last read failed).
#[derive(Debug, Default)]
pub struct Interfaces(BTreeSet<IpAddr>, bool);

impl Interfaces {
    /// Takes the addresses now; returns those that left since last time.
    pub fn update(&mut self, now: BTreeSet<IpAddr>) -> Vec<IpAddr> {
        let before = std::mem::replace(&mut self.0, now);
        before.difference(&self.0).copied().collect()
    }
}

/// One synchronisation round. What is advertised follows what peers
/// report ([`Dataplane::reflexive_addrs`]: silence forgets nothing) and
/// loses what was seen at an address that left the interfaces (roaming),
/// so an idle mesh re-signs no member record. The interface addresses are
/// read again only after `changed` (the kernel announced a change).
pub fn sync(
    node: &Node,
    peers: &PeerTable,
    dp: &Dataplane,
    interfaces: &mut Interfaces,
    changed: bool,
) {
    interfaces.1 |= changed;
    // A failed read skips the round's update and is tried again next round.
    if interfaces.1 {
        if let Ok(now) = mesh_sys::ifaddrs::local_ips() {
            interfaces.1 = false;
            let gone = interfaces.update(now);
            if !gone.is_empty() {
                dp.forget_reflexive(&gone);
            }
        }
    }
    let reflexive = dp.reflexive_addrs();
    let nat = behind_nat(dp.local_addr().ip(), &reflexive, &interfaces.0);
    // Idle paths need keep-alives behind a NAT (`dataplane/src/path.rs`).
    dp.set_local_nat(nat);
    node.set_meta(META_DATA_ADDRS, data_addrs_value(reflexive));
    node.set_meta(META_DATA_NAT, nat.then(|| "1".to_string()));
    for member in node.members() {
        peers.update_paths(&member.id, &member.meta);
    }
}

/// Names this host on relay envelopes and keeps [`sync`] running.
pub fn spawn(
    node: Node,
    peers: Arc<PeerTable>,
    dp: Dataplane,
    mut host_changes: crate::kernel::changes::Follower,
) {
    dp.set_local_tag(crate::peers::host_tag(&node.id()));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SYNC_INTERVAL);
        let mut interfaces = Interfaces::default();
        loop {
            ticks.tick().await;
            sync(&node, &peers, &dp, &mut interfaces, host_changes.take());
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
    fn interfaces_report_the_addresses_that_left() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut ifs = Interfaces::default();
        assert!(ifs.update([ip("10.1.0.7")].into()).is_empty());
        // Added (a floating IP, a bridge's address): nothing left.
        assert!(ifs
            .update([ip("10.1.0.7"), ip("10.1.0.99")].into())
            .is_empty());
        assert_eq!(
            ifs.update([ip("10.2.0.7")].into()),
            [ip("10.1.0.7"), ip("10.1.0.99")]
        );
        assert!(ifs.update([ip("10.2.0.7")].into()).is_empty());
    }

    #[test]
    fn nat_is_judged_against_the_bound_address_or_every_interface() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let seen = |s: &str| vec![s.parse::<SocketAddr>().unwrap()];
        let ifs: BTreeSet<IpAddr> = [ip("192.0.2.7"), ip("10.1.0.7")].into();
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
