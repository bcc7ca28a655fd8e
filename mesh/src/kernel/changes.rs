//! When this host's interfaces, addresses or routes changed, for the parts
//! that follow them (the advertised data addresses, the underlay MTU, the
//! networks' landing, the floating IPs' underlay advert): one kernel
//! subscription for the daemon ([`mesh_sys::netwatch`]), published as a
//! generation each follower compares on its own tick. A follower re-reads
//! the kernel only when it moved, so an idle host dumps no tables.

use std::time::Duration;

use mesh_sys::netwatch::{Changes, Groups};
use tokio::sync::watch;

/// Where the kernel's announcements cannot be followed, the generation
/// moves this often: followers re-read on their ticks, as they would
/// without a subscription.
const POLL: Duration = Duration::from_secs(2);

/// The daemon's one subscription; hand each follower its own
/// [`HostChanges::follower`].
#[derive(Clone)]
pub struct HostChanges(watch::Receiver<u64>);

impl HostChanges {
    /// Starts following, in the caller's network namespace (the host's).
    pub fn spawn() -> HostChanges {
        let (tx, rx) = watch::channel(0u64);
        let mut changes = Changes::new(
            Groups::LINKS.with(Groups::ADDRESSES).with(Groups::ROUTES),
            POLL,
            "the kernel's interface and route changes",
        );
        tokio::spawn(async move {
            loop {
                changes.next().await;
                tx.send_modify(|g| *g += 1);
                if tx.is_closed() {
                    return;
                }
            }
        });
        HostChanges(rx)
    }

    /// A view that reports a change on its first look.
    pub fn follower(&self) -> Follower {
        let mut rx = self.0.clone();
        rx.mark_changed();
        Follower(rx)
    }
}

/// One follower's position in the generations.
pub struct Follower(watch::Receiver<u64>);

impl Follower {
    /// Whether anything changed since the last call (always, the first
    /// time, or when the subscription is gone).
    pub fn take(&mut self) -> bool {
        match self.0.has_changed() {
            Ok(true) => {
                self.0.borrow_and_update();
                true
            }
            Ok(false) => false,
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_follower_sees_its_first_look_and_each_change_once() {
        let (tx, rx) = watch::channel(0u64);
        let changes = HostChanges(rx);
        let mut a = changes.follower();
        assert!(a.take(), "the first look reads");
        assert!(!a.take());
        tx.send_modify(|g| *g += 1);
        let mut b = changes.follower();
        assert!(a.take());
        assert!(!a.take());
        assert!(b.take());
        assert!(!b.take());
        drop(tx);
        assert!(a.take(), "without a subscription every look reads");
    }
}
