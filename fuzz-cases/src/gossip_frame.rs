//! The control plane's decoders: every frame a peer can send (handshake and
//! later messages), member records merged into a table, and channel payloads
//! merged into the daemon's guarded channels (signature, stamp and
//! ownership checks of `mesh_model::validate`).

use gossip::membership::{MemberRecord, MembershipTable};
use gossip::wire::{self, Hello, HelloAck, HelloRecord, Message};
use gossip::{Identity, Mergeable};
use mesh_model::records::{EndpointRecord, NetworkDef, RangeEntry, RemovedPeer, SpaceRequest};
use mesh_model::services::{HealthRecord, LabelRecord, ServiceDef};

fn table() -> MembershipTable {
    let id = Identity::from_seed([7; 32]).unwrap();
    let mut own = MemberRecord {
        id: id.peer_id(),
        name: "fuzz".into(),
        addrs: vec![],
        incarnation: 1,
        version: 0,
        meta: Default::default(),
        signature: Default::default(),
    };
    own.sign();
    MembershipTable::new(own)
}

fn merge_channel<V: mesh_model::records::Record>(guarded: gossip::LwwMap<String, V>, data: &[u8]) {
    if let Ok(remote) = gossip::LwwMap::<String, V>::decode(data) {
        let mut ours = guarded;
        ours.merge(&remote);
        let _ = ours.encode();
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = wire::decode_body::<Hello>(data);
    let _ = wire::decode_body::<HelloAck>(data);
    let _ = wire::decode_body::<HelloRecord>(data);
    if let Ok(header) = data.get(..4).unwrap_or_default().try_into() {
        let _ = wire::frame_body_len(header);
    }
    match wire::decode_body::<Message>(data) {
        Ok(Message::Members(records)) | Ok(Message::MembersFull { records, .. }) => {
            let mut t = table();
            t.merge(records);
            let _ = t.digest();
        }
        Ok(Message::ChannelFull { data, .. }) | Ok(Message::ChannelDelta { data, .. }) => {
            use mesh_model::validate::Guards;
            let ch = mesh_model::validate::detached_channels();
            merge_channel::<NetworkDef>(Guards::networks(), &data);
            merge_channel::<RemovedPeer>(Guards::removed(), &data);
            merge_channel::<EndpointRecord>(
                Guards::endpoints(ch.networks.clone(), ch.removed.clone()),
                &data,
            );
            merge_channel::<SpaceRequest>(Guards::requests(ch.networks.clone()), &data);
            merge_channel::<RangeEntry>(
                Guards::ring(ch.networks.clone(), ch.removed.clone()),
                &data,
            );
            merge_channel::<ServiceDef>(Guards::services(ch.networks.clone()), &data);
            merge_channel::<LabelRecord>(Guards::labels(), &data);
            merge_channel::<HealthRecord>(Guards::health(), &data);
        }
        _ => {}
    }
    // Channel payloads straight from the input too.
    let ch = mesh_model::validate::detached_channels();
    merge_channel::<RangeEntry>(
        mesh_model::validate::Guards::ring(ch.networks, ch.removed),
        data,
    );
    let _ = mesh_model::hosts::short_id(&String::from_utf8_lossy(data));
}
