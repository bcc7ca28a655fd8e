//! A member that sends garbage is disconnected; the node survives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::auth::{membership_proof, Role, EKM_AUTH_LABEL};
use gossip::membership::MemberRecord;
use gossip::transport::{self, close_code, TransportTimers};
use gossip::wire::{encode_frame, Hello, HelloAck, HelloRecord, Message};
use gossip::{Identity, MeshSecret, PROTOCOL_VERSION};

type Raw = (
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
);

/// Completes a valid handshake by hand and returns the raw control stream.
async fn raw_member(target: std::net::SocketAddr, secret: &MeshSecret) -> Raw {
    raw_member_as(&Identity::generate().unwrap(), target, secret).await
}

/// The raw member's own record, signed.
fn raw_record(identity: &Identity, name: &str, version: u64) -> MemberRecord {
    let mut record = MemberRecord {
        id: identity.peer_id(),
        name: name.into(),
        addrs: vec![],
        incarnation: 1,
        version,
        meta: Default::default(),
        signature: Default::default(),
    };
    assert!(record.sign());
    record
}

async fn raw_member_as(
    identity: &Identity,
    target: std::net::SocketAddr,
    secret: &MeshSecret,
) -> Raw {
    let endpoint = transport::bind_endpoint(
        identity,
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
        observed: target,
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    transport::write_frame(&mut send, &hello).await.unwrap();
    let ack = transport::read_frame::<HelloAck>(&mut recv).await.unwrap();
    assert!(ack.is_some(), "valid token: handshake accepted");
    let third = HelloRecord {
        record: raw_record(identity, "raw", 0),
        last_key_generation: 0,
    };
    transport::write_frame(&mut send, &third).await.unwrap();
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

/// An authenticated member that forges another host's record (a higher
/// incarnation with its own `netkey` and address), or pushes incarnations to
/// `u64::MAX`, changes nothing: every record is checked against its
/// subject's signature and the incarnation bound before merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_unreachable_member_records_are_dropped() {
    init_tracing();
    let nodes = cluster(2).await;
    let (observer, victim) = (&nodes[0], &nodes[1]);
    assert!(
        eventually(Duration::from_secs(10), || async {
            up_count(observer) == 1
        })
        .await
    );
    let before = observer
        .members()
        .into_iter()
        .find(|m| m.id == victim.id())
        .unwrap();
    let secret: MeshSecret = observer.token().parse().unwrap();
    let attacker = Identity::generate().unwrap();
    let (_ep, _conn, mut send, _recv) =
        raw_member_as(&attacker, observer.local_addr(), &secret).await;

    let forged = |incarnation: u64, sign: bool| {
        let mut r = MemberRecord {
            id: victim.id(),
            name: "victim".into(),
            addrs: vec!["192.0.2.66:7800".into()],
            incarnation,
            version: 0,
            meta: [("netkey".to_string(), "attacker-key".to_string())].into(),
            signature: Default::default(),
        };
        if sign {
            // Signed with the attacker's key (the victim's key is in this
            // process too, as every node runs here: sign as the attacker by
            // swapping ids, which is what a real attacker can do).
            r.id = attacker.peer_id();
            r.sign();
            r.id = victim.id();
        }
        r
    };
    let mut own_at_max = raw_record(&attacker, "raw", 5);
    own_at_max.incarnation = u64::MAX;
    assert!(own_at_max.sign(), "validly signed by its subject");
    let mut victim_at_max = forged(u64::MAX, true);
    victim_at_max.addrs.clear();
    let attack = Message::Members(vec![
        forged(before.incarnation + 1, true),
        forged(before.incarnation + 1, false),
        victim_at_max,
        own_at_max,
    ]);
    send.write_all(&encode_frame(&attack).unwrap())
        .await
        .unwrap();
    let full = Message::MembersFull {
        records: vec![forged(before.incarnation + 7, true)],
        want_reply: None,
    };
    send.write_all(&encode_frame(&full).unwrap()).await.unwrap();
    // A genuine update after the attack: once it shows, the attack was processed.
    let marker = Message::Members(vec![raw_record(&attacker, "raw-after", 1)]);
    send.write_all(&encode_frame(&marker).unwrap())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            observer
                .members()
                .iter()
                .any(|m| m.id == attacker.peer_id() && m.name == "raw-after")
        })
        .await
    );

    let after = observer
        .members()
        .into_iter()
        .find(|m| m.id == victim.id())
        .unwrap();
    assert_eq!(after.incarnation, before.incarnation);
    assert_eq!(after.meta, before.meta);
    assert_ne!(after.addr.to_string(), "192.0.2.66:7800");
    let raw = observer
        .members()
        .into_iter()
        .find(|m| m.id == attacker.peer_id())
        .unwrap();
    assert_eq!(
        raw.incarnation, 1,
        "u64::MAX is out of bounds even for its subject"
    );
    // The mesh keeps working: the victim is up and a new host joins.
    assert_eq!(up_count(observer), 2);
    let late = start(Arc::new(gossip::node::NoopObserver)).await;
    late.join(&observer.local_addr().to_string(), &secret)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { up_count(&late) >= 2 }).await);
    late.shutdown().await;
    shutdown_all(&nodes).await;
}

