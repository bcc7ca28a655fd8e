//! The data plane's receive path: header checks, index lookup and the AEAD
//! open, on an engine with one peer keyed. Half the inputs get a valid
//! header with the keyed receiver index, so the open path itself is reached.
//! (The body is `mesh_fuzz_cases::datagram`, which CI replays the corpus through.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesh_fuzz_cases::datagram::run(data));
