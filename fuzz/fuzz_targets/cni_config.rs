//! The CNI plugin's parsers: the network configuration on stdin and the
//! `CNI_ARGS` environment string.
//! (The body is `mesh_fuzz_cases::cni_config`, which CI replays the corpus through.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesh_fuzz_cases::cni_config::run(data));
