//! Sans-IO tests of the engine: two engines ("hosts" A and B) exchange
//! datagrams as byte vectors, with explicit time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::engine::{Engine, Outgoing};
use dataplane::keypair::REJECT_AFTER_TIME;
use dataplane::pool::BufPool;
use dataplane::switch::MAC_AGE;
use dataplane::wire::{HEADER_LEN, OVERHEAD};
use dataplane::{DropReason, NetworkId, SessionKeys};
use proptest::prelude::*;

const NET: NetworkId = NetworkId(7);
const OTHER_NET: NetworkId = NetworkId(8);
const PEER_A: u32 = 1; // how B names A
const PEER_B: u32 = 2; // how A names B
const PEER_C: u32 = 3;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
const BROADCAST: [u8; 6] = [0xff; 6];

fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 1], port))
}

/// Mirrored session keys: what A sends with, B receives with, and back.
fn session(generation: u64) -> (SessionKeys, SessionKeys) {
    let a_to_b = [generation as u8; 32];
    let b_to_a = [0x80 | generation as u8; 32];
    let index_a = 1000 + generation as u32;
    let index_b = 2000 + generation as u32;
    (
        SessionKeys {
            generation,
            local_index: index_a,
            remote_index: index_b,
            send_key: a_to_b,
            recv_key: b_to_a,
            cipher: dataplane::Cipher::default(),
        },
        SessionKeys {
            generation,
            local_index: index_b,
            remote_index: index_a,
            send_key: b_to_a,
            recv_key: a_to_b,
            cipher: dataplane::Cipher::default(),
        },
    )
}

struct Pair {
    t0: Instant,
    a: Engine,
    b: Engine,
    pool: BufPool,
}

impl Pair {
    fn new() -> Pair {
        let t0 = Instant::now();
        let (a, b) = (Engine::new(t0), Engine::new(t0));
        a.add_network(NET);
        b.add_network(NET);
        a.upsert_peer(PEER_B, Some(endpoint(2)), &[NET]);
        b.upsert_peer(PEER_A, Some(endpoint(1)), &[NET]);
        let (keys_a, keys_b) = session(1);
        a.install_keys(PEER_B, &keys_a, true, t0);
        b.install_keys(PEER_A, &keys_b, true, t0);
        Pair {
            t0,
            a,
            b,
            pool: BufPool::new(9216, 4),
        }
    }

    fn seal(
        &mut self,
        engine_is_a: bool,
        net: NetworkId,
        frame: &[u8],
        at: Instant,
    ) -> Vec<Outgoing> {
        let engine = if engine_is_a { &self.a } else { &self.b };
        let mut buf = self.pool.get();
        assert!(buf.fill_frame(frame));
        let mut out = Vec::new();
        engine.seal_frame(net, buf, at, &mut self.pool, &mut out);
        out
    }

    /// A seals `frame` on NET, expecting exactly one datagram.
    fn seal_one(&mut self, frame: &[u8], at: Instant) -> Vec<u8> {
        let out = self.seal(true, NET, frame, at);
        assert_eq!(out.len(), 1, "expected one datagram");
        out[0].datagram.datagram().to_vec()
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; len.max(14)];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    for (i, byte) in frame.iter_mut().enumerate().skip(14) {
        *byte = (i * 31 % 251) as u8;
    }
    frame
}

#[test]
fn round_trip_every_size_up_to_the_mtu() {
    let mut pair = Pair::new();
    let now = pair.t0;
    for len in 14..=(1422 + 14) {
        let original = frame(BROADCAST, MAC_A, len);
        let mut datagram = pair.seal_one(&original, now);
        assert_eq!(datagram.len(), len + OVERHEAD);
        assert_ne!(
            &datagram[HEADER_LEN..HEADER_LEN + len],
            &original[..],
            "payload must be encrypted"
        );
        let delivery = pair.b.open_datagram(&mut datagram, now).expect("opens");
        assert_eq!(delivery.network, NET);
        assert_eq!(delivery.peer, PEER_A);
        assert_eq!(&datagram[delivery.frame], &original[..]);
    }
}

