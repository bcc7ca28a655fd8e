//! Where a network lands. A definition admitted to the replicated state is
//! a proposal: every host puts an address and an on-link route for the
//! network's prefixes on a bridge of its own, so a network that overlaps
//! the hosts' LAN, a route a host already has, or another network would
//! cut that host off or capture its traffic. Each host therefore carries a
//! network only when it lands without harm, and says why not otherwise.
//!
//! Two kinds of rule, so that hosts agree where they can:
//! - **mesh-wide** (the same verdict on every host, from replicated state
//!   only): networks are taken oldest first (the definition's stamp, then
//!   id); one whose prefixes overlap an earlier one's, or whose wire id is
//!   an earlier one's, is refused. Except that a host takes the networks
//!   it already carries first: a clashing definition that claims to be
//!   older (a partition that heals, a backdated stamp) is refused there
//!   rather than tearing down a network in use.
//! - **host-local** (this host's own view): the underlay subnets members
//!   advertise, this host's routes, the global IPv6 prefixes its operator
//!   permits, and how many networks it carries (`max_networks`).
//!
//! The API applies the same rules before it writes a definition, so an
//! operator hears of a clash at `network create` (see [`check_new`]).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::{BTreeMap, BTreeSet};

use super::{overlaps as overlap, wire_id};
use crate::records::NetworkDef;

/// Networks a host carries unless its configuration says otherwise: each
/// costs every host a bridge, a TAP with a queue per worker and DNS
/// sockets.
pub const DEFAULT_MAX_NETWORKS: usize = 256;

/// What a network must leave alone on this host.
#[derive(Debug, Clone)]
pub struct World {
    /// This host's routes that a network could capture (no default
    /// routes, none through meshd's own devices), with their devices.
    pub routes: Vec<(IpNet, String)>,
    /// The underlay subnets members advertise, with the member's name.
    pub underlays: Vec<(String, Ipv4Net)>,
    /// Global IPv6 prefixes this host's operator permits networks in
    /// (`global_ipv6`); any other IPv6 prefix must be a ULA.
    pub global6: Vec<Ipv6Net>,
    pub max_networks: usize,
}

impl Default for World {
    fn default() -> World {
        World {
            routes: Vec::new(),
            underlays: Vec::new(),
            global6: Vec::new(),
            max_networks: DEFAULT_MAX_NETWORKS,
        }
    }
}

/// Why a network does not land (here, or anywhere for the mesh-wide rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("its prefix {ours} overlaps network {other:?} ({theirs}), which is older")]
    OverlapsNetwork {
        other: String,
        ours: IpNet,
        theirs: IpNet,
    },
    #[error("its wire id collides with network {0:?}, which is older; choose another id")]
    WireId(String),
    #[error("its subnet {ours} overlaps the underlay subnet {theirs} of host {host}")]
    OverlapsUnderlay {
        host: String,
        ours: Ipv4Net,
        theirs: Ipv4Net,
    },
    #[error("its prefix {ours} overlaps this host's route to {route} (dev {dev})")]
    OverlapsRoute {
        ours: IpNet,
        route: IpNet,
        dev: String,
    },
    #[error("its IPv6 prefix {0} is global and not inside a prefix this host permits (global_ipv6 in meshd.toml); use a ULA (fd00::/8)")]
    GlobalIpv6(Ipv6Net),
    #[error("{0}")]
    Unsuitable(String),
    #[error(
        "this host already carries {0} networks, the most it carries (max_networks in meshd.toml)"
    )]
    TooMany(usize),
}

impl Refusal {
    /// A short name for metrics and JSON.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::OverlapsNetwork { .. } => "overlaps_network",
            Refusal::WireId(_) => "wire_id",
            Refusal::OverlapsUnderlay { .. } => "overlaps_underlay",
            Refusal::OverlapsRoute { .. } => "overlaps_route",
            Refusal::GlobalIpv6(_) => "global_ipv6",
            Refusal::Unsuitable(_) => "unsuitable_prefix",
            Refusal::TooMany(_) => "max_networks",
        }
    }
}

fn prefixes(def: &NetworkDef) -> [IpNet; 2] {
    [IpNet::V4(def.subnet), IpNet::V6(def.subnet6)]
}

