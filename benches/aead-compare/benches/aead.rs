//! Seal-in-place throughput of three ChaCha20-Poly1305 implementations at the
//! sizes the data plane cares about: a minimal frame and a full overlay MTU frame.
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 2] = [64, 1420];
const KEY: [u8; 32] = [7; 32];
const AAD: [u8; 20] = [1; 20];

fn bench_ring(c: &mut Criterion) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).unwrap());
    let mut group = c.benchmark_group("seal/ring");
    for size in SIZES {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut buf)
                    .unwrap();
                black_box(tag)
            })
        });
    }
    group.finish();
}

fn bench_aws_lc(c: &mut Criterion) {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).unwrap());
    let mut group = c.benchmark_group("seal/aws-lc-rs");
    for size in SIZES {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut buf)
                    .unwrap();
                black_box(tag)
            })
        });
    }
    group.finish();
}

fn bench_rustcrypto(c: &mut Criterion) {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&KEY));
    let mut group = c.benchmark_group("seal/rustcrypto");
    for size in SIZES {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            let mut counter = 0u64;
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                let tag = cipher
                    .encrypt_in_place_detached(Nonce::from_slice(&nonce), &AAD, &mut buf)
                    .unwrap();
                black_box(tag)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ring, bench_aws_lc, bench_rustcrypto);
criterion_main!(benches);