#[test]
fn jumbo_frame_round_trip() {
    let mut pair = Pair::new();
    let original = frame(BROADCAST, MAC_A, 9014);
    let mut datagram = pair.seal_one(&original, pair.t0);
    let delivery = pair.b.open_datagram(&mut datagram, pair.t0).expect("opens");
    assert_eq!(&datagram[delivery.frame], &original[..]);
}

#[test]
fn every_single_bit_flip_is_rejected_and_counted() {
    let mut pair = Pair::new();
    let datagram = pair.seal_one(&frame(BROADCAST, MAC_A, 60), pair.t0);
    for bit in 0..datagram.len() * 8 {
        let mut tampered = datagram.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        let reason = pair
            .b
            .open_datagram(&mut tampered, pair.t0)
            .expect_err("tampered datagram accepted");
        let expected = match bit / 8 {
            0 => DropReason::UnknownType,
            1 => DropReason::BadVersion,
            2 => DropReason::BadReserved,
            4..=7 => DropReason::UnknownIndex,
            _ => DropReason::BadTag,
        };
        assert_eq!(reason, expected, "bit {bit}");
    }
    let drops = pair.b.drops();
    // Byte 3 holds flags a receiver may ignore: flipping one leaves the
    // header valid, and the tag (the header is associated data) refuses it.
    assert_eq!(
        drops.get(DropReason::BadTag),
        ((datagram.len() - 7) * 8) as u64
    );
    assert_eq!(drops.get(DropReason::UnknownIndex), 32);
    // Rejections never touched the replay window: the original still opens.
    let mut original = datagram.clone();
    assert!(pair.b.open_datagram(&mut original, pair.t0).is_ok());
}

#[test]
fn duplicates_and_too_old_are_dropped_reordering_accepted() {
    let mut pair = Pair::new();
    let now = pair.t0;
    let datagrams: Vec<Vec<u8>> = (0..5000)
        .map(|_| pair.seal_one(&frame(BROADCAST, MAC_A, 64), now))
        .collect();
    // Deliver 100..5000 in reverse order: all within the 4032-wide window? No:
    // only the newest 4033 positions are; older ones are too old.
    let mut accepted = 0;
    for datagram in datagrams[100..].iter().rev() {
        if pair.b.open_datagram(&mut datagram.clone(), now).is_ok() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 4033); // counters 4999 down to 4999 - 4032
    assert_eq!(pair.b.drops().get(DropReason::TooOld), (4900 - 4033) as u64);
    assert_eq!(
        pair.b.open_datagram(&mut datagrams[4999].clone(), now),
        Err(DropReason::Replayed)
    );
    assert_eq!(
        pair.b.open_datagram(&mut datagrams[0].clone(), now),
        Err(DropReason::TooOld)
    );
    assert_eq!(pair.b.drops().get(DropReason::Replayed), 1);
}

#[test]
fn rekey_overlap_keeps_in_flight_packets_and_promotes_next_on_first_packet() {
    let mut pair = Pair::new();
    let now = pair.t0 + Duration::from_secs(1);
    let in_flight = pair.seal_one(&frame(BROADCAST, MAC_A, 100), now);

    // Initiator A switches immediately; responder B holds the session as `next`.
    let (keys_a, keys_b) = session(2);
    pair.a.install_keys(PEER_B, &keys_a, true, now);
    pair.b.install_keys(PEER_A, &keys_b, false, now);
    let stats = pair.b.stats(now).peers[&PEER_A].clone();
    assert_eq!(
        (stats.current_generation, stats.next_generation),
        (Some(1), Some(2))
    );

    // Old generation still decrypts after the new one is installed.
    assert!(pair.b.open_datagram(&mut in_flight.clone(), now).is_ok());
    // B still sends under generation 1 until the peer proves it has gen 2.
    let from_b = pair.seal(false, NET, &frame(BROADCAST, MAC_B, 80), now);
    assert_eq!(from_b.len(), 1);
    assert!(
        pair.a
            .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), now)
            .is_ok(),
        "A keeps gen 1 as previous"
    );

    // First packet under generation 2 promotes it.
    let mut new_gen = pair.seal_one(&frame(BROADCAST, MAC_A, 100), now);
    assert!(pair.b.open_datagram(&mut new_gen, now).is_ok());
    let stats = pair.b.stats(now).peers[&PEER_A].clone();
    assert_eq!(
        (
            stats.current_generation,
            stats.previous_generation,
            stats.next_generation
        ),
        (Some(2), Some(1), None)
    );
}