/// Before the proof: a hello beyond the small limit is refused, and the
/// acceptor sends nothing about itself to a dialer that proved nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_told_or_kept_before_the_proof() {
    init_tracing();
    let node = start(Arc::new(gossip::node::NoopObserver)).await;
    let connect = || async {
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
            .connect(node.local_addr(), transport::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        (endpoint, conn)
    };
    // 1. A length prefix just over the hello limit (far below the frame limit).
    let (_ep, conn) = connect().await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&((gossip::wire::MAX_HELLO_LEN as u32 + 1).to_be_bytes()))
        .await
        .unwrap();
    assert_closed_for_protocol_error(&conn).await;

    // 2. A wrong proof: closed, and nothing but the close arrives.
    let (_ep, conn) = connect().await;
    let hello = Hello {
        min_version: 1,
        max_version: PROTOCOL_VERSION,
        proof: [7; 32],
        observed: node.local_addr(),
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    transport::write_frame(&mut send, &hello).await.unwrap();
    let got = transport::read_frame::<HelloAck>(&mut recv).await;
    assert!(
        !matches!(got, Ok(Some(_))),
        "no ack (and so no record) without a proof"
    );
    node.shutdown().await;
}

/// A member that mints many identities whose records point at one address
/// gets only a few handshake attempts at a time out of a host, and the mesh
/// keeps admitting genuine newcomers meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_members_pointing_elsewhere_get_rationed_dials() {
    init_tracing();
    let observer = start(Arc::new(gossip::node::NoopObserver)).await;
    let secret: MeshSecret = observer.token().parse().unwrap();
    // The address the attack aims at: a socket that never answers, so every
    // handshake to it lasts until its timeout (10 s, longer than we watch).
    let target = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
    let aimed = target.local_addr().unwrap().to_string();
    let attacker = Identity::generate().unwrap();
    let (_ep, _conn, mut send, _recv) =
        raw_member_as(&attacker, observer.local_addr(), &secret).await;
    const FAKES: usize = 200;
    let fakes: Vec<MemberRecord> = (0..FAKES)
        .map(|i| {
            let mut r = raw_record(&Identity::generate().unwrap(), &format!("fake{i}"), 0);
            r.addrs = vec![aimed.clone()];
            assert!(r.sign());
            r
        })
        .collect();
    // Self-signed and within every limit: these are believed as members.
    let fake_ids: Vec<_> = fakes.iter().map(|r| r.id).collect();
    send.write_all(&encode_frame(&Message::Members(fakes)).unwrap())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let members = observer.members();
            fake_ids
                .iter()
                .all(|id| members.iter().any(|m| m.id == *id))
        })
        .await
    );
    // Count distinct QUIC connection attempts (Initial packets' destination
    // connection ids) arriving at the target for 4 s.
    let mut attempts = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    let watch = tokio::time::sleep(Duration::from_secs(4));
    tokio::pin!(watch);
    loop {
        tokio::select! {
            _ = &mut watch => break,
            got = target.recv_from(&mut buf) => {
                let (n, _) = got.unwrap();
                // Long header: flag, 4-byte version, DCID length, DCID.
                if n > 6 && buf[0] & 0x80 != 0 {
                    let len = buf[5] as usize;
                    if n >= 6 + len {
                        attempts.insert(buf[6..6 + len].to_vec());
                    }
                }
            }
        }
    }
    assert!(
        !attempts.is_empty(),
        "the fake members are dialed (the count below is meaningful)"
    );
    assert!(
        attempts.len() <= gossip::node::UNPROVEN_DIAL_PERMITS,
        "{} handshake attempts at once for {FAKES} fake members",
        attempts.len()
    );
    // Meanwhile a genuine host joins, and both sides see the link.
    let late = start(Arc::new(gossip::node::NoopObserver)).await;
    late.join(&observer.local_addr().to_string(), &secret)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            observer
                .members()
                .iter()
                .any(|m| m.id == late.id() && m.state == gossip::PeerState::Up)
        })
        .await
    );
    late.shutdown().await;
    observer.shutdown().await;
}

