//! Two hosts' [`RelayControl`]s talking through a modelled relay C on
//! virtual time: the handshake, liveness, key rotation, and everything C
//! could try (tamper, replay, forge) being refused.

use std::time::{Duration, Instant};

use super::*;
use crate::sim::{peer, TIMERS};

const C: u8 = 3;

struct Host {
    id: PeerId,
    control: RelayControl,
    up: Option<PeerId>,
    installed: Vec<u64>,
    confirmed: Vec<u64>,
    errors: Vec<RelayError>,
}

impl Host {
    fn new(n: u8) -> Host {
        Host {
            id: peer(n),
            control: RelayControl::new(peer(n), TIMERS),
            up: None,
            installed: Vec::new(),
            confirmed: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// What C does with a payload for host `to`: false drops it.
type Tamper = Box<dyn FnMut(usize, &mut Vec<u8>) -> bool>;

/// Hosts 0 (A = peer 1) and 1 (B = peer 2); C is peer 3 and only forwards
/// (or does what `tamper` makes it do with each payload in flight).
struct Relayed {
    now: Instant,
    secret: MeshSecret,
    hosts: [Host; 2],
    /// (deliver at, to host, payload)
    in_flight: Vec<(Instant, usize, Vec<u8>)>,
    /// Every payload C forwarded, for replays.
    seen: Vec<(usize, Vec<u8>)>,
    tamper: Tamper,
}

impl Relayed {
    fn new() -> Relayed {
        Relayed {
            now: Instant::now(),
            secret: MeshSecret::generate(),
            hosts: [Host::new(1), Host::new(2)],
            in_flight: Vec::new(),
            seen: Vec::new(),
            tamper: Box::new(|_, _| true),
        }
    }

    fn apply(&mut self, host: usize, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Send { to, via, packet } => {
                    assert_eq!(via, peer(C), "always through C");
                    assert_eq!(to, self.hosts[1 - host].id);
                    let mut payload = packet.encode();
                    assert!(payload.len() <= MAX_RELAY_PAYLOAD);
                    let to = 1 - host;
                    self.seen.push((to, payload.clone()));
                    if (self.tamper)(to, &mut payload) {
                        self.in_flight
                            .push((self.now + Duration::from_millis(5), to, payload));
                    }
                }
                Event::Up { via, .. } => self.hosts[host].up = Some(via),
                Event::Down { .. } => self.hosts[host].up = None,
                Event::InstallKeys { keys, .. } => self.hosts[host].installed.push(keys.generation),
                Event::ConfirmKeys { generation, .. } => {
                    self.hosts[host].confirmed.push(generation)
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, payload: &[u8]) {
        let from = self.hosts[1 - to].id;
        let ctx = Context {
            mesh_secret: &self.secret,
            last_key_generation: 0,
            ciphers: (None, None),
        };
        match self.hosts[to]
            .control
            .handle(from, peer(C), payload, &ctx, self.now)
        {
            Ok(events) => self.apply(to, events),
            Err(e) => self.hosts[to].errors.push(e),
        }
    }

    fn connect(&mut self) {
        let b = self.hosts[1].id;
        let events = self.hosts[0].control.connect(b, peer(C), 0, self.now);
        self.apply(0, events);
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        loop {
            let next_packet = self.in_flight.iter().map(|(t, _, _)| *t).min();
            let next_tick = (0..2)
                .filter_map(|h| self.hosts[h].control.poll_timeout())
                .min();
            let Some(next) = [next_packet, next_tick].into_iter().flatten().min() else {
                self.now = end;
                return;
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if let Some(i) = self.in_flight.iter().position(|(t, _, _)| *t <= self.now) {
                let (_, to, payload) = self.in_flight.remove(i);
                self.deliver(to, &payload);
                continue;
            }
            for h in 0..2 {
                let events = self.hosts[h].control.tick(self.now);
                self.apply(h, events);
            }
        }
    }
}

#[test]
fn handshake_brings_both_up_with_matching_keys_and_heartbeats_keep_them_up() {
    let mut r = Relayed::new();
    r.connect();
    r.run_for(Duration::from_secs(1));
    assert_eq!(r.hosts[0].up, Some(peer(C)));
    assert_eq!(r.hosts[1].up, Some(peer(C)));
    assert_eq!(r.hosts[0].installed, vec![1]);
    assert_eq!(r.hosts[1].installed, vec![1]);
    assert_eq!(r.hosts[1].confirmed, vec![1]);
    // Well past dead_after: heartbeats and their echoes keep both up.
    r.run_for(TIMERS.dead_after * 4);
    assert!(r.hosts[0].up.is_some() && r.hosts[1].up.is_some());
    assert!(r.hosts.iter().all(|h| h.errors.is_empty()));
}

#[test]
fn keys_rotate_over_the_relay() {
    let mut r = Relayed::new();
    r.connect();
    r.run_for(TIMERS.rekey * 2 + Duration::from_secs(1));
    assert_eq!(r.hosts[0].installed, vec![1, 2, 3]);
    assert_eq!(r.hosts[1].confirmed, vec![1, 2, 3]);
}

#[test]
fn both_sides_notice_a_dead_relay_within_dead_after() {
    let mut r = Relayed::new();
    r.connect();
    r.run_for(Duration::from_secs(2));
    r.tamper = Box::new(|_, _| false); // C drops everything from now on
    r.run_for(TIMERS.dead_after + TIMERS.heartbeat * 2);
    assert_eq!(r.hosts[0].up, None);
    assert_eq!(r.hosts[1].up, None);
}

#[test]
fn a_flipped_bit_anywhere_is_refused() {
    // Every packet C forwarded (handshake and session), each with one bit
    // flipped at every position: nothing opens, no key is installed.
    let mut r = Relayed::new();
    r.connect();
    r.run_for(Duration::from_secs(3));
    let seen = r.seen.clone();
    assert!(seen.len() >= 6, "init, accept and sealed packets");
    let installed = [r.hosts[0].installed.clone(), r.hosts[1].installed.clone()];
    let mut refused = 0;
    for (to, payload) in seen {
        for i in 0..payload.len() {
            let mut forged = payload.clone();
            forged[i] ^= 0x01;
            let errors = r.hosts[to].errors.len();
            r.deliver(to, &forged);
            // A flipped Init is at best a new pending session that nobody
            // can confirm; everything else must be refused outright.
            let is_init = matches!(Packet::decode(&payload), Ok(Packet::Init(_)));
            if !is_init {
                assert_eq!(r.hosts[to].errors.len(), errors + 1, "byte {i} accepted");
            }
            refused += r.hosts[to].errors.len() - errors;
        }
    }
    assert!(refused > 500);
    assert_eq!(r.hosts[0].installed, installed[0]);
    assert_eq!(r.hosts[1].installed, installed[1]);
    r.run_for(TIMERS.dead_after * 2);
    assert!(r.hosts[0].up.is_some() && r.hosts[1].up.is_some());
}

#[test]
fn tampered_sealed_packets_and_handshakes_are_refused() {
    let mut r = Relayed::new();
    r.connect();
    r.run_for(Duration::from_secs(2));
    let errors_before = r.hosts[1].errors.len();
    let (_, sealed) = r
        .seen
        .iter()
        .rev()
        .find(|(to, p)| *to == 1 && matches!(Packet::decode(p), Ok(Packet::Sealed(_))))
        .cloned()
        .unwrap();
    let Ok(Packet::Sealed(mut s)) = Packet::decode(&sealed) else {
        unreachable!()
    };
    s.counter += 1000; // fresh counter, ciphertext from another counter
    r.deliver(1, &Packet::Sealed(s.clone()).encode());
    s.ciphertext[0] ^= 1;
    r.deliver(1, &Packet::Sealed(s).encode());
    assert_eq!(
        &r.hosts[1].errors[errors_before..],
        &[RelayError::Forged, RelayError::Forged]
    );
    // A forged Init: signed by C (who holds its own key), claiming to be A.
    let (_, mut init) = initiate(peer(C), peer(2), 0).unwrap();
    init.from = peer(1);
    r.deliver(1, &Packet::Init(init).encode());
    assert_eq!(
        r.hosts[1].errors.last(),
        Some(&RelayError::BadSignature("init"))
    );
    // C's own Init, relayed as if from A: the signed sender is not A.
    let (_, init) = initiate(peer(C), peer(2), 0).unwrap();
    r.deliver(1, &Packet::Init(init).encode());
    assert_eq!(r.hosts[1].errors.last(), Some(&RelayError::Misaddressed));
    assert!(r.hosts[1].up.is_some(), "the session survives all of it");
}

#[test]
fn replays_by_the_relay_are_refused_and_do_not_displace_the_session() {
    let mut r = Relayed::new();
    r.connect();
    r.run_for(Duration::from_secs(3));
    let seen = r.seen.clone();
    let installed = r.hosts[1].installed.clone();
    for (to, payload) in &seen {
        r.deliver(*to, payload);
    }
    // Every replayed sealed packet is a replay; the replayed Accept answers
    // no handshake in progress; the replayed Init only makes B answer with
    // a new pending session that A never confirms.
    let errors: Vec<&RelayError> = r.hosts.iter().flat_map(|h| &h.errors).collect();
    assert!(errors
        .iter()
        .any(|e| matches!(e, RelayError::Replay { .. })));
    assert!(errors.contains(&&RelayError::UnexpectedAccept));
    assert_eq!(r.hosts[1].installed, installed, "no key from a replay");
    r.run_for(TIMERS.dead_after * 3);
    assert!(r.hosts[0].up.is_some() && r.hosts[1].up.is_some());
    assert_eq!(r.hosts[1].installed, installed, "still the same keys");
}

#[test]
fn a_host_without_the_mesh_secret_gets_no_session() {
    let mut r = Relayed::new();
    r.connect();
    // B's handshake answer is delivered, but A derives under another secret.
    r.secret = MeshSecret::generate();
    let b = r.hosts[1].id;
    let events = r.hosts[0].control.connect(b, peer(C), 0, r.now);
    // Re-run with A and B disagreeing on the secret: swap it between deliveries.
    r.apply(0, events);
    let (at, to, init) = r.in_flight.pop().unwrap();
    r.in_flight.clear();
    r.now = at;
    let other = MeshSecret::generate();
    let ctx = Context {
        mesh_secret: &other,
        last_key_generation: 0,
        ciphers: (None, None),
    };
    let events = r.hosts[to]
        .control
        .handle(peer(1), peer(C), &init, &ctx, r.now)
        .unwrap();
    r.apply(to, events);
    r.run_for(Duration::from_secs(3));
    assert_eq!(r.hosts[1].up, None, "A's sealed packets never open at B");
    assert!(r.hosts[1].installed.is_empty());
}

#[test]
fn relay_forwards_only_bounded_traffic_between_linked_members() {
    let now = Instant::now();
    let (a, b, c) = (peer(1), peer(2), peer(C));
    let mut budget = RelayBudget::new(now);
    assert_eq!(
        forward(c, a, b, vec![0; 10], true, &mut budget, now),
        Ok(Message::Relayed {
            from: a,
            payload: vec![0; 10]
        })
    );
    assert_eq!(
        forward(
            c,
            a,
            b,
            vec![0; MAX_RELAY_PAYLOAD + 1],
            true,
            &mut budget,
            now
        ),
        Err(ForwardRefusal::Oversized)
    );
    for (to, linked) in [(b, false), (c, true), (a, true)] {
        assert_eq!(
            forward(c, a, to, vec![], linked, &mut budget, now),
            Err(ForwardRefusal::NoRoute)
        );
    }
    let mut budget = RelayBudget::new(now);
    let passed = (0..RELAY_BURST * 2)
        .filter(|_| forward(c, a, b, vec![], true, &mut budget, now).is_ok())
        .count();
    assert_eq!(passed, RELAY_BURST as usize);
    let later = now + Duration::from_secs(1);
    let refilled = (0..RELAY_BURST)
        .filter(|_| forward(c, a, b, vec![], true, &mut budget, later).is_ok())
        .count();
    assert_eq!(refilled, RELAY_RATE_PER_SEC as usize);
}

#[test]
fn only_control_messages_are_relayable_and_garbage_is_an_error() {
    assert!(relayable(&Message::Heartbeat));
    assert!(!relayable(&Message::Members(vec![])));
    assert!(!relayable(&Message::Relayed {
        from: peer(1),
        payload: vec![]
    }));
    for garbage in [&[][..], &[9, 9, 9], &[0xff; 40]] {
        assert!(Packet::decode(garbage).is_err());
    }
    assert!(Packet::decode(&vec![0; MAX_RELAY_PAYLOAD + 1]).is_err());
}
