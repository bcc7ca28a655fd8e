//! `meshctl peer rm` revokes: the mesh secret rotates, the remaining hosts
//! learn the new one, and the removed host cannot come back with the old
//! token, even with a fresh identity. Run as root.

use integration::{is_root, unique_prefix, wait_for, Lab};
use nix::sys::signal::Signal;
use std::time::Duration;

#[test]
fn a_removed_host_with_a_fresh_identity_and_the_old_token_is_refused() {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return;
    }
    let mut lab = Lab::new(&unique_prefix("revo"), 3).expect("building the lab");
    lab.start_mesh().unwrap();
    let old = lab.meshctl(0, &["token"]).unwrap().trim().to_string();
    lab.stop_daemon(2, Signal::SIGKILL).unwrap();
    wait_for(Duration::from_secs(15), || {
        lab.meshctl(0, &["peer", "rm", "h3"])
    })
    .unwrap();
    let new = lab.meshctl(0, &["token"]).unwrap().trim().to_string();
    assert_ne!(new, old, "peer rm rotates the secret");
    wait_for(Duration::from_secs(10), || {
        let t = lab.meshctl(1, &["token"])?.trim().to_string();
        anyhow::ensure!(t == new, "h2 still has the old secret");
        Ok(())
    })
    .unwrap();

    // The removed host comes back as a stranger: new identity, old token.
    std::fs::remove_file(lab.hosts[2].state_dir.join("identity.key")).unwrap();
    lab.start_daemon(2).unwrap();
    let seed = lab.hosts[0].control_address();
    let err = lab
        .meshctl(2, &["join", &seed, "--token", &old])
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret") || err.contains("token"), "{err}");
    let s = lab.status(0).unwrap();
    assert!(
        s.peers.iter().all(|p| p.name != "h3"),
        "h3 is back: {:?}",
        s.peers
    );

    // `token rotate` on its own, from another host: everyone follows.
    let rotated = lab
        .meshctl(1, &["token", "rotate"])
        .unwrap()
        .trim()
        .to_string();
    wait_for(Duration::from_secs(10), || {
        let t = lab.meshctl(0, &["token"])?.trim().to_string();
        anyhow::ensure!(t == rotated, "h1 did not follow the rotation");
        Ok(())
    })
    .unwrap();
}