#[test]
fn confirm_keys_promotes_next() {
    let pair = Pair::new();
    let (_, keys_b) = session(2);
    pair.b.install_keys(PEER_A, &keys_b, false, pair.t0);
    assert!(
        !pair.b.confirm_keys(PEER_A, 3),
        "unknown generation is ignored"
    );
    assert!(pair.b.confirm_keys(PEER_A, 2));
    let stats = pair.b.stats(pair.t0).peers[&PEER_A].clone();
    assert_eq!(
        (stats.current_generation, stats.previous_generation),
        (Some(2), Some(1))
    );
}

#[test]
fn keypair_older_than_reject_after_time_is_refused_both_ways() {
    let mut pair = Pair::new();
    let fresh = pair.seal_one(&frame(BROADCAST, MAC_A, 64), pair.t0);
    let expired = pair.t0 + REJECT_AFTER_TIME;
    assert_eq!(
        pair.b.open_datagram(&mut fresh.clone(), expired),
        Err(DropReason::StaleKey)
    );
    assert!(pair
        .seal(true, NET, &frame(BROADCAST, MAC_A, 64), expired)
        .is_empty());
    assert_eq!(pair.a.drops().get(DropReason::StaleKey), 1);
    assert_eq!(pair.b.drops().get(DropReason::StaleKey), 1);
    // Housekeeping forgets it: then the index is unknown.
    pair.b.housekeeping(expired);
    assert_eq!(
        pair.b.open_datagram(&mut fresh.clone(), expired),
        Err(DropReason::UnknownIndex)
    );
}

#[test]
fn frames_never_cross_networks() {
    let mut pair = Pair::new();
    // A believes B is in OTHER_NET too, but B has not configured it.
    pair.a.add_network(OTHER_NET);
    pair.a
        .upsert_peer(PEER_B, Some(endpoint(2)), &[NET, OTHER_NET]);
    let out = pair.seal(true, OTHER_NET, &frame(BROADCAST, MAC_A, 64), pair.t0);
    assert_eq!(out.len(), 1);
    let mut datagram = out[0].datagram.datagram().to_vec();
    assert_eq!(
        pair.b.open_datagram(&mut datagram.clone(), pair.t0),
        Err(DropReason::WrongNetwork)
    );
    // B configures OTHER_NET but A is not a member of it at B: still refused.
    pair.b.add_network(OTHER_NET);
    let out = pair.seal(true, OTHER_NET, &frame(BROADCAST, MAC_A, 64), pair.t0);
    datagram = out[0].datagram.datagram().to_vec();
    assert_eq!(
        pair.b.open_datagram(&mut datagram, pair.t0),
        Err(DropReason::WrongNetwork)
    );
    assert_eq!(pair.b.drops().get(DropReason::WrongNetwork), 2);
    // A frame for a network not configured locally is dropped on send too.
    assert!(pair
        .seal(true, NetworkId(99), &frame(BROADCAST, MAC_A, 64), pair.t0)
        .is_empty());
}

