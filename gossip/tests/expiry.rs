//! Tombstone expiry across real nodes (`gossip::state::expiry`): removals
//! are forgotten on every host once past the horizon, the hosts' states
//! stay equal, a member of an older protocol keeps expiry off, a host cut
//! off for longer does not bring back what was forgotten, and a restarted
//! host knows how long it was away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gossip::protocol::{self, META_PROTOCOL};
use gossip::{Channel, Identity, LwwMap, Mergeable, MeshSecret, Node};

const HORIZON: Duration = Duration::from_secs(2);
const CONVERGE: Duration = Duration::from_secs(20);

/// A node advertising `protocol` (as meshd does), sweeping every 100 ms.
async fn node(protocol: &str, state_dir: Option<std::path::PathBuf>) -> Node {
    let identity = match &state_dir {
        Some(dir) => Identity::load_or_create(&dir.join("identity")).unwrap(),
        None => Identity::generate().unwrap(),
    };
    let mut cfg = config(identity, Arc::new(gossip::node::NoopObserver));
    cfg.meta.insert(META_PROTOCOL.into(), protocol.into());
    cfg.expiry_interval = Duration::from_millis(100);
    cfg.anti_entropy_interval = Duration::from_millis(300);
    cfg.state_dir = state_dir;
    Node::start(cfg).await.unwrap()
}

async fn join(node: &Node, seed: &Node) {
    let token: MeshSecret = seed.token().parse().unwrap();
    node.join(&seed.local_addr().to_string(), &token)
        .await
        .unwrap();
}

fn today() -> String {
    protocol::format_range(protocol::supported())
}

