//! The data plane's receive path: header checks, index lookup and the AEAD
//! open, on an engine with one peer keyed. Half the inputs get a valid
//! header with the keyed receiver index, so the open path itself is reached.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use dataplane::wire::{DataHeader, HEADER_LEN};
use dataplane::{Engine, NetworkId, SessionKeys};
use libfuzzer_sys::fuzz_target;

const NET: NetworkId = NetworkId(7);
const LOCAL_INDEX: u32 = 2001;

fn engine() -> &'static (Engine, Instant) {
    static ENGINE: OnceLock<(Engine, Instant)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let now = Instant::now();
        let engine = Engine::new(now);
        engine.add_network(NET);
        engine.upsert_peer(1, Some("198.18.0.1:7801".parse().unwrap()), &[NET]);
        let keys = SessionKeys {
            generation: 1,
            local_index: LOCAL_INDEX,
            remote_index: 1001,
            send_key: [1; 32],
            recv_key: [2; 32],
        };
        engine.install_keys(1, &keys, true, now);
        (engine, now)
    })
}

fuzz_target!(|data: &[u8]| {
    let (engine, now) = engine();
    let mut datagram = data.to_vec();
    if data.first().is_some_and(|b| b % 2 == 0) && datagram.len() >= HEADER_LEN {
        let counter = u64::from_le_bytes(data[..8.min(data.len())].try_into().unwrap_or([0; 8]));
        DataHeader {
            receiver_index: LOCAL_INDEX,
            counter,
            network_id: NET.0,
        }
        .encode((&mut datagram[..HEADER_LEN]).try_into().unwrap());
    }
    let _ = DataHeader::parse(&datagram);
    let _ = engine.open_datagram(&mut datagram, *now);
});
