//! The control plane's decoders: every frame a peer can send (handshake and
//! later messages), member records merged into a table, and channel payloads
//! merged into the daemon's guarded channels (signature, stamp and
//! ownership checks of `mesh_model::validate`).
//! (The body is `mesh_fuzz_cases::gossip_frame`, which CI replays the corpus through.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesh_fuzz_cases::gossip_frame::run(data));
