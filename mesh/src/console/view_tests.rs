use super::*;
use crate::console::sample::{inputs, peer};

#[test]
fn paths_become_link_kinds() {
    let k = |path: &str, state| link_kind(&peer(1, path, state));
    assert_eq!(k("direct", PeerState::Up), (LinkKind::Direct, None));
    assert_eq!(
        k("relayed via h3", PeerState::Up),
        (LinkKind::Relayed, Some("h3".into()))
    );
    assert_eq!(k("tcp", PeerState::Up), (LinkKind::Tcp, None));
    assert_eq!(k("none", PeerState::Up), (LinkKind::Down, None));
    assert_eq!(k("direct", PeerState::Down), (LinkKind::Down, None));
}

#[test]
fn networks_carry_local_and_remote_containers_with_rates() {
    let mut prev = Counters::default();
    let t0 = Instant::now();
    let peers = vec![peer(1, "direct", PeerState::Up)];
    let v = build(inputs(peers.clone(), 1000), &mut prev, t0);
    let n = &v.networks[0];
    assert_eq!(n.hosts, ["h1", "h0"], "ids become names");
    let names: Vec<(&str, &str)> = n
        .containers
        .iter()
        .map(|c| (c.name.as_str(), c.host.as_str()))
        .collect();
    assert_eq!(names, [("web1", "h0"), ("db", "h1")]);
    assert_eq!(n.containers[0].ip, "10.70.0.2");
    assert_eq!(n.containers[0].labels["app"], "web");
    assert_eq!(
        n.containers[1].labels["tier"], "db",
        "another host's container shows its replicated labels"
    );
    assert!(!n.containers[1].live);
    assert_eq!(n.containers[0].tx_bps, None, "no rate from one sample");

    let v = build(
        inputs(peers.clone(), 3000),
        &mut prev,
        t0 + Duration::from_secs(2),
    );
    let web = &v.networks[0].containers[0];
    assert_eq!(web.tx_bps, Some(1000.0));
    assert_eq!(web.rx_bps, Some(2000.0));
    // After a minute nobody watched, the next snapshot shows no rate
    // rather than the minute's average.
    let v = build(inputs(peers, 9000), &mut prev, t0 + Duration::from_secs(62));
    assert_eq!(v.networks[0].containers[0].tx_bps, None);
}

/// The 100-host case: the snapshot every viewer shares, built from 99
/// peers, 100 containers and 20 services. Prints its size and build time
/// (see docs/console.md) and holds them to bounds a page polls within.
#[test]
fn a_hundred_hosts_snapshot_is_small_and_quick() {
    let started = Instant::now();
    let v = build(
        crate::console::sample::mesh(100),
        &mut Counters::default(),
        Instant::now(),
    );
    let json = serde_json::to_vec(&v).unwrap();
    let took = started.elapsed();
    println!(
        "100 hosts: view {} bytes, built and serialized in {:?}",
        json.len(),
        took
    );
    assert_eq!(v.links.len(), 99);
    assert_eq!(v.networks[0].containers.len(), 100);
    let kinds = |k| v.links.iter().filter(|l| l.kind == k).count();
    assert_eq!((kinds(LinkKind::Relayed), kinds(LinkKind::Down)), (9, 10));
    assert!(json.len() < 256 * 1024, "{} bytes", json.len());
}

#[tokio::test]
async fn one_answer_serves_every_caller_within_its_age() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cache = Cache::new(Duration::from_secs(60));
    let made = AtomicUsize::new(0);
    let make = || async {
        made.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        vec![1, 2, 3]
    };
    let answers = futures::future::join_all((0..8).map(|_| cache.get(make))).await;
    assert_eq!(made.load(Ordering::SeqCst), 1);
    assert!(answers.iter().all(|a| a.as_ref() == b"[1,2,3]"));
    let short = Cache::new(Duration::ZERO);
    short.get(make).await;
    short.get(make).await;
    assert_eq!(made.load(Ordering::SeqCst), 3);
}