/// `(has a slot, holds a value)` for `key`.
fn slot(ch: &Channel<LwwMap<String, u32>>, key: &str) -> (bool, bool) {
    let map = ch.get();
    let entry = map.entry(&key.to_string());
    (entry.is_some(), entry.is_some_and(|e| e.value.is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_are_forgotten_everywhere_past_the_horizon_and_states_stay_equal() {
    init_tracing();
    let a = node(&today(), None).await;
    let b = node(&today(), None).await;
    let c = node(&today(), None).await;
    join(&b, &a).await;
    join(&c, &a).await;
    let nodes = [a.clone(), b.clone(), c.clone()];
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 2)
        })
        .await
    );
    let channels: Vec<_> = nodes
        .iter()
        .map(|n| n.channel("records", LwwMap::<String, u32>::new().expiring(HORIZON)))
        .collect();
    let id = a.id();
    channels[0].modify(|m| m.set(id, "gone".into(), 1));
    channels[0].modify(|m| m.set(id, "kept".into(), 2));
    assert!(
        eventually(CONVERGE, || async {
            channels.iter().all(|ch| slot(ch, "gone") == (true, true))
        })
        .await
    );
    channels[0].modify(|m| m.remove(id, "gone".into()));
    // Every host holds the tombstone at some point (not necessarily at
    // once: the first may forget it before the last has it).
    let mut seen = [false; 3];
    assert!(
        eventually(CONVERGE, || {
            for (i, ch) in channels.iter().enumerate() {
                seen[i] |= slot(ch, "gone") == (true, false);
            }
            let all = seen.iter().all(|s| *s);
            async move { all }
        })
        .await,
        "the removal reaches every host as a tombstone first"
    );
    assert!(
        eventually(CONVERGE, || async {
            channels.iter().all(|ch| slot(ch, "gone") == (false, false))
        })
        .await,
        "every host forgets the tombstone past the horizon"
    );
    for ch in &channels {
        assert_eq!(
            slot(ch, "kept"),
            (true, true),
            "values never expire, however old"
        );
        assert_eq!(ch.get().encode(), channels[0].get().encode());
    }
    // A late copy of the forgotten removal (a host that sends it again)
    // leaves no slot, and the states stay equal through anti-entropy.
    let mut late = LwwMap::<String, u32>::new();
    late.apply(
        "gone".into(),
        channels[0].get().entry(&"kept".to_string()).unwrap().stamp,
        None,
    );
    channels[1].update(late);
    assert_eq!(
        slot(&channels[1], "gone"),
        (false, false),
        "taken as absence"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    for ch in &channels {
        assert_eq!(slot(ch, "gone"), (false, false));
        assert_eq!(ch.get().encode(), channels[0].get().encode());
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_an_older_protocol_keeps_expiry_off_until_it_upgrades() {
    init_tracing();
    let a = node(&today(), None).await;
    let b = node(&today(), None).await;
    // Protocol 1 (release 0.3.0) hashes every tombstone: it has no expiry.
    let old_dir = temp_dir("old");
    let old = node("1-1", Some(old_dir.clone())).await;
    join(&b, &a).await;
    join(&old, &a).await;
    let nodes = [a.clone(), b.clone(), old.clone()];
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 2)
        })
        .await
    );
    let ch_a = a.channel("records", LwwMap::<String, u32>::new().expiring(HORIZON));
    let ch_b = b.channel("records", LwwMap::<String, u32>::new().expiring(HORIZON));
    let ch_old = old.channel("records", LwwMap::<String, u32>::new());
    let id = a.id();
    ch_a.modify(|m| m.set(id, "gone".into(), 1));
    ch_a.modify(|m| m.remove(id, "gone".into()));
    assert!(
        eventually(CONVERGE, || async {
            slot(&ch_old, "gone") == (true, false)
        })
        .await
    );
    tokio::time::sleep(HORIZON * 3).await;
    for ch in [&ch_a, &ch_b, &ch_old] {
        assert_eq!(
            slot(ch, "gone"),
            (true, false),
            "kept while an older member is in the mesh"
        );
    }
    // Down is not enough (it may come back with what it holds)…
    old.shutdown().await;
    tokio::time::sleep(HORIZON * 2).await;
    assert_eq!(
        slot(&ch_a, "gone"),
        (true, false),
        "kept while the older member is only down"
    );
    // …upgraded is.
    let upgraded = node(&today(), Some(old_dir.clone())).await;
    assert_eq!(upgraded.id(), old.id());
    let ch_up = upgraded.channel("records", LwwMap::<String, u32>::new().expiring(HORIZON));
    assert!(
        eventually(CONVERGE, || async {
            [&ch_a, &ch_b, &ch_up]
                .iter()
                .all(|ch| slot(ch, "gone") == (false, false))
        })
        .await,
        "forgotten once every member speaks protocol 3"
    );
    shutdown_all(&[a, b, upgraded]).await;
    std::fs::remove_dir_all(old_dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_past_the_horizon_does_not_bring_back_what_was_forgotten() {
    init_tracing();
    let seed = node(&today(), None).await;
    let host = node(&today(), None).await;
    join(&host, &seed).await;
    let nodes = [seed.clone(), host.clone()];
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 1)
        })
        .await
    );
    let at_seed = seed.channel("records", LwwMap::<String, u32>::new().expiring(HORIZON));
    let at_host = host.channel("records", LwwMap::<String, u32>::new().expiring(HORIZON));
    let (s, h) = (seed.id(), host.id());
    at_seed.modify(|m| m.set(s, "theirs".into(), 1));
    at_host.modify(|m| m.set(h, "mine".into(), 2));
    assert!(
        eventually(CONVERGE, || async {
            slot(&at_host, "theirs") == (true, true) && slot(&at_seed, "mine") == (true, true)
        })
        .await
    );
    // Cut off; meanwhile the seed removes its record and, past the
    // horizon, forgets the removal.
    seed.block_peers(&[h]);
    host.block_peers(&[s]);
    at_seed.modify(|m| m.remove(s, "theirs".into()));
    assert!(
        eventually(CONVERGE, || async {
            slot(&at_seed, "theirs") == (false, false)
        })
        .await
    );
    assert_eq!(
        slot(&at_host, "theirs"),
        (true, true),
        "the host missed the removal"
    );
    seed.unblock_all();
    host.unblock_all();
    assert!(
        eventually(CONVERGE, || async {
            nodes.iter().all(|n| up_count(n) == 1)
        })
        .await
    );
    // The host sets the others' records aside before it offers its state:
    // the removed one does not come back, its own stays.
    assert!(
        eventually(CONVERGE, || async {
            slot(&at_host, "theirs") == (false, false)
        })
        .await
    );
    // Both were out of sync past the horizon: each sets the other's
    // records aside once, and the owners' current ones come back.
    assert!(
        eventually(CONVERGE, || async {
            slot(&at_seed, "mine") == (true, true) && slot(&at_host, "mine") == (true, true)
        })
        .await,
        "the host's own record is back everywhere"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ch in [&at_seed, &at_host] {
        assert_eq!(
            slot(ch, "theirs"),
            (false, false),
            "brought back from the dead"
        );
        assert_eq!(slot(ch, "mine"), (true, true), "set aside again");
    }
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_host_knows_how_long_it_was_away() {
    init_tracing();
    let seed = node(&today(), None).await;
    let state = temp_dir("away");
    let host = node(&today(), Some(state.clone())).await;
    assert_eq!(host.away(), None, "a first start has no record of contact");
    join(&host, &seed).await;
    assert!(eventually(CONVERGE, || async { up_count(&host) == 1 }).await);
    host.shutdown().await;
    let again = node(&today(), Some(state.clone())).await;
    let away = again.away().expect("contact noted at shutdown");
    assert!(away < Duration::from_secs(60), "{away:?}");
    again.shutdown().await;
    // The same state dir a fortnight later (its contact file as a host
    // that was off that long would have left it).
    let fortnight_ago = gossip::state::now_millis() - 14 * 24 * 3600 * 1000;
    std::fs::write(state.join("contact"), fortnight_ago.to_string()).unwrap();
    let later = node(&today(), Some(state.clone())).await;
    let away = later.away().unwrap();
    assert!(away > gossip::state::expiry::DEFAULT_HORIZON, "{away:?}");
    later.shutdown().await;
    // A state dir of a build that noted no contact: its members file's
    // time stands in.
    std::fs::remove_file(state.join("contact")).unwrap();
    let month_ago = std::time::SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(state.join("members"))
        .unwrap()
        .set_modified(month_ago)
        .unwrap();
    let upgraded = node(&today(), Some(state.clone())).await;
    let away = upgraded.away().unwrap();
    assert!(away > Duration::from_secs(29 * 24 * 3600), "{away:?}");
    upgraded.shutdown().await;
    seed.shutdown().await;
    std::fs::remove_dir_all(state).ok();
}
