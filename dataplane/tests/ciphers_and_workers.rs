//! Sans-IO tests of what the second hot-path round added: per-peer cipher
//! choice (both AES, mixed, forced ChaCha, a mismatch fails closed) and
//! several workers sealing and opening with one keypair at once, across a
//! rekey, without a nonce reused or a datagram accepted twice.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use dataplane::engine::Engine;
use dataplane::pool::BufPool;
use dataplane::wire::DataHeader;
use dataplane::{Cipher, DropReason, NetworkId, SessionKeys};

const NET: NetworkId = NetworkId(7);
const PEER_A: u32 = 1;
const PEER_B: u32 = 2;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

fn endpoint(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, 1], port))
}

/// Session keys for generation `g`: (A's, B's), each side with its cipher.
fn session(g: u64, cipher_a: Cipher, cipher_b: Cipher) -> (SessionKeys, SessionKeys) {
    let (a_to_b, b_to_a) = ([g as u8; 32], [0x80 | g as u8; 32]);
    let (index_a, index_b) = (1000 + g as u32, 2000 + g as u32);
    (
        SessionKeys {
            generation: g,
            local_index: index_a,
            remote_index: index_b,
            send_key: a_to_b,
            recv_key: b_to_a,
            cipher: cipher_a,
        },
        SessionKeys {
            generation: g,
            local_index: index_b,
            remote_index: index_a,
            send_key: b_to_a,
            recv_key: a_to_b,
            cipher: cipher_b,
        },
    )
}

fn pair(cipher_a: Cipher, cipher_b: Cipher) -> (Engine, Engine, Instant) {
    let t0 = Instant::now();
    let (a, b) = (Engine::new(t0), Engine::new(t0));
    a.add_network(NET);
    b.add_network(NET);
    a.upsert_peer(PEER_B, Some(endpoint(2)), &[NET]);
    b.upsert_peer(PEER_A, Some(endpoint(1)), &[NET]);
    let (keys_a, keys_b) = session(1, cipher_a, cipher_b);
    a.install_keys(PEER_B, &keys_a, true, t0);
    b.install_keys(PEER_A, &keys_b, true, t0);
    (a, b, t0)
}

/// An Ethernet frame from A to B whose payload carries `tag`.
fn frame(tag: u64, len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; len.max(22)];
    frame[..6].copy_from_slice(&MAC_B);
    frame[6..12].copy_from_slice(&MAC_A);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    frame[14..22].copy_from_slice(&tag.to_be_bytes());
    frame
}

/// A seals one frame for B; returns the datagram.
fn seal(engine: &Engine, pool: &mut BufPool, frame: &[u8], now: Instant) -> Vec<u8> {
    let mut buf = pool.get();
    assert!(buf.fill_frame(frame));
    let mut out = Vec::new();
    engine.seal_frame(NET, buf, now, pool, &mut out);
    assert_eq!(out.len(), 1, "one datagram per frame");
    let datagram = out[0].datagram.datagram().to_vec();
    for o in out {
        pool.put(o.datagram);
    }
    datagram
}

#[test]
fn both_aes_round_trip_and_report_the_cipher() {
    let (a, b, now) = pair(Cipher::Aes256Gcm, Cipher::Aes256Gcm);
    let mut pool = BufPool::new(9216, 4);
    for len in [60, 1422 + 14, 9014] {
        let original = frame(len as u64, len);
        let mut datagram = seal(&a, &mut pool, &original, now);
        let delivery = b.open_datagram(&mut datagram, now).expect("opens");
        assert_eq!(&datagram[delivery.frame], &original[..]);
    }
    assert_eq!(a.stats(now).peers[&PEER_B].cipher, Some(Cipher::Aes256Gcm));
    assert_eq!(b.stats(now).peers[&PEER_A].cipher, Some(Cipher::Aes256Gcm));
}

#[test]
fn chacha_pairs_round_trip_forced_or_mixed() {
    // Forced portable, or a mixed pair: the control plane hands both ends
    // ChaCha20-Poly1305 keys.
    let (a, b, now) = pair(Cipher::ChaCha20Poly1305, Cipher::ChaCha20Poly1305);
    let mut pool = BufPool::new(9216, 4);
    let original = frame(1, 1436);
    let mut datagram = seal(&a, &mut pool, &original, now);
    let delivery = b.open_datagram(&mut datagram, now).expect("opens");
    assert_eq!(&datagram[delivery.frame], &original[..]);
    assert_eq!(
        b.stats(now).peers[&PEER_A].cipher,
        Some(Cipher::ChaCha20Poly1305)
    );
}

#[test]
fn ends_that_disagree_on_the_cipher_open_nothing() {
    // What a downgrade that got past the key derivation would look like:
    // same keys, different AEADs. Every datagram fails authentication.
    for (ca, cb) in [
        (Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305),
        (Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm),
    ] {
        let (a, b, now) = pair(ca, cb);
        let mut pool = BufPool::new(9216, 4);
        let mut datagram = seal(&a, &mut pool, &frame(1, 200), now);
        assert_eq!(b.open_datagram(&mut datagram, now), Err(DropReason::BadTag));
        assert_eq!(b.stats(now).dropped(DropReason::BadTag), 1);
    }
}

