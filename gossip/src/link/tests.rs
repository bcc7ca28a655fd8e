//! Two links stepped against each other on virtual time (no sockets).

use std::time::Duration;

use super::*;
use crate::sim::{peer, record, Dns, Pair, A, B, REJECT_AFTER, TIMERS};
use crate::state::Stamp;

fn key_inits(pair: &Pair, host: usize) -> Vec<u64> {
    pair.hosts[host]
        .sent
        .iter()
        .filter_map(|m| match m {
            Message::KeyInit(init) => Some(init.generation),
            _ => None,
        })
        .collect()
}

/// Loses the first frame from `from` that `pick` selects.
fn lose_first(pair: &mut Pair, from: usize, pick: fn(&Message) -> bool) {
    let mut lost = false;
    pair.set_loss(move |sender, message| {
        if !lost && sender == from && pick(message) {
            lost = true;
            return true;
        }
        false
    });
}

fn assert_keyed_both_ways(pair: &mut Pair, generation: u64) {
    for host in 0..2 {
        assert_eq!(
            pair.hosts[host].keys.current_generation(),
            Some(generation),
            "host {host} sends with generation {generation}"
        );
        assert!(pair.deliverable(host), "host {host}'s packets open");
    }
}

#[test]
fn key_exchange_is_retried_after_a_lost_init() {
    let mut pair = Pair::new(0, 0);
    lose_first(&mut pair, 0, |m| matches!(m, Message::KeyInit(_)));
    pair.open();
    let retry = TIMERS.kx_retry_after();
    pair.run_for(retry, |_| {});
    assert_eq!(pair.lost.len(), 1);
    assert_eq!(key_inits(&pair, 0), vec![1], "no retry inside the window");
    assert!(pair.hosts[0].keys.current_generation().is_none());
    assert!(pair.hosts[1].keys.next_generation().is_none());

    pair.run_for(TIMERS.heartbeat * 2, |_| {});
    assert_eq!(
        key_inits(&pair, 0),
        vec![1, 2],
        "one retry, a fresh generation"
    );
    assert_keyed_both_ways(&mut pair, 2);
    assert!(pair.hosts.iter().all(|h| h.closed.is_none()));
}

#[test]
fn key_exchange_is_retried_after_a_lost_response() {
    let mut pair = Pair::new(0, 0);
    lose_first(&mut pair, 1, |m| matches!(m, Message::KeyResp(_)));
    pair.open();
    pair.run_for(TIMERS.kx_retry_after(), |_| {});
    // The responder installed receive-first and still waits for a confirm.
    assert_eq!(pair.hosts[1].keys.next_generation(), Some(1));
    assert_eq!(pair.hosts[1].keys.current_generation(), None);
    assert_eq!(pair.hosts[0].keys.current_generation(), None);

    pair.run_for(TIMERS.heartbeat * 2, |_| {});
    assert_eq!(key_inits(&pair, 0), vec![1, 2]);
    assert_keyed_both_ways(&mut pair, 2);
    assert_eq!(pair.hosts[0].link.generation(), 2);
    assert_eq!(pair.hosts[1].link.generation(), 2);
}

#[test]
fn generations_continue_from_the_handshake() {
    let mut pair = Pair::new(1, 41);
    pair.open();
    pair.run_for(Duration::from_secs(1), |_| {});
    assert_eq!(key_inits(&pair, 1), vec![42], "B dialed, B initiates");
    assert!(key_inits(&pair, 0).is_empty());
    assert_keyed_both_ways(&mut pair, 42);
}

