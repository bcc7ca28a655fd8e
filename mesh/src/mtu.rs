//! Interface MTU of the overlay networks. Each host advertises the MTU of
//! its underlay interface (`underlay_mtu` meta); a network without an
//! explicit `--mtu` gets what the smallest of them allows, re-applied when
//! a member with a smaller underlay joins. The same figures bound each
//! peer's path MTU in the data plane (`Dataplane::set_mtu_cap`) until
//! probing knows better.
//!
//! Floor: 1280. Every network carries IPv6, and Linux removes IPv6 from an
//! interface whose MTU drops below 1280; a path smaller than that is left
//! to the data plane's MSS clamping and ICMP answers, per peer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use dataplane::IpVersion;

use crate::kernel::interfaces;
use mesh_model::networks::{self, MAX_MTU, MIN_MTU};
use mesh_model::records::{NetworkSettings, Records};

pub const META_UNDERLAY_MTU: &str = "underlay_mtu";
/// Assumed for a host that advertises nothing (versions before this one
/// assumed it of every host).
pub const ASSUMED_UNDERLAY_MTU: u32 = 1500;
const UDP_HEADER_LEN: u32 = 8;

/// The MTU of the interface holding `ip`; for an unspecified address the
/// smallest MTU of the up, non-loopback interfaces with an address of that
/// family (the daemon may use any of them). None: nothing found.
pub fn underlay_mtu(ip: IpAddr) -> Option<u32> {
    let ifs = crate::kernel::interfaces::list().ok()?;
    if let Some(i) = ifs.iter().find(|i| i.addrs.iter().any(|a| a.addr() == ip)) {
        return interfaces::mtu(&i.name);
    }
    if !ip.is_unspecified() {
        return None;
    }
    ifs.iter()
        .filter(|i| i.up && !i.loopback)
        .filter(|i| i.addrs.iter().any(|a| a.addr().is_ipv4() == ip.is_ipv4()))
        .filter_map(|i| interfaces::mtu(&i.name))
        .min()
}

/// What a member's `underlay_mtu` meta says (absent or bad: assumed 1500).
pub fn advertised(meta: &BTreeMap<String, String>) -> u32 {
    meta.get(META_UNDERLAY_MTU)
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|m| (576..=65_535).contains(m))
        .unwrap_or(ASSUMED_UNDERLAY_MTU)
}

/// The MTUs of this host's networks: explicit ones from the network
/// settings, otherwise the default from the smallest known underlay.
pub struct Mtus {
    own_underlay: AtomicU32,
    family: IpVersion,
    settings: Records<NetworkSettings>,
    /// overlay_mtu(smallest underlay of the members), floored.
    default: AtomicU32,
    /// Network id → MTU its devices were last given here.
    applied: Mutex<BTreeMap<String, u32>>,
}

impl Mtus {
    pub fn new(own_underlay: u32, family: IpVersion, settings: Records<NetworkSettings>) -> Mtus {
        Mtus {
            own_underlay: AtomicU32::new(own_underlay),
            family,
            settings,
            default: AtomicU32::new(overlay_default(own_underlay, family)),
            applied: Mutex::default(),
        }
    }

    pub fn own_underlay(&self) -> u32 {
        self.own_underlay.load(Ordering::Relaxed)
    }

    /// This host's underlay interface MTU changed; returns whether it did.
    /// Takes effect at the next [`Self::refresh`].
    pub fn set_own_underlay(&self, mtu: u32) -> bool {
        self.own_underlay.swap(mtu, Ordering::Relaxed) != mtu
    }

    /// Recomputes the default from the members' advertised underlay MTUs;
    /// returns whether it changed.
    pub fn refresh<'a>(&self, members: impl Iterator<Item = &'a BTreeMap<String, String>>) -> bool {
        let smallest = members.map(advertised).fold(self.own_underlay(), u32::min);
        let new = overlay_default(smallest, self.family);
        self.default.swap(new, Ordering::Relaxed) != new
    }

    pub fn default_mtu(&self) -> u32 {
        self.default.load(Ordering::Relaxed)
    }

    /// The interface MTU of network `id`.
    pub fn of(&self, id: &str) -> u32 {
        mesh_model::records::get(&self.settings, id)
            .and_then(|s| s.mtu)
            .unwrap_or_else(|| self.default_mtu())
    }

    /// Whether network `id` has an MTU of its own.
    pub fn is_set(&self, id: &str) -> bool {
        mesh_model::records::get(&self.settings, id).is_some_and(|s| s.mtu.is_some())
    }

    /// The MTU of the network with wire id `wire` (default if unknown).
    pub fn of_wire(&self, wire: u32) -> u32 {
        mesh_model::records::live(&self.settings)
            .iter()
            .find(|(id, _)| networks::wire_id(id) == wire)
            .and_then(|(_, s)| s.mtu)
            .unwrap_or_else(|| self.default_mtu())
    }

    /// The bound on the path to a peer advertising `peer_underlay`: the
    /// largest UDP payload both interfaces pass.
    pub fn path_cap(&self, peer_underlay: u32) -> u32 {
        let header = match self.family {
            IpVersion::V4 => 20,
            IpVersion::V6 => 40,
        };
        self.own_underlay()
            .min(peer_underlay)
            .saturating_sub(header + UDP_HEADER_LEN)
    }

    /// Notes that network `id`'s devices now have `mtu`; returns whether
    /// that is a change.
    pub fn note_applied(&self, id: &str, mtu: u32) -> bool {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.insert(id.to_string(), mtu) != Some(mtu)
    }

    pub fn applied(&self, id: &str) -> Option<u32> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.get(id).copied()
    }

    pub fn forget(&self, id: &str) {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.remove(id);
    }
}

fn overlay_default(underlay: u32, family: IpVersion) -> u32 {
    dataplane::overlay_mtu(underlay, family).clamp(MIN_MTU, MAX_MTU)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::{Channel, LwwMap};

    fn mtus(own: u32) -> Mtus {
        Mtus::new(own, IpVersion::V4, Channel::detached("s", LwwMap::new()))
    }

    fn meta(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(META_UNDERLAY_MTU.to_string(), v.to_string())])
    }

    #[test]
    fn the_default_follows_the_smallest_member() {
        let m = mtus(1500);
        assert_eq!(m.default_mtu(), 1422);
        let members = [meta("1500"), meta("1450"), BTreeMap::new()];
        assert!(m.refresh(members.iter()));
        assert_eq!(m.default_mtu(), 1372);
        assert!(!m.refresh(members.iter()), "no change the second time");
        // Below what IPv6 needs: the floor, the rest is per-peer clamping.
        assert!(m.refresh([meta("1300")].iter()));
        assert_eq!(m.default_mtu(), MIN_MTU);
        // Garbage is not believed.
        m.refresh([meta("12"), meta("x")].iter());
        assert_eq!(m.default_mtu(), 1422);
        // The own interface shrinking counts like a member's.
        assert!(m.set_own_underlay(1450) && !m.set_own_underlay(1450));
        assert!(m.refresh(std::iter::empty()));
        assert_eq!((m.default_mtu(), m.path_cap(1500)), (1372, 1422));
    }

    #[test]
    fn path_cap_is_the_smaller_interface_less_headers() {
        let m = mtus(1500);
        assert_eq!(m.path_cap(1300), 1272);
        assert_eq!(m.path_cap(9000), 1472);
    }

    #[test]
    fn the_loopback_address_has_an_mtu() {
        // lo exists in every namespace; its MTU is 65536 by default.
        assert!(underlay_mtu("127.0.0.1".parse().unwrap()).is_some_and(|m| m >= 1280));
    }
}
