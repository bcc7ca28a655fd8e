//! The one reconcile loop. A subsystem that keeps the kernel (or the data
//! plane) in line with replicated records implements [`Reconciler`]: it
//! reads the records, computes what it wants (a pure plan, unit-tested in
//! its own module), compares that with what it last installed and applies
//! the difference. [`follow`] runs it on every change of the channels it
//! reads (records, and the failure detector's verdicts), when it asked to
//! be woken ([`Reconciler::next_wake`]: a timer of its own, such as a
//! handover), and on a slow tick (for what was not there yet: a device, a
//! namespace). Nothing runs on a fast timer: an idle mesh costs no passes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

pub trait Reconciler: Send + Sync + 'static {
    /// Brings what is installed in line with the records once; failures
    /// are logged and retried by the next pass.
    fn reconcile(self: Arc<Self>) -> impl Future<Output = ()> + Send;

    /// The earliest moment strictly after `after` at which a pass is due
    /// for a reason no channel announces (a timer of the reconciler's own).
    fn next_wake(&self, _after: Instant) -> Option<Instant> {
        None
    }
}

/// Runs `r` now, then on every change of `channels`, at its
/// [`Reconciler::next_wake`] and every `tick`, for as long as the daemon
/// runs. Changes arriving during a pass fold into one more pass.
pub fn follow<R: Reconciler>(r: Arc<R>, channels: Vec<watch::Receiver<u64>>, tick: Duration) {
    let changed = Arc::new(Notify::new());
    for mut rx in channels {
        let changed = changed.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                changed.notify_one();
            }
        });
    }
    tokio::spawn(async move {
        loop {
            // A deadline up to the start of a pass is that pass's; one that
            // comes due while it runs gets a pass at once.
            let started = Instant::now();
            r.clone().reconcile().await;
            let now = Instant::now();
            let wake = r
                .next_wake(started)
                .map_or(tick, |at| at.saturating_duration_since(now).min(tick));
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(wake) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize, Arc<Notify>);

    impl Reconciler for Count {
        async fn reconcile(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.notify_one();
        }
    }

    #[tokio::test]
    async fn runs_at_once_on_changes_and_on_the_tick() {
        let done = Arc::new(Notify::new());
        let r = Arc::new(Count(AtomicUsize::new(0), done.clone()));
        let (tx, rx) = watch::channel(0u64);
        follow(r.clone(), vec![rx], Duration::from_secs(3600));
        done.notified().await;
        assert_eq!(r.0.load(Ordering::SeqCst), 1, "a first pass at once");
        tx.send(1).unwrap();
        done.notified().await;
        assert_eq!(r.0.load(Ordering::SeqCst), 2, "a pass on a change");
        // No channel: the tick alone drives it.
        let ticked = Arc::new(Count(AtomicUsize::new(0), done.clone()));
        follow(ticked.clone(), vec![], Duration::from_millis(10));
        for _ in 0..3 {
            done.notified().await;
        }
        assert!(ticked.0.load(Ordering::SeqCst) >= 3);
        assert_eq!(r.0.load(Ordering::SeqCst), 2, "no change, no pass");
    }

    struct Timer(AtomicUsize, Arc<Notify>, Instant);

    impl Reconciler for Timer {
        async fn reconcile(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.notify_one();
        }
        fn next_wake(&self, after: Instant) -> Option<Instant> {
            Some(self.2).filter(|at| *at > after)
        }
    }

    #[tokio::test]
    async fn a_reconciler_is_woken_when_it_asks_and_only_then() {
        let done = Arc::new(Notify::new());
        // Far enough ahead that the first pass surely starts before it.
        let at = Instant::now() + Duration::from_millis(500);
        let r = Arc::new(Timer(AtomicUsize::new(0), done.clone(), at));
        follow(r.clone(), vec![], Duration::from_secs(3600));
        let pass = || tokio::time::timeout(Duration::from_secs(30), done.notified());
        pass().await.expect("a first pass at once");
        pass()
            .await
            .expect("a pass at the deadline, not the hour-long tick");
        assert_eq!(
            r.0.load(Ordering::SeqCst),
            2,
            "woken before the hour-long tick"
        );
        // The deadline is past now: no pass until the tick.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            r.0.load(Ordering::SeqCst),
            2,
            "a past deadline is no wake-up"
        );
    }
}
