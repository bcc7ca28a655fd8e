//! AES-256-GCM tags over associated data alone, the relay envelope's tag
//! ([`crate::keypair::Keypair::tag_only`]): the same 16 bytes ring
//! computes for an empty plaintext, 3.4× faster at 1420 bytes
//! (`cargo bench -p dataplane -- envelope_tag`).
//!
//! Why: ring hashes associated data one 16-byte block per GHASH call, and
//! a relayed datagram takes four tags over its whole length (origin, relay
//! twice, destination): that GHASH was a third of the daemons' CPU in the
//! relayed benchmark's profile. Here GHASH takes eight blocks per reduction
//! (powers of H, carry-less multiply).
//!
//! GCM (NIST SP 800-38D) with an empty plaintext: tag = GHASH_H(A ‖ pad ‖
//! [len(A)]₆₄ ‖ [0]₆₄) ⊕ E_K(J0), H = E_K(0¹²⁸), J0 = nonce ‖ 0³¹1. GHASH is
//! computed as POLYVAL on byte-reversed blocks with H·x (RFC 8452
//! appendix A), whose field multiplication needs no bit reflection.
//! x86_64 with PCLMULQDQ and SSSE3 only; elsewhere the keypair keeps using ring.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes256;

use crate::wire::TAG_LEN;

/// Tags under one AES-256 key.
pub(crate) struct GcmTagger {
    aes: Aes256,
    /// POLYVAL's key H·x and its powers H¹..H⁸ (POLYVAL products), as
    /// little-endian u128s.
    powers: [u128; POWERS],
}

/// Blocks hashed per reduction.
const POWERS: usize = 8;

impl GcmTagger {
    /// None where the CPU has no carry-less multiply (ring is used then).
    pub fn new(key: &[u8; 32]) -> Option<GcmTagger> {
        if !clmul_available() {
            return None;
        }
        let aes = Aes256::new(key.into());
        let mut h = [0u8; 16].into();
        aes.encrypt_block(&mut h);
        let h: [u8; 16] = h.into();
        let h1 = mulx(u128::from_be_bytes(h));
        let mut powers = [h1; POWERS];
        for i in 1..POWERS {
            // SAFETY: clmul_available() checked the CPU features.
            powers[i] = unsafe { clmul::dot(powers[i - 1], h1) };
        }
        Some(GcmTagger { aes, powers })
    }

    /// The GCM tag of an empty plaintext with associated data `aad`.
    pub fn tag(&self, nonce: &[u8; 12], aad: &[u8]) -> [u8; TAG_LEN] {
        // SAFETY: a GcmTagger exists only where clmul_available() held.
        let hash = unsafe { clmul::ghash(&self.powers, aad) };
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let mut mask = j0.into();
        self.aes.encrypt_block(&mut mask);
        let mask: [u8; 16] = mask.into();
        (hash ^ u128::from_be_bytes(mask)).to_be_bytes()
    }

    /// Whether `tag` is [`Self::tag`]'s, compared in constant time.
    pub fn verify(&self, nonce: &[u8; 12], aad: &[u8], tag: &[u8; TAG_LEN]) -> bool {
        use subtle::ConstantTimeEq;
        self.tag(nonce, aad).ct_eq(tag).into()
    }
}

