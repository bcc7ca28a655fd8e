use super::host::{self, Facts, Htb};
use super::*;
use crate::api::{CheckStatus, Traffic};

fn up() -> PeerStatus {
    PeerStatus {
        id: "b".into(),
        name: "h2".into(),
        address: "198.18.0.2:7800".into(),
        data_address: Some("198.18.0.2:7801".into()),
        state: PeerState::Up,
        path: "direct".into(),
        control: Some("direct".into()),
        path_mtu: Some(1472),
        path_rtt_ms: None,
        path_loss: None,
        clock_skew_ms: Some(3.0),
        version: Some(VERSION.into()),
        protocol: Some(crate::version::protocol_range()),
        link_protocol: Some(gossip::PROTOCOL_VERSION),
        rtt_ms: Some(0.4),
        key_generation: Some(2),
        key_age_secs: Some(30.0),
        cipher: None,
        tx: Traffic::default(),
        rx: Traffic::default(),
    }
}

fn cx(probe: Option<&dataplane::BurstReport>) -> PeerContext<'_> {
    PeerContext {
        version: VERSION,
        rekey: Duration::from_secs(110),
        largest_network: Some(("blue", 1422)),
        probe,
    }
}

fn status_of(checks: &[Check], name: &str) -> CheckStatus {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} in {checks:?}"))
        .status
}

#[test]
fn a_healthy_peer_has_no_problem_and_a_missing_probe_is_skipped() {
    let c = peer_checks(&up(), &cx(None));
    assert!(c.iter().all(|c| !c.status.is_problem()), "{c:?}");
    assert_eq!(status_of(&c, "probe"), CheckStatus::Skipped);
    assert!(c.iter().any(|c| c.detail.contains("probe not available")));
}

#[test]
fn a_down_peer_fails_control_with_advice_and_skips_the_rest() {
    let mut p = up();
    p.state = PeerState::Down;
    let c = peer_checks(&p, &cx(None));
    assert_eq!(status_of(&c, "control"), CheckStatus::Fail);
    assert!(c[0].fix.as_deref().unwrap().contains("198.18.0.2:7800"));
    // control, protocol, and the data path skipped.
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(status_of(&c, "protocol"), CheckStatus::Ok);
}

#[test]
fn relayed_paths_warn_and_name_the_port_to_open() {
    let mut p = up();
    p.path = "relayed via h3".into();
    p.control = Some("relayed via h3".into());
    let c = peer_checks(&p, &cx(None));
    assert_eq!(status_of(&c, "data_path"), CheckStatus::Warn);
    assert_eq!(status_of(&c, "control"), CheckStatus::Warn);
    p.path = "none".into();
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "data_path"),
        CheckStatus::Fail
    );
}

#[test]
fn the_tcp_fallback_warns_and_says_udp_fails() {
    let mut p = up();
    p.path = "tcp".into();
    p.control = Some("tcp".into());
    let c = peer_checks(&p, &cx(None));
    for name in ["control", "data_path"] {
        let check = c.iter().find(|c| c.name == name).unwrap();
        assert_eq!(check.status, CheckStatus::Warn, "{name}");
        assert!(
            check.fix.as_deref().unwrap_or("").contains("UDP"),
            "{name}: {check:?}"
        );
    }
}

#[test]
fn a_path_too_small_for_the_network_warns_with_the_mtu_that_fits() {
    let mut p = up();
    // 1300-byte underlay: 1300 - 20 - 8 = 1272-byte UDP payload.
    p.path_mtu = Some(1272);
    let c = peer_checks(&p, &cx(None));
    let m = c.iter().find(|c| c.name == "path_mtu").unwrap();
    assert_eq!(m.status, CheckStatus::Warn);
    // 1222 would fit, but is below IPv6's minimum: the path must grow by
    // 1472 - 1272 bytes instead.
    assert_eq!(dataplane::overlay_mtu(1300, dataplane::IpVersion::V4), 1222);
    assert!(m.fix.as_deref().unwrap().contains("by 200 bytes"), "{m:?}");
    p.path_mtu = Some(1400);
    let c = peer_checks(&p, &cx(None));
    let m = c.iter().find(|c| c.name == "path_mtu").unwrap();
    assert!(m.fix.as_deref().unwrap().contains("at most 1350"), "{m:?}");
    p.path_mtu = Some(sealed_len(1422));
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "path_mtu"),
        CheckStatus::Ok
    );
}

