//! Sans-IO tests of probing and relaying: three engines (hosts A, B, C)
//! exchange datagrams through a simulated underlay on virtual time, which
//! can block any pair's direct path.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane::engine::{Engine, Outgoing};
use dataplane::pool::BufPool;
use dataplane::{DropReason, NetworkId, PathMode, SessionKeys};

const NET: NetworkId = NetworkId(7);
const STEP: Duration = Duration::from_millis(50);

fn addr(host: usize) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, host as u8 + 1], 7801))
}

fn tag(host: usize) -> [u8; 8] {
    [host as u8 + 1; 8]
}

fn mac(host: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, host as u8 + 1]
}

/// Keys of the pair (i, j) as host i holds them.
fn keys(i: usize, j: usize) -> SessionKeys {
    let dir = |from: usize, to: usize| [(from * 16 + to) as u8 + 1; 32];
    let index = |holder: usize, other: usize| (holder * 100 + other) as u32 + 1;
    SessionKeys {
        generation: 1,
        local_index: index(i, j),
        remote_index: index(j, i),
        send_key: dir(i, j),
        recv_key: dir(j, i),
        cipher: dataplane::Cipher::default(),
    }
}

struct Lab {
    now: Instant,
    hosts: Vec<Engine>,
    /// Unordered pairs whose direct traffic the underlay drops.
    blocked: BTreeSet<(usize, usize)>,
    pool: BufPool,
    /// Frames delivered to each host's TAP.
    delivered: Vec<Vec<Vec<u8>>>,
    /// (from, to): containers that send each other a frame every second,
    /// which keeps the pair's path probed (idle paths are not).
    talking: Vec<(usize, usize)>,
    steps: u64,
    /// A host of protocol 1 (release 0.3.0): it drops envelopes with the
    /// compact flag as `bad_reserved`, and the others must not send it any.
    old: Option<usize>,
    /// Envelopes (type 3 or 4) carried, compact ones, and the compact ones
    /// the old host dropped.
    envelopes: usize,
    relayed_envelopes: usize,
    compact_envelopes: usize,
    refused_by_old: usize,
}

impl Lab {
    fn new() -> Lab {
        Lab::with_old(None)
    }

    /// Three hosts; `old` (if any) speaks protocol 1, the others protocol 2,
    /// and each host is told which of its peers read compact envelopes, as
    /// the daemon tells it from their advertised ranges.
    fn with_old(old: Option<usize>) -> Lab {
        let now = Instant::now();
        let hosts: Vec<Engine> = (0..3).map(|_| Engine::new(now)).collect();
        for (i, host) in hosts.iter().enumerate() {
            host.add_network(NET);
            host.set_local_tag(tag(i));
            for j in (0..3).filter(|j| *j != i) {
                // Peer index = host number + 1, as the daemon would assign.
                let peer = j as u32 + 1;
                host.upsert_peer(peer, Some(addr(j)), &[NET]);
                host.set_peer_tag(peer, tag(j));
                host.install_keys(peer, &keys(i, j), true, now);
                host.set_peer_compact_envelopes(peer, old != Some(i) && old != Some(j));
            }
        }
        Lab {
            now,
            hosts,
            blocked: BTreeSet::new(),
            pool: BufPool::new(9216, 16),
            delivered: vec![Vec::new(); 3],
            talking: Vec::new(),
            steps: 0,
            old,
            envelopes: 0,
            relayed_envelopes: 0,
            compact_envelopes: 0,
            refused_by_old: 0,
        }
    }

    fn host_of(endpoint: SocketAddr) -> usize {
        (0..3)
            .find(|h| addr(*h) == endpoint)
            .expect("known endpoint")
    }

    fn is_blocked(&self, a: usize, b: usize) -> bool {
        self.blocked.contains(&(a.min(b), a.max(b)))
    }

