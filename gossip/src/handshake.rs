//! The connection handshake as one pure check, used by both sides (no I/O).
//!
//! After TLS has proven which key the remote holds, the dialer sends a
//! [`Hello`] and the acceptor answers with a [`HelloAck`]. Both carry a
//! proof of the mesh secret bound to this connection and the address the
//! sender saw the other at, so one function, [`check`], judges either: the
//! acceptor runs it on the hello, the dialer on the ack. Only the ack
//! (sent once the dialer's proof verified) carries the sender's member
//! record and last key generation; the dialer sends its own in a third
//! frame, [`HelloRecord`], once the acceptor's proof verified, judged by
//! [`check_record`]. So nothing about a host but its public key goes to a
//! peer that has not proved the secret. A failure is a [`CloseReason`]: the
//! close code and text to send, and what `join()` reports on the dialing side.
//!
//! The member record in each side's greeting (the ack, and the dialer's
//! `HelloRecord`) also carries the sender's data-plane cipher offer (see
//! [`crate::cipher`]); the link binds both into its keys.

use std::net::SocketAddr;

use crate::auth;
use crate::membership::MemberRecord;
use crate::protocol;
use crate::transport::close_code;
use crate::wire::{Hello, HelloAck, HelloRecord};
use crate::{Error, MeshSecret, PeerId};

/// Which end of the connection this host is (the roles of [`auth`]).
pub use crate::auth::Role as Side;

fn other(side: Side) -> Side {
    match side {
        Side::Dialer => Side::Acceptor,
        Side::Acceptor => Side::Dialer,
    }
}

/// The two ends of one authenticated TLS connection, from this host's view.
pub struct Parties<'a> {
    pub local: PeerId,
    /// The key the remote proved in the TLS handshake.
    pub remote: PeerId,
    pub side: Side,
    pub secret: &'a MeshSecret,
    /// TLS exporter output under [`auth::EKM_AUTH_LABEL`] for this connection.
    pub ekm: [u8; 32],
}

impl Parties<'_> {
    fn dialer_acceptor(&self) -> (&PeerId, &PeerId) {
        match self.side {
            Side::Dialer => (&self.local, &self.remote),
            Side::Acceptor => (&self.remote, &self.local),
        }
    }

    fn proof(&self) -> [u8; 32] {
        let (dialer, acceptor) = self.dialer_acceptor();
        auth::membership_proof(self.secret, self.side, &self.ekm, dialer, acceptor)
    }

    fn remote_proof_verifies(&self, proof: &[u8; 32]) -> bool {
        let (dialer, acceptor) = self.dialer_acceptor();
        let role = other(self.side);
        auth::verify_membership_proof(self.secret, role, &self.ekm, dialer, acceptor, proof)
    }
}

/// What the remote's first frame says, whichever side sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Greeting {
    /// Versions the sender accepts: a range in a hello, the chosen one in an ack.
    pub versions: (u32, u32),
    pub proof: [u8; 32],
    /// The sender's record: in an ack only.
    pub record: Option<MemberRecord>,
    pub last_key_generation: u64,
    pub observed: SocketAddr,
}

impl From<Hello> for Greeting {
    fn from(hello: Hello) -> Self {
        Greeting {
            versions: (hello.min_version, hello.max_version),
            proof: hello.proof,
            record: None,
            last_key_generation: 0,
            observed: hello.observed,
        }
    }
}

impl From<HelloAck> for Greeting {
    fn from(ack: HelloAck) -> Self {
        Greeting {
            versions: (ack.version, ack.version),
            proof: ack.proof,
            record: Some(ack.record),
            last_key_generation: ack.last_key_generation,
            observed: ack.observed,
        }
    }
}

/// A remote that passed [`check`].
#[derive(Clone, Debug, PartialEq)]
pub struct Admitted {
    /// The protocol version of this connection.
    pub version: u32,
    /// The remote's record: from an ack; the acceptor gets the dialer's
    /// from [`check_record`].
    pub record: Option<MemberRecord>,
    pub last_key_generation: u64,
    /// Where the remote saw this host (for learning what to advertise).
    pub observed: SocketAddr,
}

