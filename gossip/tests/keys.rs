//! Data-plane key agreement between two live nodes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::{Identity, MeshSecret, Node, PeerId, SessionKeys};

fn installs(recorder: &Recorder, peer: PeerId) -> Vec<(SessionKeys, bool)> {
    recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Install {
                peer: p,
                keys,
                send_now,
            } if p == peer => Some((keys, send_now)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_match_rotate_on_schedule_and_follow_the_handover() {
    init_tracing();
    let rec_a = Arc::new(Recorder::default());
    let rec_b = Arc::new(Recorder::default());
    let mut cfg_a = config(Identity::generate().unwrap(), rec_a.clone());
    cfg_a.rekey_interval = Duration::from_millis(300);
    let mut cfg_b = config(Identity::generate().unwrap(), rec_b.clone());
    cfg_b.rekey_interval = Duration::from_millis(300);
    let a = Node::start(cfg_a).await.unwrap();
    let b = Node::start(cfg_b).await.unwrap();
    let token: MeshSecret = a.token().parse().unwrap();
    // b dials a, so b initiates every exchange.
    b.join(&a.local_addr().to_string(), &token).await.unwrap();

    let enough = eventually(Duration::from_secs(20), || async {
        installs(&rec_b, a.id()).len() >= 5
            && rec_a
                .events()
                .iter()
                .filter(|e| matches!(e, Event::Confirm(..)))
                .count()
                >= 5
    })
    .await;
    assert!(
        enough,
        "at least 5 generations within 20 s at a 300 ms rekey interval"
    );

    let initiator = installs(&rec_b, a.id());
    let responder = installs(&rec_a, b.id());
    assert!(
        initiator.iter().all(|(_, send_now)| *send_now),
        "initiator installs with send_now"
    );
    assert!(
        responder.iter().all(|(_, send_now)| !*send_now),
        "responder installs receive-first"
    );

    // Generations strictly increase on both sides.
    for list in [&initiator, &responder] {
        assert!(list
            .windows(2)
            .all(|w| w[0].0.generation < w[1].0.generation));
    }
    // Same generation → mirrored keys and indices; direction keys differ.
    let mut seen_keys = std::collections::HashSet::new();
    for (i_keys, _) in &initiator {
        let (r_keys, _) = responder
            .iter()
            .find(|(k, _)| k.generation == i_keys.generation)
            .expect("responder installed the same generation");
        assert_eq!(i_keys.send_key, r_keys.recv_key);
        assert_eq!(i_keys.recv_key, r_keys.send_key);
        assert_eq!(i_keys.local_index, r_keys.remote_index);
        assert_eq!(i_keys.remote_index, r_keys.local_index);
        assert_ne!(i_keys.send_key, i_keys.recv_key);
        assert!(
            seen_keys.insert(i_keys.send_key),
            "keys differ per generation"
        );
        assert!(seen_keys.insert(i_keys.recv_key));
    }

    // Causal order on the responder: up, then for each generation install
    // before confirm.
    let events = rec_a.events();
    assert!(matches!(events.first(), Some(Event::Up(p)) if *p == b.id()));
    let mut installed = None;
    for event in &events {
        match event {
            Event::Install { keys, .. } => installed = Some(keys.generation),
            Event::Confirm(_, generation) => assert_eq!(Some(*generation), installed),
            _ => {}
        }
    }
    // Member view reports the current generation.
    let member = a.members().into_iter().find(|m| m.id == b.id()).unwrap();
    assert!(member.key_generation.unwrap() >= 5);
    assert!(member.key_age.unwrap() < Duration::from_secs(5));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_keep_increasing_across_a_reconnect() {
    init_tracing();
    let rec_a = Arc::new(Recorder::default());
    let a = Node::start(config(Identity::generate().unwrap(), rec_a.clone()))
        .await
        .unwrap();
    let b_identity = Identity::generate().unwrap();
    let b_pkcs = b_identity.clone();
    let b = Node::start(config(b_identity, Arc::new(gossip::node::NoopObserver)))
        .await
        .unwrap();
    let token: MeshSecret = a.token().parse().unwrap();
    b.join(&a.local_addr().to_string(), &token).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !installs(&rec_a, b.id()).is_empty()
        })
        .await
    );
    let first = installs(&rec_a, b.id()).last().unwrap().0.generation;
    b.shutdown().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            rec_a
                .events()
                .iter()
                .any(|e| matches!(e, Event::Down(p) if *p == b.id()))
        })
        .await
    );

    // Same host comes back (no state dir): a tells it the last generation.
    let b2 = Node::start(config(b_pkcs, Arc::new(gossip::node::NoopObserver)))
        .await
        .unwrap();
    b2.join(&a.local_addr().to_string(), &token).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            installs(&rec_a, b2.id())
                .last()
                .is_some_and(|(k, _)| k.generation > first)
        })
        .await
    );
    a.shutdown().await;
    b2.shutdown().await;
}
