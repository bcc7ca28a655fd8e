//! Tombstone expiry in the real daemon: a container's endpoint record whose
//! removal was forgotten (expired) and that a host which missed the
//! removal sends again is removed again by its owner, and its labels and
//! DNS name go with it (PROTOCOL.md "Tombstones", docs/scale.md §8).
//!
//! Expiry itself takes a week; the test gives the two hosts the state
//! directories they would have after it: the owner without the tombstone,
//! the other host with its copy from before the removal.

use std::path::Path;
use std::time::Duration;

use gossip::{LwwMap, Mergeable};
use integration::*;
use mesh_model::records::{EndpointRecord, ENDPOINTS_CHANNEL};
use nix::sys::signal::Signal;

fn snapshot(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("channels").join(ENDPOINTS_CHANNEL)
}

fn read(path: &Path) -> LwwMap<String, EndpointRecord> {
    LwwMap::decode(&std::fs::read(path).unwrap()).unwrap()
}

fn names_ip(lab: &Lab, host: usize, ip: &str) -> anyhow::Result<bool> {
    let records = lab.api(host, |c| async move { c.dns().await })?;
    Ok(records.iter().any(|r| r.ip.split('/').next() == Some(ip)))
}

#[test]
fn a_removed_record_sent_again_after_its_removal_expired_is_removed_again() {
    let Some(mut lab) = test_mesh("exp", 2) else {
        return;
    };
    lab.meshctl(0, &["network", "create", "web", "--subnet", "10.88.0.0/24"])
        .unwrap();
    let ns = lab.add_container("c1").unwrap();
    let a = lab.attach_netns(0, &ns, "web", &["--name", "c1"]);
    let ip = a.ip.split('/').next().unwrap().to_string();
    wait_for(Duration::from_secs(10), || {
        anyhow::ensure!(names_ip(&lab, 1, &ip)?, "h2 has no record of c1 yet");
        Ok(())
    })
    .unwrap();
    let key = format!("web/{ip}");
    let other = snapshot(&lab.hosts[1].state_dir);
    let before_removal = wait_for(Duration::from_secs(10), || {
        let map = read(&other);
        anyhow::ensure!(map.get(&key).is_some(), "not saved on h2 yet");
        Ok(map)
    })
    .unwrap();

    lab.meshctl(
        0,
        &["detach", &format!("/run/netns/{ns}"), "--network", "web"],
    )
    .unwrap();
    wait_for(Duration::from_secs(10), || {
        anyhow::ensure!(!names_ip(&lab, 1, &ip)?, "h2 still names c1");
        Ok(())
    })
    .unwrap();
    lab.stop_daemon(0, Signal::SIGTERM).unwrap();
    lab.stop_daemon(1, Signal::SIGTERM).unwrap();

    // A week on: the owner has forgotten the removal; h2 missed it and
    // still holds the record as it was.
    let own = snapshot(&lab.hosts[0].state_dir);
    let mut forgotten = read(&own);
    assert!(forgotten.entry(&key).is_some_and(|e| e.is_tombstone()));
    assert_eq!(forgotten.retain(|k, _| *k != key), 1);
    std::fs::write(&own, forgotten.encode()).unwrap();
    std::fs::write(&other, before_removal.encode()).unwrap();

    // The owner first, so that its start-up reconcile is over (and has
    // nothing to remove) when the old record arrives.
    lab.start_daemon(0).unwrap();
    wait_for(Duration::from_secs(10), || lab.status(0)).unwrap();
    lab.start_daemon(1).unwrap();
    // The owner takes the old record back from h2 (it holds no slot for
    // it), sees that nothing of its own backs it, and removes it again.
    wait_for(Duration::from_secs(20), || {
        for host in 0..2 {
            anyhow::ensure!(!names_ip(&lab, host, &ip)?, "host {host} still names c1");
        }
        anyhow::ensure!(
            read(&own).entry(&key).is_some_and(|e| e.is_tombstone()),
            "the owner wrote no new removal"
        );
        Ok(())
    })
    .unwrap_or_else(|e| {
        lab.dump_logs();
        panic!("{e:#}")
    });
    let log = std::fs::read_to_string(&lab.hosts[0].log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("nothing here backs") && l.contains(&key)),
        "the owner's log does not show the removal of {key}"
    );
}