#[test]
fn digest_exchange_makes_differing_replicas_equal() {
    let mut pair = Pair::new(0, 0);
    let c = peer(3);
    let d = peer(4);
    let mut a_dns = Dns::new();
    a_dns.apply("web".into(), stamp(5, *A), Some("10.0.0.1".into()));
    a_dns.apply("shared".into(), stamp(7, *A), Some("from-a".into()));
    let mut b_dns = Dns::new();
    b_dns.apply("db".into(), stamp(6, *B), Some("10.0.0.2".into()));
    b_dns.apply("shared".into(), stamp(8, *B), Some("from-b".into()));
    b_dns.apply("web".into(), stamp(9, *B), None);
    {
        let a = &mut pair.hosts[0].replica;
        a.table.merge([record(c)]);
        a.channels.insert("dns".into(), a_dns);
        a.channels.insert("empty-on-b".into(), Dns::new());
        let mut only = Dns::new();
        only.apply("k".into(), stamp(1, *A), Some("v".into()));
        a.channels.insert("only-a".into(), only);
    }
    {
        let b = &mut pair.hosts[1].replica;
        b.table.merge([record(d)]);
        b.channels.insert("dns".into(), b_dns);
        let mut filled = Dns::new();
        filled.apply("x".into(), stamp(2, *B), Some("y".into()));
        b.channels.insert("empty-on-b".into(), filled);
    }
    assert_ne!(
        pair.hosts[0].replica.digest(),
        pair.hosts[1].replica.digest()
    );

    pair.open();
    pair.run_for(Duration::from_millis(500), |_| {});
    let (a, b) = (&pair.hosts[0].replica, &pair.hosts[1].replica);
    assert_eq!(a.table.digest(), b.table.digest());
    assert_eq!(a.table.len(), 4, "A, B, C and D everywhere");
    assert_eq!(a.channels["dns"], b.channels["dns"]);
    assert_eq!(a.channels["empty-on-b"], b.channels["empty-on-b"]);
    let dns = &a.channels["dns"];
    assert_eq!(
        dns.get(&"shared".into()).map(String::as_str),
        Some("from-b")
    );
    assert_eq!(dns.get(&"db".into()).map(String::as_str), Some("10.0.0.2"));
    assert!(!dns.contains_key(&"web".into()), "the later removal wins");
    assert!(
        !b.channels.contains_key("only-a"),
        "a channel B does not register stays A's"
    );

    // Converged: a fresh digest round asks for nothing more, except the
    // channel B does not register (B drops it, as it has no place for it).
    let now = pair.now;
    let digest_a = pair.hosts[0].replica.digest();
    let digest_b = pair.hosts[1].replica.digest();
    let b = &mut pair.hosts[1];
    assert!(b
        .link
        .handle(Message::Digest(digest_a), now, &mut b.replica)
        .is_empty());
    let a = &mut pair.hosts[0];
    let replies = a
        .link
        .handle(Message::Digest(digest_b), now, &mut a.replica);
    assert!(
        matches!(replies.as_slice(),
            [Action::Send(Message::ChannelFull { channel, .. })] if channel == "only-a"),
        "{replies:?}"
    );
}

fn stamp(timestamp: u64, writer: PeerId) -> Stamp {
    Stamp { timestamp, writer }
}

#[test]
fn rekey_hands_over_before_the_age_limit_without_a_gap() {
    let mut pair = Pair::new(0, 0);
    pair.open();
    pair.run_for(Duration::from_secs(1), |_| {});
    assert_keyed_both_ways(&mut pair, 1);
    let first = pair.hosts[0].keys.seal(pair.now).unwrap();
    let start = pair.now;

    let mut checks = 0u32;
    let mut last_generation = [1u64; 2];
    // Sample at least every 100 ms besides every event.
    while pair.now < start + REJECT_AFTER + Duration::from_secs(60) {
        pair.run_for(Duration::from_millis(100), |p| {
            for host in 0..2 {
                assert!(
                    p.deliverable(host),
                    "gap at {:?} from host {host}",
                    p.now - start
                );
            }
        });
        for (host, last) in last_generation.iter_mut().enumerate() {
            assert!(pair.deliverable(host), "gap at {:?}", pair.now - start);
            let generation = pair.hosts[host].keys.current_generation().unwrap();
            assert!(generation >= *last, "generations only rise");
            *last = generation;
        }
        checks += 1;
        let age = pair.now - start;
        let old_opens = pair.hosts[1].keys.open(first, pair.now);
        if age < REJECT_AFTER - Duration::from_secs(1)
            && age > TIMERS.rekey + Duration::from_secs(1)
        {
            assert!(
                old_opens,
                "generation 1 is still accepted as previous at {age:?}"
            );
        }
        if age >= REJECT_AFTER {
            assert!(!old_opens, "generation 1 refused past the limit at {age:?}");
        }
    }
    assert!(checks > 2000);
    // Rekeys at 0, 110 and 220 s: generation 3 on both, none ever expired.
    assert_eq!(last_generation, [3, 3]);
    assert!(pair.hosts.iter().all(|h| h.closed.is_none()));
}

