//! Deterministic tests of [`PathState`] on virtual time: a simulated
//! network answers (or drops) each probe after a fixed delay.

use super::*;
use crate::stats::PathMode;

const A: &str = "198.18.0.2:7801";
const B: &str = "198.18.0.9:7801";
const STEP: Duration = Duration::from_millis(50);

struct Net {
    /// Direct addresses that currently answer.
    direct_up: Vec<SocketAddr>,
    /// Relays that answer, with their round trip.
    relays: Vec<(PeerIdx, Duration)>,
    direct_rtt: Duration,
    /// Largest datagram that gets through (per route kind).
    mtu: u32,
    relay_mtu: u32,
    /// Every n-th probe is lost (0: none).
    lose_every: u32,
    sent: u32,
    /// (due, id, size) of pongs on their way back.
    pending: Vec<(Instant, u32, u32)>,
    peer_clock_offset_ms: i64,
    /// Every probe sent, by way and size.
    log: Vec<(Instant, Via, u32)>,
}

impl Net {
    fn new() -> Net {
        Net {
            direct_up: vec![A.parse().unwrap()],
            relays: vec![],
            direct_rtt: Duration::from_millis(2),
            mtu: 1472,
            relay_mtu: 1432,
            lose_every: 0,
            sent: 0,
            pending: vec![],
            peer_clock_offset_ms: 0,
            log: vec![],
        }
    }
}

struct Sim {
    now: Instant,
    start: Instant,
    path: PathState,
    net: Net,
    /// Data flows to the peer (it stays active) while set.
    traffic: bool,
}

impl Sim {
    fn new() -> Sim {
        let now = Instant::now();
        let mut path = PathState::new(PathConfig::default(), now);
        path.set_advertised(&[A.parse().unwrap()], now);
        Sim {
            now,
            start: now,
            path,
            net: Net::new(),
            traffic: true,
        }
    }

    fn wall_ms(&self) -> u64 {
        1_000_000 + self.now.duration_since(self.start).as_millis() as u64
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let wall = self.wall_ms();
        let due: Vec<(Instant, u32, u32)> = self.net.pending.clone();
        self.net.pending.clear();
        for (at, id, size) in due {
            if at <= now {
                let peer_wall = (wall as i64 + self.net.peer_clock_offset_ms) as u64;
                self.path.on_pong(id, peer_wall, size, now);
            } else {
                self.net.pending.push((at, id, size));
            }
        }
        if self.traffic {
            self.path.on_traffic(now);
        }
        for probe in self.path.poll(now, wall) {
            self.net.log.push((now, probe.via, probe.size));
            self.net.sent += 1;
            if self.net.lose_every != 0 && self.net.sent.is_multiple_of(self.net.lose_every) {
                continue;
            }
            let answer = match probe.via {
                Via::Direct(addr) => (self.net.direct_up.contains(&addr)
                    && probe.size <= self.net.mtu)
                    .then_some(self.net.direct_rtt),
                Via::Relay(idx) => self
                    .net
                    .relays
                    .iter()
                    .find(|(r, _)| *r == idx)
                    .filter(|_| probe.size <= self.net.relay_mtu)
                    .map(|(_, rtt)| *rtt),
            };
            if let Some(rtt) = answer {
                self.net.pending.push((now + rtt, probe.id, probe.size));
            }
        }
    }

