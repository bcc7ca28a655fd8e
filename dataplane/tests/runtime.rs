//! The async driver without root: UDP on loopback only, no TAP.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use dataplane::{Dataplane, DropReason, Error, NetworkId, Options, SessionKeys};

fn assert_handle_traits<T: Clone + Send + Sync + 'static>() {}

#[test]
fn handle_is_cheap_clone_send_sync() {
    assert_handle_traits::<Dataplane>();
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    assert!(matches!(
        Dataplane::start("127.0.0.1:0".parse().unwrap(), Options::default()),
        Err(Error::NoRuntime)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_on_the_socket_are_counted_by_reason() {
    let dataplane =
        Dataplane::start("127.0.0.1:0".parse().unwrap(), Options::default()).expect("start");
    let target = dataplane.local_addr();
    assert_ne!(target.port(), 0);
    dataplane.install_keys(
        9,
        SessionKeys {
            generation: 1,
            local_index: 77,
            remote_index: 88,
            send_key: [1; 32],
            recv_key: [2; 32],
            cipher: dataplane::Cipher::default(),
        },
        true,
    );

    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged_tag = vec![1u8, 1, 0, 0, 0, 0, 0, 77];
    forged_tag.resize(200, 0xee);
    let mut unknown_index = forged_tag.clone();
    unknown_index[7] = 78;
    let mut bad_version = forged_tag.clone();
    bad_version[1] = 9;
    let mut unknown_type = forged_tag.clone();
    unknown_type[0] = 4;
    let cases: [(&[u8], DropReason); 5] = [
        (&[1, 1, 0], DropReason::Short),
        (&forged_tag, DropReason::BadTag),
        (&unknown_index, DropReason::UnknownIndex),
        (&bad_version, DropReason::BadVersion),
        (&unknown_type, DropReason::UnknownType),
    ];
    for (datagram, _) in &cases {
        attacker.send_to(datagram, target).unwrap();
    }
    // Wait (bounded) for the receive task to process all five.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = dataplane.stats();
        if cases.iter().all(|(_, reason)| stats.dropped(*reason) == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drops not counted: {:?}",
            stats.drops
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = dataplane.stats();
    assert_eq!(stats.peers[&9].current_generation, Some(1));
    assert_eq!(stats.peers[&9].endpoint, None);

    dataplane.upsert_peer(9, "127.0.0.1:9".parse().unwrap(), &[NetworkId(1)]);
    assert_eq!(
        dataplane.stats().peers[&9].endpoint,
        Some("127.0.0.1:9".parse().unwrap())
    );
    dataplane.remove_peer(9);
    assert!(dataplane.stats().peers.is_empty());
    dataplane.shutdown();
    dataplane.shutdown(); // idempotent
    assert!(matches!(
        dataplane.add_network(NetworkId(1), "dptx0"),
        Err(Error::ShutDown)
    ));
}
