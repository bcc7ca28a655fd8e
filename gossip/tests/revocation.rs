//! Revocation by secret rotation: members learn the new secret over their
//! connections; a removed (blocked) host cannot come back with the old token
//! under its own identity or a new one; a member that was down during the
//! rotation comes back with the old token and is given the new one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::{Identity, MeshSecret, Node};

async fn start_as(identity: &Identity) -> Node {
    Node::start(config(identity.clone(), Arc::new(gossip::NoopObserver)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_revokes_removed_hosts_and_readmits_members_that_were_down() {
    init_tracing();
    let nodes = cluster(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let old: MeshSecret = a.token().parse().unwrap();
    let seed = a.local_addr().to_string();
    let (removed_id, down_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let removed = start_as(&removed_id).await;
    let down = start_as(&down_id).await;
    removed.join(&seed, &old).await.unwrap();
    down.join(&seed, &old).await.unwrap();
    assert!(eventually(Duration::from_secs(15), || async { up_count(b) == 3 }).await);
    removed.shutdown().await;
    down.shutdown().await;
    // `peer rm`: every host blocks the removed one, then one rotates.
    for n in [a, b] {
        n.block_peers(&[removed_id.peer_id()]);
    }
    let new_token = a.rotate_secret().unwrap();
    assert_ne!(new_token, old.to_token());
    assert_eq!(a.secret_epoch(), 1);
    assert!(
        eventually(Duration::from_secs(10), || async { b.token() == new_token }).await,
        "a connected member learns the new secret"
    );
    assert_eq!(b.secret_epoch(), 1);

    // The removed host, under its own identity or a fresh one, with the old token.
    let again = start_as(&removed_id).await;
    assert!(
        again.join(&seed, &old).await.is_err(),
        "removed identity refused"
    );
    again.shutdown().await;
    let stranger = start(Arc::new(gossip::NoopObserver)).await;
    let err = stranger.join(&seed, &old).await.unwrap_err();
    assert!(
        matches!(err, gossip::Error::AuthRejected { .. }),
        "a new identity with the old token is refused: {err}"
    );
    stranger.shutdown().await;

    // The member that was down comes back with what it had, and is updated.
    let back = start_as(&down_id).await;
    back.join(&seed, &old).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            back.token() == new_token
        })
        .await,
        "a member that missed the rotation is given the new secret"
    );
    // New hosts join with the new token only.
    let fresh = start(Arc::new(gossip::NoopObserver)).await;
    fresh
        .join(&seed, &new_token.parse().unwrap())
        .await
        .unwrap();
    fresh.shutdown().await;
    back.shutdown().await;
    shutdown_all(&nodes).await;
}
