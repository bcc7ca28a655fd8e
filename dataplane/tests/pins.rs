//! Sans-IO tests of pinned MACs (see `dataplane::pins`) and bounded
//! learning: host A and its peers B and C, each a real engine, exchange
//! sealed datagrams as byte vectors.

use std::net::SocketAddr;
use std::time::Instant;

use dataplane::engine::{Engine, Outgoing};
use dataplane::pool::BufPool;
use dataplane::switch::MAX_MACS_PER_PORT;
use dataplane::{DropReason, MacOwner, NetworkId, NetworkPins, PinSet, SessionKeys};

const NET: NetworkId = NetworkId(7);
const LATER_NET: NetworkId = NetworkId(9);
/// How A names B and C; how B and C name A.
const PEER_B: u32 = 2;
const PEER_C: u32 = 3;
const PEER_A: u32 = 1;
const WEB: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb]; // lives on B
const DB: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa]; // lives on A
const LOOSE: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe]; // no attachment claims it
const BROADCAST: [u8; 6] = [0xff; 6];

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut frame = vec![0u8; 64];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    frame
}

fn keys(generation: u64, local: u32, remote: u32, send: u8, recv: u8) -> SessionKeys {
    SessionKeys {
        generation,
        local_index: local,
        remote_index: remote,
        send_key: [send; 32],
        recv_key: [recv; 32],
        cipher: dataplane::Cipher::default(),
    }
}

struct Mesh {
    t0: Instant,
    a: Engine,
    b: Engine,
    c: Engine,
    pool: BufPool,
}

impl Mesh {
    fn new() -> Mesh {
        let t0 = Instant::now();
        let (a, b, c) = (Engine::new(t0), Engine::new(t0), Engine::new(t0));
        for engine in [&a, &b, &c] {
            engine.add_network(NET);
        }
        let ep = |n: u8| SocketAddr::from(([198, 18, 0, n], 7801));
        a.upsert_peer(PEER_B, Some(ep(2)), &[NET]);
        a.upsert_peer(PEER_C, Some(ep(3)), &[NET]);
        b.upsert_peer(PEER_A, Some(ep(1)), &[NET]);
        c.upsert_peer(PEER_A, Some(ep(1)), &[NET]);
        a.install_keys(PEER_B, &keys(1, 1002, 2001, 0x12, 0x21), true, t0);
        b.install_keys(PEER_A, &keys(1, 2001, 1002, 0x21, 0x12), true, t0);
        a.install_keys(PEER_C, &keys(1, 1003, 3001, 0x13, 0x31), true, t0);
        c.install_keys(PEER_A, &keys(1, 3001, 1003, 0x31, 0x13), true, t0);
        Mesh {
            t0,
            a,
            b,
            c,
            pool: BufPool::new(2048, 8),
        }
    }

    fn seal(&mut self, engine: &str, frame: &[u8]) -> Vec<Outgoing> {
        let engine = match engine {
            "a" => &self.a,
            "b" => &self.b,
            _ => &self.c,
        };
        let mut buf = self.pool.get();
        assert!(buf.fill_frame(frame));
        let mut out = Vec::new();
        engine.seal_frame(NET, buf, self.t0, &mut self.pool, &mut out);
        out
    }

    /// Which peers A sends `frame` (read from its TAP) to.
    fn a_sends_to(&mut self, frame: &[u8]) -> Vec<u32> {
        let mut peers: Vec<u32> = self.seal("a", frame).iter().map(|o| o.peer).collect();
        peers.sort();
        peers
    }

    /// `from` (B or C) sends `frame` to A; what A makes of it.
    fn send_to_a(&mut self, from: &str, frame: &[u8]) -> Result<u32, DropReason> {
        let out = self.seal(from, frame);
        assert_eq!(out.len(), 1, "one datagram to A");
        let mut datagram = out[0].datagram.datagram().to_vec();
        self.a
            .open_datagram(&mut datagram, self.t0)
            .map(|delivery| delivery.peer)
    }

    fn drops(&self, reason: DropReason) -> u64 {
        self.a.drops().get(reason)
    }
}

fn pins(entries: &[([u8; 6], MacOwner)]) -> PinSet {
    PinSet::from([(NET, entries.iter().copied().collect::<NetworkPins>())])
}