#[test]
fn probe_bursts_are_judged_by_loss() {
    let r = |received| dataplane::BurstReport {
        sent: 10,
        received,
        rtt_min: Some(Duration::from_micros(300)),
        rtt_avg: Some(Duration::from_micros(400)),
        rtt_max: Some(Duration::from_micros(900)),
    };
    let all = r(10);
    let some = r(7);
    let none = r(0);
    assert_eq!(
        status_of(&peer_checks(&up(), &cx(Some(&all))), "probe"),
        CheckStatus::Ok
    );
    assert_eq!(
        status_of(&peer_checks(&up(), &cx(Some(&some))), "probe"),
        CheckStatus::Warn
    );
    assert_eq!(
        status_of(&peer_checks(&up(), &cx(Some(&none))), "probe"),
        CheckStatus::Fail
    );
}

#[test]
fn peers_outside_the_protocol_range_fail_even_when_down() {
    let (min, max) = gossip::protocol::supported();
    let mut p = up();
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "protocol"),
        CheckStatus::Ok
    );
    p.state = PeerState::Down;
    p.protocol = Some(format!("{}-{}", max + 1, max + 2));
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "protocol"),
        CheckStatus::Fail
    );
    // One version back still meets (the support window).
    p.protocol = Some(format!("{}-{}", min.saturating_sub(1).max(1), min));
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "protocol"),
        CheckStatus::Ok
    );
    p.protocol = None;
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "protocol"),
        CheckStatus::Warn
    );
}

#[test]
fn keys_clock_and_version_problems() {
    let mut p = up();
    p.key_age_secs = Some(140.0);
    p.clock_skew_ms = Some(-2500.0);
    p.version = Some("0.0.1".into());
    let c = peer_checks(&p, &cx(None));
    assert_eq!(status_of(&c, "key_age"), CheckStatus::Warn);
    assert_eq!(status_of(&c, "clock_skew"), CheckStatus::Warn);
    assert_eq!(status_of(&c, "version"), CheckStatus::Warn);
    p.key_age_secs = Some(200.0);
    p.clock_skew_ms = Some(90_000.0);
    let c = peer_checks(&p, &cx(None));
    assert_eq!(status_of(&c, "key_age"), CheckStatus::Fail);
    assert_eq!(status_of(&c, "clock_skew"), CheckStatus::Fail);
    p.key_age_secs = None;
    assert_eq!(
        status_of(&peer_checks(&p, &cx(None)), "key_age"),
        CheckStatus::Fail
    );
}

fn facts() -> Facts {
    Facts {
        tap: Ok(true),
        htb: Htb::Module,
        nftables: Ok(()),
        ip_forward: Some(false),
        needs_forwarding: false,
        br_netfilter: None,
        underlay: Some(("eth0".into(), 1500, false)),
        networks: vec![("blue".into(), 1422)],
        refused: vec![],
    }
}

#[test]
fn a_sound_host_has_no_problem() {
    let c = host::checks(&facts());
    assert!(c.iter().all(|c| c.status == CheckStatus::Ok), "{c:?}");
    assert_eq!(c.len(), 8);
}

#[test]
fn host_problems_each_say_what_to_do() {
    let f = Facts {
        tap: Err("No such device".into()),
        htb: Htb::Missing,
        nftables: Err("Operation not supported".into()),
        ip_forward: Some(false),
        needs_forwarding: true,
        br_netfilter: Some(vec!["msb00000001".into()]),
        underlay: Some(("eth0".into(), 1300, false)),
        networks: vec![("blue".into(), 1422), ("red".into(), 1200)],
        refused: vec![(
            "lan".into(),
            "its prefix 192.168.1.0/24 overlaps this host's route to 192.168.1.0/24 (dev eth0)"
                .into(),
        )],
    };
    let c = host::checks(&f);
    for name in ["tun", "nftables", "ip_forward", "networks"] {
        assert_eq!(status_of(&c, name), CheckStatus::Fail, "{name}");
    }
    for name in ["htb", "br_netfilter", "underlay_mtu"] {
        assert_eq!(status_of(&c, name), CheckStatus::Warn, "{name}");
    }
    assert!(c
        .iter()
        .filter(|c| c.status.is_problem())
        .all(|c| c.fix.is_some()));
    let u = c.iter().find(|c| c.name == "underlay_mtu").unwrap();
    assert!(
        u.detail.contains("blue (1422)") && !u.detail.contains("red"),
        "{u:?}"
    );
    assert!(
        u.fix
            .as_deref()
            .unwrap()
            .contains("raise eth0's MTU to 1500"),
        "{u:?}"
    );
    let f = Facts {
        underlay: Some(("eth0".into(), 1400, false)),
        ..f
    };
    let u = host::checks(&f)
        .into_iter()
        .find(|c| c.name == "underlay_mtu")
        .unwrap();
    assert!(u.fix.as_deref().unwrap().contains("--mtu 1322"), "{u:?}");
}
