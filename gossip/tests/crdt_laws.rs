//! Merge laws of the CRDTs: commutative, associative, idempotent.

use gossip::{GCounter, LwwMap, LwwRegister, Mergeable, PeerId, Stamp};
use proptest::prelude::*;

fn peer() -> impl Strategy<Value = PeerId> {
    (0u8..4).prop_map(|b| PeerId([b; 32]))
}

fn stamp() -> impl Strategy<Value = Stamp> {
    // Small ranges so equal stamps (and same-stamp conflicts) actually occur.
    (0u64..6, peer()).prop_map(|(timestamp, writer)| Stamp { timestamp, writer })
}

fn lww_map() -> impl Strategy<Value = LwwMap<u8, u8>> {
    prop::collection::vec((0u8..6, stamp(), prop::option::of(0u8..4)), 0..12).prop_map(|ops| {
        let mut map = LwwMap::new();
        for (key, stamp, value) in ops {
            map.apply(key, stamp, value);
        }
        map
    })
}

fn gcounter() -> impl Strategy<Value = GCounter> {
    prop::collection::vec((peer(), 0u64..100), 0..6).prop_map(|ops| {
        let mut counter = GCounter::new();
        for (writer, count) in ops {
            counter.observe(writer, count);
        }
        counter
    })
}

fn register() -> impl Strategy<Value = LwwRegister<u8>> {
    prop::option::of((stamp(), 0u8..4)).prop_map(|op| {
        let mut reg = LwwRegister::new();
        if let Some((stamp, value)) = op {
            reg.set_at(stamp, value);
        }
        reg
    })
}

fn merged<S: Mergeable>(a: &S, b: &S) -> S {
    let mut out = a.clone();
    out.merge(b);
    out
}

/// Checks the three laws and the `changed` flag, comparing by encoding.
fn check_laws<S: Mergeable>(a: &S, b: &S, c: &S) -> Result<(), TestCaseError> {
    let enc = |s: &S| s.encode();
    prop_assert_eq!(enc(&merged(a, b)), enc(&merged(b, a)), "commutative");
    prop_assert_eq!(
        enc(&merged(&merged(a, b), c)),
        enc(&merged(a, &merged(b, c))),
        "associative"
    );
    let mut twice = a.clone();
    prop_assert!(!twice.merge(a), "merging itself reports no change");
    prop_assert_eq!(enc(&twice), enc(a), "idempotent");
    let mut ab = merged(a, b);
    prop_assert!(!ab.merge(b), "re-merging reports no change");
    let mut changed = a.clone();
    let flag = changed.merge(b);
    prop_assert_eq!(flag, enc(&changed) != enc(a), "changed flag is exact");
    prop_assert_eq!(
        enc(&S::decode(&enc(a)).unwrap()),
        enc(a),
        "encoding round-trips"
    );
    Ok(())
}

proptest! {
    #[test]
    fn lww_map_laws(a in lww_map(), b in lww_map(), c in lww_map()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn gcounter_laws(a in gcounter(), b in gcounter(), c in gcounter()) {
        check_laws(&a, &b, &c)?;
        prop_assert!(merged(&a, &b).value() >= a.value().max(b.value()));
    }

    #[test]
    fn lww_register_laws(a in register(), b in register(), c in register()) {
        check_laws(&a, &b, &c)?;
    }

    #[test]
    fn lww_map_delivery_order_does_not_matter(ops in prop::collection::vec((0u8..6, stamp(), prop::option::of(0u8..4)), 0..20)) {
        let deltas: Vec<LwwMap<u8, u8>> = ops.iter().map(|(k, s, v)| {
            let mut d = LwwMap::new();
            d.apply(*k, *s, *v);
            d
        }).collect();
        let mut forward = LwwMap::new();
        for d in &deltas { forward.merge(d); }
        let mut backward = LwwMap::new();
        for d in deltas.iter().rev() { backward.merge(d); backward.merge(d); }
        prop_assert_eq!(forward, backward);
    }
}
