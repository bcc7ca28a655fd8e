//! Every message on the wire. One bidirectional QUIC stream per connection,
//! opened by the dialer, carries length-prefixed postcard frames:
//! `u32 big-endian length ‖ postcard(message)`, at most [`MAX_FRAME_LEN`].
//!
//! The handshake is three frames: [`Hello`] (dialer → acceptor: versions and
//! the proof of the mesh secret only, at most [`MAX_HELLO_LEN`] bytes),
//! [`HelloAck`] (acceptor → dialer, once the proof verified: its proof and
//! its signed member record) and [`HelloRecord`] (dialer → acceptor, once
//! the acceptor's proof verified: the dialer's signed record). So neither
//! side tells anything about itself beyond the public key of its TLS
//! certificate before the other has proved the secret. Every later frame is
//! a [`Message`].
//!
//! Wire changes within `mesh/1` (issue 11, not compatible with earlier
//! builds): the three-frame handshake; [`MemberRecord`] carries its
//! subject's Ed25519 `signature`; every LWW entry in a channel payload
//! carries its writer's `signature` (see `gossip::state::LwwEntry`).
//! Issue 27: full states (members, channels) travel as self-contained parts
//! of at most [`MAX_PART_LEN`] bytes; the last part carries the sender's
//! whole-state hash in `want_reply`.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::membership::MemberRecord;
use crate::{protocol, PeerId};

/// Largest frame body accepted.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;
/// Target size of one part of a full state or of a large delta: a quarter
/// of a frame, so a part plus its envelope always fits, and a slow peer's
/// outbound queue (`node/outbound.rs`) holds several.
pub const MAX_PART_LEN: usize = 1024 * 1024;
/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest [`Hello`] body accepted: it is read before the dialer proved
/// anything, so it is kept to what a hello needs.
pub const MAX_HELLO_LEN: usize = 256;
/// Largest [`HelloRecord`] body (a member record within its limits).
pub const MAX_RECORD_FRAME_LEN: usize = 256 * 1024;

/// Dialer → acceptor, first frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Range of `PROTOCOL_VERSION`s the dialer speaks.
    pub min_version: u32,
    pub max_version: u32,
    /// HMAC proving the dialer holds the mesh secret (see `auth`).
    pub proof: [u8; 32],
    /// The address the dialer reached the acceptor at. A host listening on a
    /// wildcard address learns what to advertise from this.
    pub observed: SocketAddr,
}

/// Dialer → acceptor, third frame, sent only after the acceptor's proof
/// verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloRecord {
    /// The dialer's own member record.
    pub record: MemberRecord,
    /// Highest key generation the dialer ever installed with the acceptor, so
    /// generations keep increasing across reconnects and restarts.
    pub last_key_generation: u64,
}

/// Acceptor → dialer, sent only after the dialer's proof verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloAck {
    /// The version chosen for this connection.
    pub version: u32,
    pub proof: [u8; 32],
    pub record: MemberRecord,
    pub last_key_generation: u64,
    /// The address the dialer's packets came from (its endpoint's address).
    pub observed: SocketAddr,
}

/// Key exchange step 1, initiator → responder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyInit {
    pub generation: u64,
    pub ephemeral: [u8; 32],
    pub index: u32,
}

/// Key exchange step 2, responder → initiator (sent after the responder installed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyResp {
    pub generation: u64,
    pub ephemeral: [u8; 32],
    pub index: u32,
}

/// Anti-entropy summary: hashes of what the sender holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub members: [u8; 32],
    pub channels: Vec<(String, [u8; 32])>,
}

/// Everything after the handshake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Liveness; also carries nothing else so it is cheap.
    Heartbeat,
    KeyInit(KeyInit),
    KeyResp(KeyResp),
    /// Key exchange step 3, initiator → responder: "I send with generation N now".
    KeyConfirm {
        generation: u64,
    },
    /// Member records (full table or the changed ones).
    Members(Vec<MemberRecord>),
    /// A channel delta, opaque to the transport.
    ChannelDelta {
        channel: String,
        data: Vec<u8>,
    },
    /// One part of a channel's full state (each part merges on its own).
    /// `want_reply`, on the last part only, is the hash of the sender's whole
    /// state: the receiver sends back its own full state if, after merging,
    /// its hash still differs (push-pull anti-entropy).
    ChannelFull {
        channel: String,
        data: Vec<u8>,
        want_reply: Option<[u8; 32]>,
    },
    /// One part of the membership table, sent in answer to a digest
    /// mismatch; same `want_reply` rule (the hash is the table's digest).
    MembersFull {
        records: Vec<MemberRecord>,
        want_reply: Option<[u8; 32]>,
    },
    Digest(Digest),
    /// The mesh secret as of rotation `epoch` (see `Node::rotate_secret`):
    /// sent to every peer when a link comes up and after a rotation; a
    /// host adopts it if `(epoch, token)` is above its own.
    Secret {
        epoch: u64,
        token: SecretToken,
    },
    /// Sender → relay: forward `payload` to member `to` (see `relay.rs`).
    Relay {
        to: PeerId,
        payload: Vec<u8>,
    },
    /// Relay → recipient: `payload` from member `from`. Never forwarded again.
    Relayed {
        from: PeerId,
        payload: Vec<u8>,
    },
}