    /// Carries datagrams until none are left in flight.
    fn carry(&mut self, mut queue: Vec<(usize, Outgoing)>) {
        while let Some((from, out)) = queue.pop() {
            let to = Lab::host_of(out.endpoint);
            let mut bytes = out.datagram.datagram().to_vec();
            self.pool.put(out.datagram);
            if self.is_blocked(from, to) {
                continue;
            }
            if matches!(bytes[0], 3 | 4) {
                self.envelopes += 1;
                self.relayed_envelopes += usize::from(bytes[0] == 4);
                if bytes[2] & dataplane::wire::ENVELOPE_FLAG_COMPACT != 0 {
                    self.compact_envelopes += 1;
                    if self.old == Some(to) {
                        self.refused_by_old += 1;
                        continue;
                    }
                }
            }
            let mut replies = Vec::new();
            if let Ok(Some(delivery)) = self.hosts[to].receive(
                &mut bytes,
                addr(from),
                self.now,
                &mut self.pool,
                &mut replies,
            ) {
                self.delivered[to].push(bytes[delivery.frame].to_vec());
            }
            queue.extend(replies.into_iter().map(|r| (to, r)));
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        self.steps += 1;
        if self.steps.is_multiple_of(20) {
            for (from, to) in self.talking.clone() {
                self.send_frame(from, to, 0x5a);
            }
        }
        let mut queue = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let mut out = Vec::new();
            host.poll_paths(self.now, &mut self.pool, &mut out);
            queue.extend(out.into_iter().map(|o| (i, o)));
        }
        self.carry(queue);
    }

    /// Every host reaches every other directly.
    fn all_direct(&self) -> bool {
        (0..3).all(|i| {
            (0..3)
                .filter(|j| *j != i)
                .all(|j| self.mode(i, j) == PathMode::Direct)
        })
    }

    fn mode(&self, host: usize, peer: usize) -> PathMode {
        self.hosts[host].stats(self.now).peers[&(peer as u32 + 1)]
            .path
            .mode
    }

    fn until(&mut self, limit: Duration, done: impl Fn(&Lab) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(self.now - start < limit, "not within {limit:?}");
            self.step();
        }
        self.now - start
    }

    /// A frame from host `from`'s container to host `to`'s.
    fn send_frame(&mut self, from: usize, to: usize, payload: u8) {
        let mut frame = vec![payload; 200];
        frame[..6].copy_from_slice(&mac(to));
        frame[6..12].copy_from_slice(&mac(from));
        let mut buf = self.pool.get();
        assert!(buf.fill_frame(&frame));
        let mut out = Vec::new();
        self.hosts[from].seal_frame(NET, buf, self.now, &mut self.pool, &mut out);
        let queue = out.into_iter().map(|o| (from, o)).collect();
        self.carry(queue);
    }
}

#[test]
fn probes_make_paths_direct_and_learn_reflexive_addresses() {
    let mut lab = Lab::new();
    lab.until(Duration::from_secs(2), Lab::all_direct);
    assert_eq!(lab.hosts[0].reflexive_addrs(), vec![addr(0)]);
    lab.until(Duration::from_secs(3), |lab| {
        lab.hosts[0].stats(lab.now).peers[&2].path.mtu == Some(1472)
    });
    lab.run_for(Duration::from_secs(3));
    let path = lab.hosts[0].stats(lab.now).peers[&2].path.clone();
    assert_eq!(path.endpoint, Some(addr(1)));
    assert_eq!(path.loss, Some(0.0));
}

#[test]
fn reflexive_addresses_outlive_silence_but_not_a_move() {
    let mut lab = Lab::new();
    lab.until(Duration::from_secs(2), Lab::all_direct);
    assert_eq!(lab.hosts[0].reflexive_addrs(), vec![addr(0)]);
    // No traffic: after the first seconds nothing is probed, nothing is
    // answered, and nothing is forgotten for that.
    lab.run_for(Duration::from_secs(30));
    let sent: Vec<u64> = lab.hosts.iter().map(|h| h.probes_sent().direct).collect();
    lab.run_for(Duration::from_secs(120));
    let now: Vec<u64> = lab.hosts.iter().map(|h| h.probes_sent().direct).collect();
    assert_eq!(now, sent, "probes while idle");
    assert_eq!(lab.hosts[0].reflexive_addrs(), vec![addr(0)]);
    // The interface address went away: so does what was seen at it.
    lab.hosts[0].forget_reflexive(&[addr(0).ip()]);
    assert_eq!(lab.hosts[0].reflexive_addrs(), vec![]);
}