#[test]
fn restricted_networks_work_under_aes_too() {
    let (a, b, now) = pair(Cipher::Aes256Gcm, Cipher::Aes256Gcm);
    a.set_network_secret(NET, Some([9; 32]));
    b.set_network_secret(NET, Some([9; 32]));
    let mut pool = BufPool::new(9216, 4);
    let original = frame(5, 300);
    let mut datagram = seal(&a, &mut pool, &original, now);
    let delivery = b.open_datagram(&mut datagram, now).expect("opens");
    assert_eq!(&datagram[delivery.frame], &original[..]);
    b.set_network_secret(NET, Some([8; 32]));
    let mut datagram = seal(&a, &mut pool, &original, now);
    assert_eq!(b.open_datagram(&mut datagram, now), Err(DropReason::BadTag));
}

/// Four sealing workers and four opening workers share one keypair (and,
/// half-way, a rekey to a second one). Every datagram is sealed under a
/// distinct (keypair, counter) — no nonce reuse — and opens exactly once;
/// every one of them delivered a second time is refused as a replay.
#[test]
fn workers_share_one_keypair_across_a_rekey() {
    const WORKERS: usize = 4;
    const PER_WORKER: u64 = 5_000;
    let (a, b, now) = pair(Cipher::Aes256Gcm, Cipher::Aes256Gcm);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let sealed: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let halfway = Arc::new(Barrier::new(WORKERS + 1));
    let sealers: Vec<_> = (0..WORKERS as u64)
        .map(|worker| {
            let (a, sealed, halfway) = (a.clone(), sealed.clone(), halfway.clone());
            std::thread::spawn(move || {
                let mut pool = BufPool::new(9216, 4);
                let mut mine = Vec::new();
                for i in 0..PER_WORKER {
                    if i == PER_WORKER / 2 {
                        halfway.wait(); // the rekey happens here
                        halfway.wait();
                    }
                    mine.push(seal(&a, &mut pool, &frame(worker << 32 | i, 120), now));
                }
                sealed.lock().unwrap().extend(mine);
            })
        })
        .collect();
    halfway.wait();
    // Rekey as the control plane does: B can receive with generation 2
    // first, then A switches to it (the previous keypair still opens).
    let (keys_a, keys_b) = session(2, Cipher::Aes256Gcm, Cipher::Aes256Gcm);
    b.install_keys(PEER_A, &keys_b, false, now);
    a.install_keys(PEER_B, &keys_a, true, now);
    halfway.wait();
    for sealer in sealers {
        sealer.join().unwrap();
    }
    let datagrams = Arc::try_unwrap(sealed).unwrap().into_inner().unwrap();
    assert_eq!(datagrams.len() as u64, WORKERS as u64 * PER_WORKER);
    let nonces: HashSet<(u32, u64)> = datagrams
        .iter()
        .map(|d| {
            let header = DataHeader::parse(d).expect("header");
            (header.receiver_index, header.counter)
        })
        .collect();
    assert_eq!(nonces.len(), datagrams.len(), "a nonce was used twice");
    let generations: HashSet<u32> = nonces.iter().map(|(index, _)| *index).collect();
    assert_eq!(generations.len(), 2, "both keypairs sealed");

    // Open every datagram twice, the copy on another worker, all workers at
    // once. They advance in lockstep (a barrier every STEP datagrams) so
    // none runs further ahead than the replay window, as on a real host
    // where the workers drain their queues at the same time.
    const STEP: usize = 256;
    let mut ordered = datagrams.clone();
    ordered.sort_by_key(|d| {
        let header = DataHeader::parse(d).expect("header");
        (header.receiver_index, header.counter)
    });
    let mut chunks = vec![Vec::new(); WORKERS];
    for (i, datagram) in ordered.iter().flat_map(|d| [d, d]).enumerate() {
        chunks[i % WORKERS].push(datagram.clone());
    }
    let lockstep = Arc::new(Barrier::new(WORKERS));
    let openers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (b, lockstep) = (b.clone(), lockstep.clone());
            std::thread::spawn(move || {
                let mut tags = Vec::new();
                let mut replays = 0;
                for (i, mut datagram) in chunk.into_iter().enumerate() {
                    if i % STEP == 0 {
                        lockstep.wait();
                    }
                    match b.open_datagram(&mut datagram, now) {
                        Ok(delivery) => {
                            let body = &datagram[delivery.frame];
                            tags.push(u64::from_be_bytes(body[14..22].try_into().unwrap()));
                        }
                        Err(DropReason::Replayed) => replays += 1,
                        Err(other) => panic!("unexpected drop {other:?}"),
                    }
                }
                (tags, replays)
            })
        })
        .collect();
    let mut delivered = HashSet::new();
    let mut replays = 0;
    for opener in openers {
        let (tags, r) = opener.join().unwrap();
        replays += r;
        for tag in tags {
            assert!(delivered.insert(tag), "frame {tag:#x} delivered twice");
        }
    }
    assert_eq!(
        delivered.len(),
        datagrams.len(),
        "every frame delivered once"
    );
    assert_eq!(replays, datagrams.len(), "every copy refused");
    // Generation 2 was promoted by its first packet.
    assert_eq!(b.stats(now).peers[&PEER_A].current_generation, Some(2));
}
