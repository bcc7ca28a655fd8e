//! Per-packet costs of the data plane. Run with
//! `cargo bench -p dataplane -- --warm-up-time 1 --measurement-time 3`.

use std::net::SocketAddr;
use std::time::Instant;

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use dataplane::engine::Engine;
use dataplane::keypair::Keypair;
use dataplane::pool::BufPool;
use dataplane::switch::MacTable;
use dataplane::wire::{DataHeader, HEADER_LEN};
use dataplane::{NetworkId, SessionKeys};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

const SIZES: [usize; 3] = [64, 1420, 9000];
const NET: NetworkId = NetworkId(1);
const MAC_LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// The AEAD benchmarked: `DP_BENCH_CIPHER` (`aes-256-gcm`,
/// `chacha20-poly1305`), default the fastest this CPU runs.
fn bench_cipher() -> dataplane::Cipher {
    std::env::var("DP_BENCH_CIPHER")
        .ok()
        .and_then(|name| name.parse().ok())
        .unwrap_or(dataplane::Cipher::fast_here()[0])
}

fn keys(generation: u64, flip: bool) -> SessionKeys {
    let (a, b) = ([1u8; 32], [2u8; 32]);
    if flip {
        SessionKeys {
            generation,
            local_index: 20,
            remote_index: 10,
            send_key: b,
            recv_key: a,
            cipher: bench_cipher(),
        }
    } else {
        SessionKeys {
            generation,
            local_index: 10,
            remote_index: 20,
            send_key: a,
            recv_key: b,
            cipher: bench_cipher(),
        }
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut frame = vec![0x5au8; len];
    frame[..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame
}

/// A (sender) and B (receiver) engines with one session; A has learned that
/// MAC_REMOTE is behind B so frames take the unicast path.
fn engines(now: Instant) -> (Engine, Engine) {
    let (a, b) = (Engine::new(now), Engine::new(now));
    let endpoint: SocketAddr = "198.18.0.2:7801".parse().unwrap();
    for engine in [&a, &b] {
        engine.add_network(NET);
        engine.upsert_peer(1, Some(endpoint), &[NET]);
    }
    a.install_keys(1, &keys(1, false), true, now);
    b.install_keys(1, &keys(1, true), true, now);
    // Teach A where MAC_REMOTE lives with one authenticated frame from B.
    let mut pool = BufPool::new(64, 1);
    let mut buf = pool.get();
    buf.fill_frame(&frame([0xff; 6], MAC_REMOTE, 64));
    let mut out = Vec::new();
    b.seal_frame(NET, buf, now, &mut pool, &mut out);
    a.open_datagram(&mut out[0].datagram.datagram().to_vec(), now)
        .expect("learn");
    (a, b)
}

fn ring_raw(c: &mut Criterion) {
    let algorithm = match bench_cipher() {
        dataplane::Cipher::Aes256Gcm => &AES_256_GCM,
        dataplane::Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    };
    let key = LessSafeKey::new(UnboundKey::new(algorithm, &[3; 32]).unwrap());
    let mut group = c.benchmark_group("ring_aead_seal_raw");
    for size in SIZES {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                black_box(
                    key.seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from([0u8; 20]),
                        &mut buf,
                    )
                    .unwrap(),
                )
            })
        });
    }
    group.finish();
}