#[test]
fn blocked_pair_is_relayed_by_the_third_host_and_heals() {
    let mut lab = Lab::new();
    lab.talking = vec![(0, 1), (1, 0)];
    lab.until(Duration::from_secs(2), |lab| {
        lab.mode(0, 1) == PathMode::Direct
    });
    lab.run_for(Duration::from_secs(2));
    lab.blocked.insert((0, 1));
    let failover = lab.until(Duration::from_secs(5), |lab| {
        lab.mode(0, 1) == PathMode::Relayed(3) && lab.mode(1, 0) == PathMode::Relayed(3)
    });
    println!("direct → relayed after {failover:?}");
    // Frames still arrive, through C, which forwards without opening.
    lab.send_frame(0, 1, 0xab);
    lab.send_frame(1, 0, 0xcd);
    assert!(lab.delivered[1].iter().any(|f| f[20] == 0xab));
    assert!(lab.delivered[0].iter().any(|f| f[20] == 0xcd));
    assert!(lab.hosts[2].relay_forwards() > 0);
    // Both MACs are learned now: unicast, C sees nothing for its TAP.
    let at_c = lab.delivered[2].len();
    lab.send_frame(0, 1, 0xef);
    assert!(lab.delivered[1].iter().any(|f| f[20] == 0xef));
    assert_eq!(
        lab.delivered[2].len(),
        at_c,
        "the relay delivers nothing locally"
    );
    // The relayed path's endpoint is the relay's; its MTU is smaller.
    let path = lab.hosts[0].stats(lab.now).peers[&2].path.clone();
    assert_eq!(path.endpoint, Some(addr(2)));
    lab.blocked.clear();
    let heal = lab.until(Duration::from_secs(10), |lab| {
        lab.mode(0, 1) == PathMode::Direct && lab.mode(1, 0) == PathMode::Direct
    });
    println!("relayed → direct after {heal:?}");
}

#[test]
fn relay_cannot_tamper_or_replay_and_never_relays_twice() {
    let mut lab = Lab::new();
    lab.talking = vec![(0, 1), (1, 0)];
    lab.until(Duration::from_secs(2), |lab| {
        lab.mode(0, 1) == PathMode::Direct
    });
    lab.blocked.insert((0, 1));
    lab.until(Duration::from_secs(5), |lab| {
        lab.mode(0, 1) == PathMode::Relayed(3)
    });
    // Capture A's envelope and C's forward by hand.
    let mut frame = vec![0x11u8; 100];
    frame[..6].copy_from_slice(&mac(1));
    frame[6..12].copy_from_slice(&mac(0));
    let mut buf = lab.pool.get();
    buf.fill_frame(&frame);
    let mut out = Vec::new();
    lab.hosts[0].seal_frame(NET, buf, lab.now, &mut lab.pool, &mut out);
    // Flooded (B's MAC is not learned yet): the copy for B is an envelope to C.
    let for_b = out.iter().find(|o| o.peer == 2).expect("copy for B");
    assert_eq!(for_b.endpoint, addr(2));
    let mut envelope = for_b.datagram.datagram().to_vec();
    let mut forwarded = Vec::new();
    let now = lab.now;
    assert_eq!(
        lab.hosts[2].receive(
            &mut envelope.clone(),
            addr(0),
            now,
            &mut lab.pool,
            &mut forwarded
        ),
        Ok(None)
    );
    // The same envelope again: C's replay window refuses it.
    assert_eq!(
        lab.hosts[2].receive(&mut envelope, addr(0), now, &mut lab.pool, &mut Vec::new()),
        Err(DropReason::Replayed)
    );
    assert_eq!(forwarded.len(), 1);
    let relayed = forwarded[0].datagram.datagram().to_vec();
    // A byte of the inner datagram flipped on the way: refused. (A relay
    // re-tagging it with its own keys fails the inner tag instead; either
    // way only A's keys make an inner datagram B accepts.)
    assert_eq!(
        relayed[2] & dataplane::wire::ENVELOPE_FLAG_COMPACT,
        dataplane::wire::ENVELOPE_FLAG_COMPACT,
        "hosts of protocol 2 send each other compact envelopes"
    );
    let mut replies = Vec::new();
    let b = &lab.hosts[1];
    // The compact tag does not cover the inner body, so the envelope
    // passes and the inner tag fails; a byte of the headers, the inner
    // tag or the flag fails the envelope's own tag. None of these copies
    // spends the envelope's counter: the genuine one, arriving after
    // them, still opens (below).
    for at in [60, 2, 9, 30, relayed.len() - 20] {
        let mut tampered = relayed.clone();
        tampered[at] ^= if at == 2 {
            dataplane::wire::ENVELOPE_FLAG_COMPACT
        } else {
            1
        };
        assert_eq!(
            b.receive(&mut tampered, addr(2), now, &mut lab.pool, &mut replies),
            Err(DropReason::BadTag),
            "byte {at} flipped"
        );
    }
    // A byte cut off the end (the inner tag moves): refused too.
    let mut cut = relayed[..relayed.len() - 1].to_vec();
    assert!(b
        .receive(&mut cut, addr(2), now, &mut lab.pool, &mut replies)
        .is_err());
    // The genuine one opens, once.
    let delivered = b.receive(
        &mut relayed.clone(),
        addr(2),
        now,
        &mut lab.pool,
        &mut replies,
    );
    assert!(matches!(delivered, Ok(Some(_))), "{delivered:?}");
    assert_eq!(
        b.receive(
            &mut relayed.clone(),
            addr(2),
            now,
            &mut lab.pool,
            &mut replies
        ),
        Err(DropReason::Replayed)
    );
    // A malicious relay re-tags a tampered inner datagram with its own
    // valid keys: the envelope verifies, the inner datagram does not.
    let evil = dataplane::keypair::Keypair::new(&keys(2, 1), now);
    let mut retagged = relayed.clone();
    retagged[60] ^= 1;
    retagged[8..16].copy_from_slice(&1_000_000u64.to_be_bytes());
    let end = retagged.len() - 16;
    let mut scratch = [0u8; dataplane::wire::COMPACT_AAD_LEN];
    let mac = evil.tag_only(
        1_000_000,
        dataplane::wire::envelope_aad(&retagged[..end], &mut scratch),
    );
    retagged[end..].copy_from_slice(&mac);
    assert_eq!(
        b.receive(&mut retagged, addr(2), now, &mut lab.pool, &mut replies),
        Err(DropReason::BadTag)
    );
    // An envelope wrapping an envelope is refused by its parser.
    let mut nested = relayed.clone();
    nested[24] = 3;
    assert_eq!(
        b.receive(&mut nested, addr(2), now, &mut lab.pool, &mut replies),
        Err(DropReason::UnknownType)
    );
}