#[test]
fn silence_closes_the_link_and_violations_close_it_at_once() {
    let mut pair = Pair::new(0, 0);
    pair.open();
    pair.run_for(Duration::from_secs(3), |_| {});
    // The dialer (host 0) goes silent: the other side closes.
    pair.set_loss(|from, _| from == 0);
    pair.run_for(TIMERS.dead_after + TIMERS.heartbeat * 2, |_| {});
    assert_eq!(
        pair.hosts[1].closed,
        Some((close_code::DEAD, "no heartbeat"))
    );
    // The dialer hears nothing on an idle link by design: its side of the
    // liveness check is QUIC's idle timeout, not the link's.
    assert_eq!(pair.hosts[0].closed, None);

    let mut pair = Pair::new(0, 0);
    pair.open();
    let host = &mut pair.hosts[1];
    let resp = crate::wire::KeyResp {
        generation: 1,
        ephemeral: [9; 32],
        index: 1,
    };
    let actions = host
        .link
        .handle(Message::KeyResp(resp), pair.now, &mut host.replica);
    assert!(matches!(
        actions.as_slice(),
        [Action::Close {
            code: close_code::PROTOCOL_ERROR,
            ..
        }]
    ));
    assert!(host.link.is_closed());
}

#[test]
fn links_negotiate_the_cipher_from_both_advertisements() {
    use crate::cipher::{Cipher, CipherOffer};
    let fast = Some(CipherOffer::ALL);
    let portable = Some(CipherOffer::PORTABLE);
    let cases = [
        ("both with AES hardware", fast, fast, Cipher::Aes256Gcm),
        ("mixed mesh", fast, portable, Cipher::ChaCha20Poly1305),
        (
            "forced portable",
            portable,
            portable,
            Cipher::ChaCha20Poly1305,
        ),
        (
            "peer predates negotiation",
            fast,
            None,
            Cipher::ChaCha20Poly1305,
        ),
    ];
    for (case, offer_a, offer_b, expected) in cases {
        let mut pair = Pair::with_ciphers(0, 0, [(offer_a, offer_b), (offer_b, offer_a)]);
        pair.open();
        pair.run_for(TIMERS.heartbeat * 2, |_| {});
        assert_keyed_both_ways(&mut pair, 1);
        for host in 0..2 {
            assert_eq!(
                pair.hosts[host].keys.current_cipher(),
                Some(expected),
                "{case}: host {host}"
            );
            assert_eq!(pair.hosts[host].link.cipher(), expected, "{case}");
        }
    }
}

#[test]
fn a_downgraded_advertisement_leaves_no_working_keys() {
    use crate::cipher::CipherOffer;
    let fast = Some(CipherOffer::ALL);
    // Host B saw A's hello with AES stripped (or the whole advertisement
    // removed); A saw the real thing. The exchange completes, but what
    // either side seals does not open at the other.
    for stripped in [Some(CipherOffer::PORTABLE), None] {
        let mut pair = Pair::with_ciphers(0, 0, [(fast, fast), (fast, stripped)]);
        pair.open();
        pair.run_for(TIMERS.heartbeat * 2, |_| {});
        assert_eq!(pair.hosts[0].keys.current_generation(), Some(1));
        assert_eq!(pair.hosts[1].keys.current_generation(), Some(1));
        assert!(!pair.deliverable(0), "A's packets must not open at B");
        assert!(!pair.deliverable(1), "B's packets must not open at A");
    }
}

#[test]
fn an_idle_link_carries_heartbeats_one_way_only() {
    let mut pair = Pair::new(1, 0);
    pair.open();
    pair.run_for(Duration::from_secs(30), |_| {});
    let heartbeats = |host: usize| {
        pair.hosts[host]
            .sent
            .iter()
            .filter(|m| matches!(m, Message::Heartbeat))
            .count()
    };
    // Host 1 dialed: one heartbeat per interval from it, none back, and
    // the link stays up on both sides.
    let expected = (30 / TIMERS.heartbeat.as_secs()) as usize;
    assert!(heartbeats(1).abs_diff(expected) <= 1, "{}", heartbeats(1));
    assert_eq!(heartbeats(0), 0);
    assert!(pair.hosts.iter().all(|h| h.closed.is_none()));
}

/// A shorter rekey period set on a running link (a config reload) makes
/// the next exchange due within it, and keys keep flowing.
#[test]
fn a_shorter_rekey_period_takes_effect_at_once() {
    let mut pair = Pair::new(0, 0);
    pair.open();
    pair.run_for(Duration::from_secs(1), |_| {});
    pair.run_for(Duration::from_secs(10), |_| {});
    assert_keyed_both_ways(&mut pair, 1);
    let now = pair.now;
    pair.hosts[0].link.set_rekey(Duration::from_secs(5), now);
    pair.run_for(Duration::from_secs(5) + TIMERS.heartbeat, |_| {});
    assert_keyed_both_ways(&mut pair, 2);
    pair.run_for(Duration::from_secs(5), |_| {});
    assert_keyed_both_ways(&mut pair, 3);
}
