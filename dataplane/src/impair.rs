//! Delay, jitter and loss for the networks that ask for them (QoS), done
//! by the data plane because the kernel has no netem.
//!
//! Only frames read from the TAP of a shaped network take this path: a
//! network without shaping has no [`Shaping`] and its frames never look
//! here (one `Option` test per TAP read). A shaped network's bridge ports
//! are isolated, so frames between two local containers also come through
//! the TAP; the data plane writes those back (hairpins them) after the
//! delay.
//!
//! Each frame is held `delay ± jitter` and dropped with probability
//! `loss`, once, on the host whose TAP it is read from. Held frames sit in
//! a per-worker FIFO of pool buffers released by a timer (the worker's
//! poll timeout), never a thread per packet; frames keep their order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::pool::{BufPool, PacketBuf};
use crate::switch::{self, Mac};
use crate::NetworkId;

/// What happens to one frame of a shaped network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability, 0 to 1.
    pub loss: f64,
}

/// A network's shaping: for every frame, the impairment of its source or
/// destination container if it has one, else the network's.
#[derive(Debug, Default)]
pub struct Shaping {
    pub network: Option<Impairment>,
    pub per_mac: HashMap<Mac, Impairment>,
    /// MACs of this host's containers on the network: frames to them are
    /// written back to the TAP instead of going to peers.
    pub local: HashSet<Mac>,
    lost: AtomicU64,
    lost_by_mac: HashMap<Mac, AtomicU64>,
}

impl Shaping {
    pub fn new(
        network: Option<Impairment>,
        per_mac: HashMap<Mac, Impairment>,
        local: HashSet<Mac>,
    ) -> Shaping {
        let lost_by_mac = local
            .iter()
            .chain(per_mac.keys())
            .map(|m| (*m, AtomicU64::new(0)))
            .collect();
        Shaping {
            network,
            per_mac,
            local,
            lost: AtomicU64::new(0),
            lost_by_mac,
        }
    }

    fn for_frame(&self, src: &Mac, dst: &Mac) -> Option<&Impairment> {
        self.per_mac
            .get(src)
            .or_else(|| self.per_mac.get(dst))
            .or(self.network.as_ref())
    }