/// A relay of protocol 2 sends compact envelopes to destinations of
/// protocol 2 and the full form to one of protocol 1; an origin always
/// sends the full form (the relay authenticates every byte it forwards).
/// Relaying works both ways whichever host is the old one.
#[test]
fn envelopes_are_compact_only_towards_hosts_that_read_them() {
    // 0 = A, 1 = B, 2 = C; A and B blocked, so C relays.
    for old in [None, Some(1), Some(2)] {
        let mut lab = Lab::with_old(old);
        lab.talking = vec![(0, 1), (1, 0)];
        lab.until(Duration::from_secs(2), |lab| {
            lab.mode(0, 1) == PathMode::Direct
        });
        lab.blocked.insert((0, 1));
        lab.until(Duration::from_secs(5), |lab| {
            lab.mode(0, 1) == PathMode::Relayed(3) && lab.mode(1, 0) == PathMode::Relayed(3)
        });
        let (before_b, before_a) = (lab.delivered[1].len(), lab.delivered[0].len());
        lab.send_frame(0, 1, 0xab);
        lab.send_frame(1, 0, 0xcd);
        assert!(
            lab.delivered[1][before_b..].iter().any(|f| f[20] == 0xab),
            "old host {old:?}: A's frame reached B"
        );
        assert!(
            lab.delivered[0][before_a..].iter().any(|f| f[20] == 0xcd),
            "old host {old:?}: B's frame reached A"
        );
        assert_eq!(lab.refused_by_old, 0, "old host {old:?}");
        assert!(lab.envelopes > 0);
        assert!(lab.relayed_envelopes > 0 && lab.relayed_envelopes < lab.envelopes);
        match old {
            // Every envelope from the relay is compact, none to it.
            None => assert_eq!(lab.compact_envelopes, lab.relayed_envelopes),
            // An old relay sends the full form only.
            Some(2) => assert_eq!(lab.compact_envelopes, 0),
            // C sends B (old) the full form and A the compact one.
            _ => {
                assert!(lab.compact_envelopes > 0 && lab.compact_envelopes < lab.relayed_envelopes)
            }
        }
    }
}