    fn run(&mut self, time: Duration) {
        let end = self.now + time;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `done` holds; returns how long that took (panics after `limit`).
    fn until(&mut self, limit: Duration, done: impl Fn(&PathState) -> bool) -> Duration {
        let start = self.now;
        while !done(&self.path) {
            assert!(
                self.now - start < limit,
                "not within {limit:?}: {:?}",
                self.path.route()
            );
            self.step();
        }
        self.now - start
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn goes_direct_and_finds_the_full_mtu_with_one_probe() {
    let mut sim = Sim::new();
    assert_eq!(sim.path.route(), Route::Unknown);
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.until(Duration::from_secs(2), |p| p.path_mtu() != 0);
    assert_eq!(sim.path.path_mtu(), 1472);
    let stats = sim.path.stats(sim.now);
    assert_eq!(stats.mode, PathMode::Direct);
    assert_eq!(stats.endpoint, Some(addr(A)));
    assert!(stats.rtt.unwrap() <= Duration::from_millis(60));
}

#[test]
fn binary_search_finds_a_small_path_mtu() {
    let mut sim = Sim::new();
    // A 1300-byte underlay somewhere: 1300 − 28.
    sim.net.mtu = 1272;
    let took = sim.until(Duration::from_secs(30), |p| p.path_mtu() != 0);
    let mtu = sim.path.path_mtu();
    assert!((1264..=1272).contains(&mtu), "{mtu} after {took:?}");
    // It stays put while the path does not change.
    sim.run(Duration::from_secs(20));
    assert!((1264..=1272).contains(&sim.path.path_mtu()));
}

#[test]
fn mtu_shrinking_later_is_noticed_and_searched_again() {
    let mut sim = Sim::new();
    sim.until(Duration::from_secs(3), |p| p.path_mtu() == 1472);
    sim.net.mtu = 1200;
    sim.until(Duration::from_secs(60), |p| {
        (1192..=1200).contains(&p.path_mtu())
    });
}

#[test]
fn fails_over_to_the_fastest_relay_and_heals_back() {
    let mut sim = Sim::new();
    sim.net.relays = vec![
        (7, Duration::from_millis(300)),
        (8, Duration::from_millis(5)),
    ];
    sim.path.set_relays(&[7, 8]);
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.run(Duration::from_secs(3));
    sim.net.direct_up.clear();
    let failover = sim.until(Duration::from_secs(5), |p| p.route() == Route::Relayed(8));
    assert!(failover <= Duration::from_secs(5), "{failover:?}");
    // The relayed path has its own (smaller) MTU.
    sim.until(Duration::from_secs(20), |p| p.path_mtu() != 0);
    assert!((1424..=1432).contains(&sim.path.path_mtu()));
    sim.net.direct_up.push(addr(A));
    let heal = sim.until(Duration::from_secs(10), |p| {
        p.route() == Route::Direct(addr(A))
    });
    assert!(
        heal >= Duration::from_millis(900),
        "needs two pongs: {heal:?}"
    );
}

#[test]
fn a_single_pong_does_not_end_relaying() {
    let mut sim = Sim::new();
    sim.net.relays = vec![(7, Duration::from_millis(5))];
    sim.path.set_relays(&[7]);
    sim.net.direct_up.clear();
    sim.until(Duration::from_secs(3), |p| p.route() == Route::Relayed(7));
    // Direct answers every other probe round only: streak never reaches 2.
    for _ in 0..10 {
        sim.net.direct_up.push(addr(A));
        sim.run(Duration::from_millis(1000));
        sim.net.direct_up.clear();
        sim.run(Duration::from_millis(2000));
        assert_eq!(sim.path.route(), Route::Relayed(7));
    }
}

#[test]
fn no_relay_means_staying_on_the_failed_direct_path() {
    let mut sim = Sim::new();
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.net.direct_up.clear();
    sim.run(Duration::from_secs(10));
    assert_eq!(sim.path.route(), Route::Direct(addr(A)));
    let loss = sim.path.stats(sim.now).loss.unwrap();
    assert!(loss > 0.5, "{loss}");
}

#[test]
fn roams_to_a_new_address_learned_from_a_ping() {
    let mut sim = Sim::new();
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    // The peer moved: the old address is dead, pings come from the new one.
    sim.net.direct_up = vec![addr(B)];
    let now = sim.now;
    sim.path.on_ping(Some(addr(B)), now);
    let took = sim.until(Duration::from_secs(10), |p| {
        p.route() == Route::Direct(addr(B))
    });
    assert!(took <= Duration::from_secs(4), "{took:?}");
    // The dead learned-from-nowhere address is advertised: kept, not used.
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.path.route(), Route::Direct(addr(B)));
}

#[test]
fn learned_candidates_are_bounded_and_expire() {
    let mut sim = Sim::new();
    for port in 0..50u16 {
        let now = sim.now;
        sim.path
            .on_ping(Some(SocketAddr::from(([10, 0, 0, 1], 1000 + port))), now);
    }
    assert!(sim.path.candidates.len() <= MAX_CANDIDATES);
    sim.run(Duration::from_secs(70));
    assert_eq!(sim.path.candidates.len(), 1, "only the advertised one left");
}

#[test]
fn loss_and_clock_skew_are_measured() {
    let mut sim = Sim::new();
    sim.net.lose_every = 4;
    sim.net.peer_clock_offset_ms = 2500;
    sim.run(Duration::from_secs(30));
    let stats = sim.path.stats(sim.now);
    assert_eq!(stats.mode, PathMode::Direct);
    let loss = stats.loss.unwrap();
    assert!((0.05..0.5).contains(&loss), "{loss}");
    let skew = stats.clock_skew_ms.unwrap();
    assert!((2400.0..2600.0).contains(&skew), "{skew}");
}

impl Sim {
    /// Probes sent since `since`: (direct, relayed).
    fn sent_since(&self, since: Instant) -> (usize, usize) {
        let recent = self.net.log.iter().filter(|(at, _, _)| *at >= since);
        recent.fold((0, 0), |(d, r), (_, via, _)| match via {
            Via::Direct(_) => (d + 1, r),
            Via::Relay(_) => (d, r + 1),
        })
    }
}

#[test]
fn an_idle_peer_costs_nothing_and_traffic_wakes_it_at_once() {
    let mut sim = Sim::new();
    sim.until(Duration::from_secs(3), |p| p.path_mtu() == 1472);
    sim.traffic = false;
    // The idle window runs out, then nothing is sent for minutes.
    sim.run(Duration::from_secs(31));
    let quiet = sim.now;
    sim.run(Duration::from_secs(300));
    assert_eq!(sim.sent_since(quiet), (0, 0));
    assert_eq!(sim.path.route(), Route::Direct(addr(A)), "route kept");
    assert!(sim.path.next_timeout(sim.now) > sim.now + Duration::from_secs(10));
    // The first frame: probing starts in the same poll.
    sim.traffic = true;
    let woke = sim.now;
    sim.step();
    assert!(sim.sent_since(woke).0 >= 1, "probed on the first frame");
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.path.route(), Route::Direct(addr(A)));
}

#[test]
fn an_idle_peer_across_a_nat_gets_only_keepalives() {
    let mut sim = Sim::new();
    sim.path.set_keepalive(true);
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.traffic = false;
    sim.run(Duration::from_secs(31));
    let quiet = sim.now;
    sim.run(Duration::from_secs(100));
    let (direct, relayed) = sim.sent_since(quiet);
    assert!((3..=5).contains(&direct), "one per 25 s: {direct}");
    assert_eq!(relayed, 0);
}

#[test]
fn an_active_healthy_path_costs_one_ping_per_round_and_no_relay_probes() {
    let mut sim = Sim::new();
    sim.net.relays = (10..40).map(|r| (r, Duration::from_millis(3))).collect();
    let relays: Vec<PeerIdx> = (10..40).collect();
    sim.path.set_relays(&relays);
    sim.until(Duration::from_secs(3), |p| p.path_mtu() == 1472);
    let steady = sim.now;
    sim.run(Duration::from_secs(60));
    let (direct, relayed) = sim.sent_since(steady);
    // One ping a second; the MTU re-check is one of them, not extra.
    assert!((59..=61).contains(&direct), "{direct}");
    assert_eq!(relayed, 0, "no relay probed while the direct path works");
    assert!(sim
        .net
        .log
        .iter()
        .any(|(at, _, size)| *at >= steady && *size == 1472));
}

#[test]
fn a_failing_direct_path_probes_a_bounded_few_relays() {
    let mut sim = Sim::new();
    sim.net.relays = (10..40).map(|r| (r, Duration::from_millis(3))).collect();
    let relays: Vec<PeerIdx> = (10..40).collect();
    sim.path.set_relays(&relays);
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.net.direct_up.clear();
    let cut = sim.now;
    sim.until(Duration::from_secs(6), |p| {
        matches!(p.route(), Route::Relayed(_))
    });
    sim.run(Duration::from_secs(10));
    let secs = (sim.now - cut).as_secs_f64();
    let (_, relayed) = sim.sent_since(cut);
    let max = PathConfig::default().max_relays;
    assert!(
        relayed as f64 <= max as f64 * (secs + 1.0) + 8.0,
        "{relayed} relay probes in {secs:.0} s"
    );
    let asked: std::collections::BTreeSet<Via> = sim
        .net
        .log
        .iter()
        .filter(|(at, via, _)| *at >= cut && matches!(via, Via::Relay(_)))
        .map(|(_, via, _)| *via)
        .collect();
    assert!(asked.len() <= max, "{asked:?}");
    // Healed: relays are no longer probed.
    sim.net.direct_up.push(addr(A));
    sim.until(Duration::from_secs(10), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.run(Duration::from_secs(4));
    let healed = sim.now;
    sim.run(Duration::from_secs(10));
    assert_eq!(sim.sent_since(healed).1, 0);
}

#[test]
fn a_new_peer_without_traffic_finds_its_path_then_goes_quiet() {
    let mut sim = Sim::new();
    sim.traffic = false;
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.run(PathConfig::default().warmup);
    let quiet = sim.now;
    sim.run(Duration::from_secs(120));
    assert_eq!(sim.sent_since(quiet), (0, 0));
    assert_eq!(sim.path.route(), Route::Direct(addr(A)));
}

/// One host's view of a 1,000-host mesh on virtual time: 999 path state
/// machines, of which 10 carry traffic. What it sends per second must be
/// the 10 active peers' worth, whatever N is.
#[test]
fn a_thousand_peers_cost_what_the_active_ones_cost() {
    const N: usize = 999;
    const ACTIVE: usize = 10;
    let start = Instant::now();
    let config = PathConfig::default();
    let endpoint = |i: usize| SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 7801));
    let relays: Vec<PeerIdx> = (0..N as PeerIdx).collect();
    let mut peers: Vec<PathState> = (0..N)
        .map(|i| {
            let mut p = PathState::new(config, start);
            p.set_advertised(&[endpoint(i)], start);
            p.set_relays(&relays);
            p
        })
        .collect();
    // Every direct path answers after 2 ms; `cut` ones do not.
    let mut cut = std::collections::BTreeSet::new();
    let mut pending: Vec<(Instant, usize, u32, u32)> = Vec::new();
    let mut now = start;
    let mut run = |secs: u64,
                   peers: &mut Vec<PathState>,
                   cut: &std::collections::BTreeSet<usize>,
                   now: &mut Instant|
     -> (usize, usize) {
        let mut out = (0, 0);
        let end = *now + Duration::from_secs(secs);
        while *now < end {
            *now += STEP;
            pending.retain(|&(at, i, id, size)| {
                if at <= *now {
                    peers[i].on_pong(id, 0, size, *now);
                    false
                } else {
                    true
                }
            });
            for (i, path) in peers.iter_mut().enumerate() {
                if i < ACTIVE {
                    path.on_traffic(*now);
                }
                for probe in path.poll(*now, 0) {
                    match probe.via {
                        Via::Direct(_) => {
                            out.0 += 1;
                            if !cut.contains(&i) {
                                pending.push((
                                    *now + Duration::from_millis(2),
                                    i,
                                    probe.id,
                                    probe.size,
                                ));
                            }
                        }
                        Via::Relay(_) => {
                            out.1 += 1;
                            pending.push((
                                *now + Duration::from_millis(4),
                                i,
                                probe.id,
                                probe.size,
                            ));
                        }
                    }
                }
            }
        }
        out
    };
    // Warm-up: every new peer's path is found once.
    run(10, &mut peers, &cut, &mut now);
    let steady = run(60, &mut peers, &cut, &mut now);
    // One ping a second per active peer (the MTU re-check among them).
    assert!(
        steady.0 <= ACTIVE * 61,
        "{} direct probes in 60 s",
        steady.0
    );
    assert_eq!(steady.1, 0, "no relay probe while direct paths work");
    // Two active peers lose their direct path: each asks at most
    // `max_relays` relays, never all 998.
    cut.extend([0, 1]);
    let failing = run(20, &mut peers, &cut, &mut now);
    assert!(
        failing.1 <= 2 * config.max_relays * 21,
        "{} relay probes in 20 s",
        failing.1
    );
    assert!(matches!(peers[0].route(), Route::Relayed(_)));
    assert!(
        matches!(peers[500].route(), Route::Direct(_)),
        "idle peers keep their route"
    );
}

