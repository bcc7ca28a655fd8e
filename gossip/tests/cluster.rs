//! In-process clusters on 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::{Error, Identity, LwwMap, MeshSecret, Node, PeerState};

const CONVERGE: Duration = Duration::from_secs(20);

type Dns = LwwMap<String, String>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_learn_each_other_and_share_a_channel() {
    init_tracing();
    let nodes = cluster(20).await;
    let all_up = eventually(CONVERGE, || async {
        nodes.iter().all(|n| up_count(n) == 19)
    })
    .await;
    for node in &nodes {
        eprintln!(
            "{} sees {} up of {}",
            node.id(),
            up_count(node),
            node.members().len()
        );
    }
    assert!(all_up, "every node should see the 19 others up");

    let channels: Vec<_> = nodes.iter().map(|n| n.channel("dns", Dns::new())).collect();
    let writer = nodes[7].id();
    channels[7].modify(|m| m.set(writer, "web".into(), "10.0.0.7".into()));
    let converged = eventually(CONVERGE, || async {
        channels
            .iter()
            .all(|c| c.get().get(&"web".to_string()).map(String::as_str) == Some("10.0.0.7"))
    })
    .await;
    assert!(converged, "the change should reach every node");

    // Keys get agreed with every peer.
    let keyed = eventually(CONVERGE, || async {
        nodes
            .iter()
            .all(|n| n.members().iter().all(|m| m.key_generation.is_some()))
    })
    .await;
    assert!(keyed, "every pair should have data-plane keys");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_by_every_node() {
    init_tracing();
    let nodes = cluster(4).await;
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 3)
        })
        .await
    );

    let intruder = start(Arc::new(gossip::node::NoopObserver)).await;
    let wrong = MeshSecret::generate();
    for node in &nodes {
        let err = intruder
            .join(&node.local_addr().to_string(), &wrong)
            .await
            .expect_err("a wrong token must be refused");
        match err {
            Error::AuthRejected { reason } => assert!(reason.contains("secret"), "{reason}"),
            other => panic!("expected AuthRejected, got {other}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in &nodes {
        assert!(
            node.members().iter().all(|m| m.id != intruder.id()),
            "the intruder must not be listed"
        );
    }
    assert!(intruder.members().iter().all(|m| m.state != PeerState::Up));
    intruder.shutdown().await;
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_token_has_a_clear_error() {
    let err = "mesh1-not*base64".parse::<MeshSecret>().unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_goes_down_and_rejoins_from_its_state_dir() {
    init_tracing();
    let nodes = cluster(3).await;
    let state = temp_dir("restart");
    let identity = Identity::load_or_create(&state.join("identity")).unwrap();
    let mut cfg = config(identity, Arc::new(gossip::node::NoopObserver));
    cfg.state_dir = Some(state.clone());
    let victim = Node::start(cfg).await.unwrap();
    let token: MeshSecret = nodes[0].token().parse().unwrap();
    victim
        .join(&nodes[0].local_addr().to_string(), &token)
        .await
        .unwrap();
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 3)
        })
        .await
    );
    let victim_id = victim.id();
    let old_incarnation = nodes[1]
        .members()
        .into_iter()
        .find(|m| m.id == victim_id)
        .unwrap()
        .incarnation;

    victim.shutdown().await;
    let state_of = |n: &Node| {
        n.members()
            .into_iter()
            .find(|m| m.id == victim_id)
            .map(|m| m.state)
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            nodes.iter().all(|n| state_of(n) == Some(PeerState::Down))
        })
        .await,
        "the killed node should be marked down"
    );

    // Restart: same identity, same state dir, new port, no explicit join.
    let identity = Identity::load_or_create(&state.join("identity")).unwrap();
    assert_eq!(identity.peer_id(), victim_id);
    let mut cfg = config(identity, Arc::new(gossip::node::NoopObserver));
    cfg.state_dir = Some(state.clone());
    let restarted = Node::start(cfg).await.unwrap();
    assert_eq!(
        restarted.token(),
        nodes[0].token(),
        "the secret was persisted"
    );
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| state_of(n) == Some(PeerState::Up)) && up_count(&restarted) == 3
        })
        .await,
        "the restarted node should be up everywhere again"
    );
    let new_incarnation = nodes[1]
        .members()
        .into_iter()
        .find(|m| m.id == victim_id)
        .unwrap()
        .incarnation;
    assert!(new_incarnation > old_incarnation);
    restarted.shutdown().await;
    shutdown_all(&nodes).await;
    std::fs::remove_dir_all(state).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_with_changes_on_both_sides_converges_after_heal() {
    init_tracing();
    let nodes = cluster(6).await;
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 5)
        })
        .await
    );
    let channels: Vec<_> = nodes.iter().map(|n| n.channel("dns", Dns::new())).collect();
    let (left, right) = nodes.split_at(3);
    let left_ids: Vec<_> = left.iter().map(Node::id).collect();
    let right_ids: Vec<_> = right.iter().map(Node::id).collect();
    for n in left {
        n.block_peers(&right_ids);
    }
    for n in right {
        n.block_peers(&left_ids);
    }
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 2)
        })
        .await
    );
    // A blocked peer costs no dial loop (none polls for the unblock).
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| n.dialing() == 0)
        })
        .await,
        "no dial loop runs for a blocked peer"
    );

    // Conflicting and disjoint writes on both sides.
    let (l, r) = (nodes[0].id(), nodes[4].id());
    channels[0].modify(|m| m.set(l, "shared".into(), "left".into()));
    channels[1].modify(|m| m.set(nodes[1].id(), "only-left".into(), "1".into()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    channels[4].modify(|m| m.set(r, "shared".into(), "right".into()));
    channels[5].modify(|m| m.remove(nodes[5].id(), "only-left".into()));
    channels[3].modify(|m| m.set(nodes[3].id(), "only-right".into(), "2".into()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        channels[2].get().get(&"shared".into()).map(String::as_str),
        Some("left")
    );
    assert_eq!(
        channels[3].get().get(&"shared".into()).map(String::as_str),
        Some("right")
    );

    for n in &nodes {
        n.unblock_all();
    }
    let converged = eventually(CONVERGE, || async {
        let first = channels[0].get();
        channels.iter().all(|c| c.get() == first) && nodes.iter().all(|n| up_count(n) == 5)
    })
    .await;
    assert!(converged, "both sides should converge after the heal");
    let state = channels[2].get();
    assert_eq!(
        state.get(&"shared".into()).map(String::as_str),
        Some("right")
    );
    assert_eq!(
        state.get(&"only-right".into()).map(String::as_str),
        Some("2")
    );
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listener_learns_what_to_advertise() {
    init_tracing();
    let seed = start(Arc::new(gossip::node::NoopObserver)).await;
    let token: MeshSecret = seed.token().parse().unwrap();
    let mut cfg = config(
        Identity::generate().unwrap(),
        Arc::new(gossip::node::NoopObserver),
    );
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let wildcard = Node::start(cfg).await.unwrap();
    wildcard
        .join(&seed.local_addr().to_string(), &token)
        .await
        .unwrap();
    // A third host only learns of the wildcard host through gossip; the two
    // must still connect, whichever of them dials.
    let third = start(Arc::new(gossip::node::NoopObserver)).await;
    third
        .join(&seed.local_addr().to_string(), &token)
        .await
        .unwrap();
    let nodes = [seed, wildcard, third];
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 2)
        })
        .await
    );
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_meta_is_signed_and_gossiped_and_refuses_oversized_values() {
    init_tracing();
    let nodes = cluster(3).await;
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 2)
        })
        .await
    );
    let id = nodes[1].id();
    let meta_at = |n: &Node, key: &str| {
        n.members()
            .into_iter()
            .find(|m| m.id == id)
            .and_then(|m| m.meta.get(key).cloned())
    };
    nodes[1].set_meta("data_addrs", Some("198.18.0.9:7801".into()));
    assert!(
        eventually(CONVERGE, || async {
            [&nodes[0], &nodes[2]]
                .iter()
                .all(|n| meta_at(n, "data_addrs").as_deref() == Some("198.18.0.9:7801"))
        })
        .await,
        "the new value reaches every member"
    );
    // Too large for a member record: not advertised, the old value stays.
    nodes[1].set_meta("data_addrs", Some("x".repeat(4096)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        meta_at(&nodes[0], "data_addrs").as_deref(),
        Some("198.18.0.9:7801")
    );
    nodes[1].set_meta("data_addrs", None);
    assert!(
        eventually(CONVERGE, || async {
            meta_at(&nodes[0], "data_addrs").is_none() && meta_at(&nodes[2], "data_addrs").is_none()
        })
        .await,
        "a removed key disappears everywhere"
    );
    shutdown_all(&nodes).await;
}

/// `meshctl join` run before the seed's meshd is up (hosts booting
/// together): the join keeps trying and gets in once the seed answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_waits_for_a_seed_that_is_still_starting() {
    init_tracing();
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let secret = MeshSecret::generate();
    let joiner = start(Arc::new(gossip::node::NoopObserver)).await;
    let join = tokio::spawn({
        let (joiner, token) = (joiner.clone(), secret.clone());
        async move { joiner.join(&addr.to_string(), &token).await }
    });
    // Past the first try's QUIC handshake timeout and its TCP attempt.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut cfg = gossip::Config::new(
        Identity::generate().unwrap(),
        secret,
        addr,
        Arc::new(gossip::node::NoopObserver),
    );
    cfg.name = "seed".into();
    let seed = Node::start(cfg).await.unwrap();
    let joined = join
        .await
        .unwrap()
        .expect("the join gets in once the seed is up");
    assert_eq!(joined, seed.id());
    shutdown_all(&[joiner, seed]).await;
}
