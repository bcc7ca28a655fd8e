//! The data plane's receive path: header checks, index lookup and the AEAD
//! open, on an engine with one peer keyed. Half the inputs get a valid
//! header with the keyed receiver index, so the open path itself is reached.

use std::sync::OnceLock;
use std::time::Instant;

use dataplane::wire::{DataHeader, HEADER_LEN};
use dataplane::{Cipher, Engine, NetworkId, SessionKeys};

const NET: NetworkId = NetworkId(7);
const LOCAL_INDEX: u32 = 2000;

fn engine() -> &'static (Engine, Instant) {
    static ENGINE: OnceLock<(Engine, Instant)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let now = Instant::now();
        let engine = Engine::new(now);
        engine.add_network(NET);
        // One peer per cipher, so both open paths are reached.
        for (peer, cipher) in (1u32..).zip(Cipher::ALL) {
            let addr = format!("198.18.0.{peer}:7801").parse().unwrap();
            engine.upsert_peer(peer, Some(addr), &[NET]);
            let keys = SessionKeys {
                generation: 1,
                local_index: LOCAL_INDEX + peer,
                remote_index: 1000 + peer,
                send_key: [1; 32],
                recv_key: [2; 32],
                cipher,
            };
            engine.install_keys(peer, &keys, true, now);
        }
        (engine, now)
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let (engine, now) = engine();
    let mut datagram = data.to_vec();
    // An even first byte: a valid header for one of the keyed receivers.
    if let Some(&first) = data.first().filter(|b| *b % 2 == 0) {
        if datagram.len() >= HEADER_LEN {
            let counter =
                u64::from_le_bytes(data[..8.min(data.len())].try_into().unwrap_or([0; 8]));
            DataHeader {
                receiver_index: LOCAL_INDEX + 1 + u32::from(first % 4 / 2),
                counter,
                network_id: NET.0,
            }
            .encode((&mut datagram[..HEADER_LEN]).try_into().unwrap());
        }
    }
    let _ = DataHeader::parse(&datagram);
    let _ = engine.open_datagram(&mut datagram, *now);
}
