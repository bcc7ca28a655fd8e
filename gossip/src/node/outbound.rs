//! A connection's outbound queue, bounded in frames *and* bytes: a peer that
//! stops reading makes this host hold at most [`MAX_QUEUED_BYTES`] for it
//! (not 1024 copies of a multi-megabyte full state). What does not fit is
//! dropped; anti-entropy and key-exchange retries repair it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

const MAX_QUEUED_FRAMES: usize = 1024;
/// Bytes queued for one connection, at most (one frame larger than this
/// still goes out when the queue is empty: a full state must fit).
pub(crate) const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub(crate) struct Outbound {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

pub(crate) struct OutboundRx {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

pub(crate) fn queue() -> (Outbound, OutboundRx) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbound {
            tx,
            queued: queued.clone(),
        },
        OutboundRx { rx, queued },
    )
}

/// The frame was not queued.
#[derive(Debug)]
pub(crate) struct Full;

impl Outbound {
    pub fn try_send(&self, frame: Bytes) -> Result<(), Full> {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Full);
        }
        self.tx.try_send(frame).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            Full
        })
    }
}

impl OutboundRx {
    /// The next frame; its bytes leave the budget once the caller wrote it
    /// ([`OutboundRx::written`]).
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes() {
        let (tx, mut rx) = queue();
        let big = Bytes::from(vec![0u8; MAX_QUEUED_BYTES / 2 + 1]);
        tx.try_send(big.clone()).unwrap();
        assert!(tx.try_send(big.clone()).is_err(), "over the byte budget");
        tx.try_send(Bytes::from_static(b"small")).unwrap();
        let first = rx.recv().await.unwrap();
        rx.written(first.len());
        tx.try_send(big.clone()).unwrap();
        // An oversized frame alone still goes out.
        let (tx, _rx) = queue();
        tx.try_send(Bytes::from(vec![0u8; MAX_QUEUED_BYTES * 2]))
            .unwrap();
        assert!(
            tx.try_send(Bytes::from_static(b"x")).is_err(),
            "and nothing after it"
        );
    }
}