fn clmul_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Multiplication by x in POLYVAL's field (RFC 8452 appendix A): turns
/// GHASH's H (byte-reversed) into POLYVAL's key.
fn mulx(v: u128) -> u128 {
    let carry = v >> 127;
    (v << 1) ^ carry ^ (carry << 127) ^ (carry << 126) ^ (carry << 121)
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::*;

    use super::POWERS;

    fn load(v: u128) -> __m128i {
        // SAFETY: u128 and __m128i have the same size; any bits are valid.
        unsafe { std::mem::transmute::<u128, __m128i>(v) }
    }

    fn store(v: __m128i) -> u128 {
        // SAFETY: as in `load`.
        unsafe { std::mem::transmute::<__m128i, u128>(v) }
    }

    /// The 16 bytes at `bytes` as POLYVAL sees a GHASH block: reversed.
    #[inline]
    #[target_feature(enable = "ssse3")]
    unsafe fn block(bytes: &[u8; 16]) -> __m128i {
        let reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        _mm_shuffle_epi8(_mm_loadu_si128(bytes.as_ptr().cast()), reverse)
    }

    /// A short last block, zero-padded.
    fn padded(bytes: &[u8]) -> u128 {
        let mut b = [0u8; 16];
        b[..bytes.len()].copy_from_slice(bytes);
        u128::from_be_bytes(b)
    }

    /// The unreduced product a·b, as Karatsuba's three 128-bit terms
    /// (low, high, middle with low and high already folded in): sums of
    /// these reduce to the sum of the products.
    #[inline]
    #[target_feature(enable = "pclmulqdq")]
    unsafe fn product(a: __m128i, b: __m128i) -> [__m128i; 3] {
        let a_mid = _mm_xor_si128(a, _mm_shuffle_epi32(a, 0x0E));
        let b_mid = _mm_xor_si128(b, _mm_shuffle_epi32(b, 0x0E));
        let low = _mm_clmulepi64_si128(a, b, 0x00);
        let high = _mm_clmulepi64_si128(a, b, 0x11);
        let mid = _mm_clmulepi64_si128(a_mid, b_mid, 0x00);
        [low, high, _mm_xor_si128(mid, _mm_xor_si128(low, high))]
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq")]
    unsafe fn add(acc: &mut [__m128i; 3], p: [__m128i; 3]) {
        for (a, p) in acc.iter_mut().zip(p) {
            *a = _mm_xor_si128(*a, p);
        }
    }

    /// POLYVAL's reduction of a product: a·b·x⁻¹²⁸ (as RustCrypto's
    /// polyval crate, 0.6, does it).
    #[inline]
    #[target_feature(enable = "pclmulqdq")]
    unsafe fn reduce([t0, t1, t2]: [__m128i; 3]) -> __m128i {
        let v0 = t0;
        let v1 = _mm_xor_si128(_mm_shuffle_epi32(t0, 0x0E), t2);
        let v2 = _mm_xor_si128(t1, _mm_shuffle_epi32(t2, 0x0E));
        let v3 = _mm_shuffle_epi32(t1, 0x0E);
        let fold_right = |v: __m128i| {
            _mm_xor_si128(
                _mm_xor_si128(v, _mm_srli_epi64(v, 1)),
                _mm_xor_si128(_mm_srli_epi64(v, 2), _mm_srli_epi64(v, 7)),
            )
        };
        let fold_left = |v: __m128i| {
            _mm_xor_si128(
                _mm_slli_epi64(v, 63),
                _mm_xor_si128(_mm_slli_epi64(v, 62), _mm_slli_epi64(v, 57)),
            )
        };
        let v2 = _mm_xor_si128(v2, fold_right(v0));
        let v1 = _mm_xor_si128(v1, fold_left(v0));
        let v3 = _mm_xor_si128(v3, fold_right(v1));
        let v2 = _mm_xor_si128(v2, fold_left(v1));
        _mm_unpacklo_epi64(v2, v3)
    }

    /// POLYVAL's field product a·b·x⁻¹²⁸.
    #[target_feature(enable = "pclmulqdq")]
    pub(super) unsafe fn dot(a: u128, b: u128) -> u128 {
        store(reduce(product(load(a), load(b))))
    }

    /// GHASH_H(aad ‖ pad ‖ lengths) for an empty ciphertext, as a u128
    /// whose big-endian bytes are the hash. `powers` = H¹..H⁸ (POLYVAL).
    #[target_feature(enable = "pclmulqdq,ssse3")]
    pub(super) unsafe fn ghash(powers: &[u128; POWERS], aad: &[u8]) -> u128 {
        let h = powers.map(load);
        let mut y = _mm_setzero_si128();
        let mut runs = aad.chunks_exact(16 * POWERS);
        for run in &mut runs {
            // y' = (y + x₁)·H⁸ + x₂·H⁷ + … + x₈·H, reduced once.
            let mut blocks = run
                .chunks_exact(16)
                .map(|b| block(b.try_into().expect("16")));
            let first = blocks.next().expect("POWERS blocks");
            let mut acc = product(_mm_xor_si128(y, first), h[POWERS - 1]);
            for (x, h) in blocks.zip(h[..POWERS - 1].iter().rev()) {
                add(&mut acc, product(x, *h));
            }
            y = reduce(acc);
        }
        let rest = runs.remainder();
        let mut full = rest.chunks_exact(16);
        for x in &mut full {
            y = reduce(product(
                _mm_xor_si128(y, block(x.try_into().expect("16"))),
                h[0],
            ));
        }
        let lengths = ((aad.len() as u64 as u128) * 8) << 64;
        let tail = Some(full.remainder()).filter(|t| !t.is_empty()).map(padded);
        for x in tail.into_iter().chain(std::iter::once(lengths)) {
            y = reduce(product(_mm_xor_si128(y, load(x)), h[0]));
        }
        store(y)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod clmul {
    pub(super) unsafe fn dot(_: u128, _: u128) -> u128 {
        unreachable!("GcmTagger::new refuses CPUs without PCLMULQDQ")
    }
    pub(super) unsafe fn ghash(_: &[u128; super::POWERS], _: &[u8]) -> u128 {
        unreachable!("GcmTagger::new refuses CPUs without PCLMULQDQ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    fn ring_tag(key: &[u8; 32], nonce: [u8; 12], aad: &[u8]) -> [u8; 16] {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut [],
            )
            .unwrap();
        tag.as_ref().try_into().unwrap()
    }

    /// Where the CPU has the instructions, the fast path must be the one
    /// taken (a broken check would fall back to ring with every test green).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_clmul_path_is_taken_where_the_cpu_has_it() {
        let has = std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("ssse3");
        assert_eq!(GcmTagger::new(&[0; 32]).is_some(), has);
    }

    #[test]
    fn tags_are_rings_for_every_length() {
        let Some(_) = GcmTagger::new(&[0; 32]) else {
            return eprintln!("no PCLMULQDQ here: ring is used, nothing to compare");
        };
        let data: Vec<u8> = (0..9400u32).map(|i| (i * 131 + 7) as u8).collect();
        // Every tail of the eight-block loop, runs with no remainder, and
        // the largest envelope (a 9248-byte TAP frame and its headers).
        let lengths = (0..=400)
            .chain(1392..=1500)
            .chain([2048, 2200, 4096, 9308, 9400]);
        for (k, len) in lengths.enumerate() {
            let key: [u8; 32] = std::array::from_fn(|i| (i * 17 + k) as u8);
            let nonce: [u8; 12] = std::array::from_fn(|i| (i + len) as u8);
            let tagger = GcmTagger::new(&key).unwrap();
            let expected = ring_tag(&key, nonce, &data[..len]);
            assert_eq!(tagger.tag(&nonce, &data[..len]), expected, "length {len}");
            assert!(tagger.verify(&nonce, &data[..len], &expected));
            let mut wrong = expected;
            wrong[len % 16] ^= 1;
            assert!(!tagger.verify(&nonce, &data[..len], &wrong));
        }
    }

    #[test]
    fn all_ones_key_and_data_match_ring() {
        // Carries through every reduction step.
        let Some(tagger) = GcmTagger::new(&[0xff; 32]) else {
            return;
        };
        let aad = [0xff; 333];
        let nonce = [0xff; 12];
        assert_eq!(tagger.tag(&nonce, &aad), ring_tag(&[0xff; 32], nonce, &aad));
    }
}
