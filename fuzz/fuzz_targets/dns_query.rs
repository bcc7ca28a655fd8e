//! The DNS server's request path: any bytes as a query over UDP and TCP,
//! asked on a network with records (forward and reverse zones, versions,
//! truncation), with no upstreams (so names outside the mesh are refused
//! without touching the network).
//! (The body is `mesh_fuzz_cases::dns_query`, which CI replays the corpus through.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mesh_fuzz_cases::dns_query::run(data));