#[test]
fn rewriting_the_network_id_fails_authentication() {
    let mut pair = Pair::new();
    pair.b.add_network(OTHER_NET);
    pair.b
        .upsert_peer(PEER_A, Some(endpoint(1)), &[NET, OTHER_NET]);
    let mut datagram = pair.seal_one(&frame(BROADCAST, MAC_A, 64), pair.t0);
    datagram[16..20].copy_from_slice(&OTHER_NET.0.to_be_bytes());
    assert_eq!(
        pair.b.open_datagram(&mut datagram, pair.t0),
        Err(DropReason::BadTag)
    );
}

/// A with two peers B and C in NET.
fn three_hosts() -> (Pair, Engine) {
    let pair = Pair::new();
    let c = Engine::new(pair.t0);
    c.add_network(NET);
    let keys = SessionKeys {
        generation: 1,
        local_index: 3000,
        remote_index: 4000,
        send_key: [0x33; 32],
        recv_key: [0x44; 32],
        cipher: dataplane::Cipher::default(),
    };
    pair.a.upsert_peer(PEER_C, Some(endpoint(3)), &[NET]);
    pair.a.install_keys(PEER_C, &keys, true, pair.t0);
    (pair, c)
}

fn peers_of(out: &[Outgoing]) -> Vec<u32> {
    let mut peers: Vec<u32> = out.iter().map(|o| o.peer).collect();
    peers.sort();
    peers
}

#[test]
fn broadcast_multicast_and_unknown_unicast_flood_to_members_known_unicast_does_not() {
    let (mut pair, _c) = three_hosts();
    let t0 = pair.t0;
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(BROADCAST, MAC_A, 64), t0)),
        vec![PEER_B, PEER_C]
    );
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame([0x01, 0, 0x5e, 0, 0, 9], MAC_A, 64), t0)),
        vec![PEER_B, PEER_C]
    );
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(MAC_B, MAC_A, 64), t0)),
        vec![PEER_B, PEER_C]
    );

    // A learns MAC_B from an authenticated frame from B.
    let from_b = pair.seal(false, NET, &frame(BROADCAST, MAC_B, 64), t0);
    assert!(pair
        .a
        .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), t0)
        .is_ok());
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(MAC_B, MAC_A, 64), t0)),
        vec![PEER_B]
    );
    // Broadcast still floods.
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(BROADCAST, MAC_A, 64), t0)).len(),
        2
    );

    // C leaves the network: not flooded to any more.
    pair.a.upsert_peer(PEER_C, Some(endpoint(3)), &[]);
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(BROADCAST, MAC_A, 64), t0)),
        vec![PEER_B]
    );
}

#[test]
fn a_down_peer_gets_no_floods_but_keeps_its_unicast_both_ways() {
    let (mut pair, _c) = three_hosts();
    let t0 = pair.t0;
    // A learns MAC_B behind B.
    let from_b = pair.seal(false, NET, &frame(BROADCAST, MAC_B, 64), t0);
    assert!(pair
        .a
        .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), t0)
        .is_ok());

    pair.a.set_peer_down(PEER_B, true);
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(BROADCAST, MAC_A, 64), t0)),
        vec![PEER_C],
        "no flood copies for a down host"
    );
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(MAC_B, MAC_A, 64), t0)),
        vec![PEER_B],
        "unicast to a learned MAC still goes"
    );
    let from_b = pair.seal(false, NET, &frame(MAC_A, MAC_B, 64), t0);
    assert!(
        pair.a
            .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), t0)
            .is_ok(),
        "frames from a down host are still accepted"
    );

    pair.a.set_peer_down(PEER_B, false);
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(BROADCAST, MAC_A, 64), t0)),
        vec![PEER_B, PEER_C]
    );
}

