//! The mesh secret over time: revocation by rotation.
//!
//! `Node::rotate_secret` (run by `meshctl token rotate` and `meshctl peer
//! rm`) makes a fresh secret at the next *epoch* and sends it to every
//! connected member over its authenticated connection; every link that comes
//! up also carries the sender's `(epoch, secret)`, and a host adopts the
//! higher one, so the new secret spreads to whoever is reachable.
//!
//! The secrets before the last rotations are kept for one purpose: a host
//! that was down during a rotation still proves an old one when it comes
//! back. Such a proof is accepted only from a *known member that is not
//! blocked* (removed hosts are blocked), which then gets the current secret
//! at once. So a removed host is refused with its old token whatever
//! identity it uses: under its own id it is blocked, under a new one it is
//! not a member, and only the current secret admits new hosts.

use crate::MeshSecret;

/// Old secrets kept for members that were down during rotations.
const MAX_PREVIOUS: usize = 8;

#[derive(Clone)]
pub(crate) struct Secrets {
    pub current: MeshSecret,
    pub epoch: u64,
    /// Newest last.
    pub previous: Vec<MeshSecret>,
}

impl Secrets {
    pub fn new(current: MeshSecret, epoch: u64, previous: Vec<MeshSecret>) -> Secrets {
        let mut s = Secrets {
            current,
            epoch,
            previous,
        };
        s.trim();
        s
    }

    fn trim(&mut self) {
        let current = self.current.clone();
        self.previous.retain(|p| *p != current);
        let excess = self.previous.len().saturating_sub(MAX_PREVIOUS);
        self.previous.drain(..excess);
    }

    fn retire_current(&mut self, next: MeshSecret, epoch: u64) {
        let old = std::mem::replace(&mut self.current, next);
        self.previous.push(old);
        self.epoch = epoch;
        self.trim();
    }

    /// A fresh secret at the next epoch; the old one is retired.
    pub fn rotate(&mut self) -> MeshSecret {
        let next = MeshSecret::generate();
        self.retire_current(next.clone(), self.epoch.saturating_add(1));
        next
    }

    /// Adopts a peer's secret if `(epoch, token)` is above ours (the token
    /// breaks ties between rotations made at once on two hosts). Returns
    /// whether it changed.
    pub fn offer(&mut self, epoch: u64, secret: MeshSecret) -> bool {
        let ours = (self.epoch, self.current.to_token());
        if (epoch, secret.to_token()) <= ours {
            return false;
        }
        if secret == self.current {
            self.epoch = epoch;
        } else {
            self.retire_current(secret, epoch);
        }
        true
    }

    /// A join token replaces the secret outright (the operator chose it).
    pub fn adopt_token(&mut self, secret: MeshSecret) -> bool {
        if secret == self.current {
            return false;
        }
        let epoch = self.epoch;
        self.retire_current(secret, epoch);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_retires_and_offers_only_move_forward() {
        let first = MeshSecret::generate();
        let mut a = Secrets::new(first.clone(), 0, vec![]);
        let mut b = a.clone();
        let second = a.rotate();
        assert_eq!(a.epoch, 1);
        assert_eq!(a.previous, vec![first.clone()]);
        assert!(b.offer(a.epoch, a.current.clone()));
        assert_eq!(b.current, second);
        assert!(b.previous.contains(&first));
        assert!(!b.offer(0, first.clone()), "an older epoch is ignored");
        assert!(!b.offer(1, second.clone()), "the same is no change");
        // Concurrent rotations at one epoch settle on the same winner.
        let (mut x, mut y) = (b.clone(), b.clone());
        x.rotate();
        y.rotate();
        let (sx, sy) = (x.current.clone(), y.current.clone());
        x.offer(2, sy.clone());
        y.offer(2, sx.clone());
        assert!(x.current == y.current);
        for _ in 0..20 {
            a.rotate();
        }
        assert_eq!(a.previous.len(), MAX_PREVIOUS);
    }
}
