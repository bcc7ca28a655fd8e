//! Isolation on the host, whatever its forwarding settings: with
//! `ip_forward=1` and IPv6 forwarding on, a container that routes another
//! network's subnet (or the host's underlay) through its own service
//! address reaches nothing there. Run as root (`cargo test -p integration
//! --test isolation`).

use hickory_proto::rr::RecordType;
use integration::{is_root, unique_prefix, Lab};
use std::time::Duration;

fn addr(a: &mesh_api::Attachment) -> String {
    a.ip.split('/').next().unwrap().to_string()
}

fn addr6(a: &mesh_api::Attachment) -> String {
    a.ip6
        .as_deref()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn forwarding_hosts_do_not_route_between_networks_or_to_themselves() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("isol"), 2).expect("building the lab");
    lab.start_mesh().unwrap();
    for h in 0..2 {
        let ns = lab.hosts[h].netns.clone();
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            lab.exec_ok(&ns, &["sysctl", "-qw", key]).unwrap();
        }
    }
    lab.meshctl(
        0,
        &["network", "create", "blue", "--subnet", "198.19.40.0/24"],
    )
    .unwrap();
    lab.meshctl(
        0,
        &["network", "create", "red", "--subnet", "198.19.41.0/24"],
    )
    .unwrap();
    let b1 = lab.add_container("b1").unwrap();
    let r1 = lab.add_container("r1").unwrap();
    let r2 = lab.add_container("r2").unwrap();
    let blue = lab.attach(0, &b1, "blue", "198.19.40.1/24").unwrap();
    let red1 = lab.attach(0, &r1, "red", "198.19.41.1/24").unwrap();
    let red2 = integration::wait_for(Duration::from_secs(10), || {
        lab.attach(1, &r2, "red", "198.19.41.2/24")
    })
    .unwrap();
    // Inside a network all is well, across hosts too.
    lab.wait_ping(&r1, &addr(&red2), Duration::from_secs(10))
        .unwrap();

    // Names: a red container resolves red's names, never blue's, by name
    // or by address, whichever server it asks.
    let red_dns: std::net::IpAddr = red1.dns_server.as_deref().unwrap().parse().unwrap();
    let blue_dns: std::net::IpAddr = blue.dns_server.as_deref().unwrap().parse().unwrap();
    integration::wait_for(Duration::from_secs(10), || {
        let a = integration::dns_query(&b1, blue_dns, &format!("{b1}.blue"), RecordType::A)?;
        anyhow::ensure!(!a.is_empty(), "blue's own name not answered yet");
        Ok(())
    })
    .unwrap();
    let cross = integration::dns_query(&r1, red_dns, &format!("{b1}.blue"), RecordType::A);
    assert!(cross.is_err(), "red resolved blue's container: {cross:?}");
    let soa = integration::dns_query(&r1, red_dns, "blue", RecordType::SOA);
    assert!(soa.is_err(), "red was answered for blue's zone: {soa:?}");

    // Each container routes the other network and a host address through
    // its own service address, as a hostile tenant would. (The host routes
    // each network's IPv6 /64, so without the table IPv6 is forwarded.)
    let h1 = lab.hosts[0].netns.clone();
    lab.exec_ok(
        &h1,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "fd99::1/64",
            "dev",
            "ul0",
            "nodad",
        ],
    )
    .unwrap();
    let (blue6, red6, red26) = (addr6(&blue), addr6(&red1), addr6(&red2));
    // `<prefix>::N` → `<prefix>::/64` and the service address `<prefix>::fe`
    // (paired with .254).
    let prefix6 = |a: &str| format!("{}:/64", a.rsplit_once(':').unwrap().0);
    let svc6 = |a: &str| format!("{}:fe", a.rsplit_once(':').unwrap().0);
    let via = |ns: &str, dst: &str, gw: &str| {
        lab.exec_ok(ns, &["ip", "route", "replace", dst, "via", gw])
            .unwrap();
    };
    via(&b1, "198.19.41.0/24", "198.19.40.254");
    via(&b1, &prefix6(&red6), &svc6(&blue6));
    via(&b1, "fd99::/64", &svc6(&blue6));
    for r in [&r1, &r2] {
        via(r, "198.19.40.0/24", "198.19.41.254");
        via(r, &prefix6(&blue6), &svc6(&red6));
    }

    assert!(
        !lab.ping(&b1, &addr(&red1), 2),
        "blue reached red over IPv4"
    );
    assert!(!lab.ping(&b1, &red6, 3), "blue reached red on its host");
    assert!(
        !lab.ping(&b1, &red26, 3),
        "blue reached red on another host"
    );
    assert!(!lab.ping(&r1, &blue6, 3), "red reached blue");
    assert!(
        !lab.ping(&b1, "fd99::1", 3),
        "a container reached a host address"
    );
    assert!(
        !lab.ping(&b1, &svc6(&red6), 3),
        "a container reached another network's service address"
    );

    // The same routes work once the table is gone: the drops above are the
    // table's doing, not a missing route.
    lab.exec_ok(&h1, &["nft", "delete", "table", "inet", "ms_isolation"])
        .unwrap();
    assert!(
        lab.ping(&b1, &red6, 3),
        "control: forwarded without the table"
    );
    assert!(
        lab.ping(&b1, "fd99::1", 3),
        "control: host reached without the table"
    );
}