#[test]
fn learned_macs_age_out() {
    let (mut pair, _c) = three_hosts();
    let t0 = pair.t0;
    let from_b = pair.seal(false, NET, &frame(BROADCAST, MAC_B, 64), t0);
    pair.a
        .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), t0)
        .expect("opens");
    // Fresh keys so sending is still allowed after MAC_AGE.
    let later = t0 + MAC_AGE - Duration::from_secs(1);
    let (keys_a, _) = session(5);
    pair.a.install_keys(PEER_B, &keys_a, true, later);
    let keys_c = SessionKeys {
        generation: 2,
        local_index: 3001,
        remote_index: 4001,
        send_key: [0x35; 32],
        recv_key: [0x45; 32],
        cipher: dataplane::Cipher::default(),
    };
    pair.a.install_keys(PEER_C, &keys_c, true, later);
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(MAC_B, MAC_A, 64), later)),
        vec![PEER_B]
    );
    let aged = t0 + MAC_AGE;
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(MAC_B, MAC_A, 64), aged)),
        vec![PEER_B, PEER_C]
    );
}

#[test]
fn split_horizon_frames_from_peers_only_reach_the_local_tap() {
    let (mut pair, _c) = three_hosts();
    let t0 = pair.t0;
    let from_b = pair.seal(false, NET, &frame(BROADCAST, MAC_B, 64), t0);
    let delivery = pair
        .a
        .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), t0)
        .expect("opens");
    assert_eq!((delivery.network, delivery.peer), (NET, PEER_B));
    // Opening a broadcast from B produced no traffic towards C.
    let stats = pair.a.stats(t0);
    assert_eq!(stats.peers[&PEER_C].tx_packets, 0);
    assert_eq!(stats.peers[&PEER_B].rx_packets, 1);
}

#[test]
fn local_source_mac_overrides_a_learned_remote_one() {
    let (mut pair, _c) = three_hosts();
    let t0 = pair.t0;
    let from_b = pair.seal(false, NET, &frame(BROADCAST, MAC_B, 64), t0);
    pair.a
        .open_datagram(&mut from_b[0].datagram.datagram().to_vec(), t0)
        .expect("opens");
    // MAC_B now shows up on A's own TAP (container moved here).
    pair.seal(true, NET, &frame(BROADCAST, MAC_B, 64), t0);
    assert_eq!(
        peers_of(&pair.seal(true, NET, &frame(MAC_B, MAC_A, 64), t0)).len(),
        2
    );
}

#[test]
fn keys_before_endpoint_and_endpoint_before_keys_are_counted_drops() {
    let t0 = Instant::now();
    let engine = Engine::new(t0);
    let mut pool = BufPool::new(2048, 2);
    engine.add_network(NET);
    let (keys, _) = session(1);
    engine.install_keys(PEER_B, &keys, true, t0); // creates the peer without endpoint
    engine.upsert_peer(PEER_C, Some(endpoint(3)), &[NET]); // endpoint, no keys
    engine.upsert_peer(PEER_B, None, &[NET]);
    let mut out = Vec::new();
    let mut buf = pool.get();
    buf.fill_frame(&frame(BROADCAST, MAC_A, 64));
    engine.seal_frame(NET, buf, t0, &mut pool, &mut out);
    assert!(out.is_empty());
    assert_eq!(engine.drops().get(DropReason::NoEndpoint), 1);
    assert_eq!(engine.drops().get(DropReason::NoKey), 1);
    let mut runt = pool.get();
    runt.fill_frame(&[0u8; 13]);
    engine.seal_frame(NET, runt, t0, &mut pool, &mut out);
    assert_eq!(engine.drops().get(DropReason::RuntFrame), 1);
}

#[test]
fn removed_peer_indexes_are_forgotten() {
    let mut pair = Pair::new();
    let datagram = pair.seal_one(&frame(BROADCAST, MAC_A, 64), pair.t0);
    pair.b.remove_peer(PEER_A);
    assert_eq!(
        pair.b.open_datagram(&mut datagram.clone(), pair.t0),
        Err(DropReason::UnknownIndex)
    );
}

