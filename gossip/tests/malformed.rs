//! A member that sends garbage is disconnected; the node survives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::auth::{membership_proof, Role, EKM_AUTH_LABEL};
use gossip::membership::MemberRecord;
use gossip::transport::{self, close_code, TransportTimers};
use gossip::wire::{Hello, HelloAck};
use gossip::{Identity, MeshSecret, PROTOCOL_VERSION};

/// Completes a valid handshake by hand and returns the raw control stream.
async fn raw_member(
    target: std::net::SocketAddr,
    secret: &MeshSecret,
) -> (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let identity = Identity::generate().unwrap();
    let endpoint = transport::bind_endpoint(
        &identity,
        loopback(),
        TransportTimers {
            keep_alive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let conn = endpoint
        .connect(target, transport::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let remote = transport::remote_peer_id(&conn).unwrap();
    let ekm = transport::exported_secret(&conn, EKM_AUTH_LABEL).unwrap();
    let hello = Hello {
        min_version: 1,
        max_version: PROTOCOL_VERSION,
        proof: membership_proof(secret, Role::Dialer, &ekm, &identity.peer_id(), &remote),
        record: MemberRecord {
            id: identity.peer_id(),
            name: "raw".into(),
            addrs: vec![],
            incarnation: 1,
            version: 0,
            meta: Default::default(),
        },
        last_key_generation: 0,
        observed: target,
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    transport::write_frame(&mut send, &hello).await.unwrap();
    let ack = transport::read_frame::<HelloAck>(&mut recv).await.unwrap();
    assert!(ack.is_some(), "valid token: handshake accepted");
    (endpoint, conn, send, recv)
}

async fn assert_closed_for_protocol_error(conn: &quinn::Connection) {
    let reason = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the node closes the connection");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code.into_inner(),
                close_code::PROTOCOL_ERROR as u64
            );
        }
        other => panic!("unexpected close: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    init_tracing();
    let node = start(Arc::new(gossip::node::NoopObserver)).await;
    let secret: MeshSecret = node.token().parse().unwrap();

    // 1. A well-sized frame whose body is not a message.
    let (_ep1, conn, mut send, _recv) = raw_member(node.local_addr(), &secret).await;
    let mut frame = 64u32.to_be_bytes().to_vec();
    frame.extend((0..64).map(|i| 0xF0u8 ^ i as u8));
    send.write_all(&frame).await.unwrap();
    assert_closed_for_protocol_error(&conn).await;

    // 2. A length prefix beyond the limit: refused before allocating.
    let (_ep2, conn, mut send, _recv) = raw_member(node.local_addr(), &secret).await;
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_closed_for_protocol_error(&conn).await;

    // 3. A well-formed message the dialer must never send (a KeyResp: the
    //    dialer is the key-exchange initiator).
    let (_ep3, conn, mut send, _recv) = raw_member(node.local_addr(), &secret).await;
    let wrong_side =
        gossip::wire::encode_frame(&gossip::wire::Message::KeyResp(gossip::wire::KeyResp {
            generation: 1,
            ephemeral: [9; 32],
            index: 1,
        }))
        .unwrap();
    send.write_all(&wrong_side).await.unwrap();
    assert_closed_for_protocol_error(&conn).await;

    // The node still serves proper members.
    let other = start(Arc::new(gossip::node::NoopObserver)).await;
    other
        .join(&node.local_addr().to_string(), &secret)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { up_count(&other) == 1 }).await);
    node.shutdown().await;
    other.shutdown().await;
}