/// How `def` clashes with an older network `other`, if it does.
pub fn clash(def: &NetworkDef, other: &NetworkDef) -> Option<Refusal> {
    for (ours, theirs) in prefixes(def).into_iter().zip(prefixes(other)) {
        if overlap(ours, theirs) {
            return Some(Refusal::OverlapsNetwork {
                other: other.id.clone(),
                ours,
                theirs,
            });
        }
    }
    (wire_id(&def.id) == wire_id(&other.id)).then(|| Refusal::WireId(other.id.clone()))
}

/// The IPv6 prefix lengths a network may have: a network is one link, so
/// wider would claim a site's space and narrower breaks the /64 that
/// hosts expect.
pub const MIN_PREFIX6: u8 = 48;
pub const MAX_PREFIX6: u8 = 64;

/// IPv4 space that is never a network's: the host's own or not unicast,
/// so a bridge route for it would break the host.
const RESERVED4: [(&str, &str); 5] = [
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

/// Why `def`'s prefixes are never a network's here (reserved IPv4 space;
/// an IPv6 prefix outside /48–/64, or neither a ULA nor global unicast).
/// A host-local rule, not an admission rule: definitions of older
/// versions stay in the state, and a host that carries one keeps it.
pub fn unsuitable(def: &NetworkDef) -> Option<Refusal> {
    for (space, what) in RESERVED4 {
        let space: Ipv4Net = space.parse().expect("a valid prefix");
        if space.contains(&def.subnet.network()) || def.subnet.contains(&space.network()) {
            return Some(Refusal::Unsuitable(format!(
                "its subnet {} overlaps {space}, which is {what} space",
                def.subnet
            )));
        }
    }
    let v6 = def.subnet6;
    if !(MIN_PREFIX6..=MAX_PREFIX6).contains(&v6.prefix_len()) {
        return Some(Refusal::Unsuitable(format!(
            "its IPv6 prefix {v6} is not a /{MIN_PREFIX6} to a /{MAX_PREFIX6} (a network is one link)"
        )));
    }
    let ula: Ipv6Net = "fc00::/7".parse().expect("a valid prefix");
    let global: Ipv6Net = "2000::/3".parse().expect("a valid prefix");
    if !ula.contains(&v6) && !global.contains(&v6) {
        return Some(Refusal::Unsuitable(format!(
            "its IPv6 prefix {v6} is neither a ULA (fc00::/7) nor global unicast (2000::/3)"
        )));
    }
    None
}

/// How carrying `def` would harm this host, if it would.
pub fn harm(def: &NetworkDef, world: &World) -> Option<Refusal> {
    if let Some(r) = unsuitable(def) {
        return Some(r);
    }
    if let Some((host, net)) = world
        .underlays
        .iter()
        .find(|(_, u)| overlap(IpNet::V4(def.subnet), IpNet::V4(u.trunc())))
    {
        return Some(Refusal::OverlapsUnderlay {
            host: host.clone(),
            ours: def.subnet,
            theirs: net.trunc(),
        });
    }
    for ours in prefixes(def) {
        if let Some((route, dev)) = world.routes.iter().find(|(r, _)| overlap(ours, *r)) {
            return Some(Refusal::OverlapsRoute {
                ours,
                route: *route,
                dev: dev.clone(),
            });
        }
    }
    let ula: Ipv6Net = "fc00::/7".parse().expect("a valid prefix");
    if !ula.contains(&def.subnet6) && !world.global6.iter().any(|g| g.contains(&def.subnet6)) {
        return Some(Refusal::GlobalIpv6(def.subnet6));
    }
    None
}

/// Which networks this host carries, and why each other one is not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Landing {
    pub carried: BTreeMap<String, NetworkDef>,
    pub refused: BTreeMap<String, Refusal>,
}