#[test]
fn stats_name_every_drop_reason() {
    let pair = Pair::new();
    let stats = pair.a.stats(pair.t0);
    for reason in DropReason::ALL {
        assert_eq!(stats.drops.get(reason.name()), Some(&0));
    }
    assert_eq!(stats.peers[&PEER_B].current_generation, Some(1));
    assert_eq!(stats.peers[&PEER_B].endpoint, Some(endpoint(2)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_garbage_never_panics_and_is_counted(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let pair = Pair::new();
        let mut datagram = bytes;
        prop_assert!(pair.b.open_datagram(&mut datagram, pair.t0).is_err());
        let total: u64 = pair.b.stats(pair.t0).drops.values().sum();
        prop_assert_eq!(total, 1);
    }

    #[test]
    fn garbage_behind_a_valid_header_is_rejected(body in proptest::collection::vec(any::<u8>(), 0..1600), counter: u64) {
        let pair = Pair::new();
        let (_, keys_b) = session(1);
        let mut datagram = vec![1u8, 1, 0, 0];
        datagram.extend_from_slice(&keys_b.local_index.to_be_bytes());
        datagram.extend_from_slice(&counter.to_be_bytes());
        datagram.extend_from_slice(&NET.0.to_be_bytes());
        datagram.extend_from_slice(&body);
        let result = pair.b.open_datagram(&mut datagram, pair.t0);
        prop_assert!(matches!(result, Err(DropReason::Short) | Err(DropReason::BadTag) | Err(DropReason::StaleKey)));
    }

    #[test]
    fn round_trip_random_frames(payload in proptest::collection::vec(any::<u8>(), 14..1436)) {
        let mut pair = Pair::new();
        let mut datagram = pair.seal_one(&payload, pair.t0);
        let delivery = pair.b.open_datagram(&mut datagram, pair.t0).expect("opens");
        prop_assert_eq!(&datagram[delivery.frame], &payload[..]);
    }

    #[test]
    fn random_single_bit_flip_of_a_random_frame_is_rejected(payload in proptest::collection::vec(any::<u8>(), 14..1436), bit in any::<proptest::sample::Index>()) {
        let mut pair = Pair::new();
        let mut datagram = pair.seal_one(&payload, pair.t0);
        let bit = bit.index(datagram.len() * 8);
        datagram[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(pair.b.open_datagram(&mut datagram, pair.t0).is_err());
    }
}

#[test]
fn a_network_secret_keeps_out_hosts_without_it() {
    let mut pair = Pair::new();
    let secret = [0x42u8; 32];
    // Only the sender has the secret: the receiver cannot open the frame,
    // although it shares the pairwise session.
    pair.a.set_network_secret(NET, Some(secret));
    let mut d = pair.seal_one(&frame(BROADCAST, MAC_A, 200), pair.t0);
    assert_eq!(
        pair.b.open_datagram(&mut d, pair.t0),
        Err(DropReason::BadTag)
    );
    // A different secret is no better.
    pair.b.set_network_secret(NET, Some([0x43u8; 32]));
    let mut d = pair.seal_one(&frame(BROADCAST, MAC_A, 200), pair.t0);
    assert_eq!(
        pair.b.open_datagram(&mut d, pair.t0),
        Err(DropReason::BadTag)
    );
    // Both members hold it: frames flow.
    pair.b.set_network_secret(NET, Some(secret));
    let sent = frame(BROADCAST, MAC_A, 200);
    let mut d = pair.seal_one(&sent, pair.t0);
    let delivery = pair.b.open_datagram(&mut d, pair.t0).unwrap();
    assert_eq!(&d[delivery.frame], &sent[..]);
    // Keys installed after the secret (a rekey) derive it too.
    let (keys_a, keys_b) = session(2);
    pair.a.install_keys(PEER_B, &keys_a, true, pair.t0);
    pair.b.install_keys(PEER_A, &keys_b, false, pair.t0);
    let mut d = pair.seal_one(&sent, pair.t0);
    assert!(pair.b.open_datagram(&mut d, pair.t0).is_ok());
    // Networks without a secret are unaffected by another's.
    pair.a.set_network_secret(NET, None);
    pair.b.set_network_secret(NET, None);
    let mut d = pair.seal_one(&sent, pair.t0);
    assert!(pair.b.open_datagram(&mut d, pair.t0).is_ok());
}