#[test]
fn an_idle_peer_that_moves_is_followed_without_traffic() {
    let mut sim = Sim::new();
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.traffic = false;
    sim.run(Duration::from_secs(40));
    // The control plane now advertises B only (the peer renumbered).
    sim.net.direct_up = vec![addr(B)];
    let now = sim.now;
    sim.path.set_advertised(&[addr(B)], now);
    assert_ne!(
        sim.path.route(),
        Route::Direct(addr(A)),
        "not kept while idle"
    );
    sim.until(Duration::from_secs(2), |p| {
        p.route() == Route::Direct(addr(B))
    });
}

#[test]
fn relays_that_never_answer_take_turns_with_the_others() {
    let mut sim = Sim::new();
    // Only the 5th relay in preference order can reach the peer.
    sim.net.relays = vec![(14, Duration::from_millis(3))];
    sim.path.set_relays(&[10, 11, 12, 13, 14]);
    sim.net.direct_up.clear();
    sim.until(Duration::from_secs(10), |p| p.route() == Route::Relayed(14));
}

/// The local end of a TCP fallback link (see `PathState::set_fallback`).
const T: &str = "127.0.0.1:40000";

#[test]
fn the_tcp_fallback_is_taken_only_when_no_udp_way_answers_and_left_when_one_does() {
    let mut sim = Sim::new();
    sim.net.direct_up.push(addr(T));
    sim.net.relays = vec![(8, Duration::from_millis(5))];
    sim.path.set_relays(&[8]);
    sim.path.set_fallback(Some(addr(T)), sim.now);
    sim.until(Duration::from_secs(1), |p| {
        p.route() == Route::Direct(addr(A))
    });
    sim.run(Duration::from_secs(5));
    assert_eq!(sim.path.route(), Route::Direct(addr(A)), "TCP answers too");
    // Direct UDP fails: a relay (still UDP) is preferred to TCP.
    sim.net.direct_up.retain(|a| *a != addr(A));
    sim.until(Duration::from_secs(5), |p| p.route() == Route::Relayed(8));
    sim.run(Duration::from_secs(3));
    assert_eq!(sim.path.route(), Route::Relayed(8));
    // No UDP way at all: TCP.
    sim.net.relays.clear();
    sim.until(Duration::from_secs(5), |p| {
        p.route() == Route::Direct(addr(T))
    });
    assert_eq!(sim.path.stats(sim.now).mode, PathMode::Tcp);
    // Relays are still asked while on TCP (they are UDP).
    let since = sim.now;
    sim.run(Duration::from_secs(3));
    assert!(sim
        .net
        .log
        .iter()
        .any(|(at, via, _)| *at >= since && *via == Via::Relay(8)));
    // UDP works again: back on it after two pongs in a row.
    sim.net.direct_up.push(addr(A));
    let back = sim.until(Duration::from_secs(10), |p| {
        p.route() == Route::Direct(addr(A))
    });
    assert!(
        back >= Duration::from_millis(900),
        "needs two pongs: {back:?}"
    );
    assert_eq!(sim.path.stats(sim.now).mode, PathMode::Direct);
}