/// A join token on the wire; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretToken(pub String);

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// The hash a [`Digest`] carries for a state (SHA-256 of its encoding).
pub fn state_hash(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Splits `items` into runs whose encodings add up to at most `max` bytes
/// (an item larger than `max` travels alone). Never returns an empty list,
/// so an empty state still goes out as one (empty) part.
pub fn split_by_size<T: Serialize>(items: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut parts = vec![Vec::new()];
    let mut size = 0;
    for item in items {
        let len = postcard::experimental::serialized_size(&item).unwrap_or(max);
        let current = parts.last().map_or(0, Vec::len);
        if current > 0 && size + len > max {
            parts.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = parts.last_mut() {
            last.push(item);
        }
    }
    parts
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    Oversized(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Encodes `message` as one frame (length prefix included). A build
/// testing the next protocol version appends its extra field here.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    out = postcard::to_extend(message, out).map_err(|e| FrameError::Malformed(e.to_string()))?;
    out.extend_from_slice(protocol::appended_field());
    let body_len = out.len() - FRAME_HEADER_LEN;
    if body_len > MAX_FRAME_LEN {
        return Err(FrameError::Oversized(body_len));
    }
    out[..FRAME_HEADER_LEN].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(out)
}

/// Validates a length prefix before anything is allocated for the body.
pub fn frame_body_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::Oversized(len));
    }
    Ok(len)
}

/// Decodes a frame body (or any encoding that travels whole: a channel
/// state, a relayed packet). Bytes after the fields this build knows are a
/// newer build's appended fields: ignored and counted (PROTOCOL.md).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        protocol::count(&protocol::UNKNOWN.frame_fields);
    }
    Ok(value)
}

/// Number of [`Message`] kinds this build knows: a frame whose kind (the
/// leading varint) is not below it comes from a newer build.
pub const MESSAGE_KINDS: u32 = 12;

/// Decodes a [`Message`]; `Ok(None)` is a message of a kind this build does
/// not know (counted, to be skipped: a newer peer may send one).
pub fn decode_message(body: &[u8]) -> Result<Option<Message>, FrameError> {
    match decode_body(body) {
        Ok(message) => Ok(Some(message)),
        Err(e) => match postcard::take_from_bytes::<u32>(body) {
            Ok((kind, _)) if kind >= MESSAGE_KINDS => {
                protocol::count(&protocol::UNKNOWN.messages);
                Ok(None)
            }
            _ => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msg = Message::ChannelDelta {
            channel: "dns".into(),
            data: vec![1, 2, 3],
        };
        let frame = encode_frame(&msg).unwrap();
        let len = frame_body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode_body::<Message>(&frame[4..]).unwrap(), msg);
    }

    #[test]
    fn oversized_and_garbage_are_errors_not_panics() {
        assert!(matches!(
            frame_body_len((MAX_FRAME_LEN as u32 + 1).to_be_bytes()),
            Err(FrameError::Oversized(_))
        ));
        for garbage in [
            &[0xffu8; 1][..],
            &[200, 200, 200, 200, 200],
            &[],
            &[
                3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            &[99],
        ] {
            assert!(decode_body::<Message>(garbage).is_err());
        }
    }

    #[test]
    fn appended_fields_are_ignored_and_unknown_kinds_skipped() {
        let mut frame = encode_frame(&Message::KeyConfirm { generation: 7 }).unwrap();
        frame.extend_from_slice(&[1, 4, b'n', b'e', b'x', b't']);
        assert_eq!(
            decode_message(&frame[4..]).unwrap(),
            Some(Message::KeyConfirm { generation: 7 })
        );
        // A kind past the known ones, with a body: skipped, not an error.
        assert_eq!(
            decode_message(&[MESSAGE_KINDS as u8, 3, 1, 2, 3]).unwrap(),
            None
        );
        assert_eq!(decode_message(&[200, 1, 9]).unwrap(), None);
        // A known kind with a broken body is still malformed.
        assert!(decode_message(&[5, 0xff]).is_err());
    }

    #[test]
    fn message_kinds_counts_every_variant() {
        let last = Message::Relayed {
            from: crate::sim::peer(1),
            payload: vec![],
        };
        let body = postcard::to_stdvec(&last).unwrap();
        assert_eq!(u32::from(body[0]) + 1, MESSAGE_KINDS);
    }

    #[test]
    fn split_parts_stay_under_the_bound_and_keep_everything() {
        let items: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 100 + i as usize]).collect();
        let parts = split_by_size(items.clone(), 1000);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(postcard::to_stdvec(part).unwrap().len() <= 1000 + 8);
        }
        assert_eq!(parts.concat(), items);
        assert_eq!(split_by_size(Vec::<u8>::new(), 10), vec![Vec::<u8>::new()]);
        // An item over the bound travels alone.
        let big = split_by_size(vec![vec![0u8; 50], vec![1u8; 5000], vec![2u8; 50]], 1000);
        assert_eq!(big.len(), 3);
    }

    #[test]
    fn too_large_messages_are_not_encoded() {
        let msg = Message::ChannelDelta {
            channel: "big".into(),
            data: vec![0; MAX_FRAME_LEN + 1],
        };
        assert!(matches!(encode_frame(&msg), Err(FrameError::Oversized(_))));
    }
}
