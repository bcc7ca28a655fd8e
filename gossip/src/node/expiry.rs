//! Tombstones older than [`TOMBSTONE_HORIZON`] leave every channel: at
//! registration (a snapshot loaded from disk) and then once a minute.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{lock, Inner};
use crate::state::{now_millis, TOMBSTONE_HORIZON};

/// How often the channels are swept: a small fraction of the horizon, so
/// a tombstone outlives it by at most this.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn expire_loop(node: Arc<Inner>) {
    debug_assert!(SWEEP_EVERY < TOMBSTONE_HORIZON);
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let channels = lock(&node.channels).all();
        let now = now_millis();
        for (name, channel) in channels {
            let gone = channel.expire(now);
            if gone > 0 {
                debug!(channel = %name, tombstones = gone, "expired tombstones");
            }
        }
    }
}