    /// Frames dropped by loss: the network's total and by source container.
    pub fn losses(&self) -> (u64, Vec<(Mac, u64)>) {
        let by_mac = self
            .lost_by_mac
            .iter()
            .map(|(m, n)| (*m, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        (self.lost.load(Ordering::Relaxed), by_mac)
    }

    fn count_loss(&self, src: &Mac) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.lost_by_mac.get(src) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What to do with a frame now.
pub enum Verdict {
    /// Lost on purpose (counted); the buffer goes back to the pool.
    Lost(PacketBuf),
    /// Forward it at once.
    Now(PacketBuf),
    /// Held by the queue.
    Held,
    /// The queue is full.
    Full(PacketBuf),
}

struct Held {
    at: Instant,
    net: NetworkId,
    buf: PacketBuf,
}

/// One worker's held frames, oldest first.
pub struct DelayQueue {
    held: VecDeque<Held>,
    last_release: Option<Instant>,
    capacity: usize,
    rng: u64,
}

impl DelayQueue {
    pub fn new(capacity: usize, seed: u64) -> DelayQueue {
        DelayQueue {
            held: VecDeque::with_capacity(capacity.min(1024)),
            last_release: None,
            capacity,
            rng: seed | 1,
        }
    }

    /// xorshift64*: cheap, good enough for loss and jitter.
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Applies `shaping` to a frame of `net`.
    pub fn admit(
        &mut self,
        shaping: &Shaping,
        net: NetworkId,
        buf: PacketBuf,
        now: Instant,
    ) -> Verdict {
        let frame = buf.frame();
        let (src, dst) = (switch::source(frame), switch::destination(frame));
        let Some(imp) = shaping.for_frame(&src, &dst) else {
            return Verdict::Now(buf);
        };
        if imp.loss > 0.0 && self.uniform() < imp.loss {
            shaping.count_loss(&src);
            return Verdict::Lost(buf);
        }
        if imp.delay.is_zero() && imp.jitter.is_zero() && self.held.is_empty() {
            return Verdict::Now(buf);
        }
        if self.held.len() >= self.capacity {
            return Verdict::Full(buf);
        }
        let spread = imp.jitter.as_secs_f64() * (2.0 * self.uniform() - 1.0);
        let hold = (imp.delay.as_secs_f64() + spread).max(0.0);
        let mut at = now + Duration::from_secs_f64(hold);
        // FIFO: a frame never overtakes the one before it.
        if let Some(last) = self.last_release {
            at = at.max(last);
        }
        self.last_release = Some(at);
        self.held.push_back(Held { at, net, buf });
        Verdict::Held
    }

    /// When the oldest held frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|h| h.at)
    }

    /// Hands every frame due by `now` to `release`.
    pub fn release_due(&mut self, now: Instant, mut release: impl FnMut(NetworkId, PacketBuf)) {
        while self.held.front().is_some_and(|h| h.at <= now) {
            if let Some(h) = self.held.pop_front() {
                release(h.net, h.buf);
            }
        }
        if self.held.is_empty() {
            self.last_release = None;
        }
    }

    /// Frames of `net` are no longer held (its shaping or TAP went away):
    /// their buffers go back to `pool`.
    pub fn forget(&mut self, keep: impl Fn(NetworkId) -> bool, pool: &mut BufPool) {
        let mut kept = VecDeque::with_capacity(self.held.len());
        for h in self.held.drain(..) {
            if keep(h.net) {
                kept.push_back(h);
            } else {
                pool.put(h.buf);
            }
        }
        self.held = kept;
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pool: &mut BufPool, src: u8, dst: u8) -> PacketBuf {
        let mut f = vec![0u8; 60];
        f[5] = dst;
        f[11] = src;
        let mut b = pool.get();
        b.fill_frame(&f);
        b
    }

    fn mac(n: u8) -> Mac {
        [0, 0, 0, 0, 0, n]
    }

    #[test]
    fn frames_are_held_in_order_and_released_when_due() {
        let mut pool = BufPool::new(1500, 4);
        let imp = Impairment {
            delay: Duration::from_millis(25),
            jitter: Duration::from_millis(5),
            loss: 0.0,
        };
        let shaping = Shaping::new(Some(imp), HashMap::new(), HashSet::new());
        let mut q = DelayQueue::new(16, 7);
        let t0 = Instant::now();
        for i in 0..10 {
            let b = frame(&mut pool, 1, 2);
            let at = t0 + Duration::from_millis(i);
            assert!(matches!(
                q.admit(&shaping, NetworkId(1), b, at),
                Verdict::Held
            ));
        }
        let due = q.next_due().unwrap();
        assert!(due >= t0 + Duration::from_millis(20) && due <= t0 + Duration::from_millis(30));
        let mut out = Vec::new();
        q.release_due(t0 + Duration::from_millis(19), |_, b| out.push(b));
        assert!(out.is_empty(), "nothing before delay - jitter");
        q.release_due(t0 + Duration::from_millis(60), |_, b| out.push(b));
        assert_eq!(out.len(), 10);
        assert!(q.is_empty());
    }

    #[test]
    fn loss_drops_about_its_share_and_counts_by_source() {
        let mut pool = BufPool::new(1500, 4);
        let imp = Impairment {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.1,
        };
        let local: HashSet<Mac> = [mac(1)].into();
        let shaping = Shaping::new(Some(imp), HashMap::new(), local);
        let mut q = DelayQueue::new(16, 99);
        let mut dropped = 0;
        for _ in 0..10_000 {
            let b = frame(&mut pool, 1, 2);
            match q.admit(&shaping, NetworkId(1), b, Instant::now()) {
                Verdict::Lost(b) => {
                    dropped += 1;
                    pool.put(b)
                }
                Verdict::Now(b) => pool.put(b),
                _ => panic!("no delay: nothing is held"),
            }
        }
        assert!((800..1200).contains(&dropped), "{dropped}");
        let (total, by_mac) = shaping.losses();
        assert_eq!(total, dropped);
        assert_eq!(by_mac, vec![(mac(1), dropped)]);
    }

    #[test]
    fn a_container_setting_wins_and_others_pass_untouched() {
        let mut pool = BufPool::new(1500, 4);
        let slow = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
        };
        let shaping = Shaping::new(None, [(mac(3), slow)].into(), HashSet::new());
        let mut q = DelayQueue::new(1, 1);
        let now = Instant::now();
        assert!(matches!(
            q.admit(&shaping, NetworkId(1), frame(&mut pool, 1, 2), now),
            Verdict::Now(_)
        ));
        assert!(matches!(
            q.admit(&shaping, NetworkId(1), frame(&mut pool, 1, 3), now),
            Verdict::Held
        ));
        assert!(matches!(
            q.admit(&shaping, NetworkId(1), frame(&mut pool, 3, 1), now),
            Verdict::Full(_)
        ));
    }
}