fn seal(c: &mut Criterion) {
    let keypair = Keypair::new(&keys(1, false), Instant::now());
    let mut group = c.benchmark_group("seal");
    for size in SIZES {
        let mut payload = frame(MAC_REMOTE, MAC_LOCAL, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let now = Instant::now();
            b.iter(|| {
                let counter = keypair.take_send_counter(now).unwrap();
                let mut header = [0u8; HEADER_LEN];
                DataHeader {
                    receiver_index: 20,
                    counter,
                    network_id: NET.0,
                }
                .encode(&mut header);
                black_box(keypair.seal(None, counter, &header, &mut payload))
            })
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let now = Instant::now();
    let sender = Keypair::new(&keys(1, false), now);
    let receiver = Keypair::new(&keys(1, true), now);
    let mut group = c.benchmark_group("open");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter_batched_ref(
                || {
                    let counter = sender.take_send_counter(now).unwrap();
                    let mut header = [0u8; HEADER_LEN];
                    DataHeader {
                        receiver_index: 10,
                        counter,
                        network_id: NET.0,
                    }
                    .encode(&mut header);
                    let mut body = frame(MAC_REMOTE, MAC_LOCAL, size);
                    let tag = sender.seal(None, counter, &header, &mut body);
                    body.extend_from_slice(&tag);
                    (counter, header, body)
                },
                |(counter, header, body)| {
                    black_box(receiver.open(None, *counter, header, body, now).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Full transform both ways through the engines: TAP frame → switch lookup →
/// seal (A), then datagram → open → replay → MAC learn (B).
fn seal_open(c: &mut Criterion) {
    let now = Instant::now();
    let (a, b) = engines(now);
    let mut pool = BufPool::new(9216, 4);
    let mut out = Vec::with_capacity(4);
    let mut group = c.benchmark_group("transform_seal_open");
    for size in SIZES {
        let original = frame(MAC_REMOTE, MAC_LOCAL, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |bench, _| {
            bench.iter(|| {
                let mut buf = pool.get();
                buf.fill_frame(&original);
                a.seal_frame(NET, buf, now, &mut pool, &mut out);
                let mut sent = out.pop().expect("unicast datagram");
                // Reuse the buffer in place: open the sealed bytes where they are.
                let datagram_len = sent.datagram.datagram().len();
                let delivery = {
                    let bytes = sent_bytes(&mut sent.datagram, datagram_len);
                    b.open_datagram(bytes, now).expect("opens")
                };
                pool.put(sent.datagram);
                black_box(delivery)
            })
        });
    }
    group.finish();
}

/// TAP frame → sealed datagram only (switch lookup + counter + seal).
fn transform_tx(c: &mut Criterion) {
    let now = Instant::now();
    let (a, _b) = engines(now);
    let mut pool = BufPool::new(9216, 4);
    let mut out = Vec::with_capacity(4);
    let mut group = c.benchmark_group("transform_tx");
    for size in SIZES {
        let original = frame(MAC_REMOTE, MAC_LOCAL, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |bench, _| {
            bench.iter(|| {
                let mut buf = pool.get();
                // Stands in for the TAP read into the buffer.
                buf.fill_frame(&original);
                a.seal_frame(NET, buf, now, &mut pool, &mut out);
                for sent in out.drain(..) {
                    black_box(sent.datagram.datagram().len());
                    pool.put(sent.datagram);
                }
            })
        });
    }
    group.finish();
}

/// One plain TAP read → sealed datagram through `seal_tap_read` (the
/// worker's entry for networks without QoS: copy into a pool buffer,
/// switch, seal).
fn tap_read_tx(c: &mut Criterion) {
    let now = Instant::now();
    let (a, _b) = engines(now);
    let mut pool = BufPool::new(9216, 4);
    let mut out = Vec::with_capacity(4);
    let mut group = c.benchmark_group("tap_read_tx");
    for size in SIZES {
        let mut read = frame(MAC_REMOTE, MAC_LOCAL, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |bench, _| {
            bench.iter(|| {
                a.seal_tap_read(NET, &mut read, false, now, &mut pool, &mut out);
                for sent in out.drain(..) {
                    black_box(sent.datagram.datagram().len());
                    pool.put(sent.datagram);
                }
            })
        });
    }
    group.finish();
}

/// Datagram → open → replay check → MAC learning (setup seals a fresh one).
fn transform_rx(c: &mut Criterion) {
    let now = Instant::now();
    let (a, b) = engines(now);
    let mut pool = BufPool::new(9216, 4);
    let mut group = c.benchmark_group("transform_rx");
    for size in SIZES {
        let original = frame(MAC_REMOTE, MAC_LOCAL, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |bench, _| {
            bench_open(bench, &a, &b, &mut pool, &original, now)
        });
    }
    group.finish();
}

/// Opening what `a` sealed of `original`, on `b` (the sealing is setup).
fn bench_open(
    bench: &mut criterion::Bencher,
    a: &Engine,
    b: &Engine,
    pool: &mut BufPool,
    original: &[u8],
    now: Instant,
) {
    bench.iter_batched_ref(
        || {
            let mut buf = pool.get();
            buf.fill_frame(original);
            let mut out = Vec::with_capacity(1);
            a.seal_frame(NET, buf, now, pool, &mut out);
            out[0].datagram.datagram().to_vec()
        },
        |datagram| black_box(b.open_datagram(datagram, now).expect("opens")),
        BatchSize::SmallInput,
    )
}

/// Two workers sealing 64-byte frames on one engine at once, as the
/// runtime's workers do: what a lock shared by every packet costs shows here
/// (the reader count's cache line moving between cores), not in one thread.
fn transform_tx_two_workers(c: &mut Criterion) {
    let now = Instant::now();
    let (a, _b) = engines(now);
    let original = frame(MAC_REMOTE, MAC_LOCAL, 64);
    let mut group = c.benchmark_group("transform_tx_two_workers");
    group.throughput(Throughput::Elements(2));
    group.bench_function("64", |bench| {
        bench.iter_custom(|iters| {
            let start = std::sync::Barrier::new(2);
            let elapsed = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut pool = BufPool::new(9216, 4);
                            let mut out = Vec::with_capacity(4);
                            start.wait();
                            let begun = Instant::now();
                            for _ in 0..iters {
                                let mut buf = pool.get();
                                buf.fill_frame(&original);
                                a.seal_frame(NET, buf, now, &mut pool, &mut out);
                                for sent in out.drain(..) {
                                    black_box(sent.datagram.datagram().len());
                                    pool.put(sent.datagram);
                                }
                            }
                            begun.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap())
                    .max()
                    .unwrap()
            });
            elapsed
        })
    });
    group.finish();
}

/// `transform_tx`/`transform_rx` at 64 bytes when the control plane has
/// pinned 1000 MACs per network on both hosts, the frame's among them: the
/// source check and pinned lookup on top of the plain path.
fn transform_pinned(c: &mut Criterion) {
    use dataplane::{MacOwner, PinSet};
    let now = Instant::now();
    let (a, b) = engines(now);
    let pins = |ours: [u8; 6], theirs: [u8; 6]| {
        let mut macs: dataplane::NetworkPins = (0..998u32)
            .map(|i| {
                let b = i.to_be_bytes();
                (
                    [0x02, 0x77, b[0], b[1], b[2], b[3]],
                    MacOwner::Peer(1 + i % 8),
                )
            })
            .collect();
        macs.insert(ours, MacOwner::Local);
        macs.insert(theirs, MacOwner::Peer(1));
        PinSet::from([(NET, macs)])
    };
    a.set_pinned_macs(pins(MAC_LOCAL, MAC_REMOTE));
    b.set_pinned_macs(pins(MAC_REMOTE, MAC_LOCAL));
    let mut pool = BufPool::new(9216, 4);
    let mut out = Vec::with_capacity(4);
    let original = frame(MAC_REMOTE, MAC_LOCAL, 64);
    let mut group = c.benchmark_group("transform_pinned");
    group.throughput(Throughput::Bytes(64));
    group.bench_function("tx_64", |bench| {
        bench.iter(|| {
            let mut buf = pool.get();
            buf.fill_frame(&original);
            a.seal_frame(NET, buf, now, &mut pool, &mut out);
            assert_eq!(out.len(), 1);
            for sent in out.drain(..) {
                black_box(sent.datagram.datagram().len());
                pool.put(sent.datagram);
            }
        })
    });
    group.bench_function("rx_64", |bench| {
        bench_open(bench, &a, &b, &mut pool, &original, now)
    });
    group.finish();
}

fn switch_lookup(c: &mut Criterion) {
    let now = Instant::now();
    let table = MacTable::new(now);
    for i in 0..1000u32 {
        let b = i.to_be_bytes();
        table.learn([0x02, 0, b[0], b[1], b[2], b[3]], i % 16, now);
    }
    let probe = [0x02, 0, 0, 0, 1, 0xf4]; // entry 500
    c.bench_function("switch_lookup_1000_macs", |b| {
        b.iter(|| black_box(table.lookup(black_box(&probe), now)))
    });
}

/// The relay's per-packet cost (host C): verify the envelope from A under
/// A↔C keys and the replay window, re-tag it for B under C↔B keys, queue
/// it. The inner datagram is copied once and never opened. A's envelope
/// is always tagged over every byte; the one to B over every byte too
/// (`full`: B is of protocol 1) or over the headers, length and inner tag
/// (`compact`: `ENVELOPE_FLAG_COMPACT`, B of protocol 2).
fn relay_forward(c: &mut Criterion) {
    use dataplane::wire::{
        envelope_aad, RelayHeader, COMPACT_AAD_LEN, MSG_TYPE_DATA, MSG_TYPE_RELAY, OVERHEAD,
        RELAY_HEADER_LEN,
    };
    let now = Instant::now();
    let mut group = c.benchmark_group("relay_forward");
    for compact in [false, true] {
        let relay = Engine::new(now);
        let (peer_a, peer_b) = (1, 2);
        let (tag_a, tag_b) = ([0xa; 8], [0xb; 8]);
        let a_to_c = Keypair::new(&keys(1, false), now);
        relay.upsert_peer(peer_a, Some(SocketAddr::from(([198, 18, 0, 1], 7801))), &[]);
        relay.upsert_peer(peer_b, Some(SocketAddr::from(([198, 18, 0, 2], 7801))), &[]);
        relay.install_keys(peer_a, &keys(1, true), true, now);
        let mut c_to_b = keys(1, true);
        c_to_b.local_index = 30;
        relay.install_keys(peer_b, &c_to_b, true, now);
        relay.set_peer_tag(peer_a, tag_a);
        relay.set_peer_tag(peer_b, tag_b);
        relay.set_peer_compact_envelopes(peer_b, compact);
        let mut pool = BufPool::new(9216, 64);
        let mut out = Vec::with_capacity(1);
        let form = if compact { "compact" } else { "full" };
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(form, size), &size, |b, &size| {
                b.iter_batched_ref(
                    || {
                        // An envelope as A builds it, around an opaque sealed datagram.
                        let counter = a_to_c.take_send_counter(now).unwrap();
                        let mut envelope = vec![0x5au8; RELAY_HEADER_LEN + size + OVERHEAD];
                        RelayHeader {
                            msg_type: MSG_TYPE_RELAY,
                            compact: false,
                            receiver_index: 20,
                            counter,
                            host: tag_b,
                        }
                        .encode(&mut envelope);
                        envelope[RELAY_HEADER_LEN] = MSG_TYPE_DATA;
                        envelope[RELAY_HEADER_LEN + 1] = 1;
                        let mut scratch = [0u8; COMPACT_AAD_LEN];
                        let tag = a_to_c.tag_only(counter, envelope_aad(&envelope, &mut scratch));
                        envelope.extend_from_slice(&tag);
                        envelope
                    },
                    |envelope| {
                        let source = SocketAddr::from(([198, 18, 0, 1], 7801));
                        relay
                            .receive(envelope, source, now, &mut pool, &mut out)
                            .unwrap();
                        for sent in out.drain(..) {
                            pool.put(black_box(sent).datagram);
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// A relay envelope's tag (empty plaintext, the envelope as associated
/// data): `ring_aad` is how `Keypair::tag_only` computed it before (ring
/// hashes associated data a block per call), `keypair` how it does now
/// (eight blocks per reduction under AES-256-GCM; the same bytes);
/// `aes_gcm_crate` the same tag from RustCrypto's `aes-gcm`, for comparison.
fn envelope_tag(c: &mut Criterion) {
    let algorithm = match bench_cipher() {
        dataplane::Cipher::Aes256Gcm => &AES_256_GCM,
        dataplane::Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    };
    let ring_key = LessSafeKey::new(UnboundKey::new(algorithm, &[1; 32]).unwrap());
    let keypair = Keypair::new(&keys(1, false), Instant::now());
    let mut group = c.benchmark_group("envelope_tag");
    for size in SIZES {
        let envelope = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ring_aad", size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let nonce = dataplane::wire::nonce_bytes(counter);
                black_box(
                    ring_key
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&envelope[..]),
                            &mut [],
                        )
                        .unwrap(),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("aes_gcm_crate", size), &size, |b, _| {
            use aes_gcm::aead::{AeadInPlace, KeyInit};
            let cipher = aes_gcm::Aes256Gcm::new(&[1u8; 32].into());
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let nonce = dataplane::wire::nonce_bytes(counter);
                black_box(
                    cipher
                        .encrypt_in_place_detached(&nonce.into(), &envelope, &mut [])
                        .unwrap(),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("keypair", size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                black_box(keypair.tag_only(counter, &envelope))
            })
        });
    }
    group.finish();
}

fn sent_bytes(buf: &mut dataplane::pool::PacketBuf, len: usize) -> &mut [u8] {
    buf.datagram_mut(len)
}

criterion_group!(
    benches,
    ring_raw,
    seal,
    open,
    seal_open,
    transform_tx,
    tap_read_tx,
    transform_rx,
    transform_tx_two_workers,
    transform_pinned,
    switch_lookup,
    relay_forward,
    envelope_tag
);
criterion_main!(benches);
