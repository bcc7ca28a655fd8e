//! The fuzz targets' bodies, one module per target. The cargo-fuzz targets
//! in `fuzz/` (nightly, libFuzzer) are one-line wrappers around these; the
//! `corpus` test replays every committed corpus input through them on
//! stable, so CI catches a regression on anything fuzzing once reached
//! without a nightly toolchain.

pub mod cni_config;
pub mod datagram;
pub mod dns_query;
pub mod gossip_frame;

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory (`fuzz/corpus/<name>`).
pub const TARGETS: [(&str, Target); 4] = [
    ("datagram", datagram::run),
    ("gossip_frame", gossip_frame::run),
    ("cni_config", cni_config::run),
    ("dns_query", dns_query::run),
];
