//! Dev-only crate: see `benches/aead.rs`. Run with
//! `cargo bench --manifest-path benches/aead-compare/Cargo.toml`.