/// Why a connection is closed during the handshake.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The remote's certificate carries our own key.
    #[error("connected to self")]
    OwnId,
    /// Traffic with the remote is blocked on this host.
    #[error("traffic with this host is blocked")]
    Blocked,
    /// The remote did not prove the mesh secret; `side` is ours.
    #[error("the peer did not prove the mesh secret")]
    BadProof { side: Side },
    /// No version both speak: what the remote offered (hello) or chose (ack).
    #[error("no common protocol version (peer offers {min}..={max})")]
    Version { side: Side, min: u32, max: u32 },
    /// The member record is not the certificate's or breaks the size limits.
    #[error("member record does not match certificate")]
    BadRecord,
}

impl CloseReason {
    /// The QUIC application close code.
    pub fn code(&self) -> u32 {
        match self {
            CloseReason::OwnId => close_code::NORMAL,
            CloseReason::Blocked => close_code::BLOCKED,
            CloseReason::BadProof { .. } => close_code::AUTH_FAILED,
            CloseReason::Version { .. } => close_code::VERSION_MISMATCH,
            CloseReason::BadRecord => close_code::PROTOCOL_ERROR,
        }
    }

    /// The close reason text the remote sees.
    pub fn wire_reason(&self) -> &'static str {
        match self {
            CloseReason::OwnId => "connected to self",
            CloseReason::Blocked => "traffic with this host is blocked",
            CloseReason::BadProof {
                side: Side::Acceptor,
            } => "mesh secret mismatch: the token used does not belong to this mesh",
            CloseReason::BadProof { side: Side::Dialer } => {
                "acceptor failed to prove the mesh secret"
            }
            CloseReason::Version {
                side: Side::Acceptor,
                ..
            } => "no common protocol version",
            CloseReason::Version {
                side: Side::Dialer, ..
            } => "unsupported protocol version",
            CloseReason::BadRecord => "member record does not match certificate",
        }
    }

    /// What the dialing side reports (e.g. from `Node::join`).
    pub fn into_error(self) -> Error {
        match self {
            CloseReason::OwnId => Error::protocol("that address is this host itself"),
            CloseReason::Blocked => Error::Refused {
                code: close_code::BLOCKED as u64,
                reason: "blocked locally".into(),
            },
            CloseReason::BadProof { .. } => Error::AuthRejected {
                reason: "the remote host does not hold this mesh secret".into(),
            },
            CloseReason::Version { max, .. } => {
                Error::Protocol(format!("peer chose unsupported version {max}"))
            }
            CloseReason::BadRecord => Error::protocol("peer's member record is invalid"),
        }
    }
}

/// The checks possible as soon as TLS has proven the remote's key, before
/// any frame: not ourselves, not blocked.
pub fn check_peer(local: PeerId, remote: PeerId, blocked: bool) -> Result<(), CloseReason> {
    if remote == local {
        return Err(CloseReason::OwnId);
    }
    if blocked {
        return Err(CloseReason::Blocked);
    }
    Ok(())
}

/// Judges the remote's first frame. `blocked` is asked again because the
/// block list may have changed while the frame was in flight.
pub fn check(
    parties: &Parties<'_>,
    blocked: bool,
    greeting: Greeting,
) -> Result<Admitted, CloseReason> {
    check_peer(parties.local, parties.remote, blocked)?;
    if !parties.remote_proof_verifies(&greeting.proof) {
        return Err(CloseReason::BadProof { side: parties.side });
    }
    let (min, max) = greeting.versions;
    let Some(version) = protocol::negotiate(protocol::supported(), (min, max)) else {
        return Err(CloseReason::Version {
            side: parties.side,
            min,
            max,
        });
    };
    if let Some(record) = &greeting.record {
        check_record_of(parties.remote, record)?;
    }
    Ok(Admitted {
        version,
        record: greeting.record,
        last_key_generation: greeting.last_key_generation,
        observed: greeting.observed,
    })
}

fn check_record_of(remote: PeerId, record: &MemberRecord) -> Result<(), CloseReason> {
    if record.id != remote || record.validate().is_err() {
        return Err(CloseReason::BadRecord);
    }
    Ok(())
}

/// Judges the dialer's third frame, at the acceptor: its record must be
/// the certificate's, signed and within limits.
pub fn check_record(
    parties: &Parties<'_>,
    frame: HelloRecord,
) -> Result<(MemberRecord, u64), CloseReason> {
    check_record_of(parties.remote, &frame.record)?;
    Ok((frame.record, frame.last_key_generation))
}

/// The dialer's first frame. `observed` is the address it dialed.
pub fn hello(parties: &Parties<'_>, observed: SocketAddr) -> Hello {
    let (min_version, max_version) = protocol::supported();
    Hello {
        min_version,
        max_version,
        proof: parties.proof(),
        observed,
    }
}