#[test]
fn a_closed_fallback_link_is_left_at_once() {
    let mut sim = Sim::new();
    sim.net.direct_up = vec![addr(T)];
    sim.path.set_fallback(Some(addr(T)), sim.now);
    sim.until(Duration::from_secs(5), |p| {
        p.route() == Route::Direct(addr(T))
    });
    sim.path.set_fallback(None, sim.now);
    assert_eq!(sim.path.route(), Route::Unknown);
    sim.run(Duration::from_secs(3));
    assert!(sim
        .net
        .log
        .iter()
        .rev()
        .take(3)
        .all(|(_, via, _)| *via != Via::Direct(addr(T))));
}

#[test]
fn a_relay_reached_over_tcp_is_the_last_resort() {
    let mut sim = Sim::new();
    sim.net.direct_up.clear();
    // 7 is reached over UDP, 9 only over its TCP fallback.
    sim.net.relays = vec![(7, Duration::from_millis(5)), (9, Duration::from_millis(5))];
    sim.path.set_relays(&[7, 9]);
    sim.path.set_relays_over_tcp(&[9]);
    sim.until(Duration::from_secs(5), |p| p.route() == Route::Relayed(7));
    // The UDP relay goes: the TCP one, as nothing else answers.
    sim.net.relays.retain(|(r, _)| *r == 9);
    sim.until(Duration::from_secs(10), |p| p.route() == Route::Relayed(9));
    // The peer's own TCP fallback is preferred to it...
    sim.net.direct_up.push(addr(T));
    sim.path.set_fallback(Some(addr(T)), sim.now);
    sim.until(Duration::from_secs(5), |p| {
        p.route() == Route::Direct(addr(T))
    });
    // ...and UDP to everything else.
    sim.net.direct_up.push(addr(A));
    sim.until(Duration::from_secs(10), |p| {
        p.route() == Route::Direct(addr(A))
    });
}