#[test]
fn a_relay_does_not_forward_to_a_host_it_only_reaches_through_a_relay() {
    let mut lab = Lab::new();
    lab.until(Duration::from_secs(2), |lab| {
        lab.mode(0, 1) == PathMode::Direct
    });
    // C loses B: C's route to B cannot be direct, so C must not relay to it.
    lab.blocked.insert((1, 2));
    lab.blocked.insert((0, 1));
    lab.run_for(Duration::from_secs(8));
    assert_ne!(lab.mode(0, 1), PathMode::Relayed(3));
}

#[test]
fn probe_burst_reports_round_trips() {
    let mut lab = Lab::new();
    lab.until(Duration::from_secs(2), |lab| {
        lab.mode(0, 1) == PathMode::Direct
    });
    let mut ids = Vec::new();
    for _ in 0..5 {
        let now = lab.now;
        let (id, out) = lab.hosts[0]
            .send_burst_probe(2, now, &mut lab.pool)
            .expect("probe");
        ids.push(id);
        lab.now += Duration::from_millis(10);
        lab.carry(vec![(0, out)]);
    }
    let report = lab.hosts[0].burst_result(&ids);
    assert_eq!((report.sent, report.received), (5, 5));
    assert_eq!(report.rtt_max, Some(Duration::from_millis(10)));
    lab.blocked.insert((0, 1));
    let now = lab.now;
    let (id, out) = lab.hosts[0]
        .send_burst_probe(2, now, &mut lab.pool)
        .unwrap();
    lab.carry(vec![(0, out)]);
    let report = lab.hosts[0].burst_result(&[id]);
    assert_eq!((report.sent, report.received), (1, 0));
}

impl Lab {
    fn run_for(&mut self, time: Duration) {
        let end = self.now + time;
        while self.now < end {
            self.step();
        }
    }
}

#[test]
fn frames_to_a_peer_behind_a_nat_leave_from_the_data_port() {
    let mut lab = Lab::new();
    let frame_to = |lab: &mut Lab, peer: u32| {
        let mut frame = vec![0u8; 64];
        frame[..6].copy_from_slice(&[0xff; 6]);
        let mut buf = lab.pool.get();
        buf.fill_frame(&frame);
        let mut out = Vec::new();
        lab.hosts[0].seal_frame(NET, buf, lab.now, &mut lab.pool, &mut out);
        out.iter()
            .find(|o| o.peer == peer)
            .map(|o| o.from_data_port)
            .unwrap()
    };
    assert!(!frame_to(&mut lab, 2), "ephemeral send ports by default");
    lab.hosts[0].set_peer_nat(2, true);
    assert!(frame_to(&mut lab, 2), "B's NAT only maps the data port");
    assert!(!frame_to(&mut lab, 3));
}

#[test]
fn idle_peers_are_not_probed_and_talking_ones_never_through_relays() {
    let mut lab = Lab::new();
    lab.until(Duration::from_secs(2), Lab::all_direct);
    // Past the warm-up with nobody talking: silence.
    lab.run_for(Duration::from_secs(6));
    let before: Vec<_> = lab.hosts.iter().map(|h| h.probes_sent()).collect();
    lab.run_for(Duration::from_secs(60));
    let after: Vec<_> = lab.hosts.iter().map(|h| h.probes_sent()).collect();
    assert_eq!(before, after, "idle peers cost no probes");
    // A and B talk: only that pair is probed, once a second each way (and
    // answered), and never through C while the direct path works. (C got
    // the first frames as floods, before the MACs were learned: floods do
    // not make a path active.)
    lab.talking = vec![(0, 1), (1, 0)];
    lab.run_for(Duration::from_secs(2));
    let before: Vec<_> = lab.hosts.iter().map(|h| h.probes_sent()).collect();
    lab.run_for(Duration::from_secs(20));
    let after: Vec<_> = lab.hosts.iter().map(|h| h.probes_sent()).collect();
    for (host, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a.relayed, b.relayed, "host {host} probed through a relay");
    }
    let sent = |h: usize| after[h].direct - before[h].direct;
    assert!((30..=50).contains(&sent(0)), "A: {}", sent(0));
    assert!((30..=50).contains(&sent(1)), "B: {}", sent(1));
    assert_eq!(sent(2), 0, "C is idle");
    assert_eq!(lab.hosts[0].active_paths(lab.now), 1);
}