/// The acceptor's answer to an admitted hello. `observed` is the address
/// the dialer's packets came from.
pub fn ack(
    parties: &Parties<'_>,
    admitted: &Admitted,
    record: MemberRecord,
    last_key_generation: u64,
    observed: SocketAddr,
) -> HelloAck {
    HelloAck {
        version: admitted.version,
        proof: parties.proof(),
        record,
        last_key_generation,
        observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    use crate::sim::peer;
    use std::sync::LazyLock;

    static DIALER: LazyLock<PeerId> = LazyLock::new(|| peer(1));
    static ACCEPTOR: LazyLock<PeerId> = LazyLock::new(|| peer(2));

    fn record(id: PeerId) -> MemberRecord {
        crate::sim::record(id)
    }

    fn parties(secret: &MeshSecret, side: Side) -> Parties<'_> {
        let (local, remote) = match side {
            Side::Dialer => (*DIALER, *ACCEPTOR),
            Side::Acceptor => (*ACCEPTOR, *DIALER),
        };
        Parties {
            local,
            remote,
            side,
            secret,
            ekm: [7; 32],
        }
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:6000".parse().unwrap()
    }

    /// Runs both sides; returns what each concluded.
    fn exchange(
        dialer_secret: &MeshSecret,
        acceptor_secret: &MeshSecret,
        edit: impl FnOnce(&mut Hello),
    ) -> Result<(Admitted, Admitted), CloseReason> {
        let dialer = parties(dialer_secret, Side::Dialer);
        let acceptor = parties(acceptor_secret, Side::Acceptor);
        let mut hello = hello(&dialer, addr());
        edit(&mut hello);
        let mut at_acceptor = check(&acceptor, false, hello.into())?;
        let ack = ack(&acceptor, &at_acceptor, record(*ACCEPTOR), 9, addr());
        let at_dialer = check(&dialer, false, ack.into())?;
        let (record, generation) = check_record(
            &acceptor,
            HelloRecord {
                record: record(*DIALER),
                last_key_generation: 4,
            },
        )?;
        at_acceptor.record = Some(record);
        at_acceptor.last_key_generation = generation;
        Ok((at_acceptor, at_dialer))
    }

    #[test]
    fn both_sides_admit_a_member() {
        let secret = MeshSecret::generate();
        let (at_acceptor, at_dialer) = exchange(&secret, &secret, |_| {}).unwrap();
        assert_eq!(at_acceptor.record.unwrap().id, *DIALER);
        assert_eq!(at_acceptor.last_key_generation, 4);
        assert_eq!(at_dialer.record.unwrap().id, *ACCEPTOR);
        assert_eq!(at_dialer.last_key_generation, 9);
        assert_eq!(at_dialer.version, PROTOCOL_VERSION);
    }

    #[test]
    fn the_acceptor_refuses_a_wrong_secret_with_a_reason_naming_it() {
        let err = exchange(&MeshSecret::generate(), &MeshSecret::generate(), |_| {}).unwrap_err();
        assert_eq!(
            err,
            CloseReason::BadProof {
                side: Side::Acceptor
            }
        );
        assert_eq!(err.code(), close_code::AUTH_FAILED);
        assert!(err.wire_reason().contains("secret"));
    }

    #[test]
    fn the_dialer_refuses_an_acceptor_without_the_secret() {
        let secret = MeshSecret::generate();
        let acceptor = parties(&secret, Side::Acceptor);
        let dialer_secret = MeshSecret::generate();
        let dialer = parties(&dialer_secret, Side::Dialer);
        let admitted = Admitted {
            version: PROTOCOL_VERSION,
            record: None,
            last_key_generation: 0,
            observed: addr(),
        };
        let ack = ack(&acceptor, &admitted, record(*ACCEPTOR), 0, addr());
        let err = check(&dialer, false, ack.into()).unwrap_err();
        assert_eq!(err, CloseReason::BadProof { side: Side::Dialer });
        assert!(matches!(err.into_error(), Error::AuthRejected { .. }));
    }

    #[test]
    fn versions_records_self_and_blocks_are_checked() {
        let secret = MeshSecret::generate();
        let future = exchange(&secret, &secret, |h| {
            h.min_version = PROTOCOL_VERSION + 1;
            h.max_version = PROTOCOL_VERSION + 3;
        });
        assert!(matches!(future, Err(CloseReason::Version { .. })));
        let newer_too = exchange(&secret, &secret, |h| h.max_version = PROTOCOL_VERSION + 3);
        assert!(newer_too.is_ok(), "a wider range still meets ours");
        let acceptor = parties(&secret, Side::Acceptor);
        let third = |edit: &dyn Fn(&mut MemberRecord)| {
            let mut record = record(*DIALER);
            edit(&mut record);
            check_record(
                &acceptor,
                HelloRecord {
                    record,
                    last_key_generation: 0,
                },
            )
        };
        let impostor = third(&|r| {
            *r = crate::sim::record(peer(3));
        });
        assert_eq!(impostor.unwrap_err(), CloseReason::BadRecord);
        let huge = third(&|r| {
            r.name = "x".repeat(10_000);
            r.sign();
        });
        assert_eq!(huge.unwrap_err(), CloseReason::BadRecord);
        let unsigned = third(&|r| r.name = "changed".into());
        assert_eq!(unsigned.unwrap_err(), CloseReason::BadRecord);
        // A hello carries nothing about the dialer but what TLS showed.
        let bytes = postcard::to_stdvec(&hello(&parties(&secret, Side::Dialer), addr())).unwrap();
        assert!(bytes.len() <= crate::wire::MAX_HELLO_LEN);

        assert_eq!(check_peer(*DIALER, *DIALER, false), Err(CloseReason::OwnId));
        assert_eq!(
            check_peer(*DIALER, *ACCEPTOR, true),
            Err(CloseReason::Blocked)
        );
        let dialer = parties(&secret, Side::Dialer);
        let acceptor = parties(&secret, Side::Acceptor);
        let hello = hello(&dialer, addr());
        assert_eq!(
            check(&acceptor, true, hello.into()).unwrap_err().code(),
            close_code::BLOCKED
        );
    }

    #[test]
    fn each_side_learns_the_others_cipher_offer_from_the_handshake() {
        use crate::cipher::{negotiate, Cipher, CipherOffer, META_CIPHERS};
        let secret = MeshSecret::generate();
        let dialer = parties(&secret, Side::Dialer);
        let acceptor = parties(&secret, Side::Acceptor);
        let with_offer = |id: PeerId, offer: CipherOffer| {
            let mut r = record(id);
            r.meta.insert(META_CIPHERS.into(), offer.to_meta());
            assert!(r.sign(), "the test holds both keys");
            r
        };
        let hello = hello(&dialer, addr());
        let admitted = check(&acceptor, false, hello.into()).unwrap();
        let ack = ack(
            &acceptor,
            &admitted,
            with_offer(*ACCEPTOR, CipherOffer::PORTABLE),
            0,
            addr(),
        );
        let at_dialer = check(&dialer, false, ack.into()).unwrap();
        // The dialer's record (and its offer) only after the ack's proof.
        let (dialer_record, _) = check_record(
            &acceptor,
            HelloRecord {
                record: with_offer(*DIALER, CipherOffer::ALL),
                last_key_generation: 0,
            },
        )
        .unwrap();
        let seen_by_acceptor = CipherOffer::of_meta(&dialer_record.meta);
        let seen_by_dialer =
            CipherOffer::of_meta(&at_dialer.record.expect("the ack carries a record").meta);
        assert_eq!(seen_by_acceptor, Some(CipherOffer::ALL));
        assert_eq!(seen_by_dialer, Some(CipherOffer::PORTABLE));
        // Mixed pair: both ends settle on the portable cipher.
        assert_eq!(
            negotiate(Some(CipherOffer::ALL), seen_by_dialer),
            Cipher::ChaCha20Poly1305
        );
        assert_eq!(
            negotiate(seen_by_acceptor, Some(CipherOffer::PORTABLE)),
            Cipher::ChaCha20Poly1305
        );
    }

    #[test]
    fn a_reflected_proof_is_refused() {
        // The acceptor echoing the dialer's own proof must not pass.
        let secret = MeshSecret::generate();
        let dialer = parties(&secret, Side::Dialer);
        let hello = hello(&dialer, addr());
        let mut greeting = Greeting::from(hello.clone());
        greeting.record = Some(record(*ACCEPTOR));
        assert_eq!(
            check(&dialer, false, greeting).unwrap_err(),
            CloseReason::BadProof { side: Side::Dialer }
        );
    }
}