#[test]
fn a_pinned_mac_from_the_wrong_peer_is_dropped_counted_and_not_learned() {
    let mut m = Mesh::new();
    m.a.set_pinned_macs(pins(&[
        (WEB, MacOwner::Peer(PEER_B)),
        (DB, MacOwner::Local),
    ]));
    // C claims web's MAC: dropped, counted against C, not delivered.
    for _ in 0..3 {
        assert_eq!(
            m.send_to_a("c", &frame(BROADCAST, WEB)),
            Err(DropReason::SpoofedSource)
        );
    }
    assert_eq!(m.drops(DropReason::SpoofedSource), 3);
    let stats = m.a.stats(m.t0);
    assert_eq!(stats.peers[&PEER_C].spoofed_rx, 3);
    assert_eq!(stats.peers[&PEER_B].spoofed_rx, 0);
    assert_eq!(stats.peers[&PEER_C].rx_packets, 0);
    assert_eq!(stats.switch.pinned, 2);
    assert_eq!(stats.switch.learned, 0, "spoofed source not learned");
    // Nor does it steal web's traffic: A sends to B without ever having
    // heard from web (pinned lookup, no learning needed).
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_B]);
    // B itself may use it.
    assert_eq!(m.send_to_a("b", &frame(DB, WEB)), Ok(PEER_B));
    // A MAC of this host's coming from a peer is a spoof too.
    assert_eq!(
        m.send_to_a("b", &frame(BROADCAST, DB)),
        Err(DropReason::SpoofedSource)
    );
    assert_eq!(m.a.stats(m.t0).peers[&PEER_B].spoofed_rx, 1);
    // From A's own TAP, a remote attachment's MAC is a spoof (a container
    // or the host itself pretending to be web).
    assert!(m.seal("a", &frame(BROADCAST, WEB)).is_empty());
    assert_eq!(m.drops(DropReason::SpoofedSource), 5);
    // A frame to a MAC of this host needs no peer (the bridge has it).
    assert!(m.seal("a", &frame(DB, [0x02, 0, 0, 0, 0, 0x77])).is_empty());
    assert_eq!(m.drops(DropReason::LocalDestination), 1);
}

#[test]
fn unpinned_macs_are_still_learned_and_pins_apply_to_networks_added_later() {
    let mut m = Mesh::new();
    let mut set = pins(&[(WEB, MacOwner::Peer(PEER_B))]);
    set.insert(
        LATER_NET,
        [(WEB, MacOwner::Peer(PEER_C))].into_iter().collect(),
    );
    m.a.set_pinned_macs(set);
    assert_eq!(m.a_sends_to(&frame(LOOSE, DB)), vec![PEER_B, PEER_C]);
    assert_eq!(m.send_to_a("c", &frame(BROADCAST, LOOSE)), Ok(PEER_C));
    assert_eq!(m.a_sends_to(&frame(LOOSE, DB)), vec![PEER_C]);
    assert_eq!(m.a.stats(m.t0).switch.learned, 1);
    m.a.add_network(LATER_NET);
    assert_eq!(m.a.stats(m.t0).switch.pinned, 2);
}

#[test]
fn a_pin_follows_the_control_plane_and_shadows_what_was_learned() {
    let mut m = Mesh::new();
    // Before any pin, C's claim to web's MAC is learned (the old defect).
    assert_eq!(m.send_to_a("c", &frame(BROADCAST, WEB)), Ok(PEER_C));
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_C]);
    // The control plane pins it to B: B gets web's traffic at once, and
    // the stolen entry is gone for good.
    m.a.set_pinned_macs(pins(&[(WEB, MacOwner::Peer(PEER_B))]));
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_B]);
    assert_eq!(m.a.stats(m.t0).switch.learned, 0);
    // Web moves to C: the pin moves, B's frames as web are now the spoof.
    m.a.set_pinned_macs(pins(&[(WEB, MacOwner::Peer(PEER_C))]));
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_C]);
    assert_eq!(
        m.send_to_a("b", &frame(DB, WEB)),
        Err(DropReason::SpoofedSource)
    );
    assert_eq!(m.send_to_a("c", &frame(DB, WEB)), Ok(PEER_C));
    // Web moves to this host.
    m.a.set_pinned_macs(pins(&[(WEB, MacOwner::Local)]));
    assert_eq!(
        m.send_to_a("c", &frame(DB, WEB)),
        Err(DropReason::SpoofedSource)
    );
    assert!(m.seal("a", &frame(BROADCAST, WEB)).len() == 2);
    // Web is detached: unpinned, flooded, learned like any MAC again.
    m.a.set_pinned_macs(PinSet::new());
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_B, PEER_C]);
    assert_eq!(m.send_to_a("b", &frame(DB, WEB)), Ok(PEER_B));
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_B]);
    assert_eq!(m.a.stats(m.t0).switch.pinned, 0);
}

#[test]
fn a_random_mac_spray_from_one_peer_leaves_the_others_entries() {
    let mut m = Mesh::new();
    m.a.set_pinned_macs(pins(&[(WEB, MacOwner::Peer(PEER_B))]));
    assert_eq!(m.send_to_a("b", &frame(BROADCAST, LOOSE)), Ok(PEER_B));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_be_bytes();
        let mac = [(b[2] & 0xfe) | 0x02, b[3], b[4], b[5], b[6], b[7]];
        // Delivered (unknown MACs are not a spoof), not necessarily learned.
        assert_eq!(m.send_to_a("c", &frame(BROADCAST, mac)), Ok(PEER_C));
    }
    let switch = m.a.stats(m.t0).switch;
    assert_eq!(switch.learned, 1 + MAX_MACS_PER_PORT as usize);
    assert_eq!(switch.learn_refused, 10_000 - u64::from(MAX_MACS_PER_PORT));
    assert_eq!(m.a_sends_to(&frame(LOOSE, DB)), vec![PEER_B]);
    assert_eq!(m.a_sends_to(&frame(WEB, DB)), vec![PEER_B]);
    // C's own legitimate traffic still flows.
    assert_eq!(
        m.send_to_a("c", &frame(DB, [0x02, 0, 0, 0, 0, 0xcc])),
        Ok(PEER_C)
    );
}
