//! Relayed control between real nodes on loopback: A and B refuse direct
//! connections with each other, C carries their heartbeats and key
//! exchanges; lifting the block brings the direct link back.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::{Identity, MeshSecret, Node, PeerId, PeerState};

fn member(node: &Node, peer: PeerId) -> Option<gossip::Member> {
    node.members().into_iter().find(|m| m.id == peer)
}

fn generations(recorder: &Recorder, peer: PeerId) -> Vec<u64> {
    recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Install { peer: p, keys, .. } if *p == peer => Some(keys.generation),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_goes_through_a_relay_and_back_to_direct() {
    init_tracing();
    let recorders: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
    let secret = MeshSecret::generate();
    let mut nodes = Vec::new();
    for recorder in &recorders {
        let mut cfg = config(Identity::generate().unwrap(), recorder.clone());
        cfg.secret = secret.clone();
        cfg.heartbeat_interval = Duration::from_millis(300);
        cfg.dead_after = Duration::from_secs(2);
        cfg.rekey_interval = Duration::from_secs(3);
        nodes.push(Node::start(cfg).await.unwrap());
    }
    // The lower id of A and B initiates relayed sessions: either way works.
    let seed = nodes[2].local_addr().to_string();
    for node in &nodes[..2] {
        node.join(&seed, &secret).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || async {
            nodes.iter().all(|n| up_count(n) == 2)
        })
        .await,
        "full mesh"
    );
    let (a, b, c) = (nodes[0].id(), nodes[1].id(), nodes[2].id());
    nodes[0].block_direct(&[b]);
    nodes[1].block_direct(&[a]);

    let relayed = |node: &Node, peer: PeerId| {
        member(node, peer).is_some_and(|m| m.state == PeerState::Up && m.relay == Some(c))
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            relayed(&nodes[0], b) && relayed(&nodes[1], a)
        })
        .await,
        "A and B up through C: {:?}",
        member(&nodes[0], b)
    );
    assert_eq!(
        member(&nodes[0], b).unwrap().relay_name.as_deref(),
        Some("test")
    );
    // Keys keep rotating over the relay, on both ends.
    let before = generations(&recorders[0], b);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let now = generations(&recorders[0], b);
            now.len() >= before.len() + 2 && generations(&recorders[1], a).len() >= now.len()
        })
        .await,
        "rekeys through the relay: {before:?} → {:?}",
        generations(&recorders[0], b)
    );
    let gens = generations(&recorders[0], b);
    assert!(
        gens.windows(2).all(|w| w[0] < w[1]),
        "generations rise: {gens:?}"
    );
    // C itself sees both directly.
    assert!(member(&nodes[2], a).unwrap().relay.is_none());

    for node in &nodes {
        node.unblock_all();
    }
    assert!(
        eventually(Duration::from_secs(15), || async {
            [(0, b), (1, a)].iter().all(|(i, p)| {
                member(&nodes[*i], *p)
                    .is_some_and(|m| m.state == PeerState::Up && m.relay.is_none())
            })
        })
        .await,
        "direct again"
    );
    shutdown_all(&nodes).await;
}