/// The verdicts for `defs` (every live definition, oldest first) on host
/// `me`. Networks restricted to other hosts are neither carried nor
/// refused here, but still count for the mesh-wide rules. A network
/// already carried (`carried_now`) stays unless a mesh-wide rule refuses
/// it: a route or an advert that appears later is the newcomer, and its
/// own bridge route is not held against it.
pub fn plan(
    defs: &[&NetworkDef],
    me: &str,
    world: &World,
    carried_now: &BTreeSet<String>,
) -> Landing {
    let mut landing = Landing::default();
    let mut accepted: Vec<&NetworkDef> = Vec::new();
    // What this host carries goes first: a definition that claims to be
    // older (a healed partition, or a member's backdated stamp) does not
    // tear down a network in use here; it is refused here instead.
    let (now, new): (Vec<&NetworkDef>, Vec<&NetworkDef>) = defs
        .iter()
        .partition(|d| carried_now.contains(&d.id) && d.allows_host(me));
    for def in now.into_iter().chain(new) {
        let clashes = accepted.iter().find_map(|o| clash(def, o));
        if !def.allows_host(me) {
            // Not this host's to refuse, but it counts for the others.
            if clashes.is_none() {
                accepted.push(def);
            }
            continue;
        }
        let verdict = match clashes {
            Some(r) => Err(r),
            None => {
                accepted.push(def);
                let stays = carried_now.contains(&def.id);
                match harm(def, world).filter(|_| !stays) {
                    Some(r) => Err(r),
                    None if !stays && landing.carried.len() >= world.max_networks => {
                        Err(Refusal::TooMany(landing.carried.len()))
                    }
                    None => Ok(()),
                }
            }
        };
        match verdict {
            Ok(()) => {
                landing.carried.insert(def.id.clone(), def.clone());
            }
            Err(r) => {
                landing.refused.insert(def.id.clone(), r);
            }
        }
    }
    landing
}