/// An authenticated member that writes far past its per-writer quota (6 MiB
/// where a writer may hold 4 MiB) is refused beyond it and counted; the
/// host's own writes still land and a host that joins afterwards still gets
/// the whole channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_over_its_channel_quota_is_refused_and_replication_goes_on() {
    use gossip::{LwwMap, Mergeable, Quota};
    type Big = LwwMap<String, String>;
    init_tracing();
    let node = start(Arc::new(gossip::node::NoopObserver)).await;
    let channel = node.channel("big", Big::new());
    let secret: MeshSecret = node.token().parse().unwrap();
    let attacker = Identity::generate().unwrap();
    let (_ep, _conn, mut send, _recv) = raw_member_as(&attacker, node.local_addr(), &secret).await;
    let refused_before = gossip::state::quota::refused_total();

    // 8 deltas of 48 entries of 16 KiB: each well under a frame, 6 MiB in all.
    for batch in 0..8 {
        let mut delta = Big::new();
        for i in 0..48 {
            delta.set(
                attacker.peer_id(),
                format!("flood-{batch}-{i}"),
                "y".repeat(16 * 1024),
            );
        }
        let frame = encode_frame(&Message::ChannelDelta {
            channel: "big".into(),
            data: delta.encode(),
        })
        .unwrap();
        send.write_all(&frame).await.unwrap();
    }
    // A marker record after the flood: once it shows, the flood was processed.
    let marker = Message::Members(vec![raw_record(&attacker, "flooded", 1)]);
    send.write_all(&encode_frame(&marker).unwrap())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            node.members()
                .iter()
                .any(|m| m.id == attacker.peer_id() && m.name == "flooded")
        })
        .await
    );
    let held: usize = channel
        .get()
        .entries()
        .filter(|(_, e)| e.stamp.writer == attacker.peer_id())
        .map(|(k, e)| postcard::to_stdvec(&(k, e)).unwrap().len())
        .sum();
    assert!(
        held <= Quota::DEFAULT.bytes,
        "the writer holds {held} bytes, over its quota"
    );
    assert!(
        held > Quota::DEFAULT.bytes / 2,
        "writes under the quota landed"
    );
    assert!(
        gossip::state::quota::refused_total() > refused_before,
        "the refused writes are counted"
    );

    // The host's own writes still land, and a late joiner gets everything.
    channel.modify(|m| m.set(node.id(), "own".into(), "z".into()));
    assert_eq!(
        channel.get().get(&"own".to_string()).map(String::as_str),
        Some("z")
    );
    let late = start(Arc::new(gossip::node::NoopObserver)).await;
    let late_channel = late.channel("big", Big::new());
    late.join(&node.local_addr().to_string(), &secret)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            late_channel.get() == channel.get()
        })
        .await,
        "the late joiner holds {} of {} entries",
        late_channel.get().entries().count(),
        channel.get().entries().count()
    );
    late.shutdown().await;
    node.shutdown().await;
}
