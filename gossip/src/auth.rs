//! Proof of the mesh secret, bound to one connection.
//!
//! Each side sends `HMAC-SHA256(secret, label ‖ role ‖ EKM ‖ dialer ‖ acceptor)`
//! where EKM is the TLS exporter value of *this* QUIC connection. A relay or
//! man-in-the-middle terminates two different TLS sessions, so the EKM it sees
//! differs from both ends' and a forwarded MAC never verifies. The role byte
//! stops a peer from reflecting our own MAC back at us. The secret never
//! travels and is never logged.

use ring::hmac;

use crate::{MeshSecret, PeerId};

/// TLS exporter label for the authentication EKM.
pub const EKM_AUTH_LABEL: &[u8] = b"EXPORTER-mesh/1 auth";
const MAC_LABEL: &[u8] = b"mesh/1 membership proof";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => 1,
            Role::Acceptor => 2,
        }
    }
}

fn mac_input(role: Role, ekm: &[u8; 32], dialer: &PeerId, acceptor: &PeerId) -> Vec<u8> {
    let mut input = Vec::with_capacity(MAC_LABEL.len() + 1 + 32 * 3);
    input.extend_from_slice(MAC_LABEL);
    input.push(role.byte());
    input.extend_from_slice(ekm);
    input.extend_from_slice(&dialer.0);
    input.extend_from_slice(&acceptor.0);
    input
}

/// The proof `role` sends on the connection identified by `ekm`.
pub fn membership_proof(
    secret: &MeshSecret,
    role: Role,
    ekm: &[u8; 32],
    dialer: &PeerId,
    acceptor: &PeerId,
) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, &mac_input(role, ekm, dialer, acceptor));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time check of a proof received from the peer playing `role`.
pub fn verify_membership_proof(
    secret: &MeshSecret,
    role: Role,
    ekm: &[u8; 32],
    dialer: &PeerId,
    acceptor: &PeerId,
    proof: &[u8; 32],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, &mac_input(role, ekm, dialer, acceptor), proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIALER: PeerId = PeerId([1; 32]);
    const ACCEPTOR: PeerId = PeerId([2; 32]);

    #[test]
    fn proof_verifies_with_same_secret_and_connection() {
        let secret = MeshSecret::generate();
        let ekm = [7u8; 32];
        let proof = membership_proof(&secret, Role::Dialer, &ekm, &DIALER, &ACCEPTOR);
        assert!(verify_membership_proof(
            &secret,
            Role::Dialer,
            &ekm,
            &DIALER,
            &ACCEPTOR,
            &proof
        ));
    }

    #[test]
    fn proof_fails_on_other_secret_connection_role_or_identity() {
        let secret = MeshSecret::generate();
        let ekm = [7u8; 32];
        let proof = membership_proof(&secret, Role::Dialer, &ekm, &DIALER, &ACCEPTOR);
        let other = MeshSecret::generate();
        assert!(!verify_membership_proof(
            &other,
            Role::Dialer,
            &ekm,
            &DIALER,
            &ACCEPTOR,
            &proof
        ));
        // Relayed onto another connection (different exporter value).
        assert!(!verify_membership_proof(
            &secret,
            Role::Dialer,
            &[8; 32],
            &DIALER,
            &ACCEPTOR,
            &proof
        ));
        // Reflected back as the acceptor's proof.
        assert!(!verify_membership_proof(
            &secret,
            Role::Acceptor,
            &ekm,
            &DIALER,
            &ACCEPTOR,
            &proof
        ));
        // Claimed by another host.
        assert!(!verify_membership_proof(
            &secret,
            Role::Dialer,
            &ekm,
            &PeerId([3; 32]),
            &ACCEPTOR,
            &proof
        ));
    }
}