/// The API's check of a new definition: no clash with any network that
/// exists, no harm to this host if it carries it, and room for it.
pub fn check_new<'a>(
    def: &NetworkDef,
    existing: impl IntoIterator<Item = &'a NetworkDef>,
    me: &str,
    world: &World,
    carried_here: usize,
) -> Result<(), Refusal> {
    if let Some(r) = existing.into_iter().find_map(|o| clash(def, o)) {
        return Err(r);
    }
    if def.allows_host(me) {
        if let Some(r) = harm(def, world) {
            return Err(r);
        }
        if carried_here >= world.max_networks {
            return Err(Refusal::TooMany(carried_here));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networks::derive_ula;

    fn net(id: &str, subnet: &str) -> NetworkDef {
        NetworkDef {
            id: id.into(),
            subnet: subnet.parse().unwrap(),
            subnet6: derive_ula(id),
            created_by: "x".into(),
            labels: BTreeMap::new(),
            hosts: vec![],
            sealed_secrets: BTreeMap::new(),
        }
    }

    fn world() -> World {
        World {
            routes: vec![("192.168.1.0/24".parse().unwrap(), "eth0".into())],
            underlays: vec![("h2".into(), "10.1.2.3/16".parse().unwrap())],
            global6: vec!["2001:db8:1::/48".parse().unwrap()],
            max_networks: 3,
        }
    }

    #[test]
    fn the_older_of_two_overlapping_networks_lands() {
        let (a, b) = (net("a", "10.40.0.0/24"), net("b", "10.40.0.128/25"));
        let l = plan(&[&a, &b], "me", &world(), &BTreeSet::new());
        assert!(l.carried.contains_key("a"));
        assert_eq!(l.refused["b"].reason(), "overlaps_network");
        // A refused network blocks nothing: c overlaps only b.
        let c = net("c", "10.40.0.192/26");
        let l = plan(&[&a, &b, &c], "me", &world(), &BTreeSet::new());
        assert!(l.refused["c"].to_string().contains("\"a\""));
    }

    #[test]
    fn an_id_chosen_to_collide_on_the_wire_is_refused() {
        // A 32-bit id collides by birthday search in ~2^16 tries.
        let mut seen = std::collections::HashMap::new();
        let (first, second) = (0u32..)
            .find_map(|i| {
                let id = format!("n{i:x}");
                seen.insert(wire_id(&id), id.clone())
                    .map(|earlier| (earlier, id))
            })
            .unwrap();
        let a = net(&first, "10.40.0.0/24");
        let b = net(&second, "10.41.0.0/24");
        let l = plan(&[&a, &b], "me", &world(), &BTreeSet::new());
        assert!(l.carried.contains_key(&first));
        assert_eq!(l.refused[&second], Refusal::WireId(first));
    }

    #[test]
    fn ipv6_prefixes_clash_too() {
        let a = net("a", "10.40.0.0/24");
        let mut b = net("b", "10.41.0.0/24");
        b.subnet6 = a.subnet6;
        assert!(matches!(
            clash(&b, &a),
            Some(Refusal::OverlapsNetwork {
                ours: IpNet::V6(_),
                ..
            })
        ));
    }

    #[test]
    fn host_routes_underlays_and_global_prefixes_are_left_alone() {
        let w = world();
        let lan = net("lan", "192.168.1.0/24");
        assert_eq!(harm(&lan, &w).unwrap().reason(), "overlaps_route");
        let ul = net("ul", "10.1.0.0/24");
        let r = harm(&ul, &w).unwrap();
        assert_eq!(r.reason(), "overlaps_underlay");
        assert!(r.to_string().contains("10.1.0.0/16"), "{r}");
        let mut g = net("g", "10.50.0.0/24");
        for (bad, why) in [
            ("fd00::/96", "narrower than a /64"),
            ("2000::/3", "wider than a /48"),
            ("fe80::/64", "link-local"),
            ("ff02::/64", "multicast"),
        ] {
            g.subnet6 = bad.parse().unwrap();
            assert_eq!(harm(&g, &w).unwrap().reason(), "unsuitable_prefix", "{why}");
        }
        for reserved in ["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/24", "0.0.0.0/8"] {
            let r = harm(&net("r", reserved), &w).unwrap();
            assert_eq!(r.reason(), "unsuitable_prefix", "{reserved}");
        }
        g.subnet6 = "2000::/48".parse().unwrap();
        assert_eq!(harm(&g, &w).unwrap().reason(), "global_ipv6");
        g.subnet6 = "2001:db8:1:5::/64".parse().unwrap();
        assert_eq!(harm(&g, &w), None, "inside a permitted global prefix");
        // Carried already: a route that appears later does not evict it.
        let now: BTreeSet<String> = ["lan".to_string()].into();
        assert!(plan(&[&lan], "me", &w, &now).carried.contains_key("lan"));
        assert!(plan(&[&lan], "me", &w, &BTreeSet::new()).carried.is_empty());
    }

    #[test]
    fn a_host_carries_at_most_max_networks() {
        let defs: Vec<NetworkDef> = (0..5)
            .map(|i| net(&format!("n{i}"), &format!("10.60.{i}.0/24")))
            .collect();
        let refs: Vec<&NetworkDef> = defs.iter().collect();
        let l = plan(&refs, "me", &world(), &BTreeSet::new());
        assert_eq!(l.carried.len(), 3);
        assert_eq!(l.refused["n3"].reason(), "max_networks");
        // A network carried before the cap was lowered stays.
        let now: BTreeSet<String> = ["n4".to_string()].into();
        let l = plan(&refs, "me", &world(), &now);
        assert!(l.carried.contains_key("n4"));
        assert_eq!(l.carried.len(), 3, "it counts toward the cap");
        assert_eq!(l.refused["n2"].reason(), "max_networks");
        assert_eq!(
            check_new(&net("n9", "10.61.0.0/24"), &defs, "me", &world(), 3)
                .unwrap_err()
                .reason(),
            "max_networks"
        );
    }

    #[test]
    fn a_network_in_use_is_not_evicted_by_an_older_claim() {
        let (old, used) = (net("old", "10.40.0.0/24"), net("used", "10.40.0.0/25"));
        let now: BTreeSet<String> = ["used".to_string()].into();
        let l = plan(&[&old, &used], "me", &world(), &now);
        assert!(l.carried.contains_key("used"));
        assert_eq!(l.refused["old"].reason(), "overlaps_network");
    }

    #[test]
    fn restricted_networks_count_mesh_wide_but_land_only_on_their_hosts() {
        let mut a = net("a", "192.168.1.0/24");
        a.hosts = vec!["other".into()];
        let b = net("b", "192.168.1.0/25");
        let l = plan(&[&a, &b], "me", &world(), &BTreeSet::new());
        assert!(l.carried.is_empty());
        assert!(!l.refused.contains_key("a"), "not this host's to refuse");
        assert_eq!(l.refused["b"].reason(), "overlaps_network");
        // Nor is a clash between networks of other hosts.
        let mut c = net("c", "192.168.1.0/26");
        c.hosts = vec!["other".into()];
        let l = plan(&[&a, &c], "me", &world(), &BTreeSet::new());
        assert!(l.refused.is_empty(), "{:?}", l.refused);
    }
}
