//! The networks this host carries now: the latest landing verdict (see
//! [`mesh_model::networks::landing`]), shared with the subsystems that act
//! on it.

use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use mesh_model::networks::landing::Landing;

/// This host's latest [`Landing`], shared with the subsystems that act on
/// the networks carried here; [`Carried::subscribe`] wakes them on change.
#[derive(Clone)]
pub struct Carried {
    landing: Arc<Mutex<Arc<Landing>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for Carried {
    fn default() -> Carried {
        Carried {
            landing: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl Carried {
    pub fn get(&self) -> Arc<Landing> {
        self.landing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes `landing` and returns it; followers wake only when it
    /// changed.
    pub fn set(&self, landing: Landing) -> Arc<Landing> {
        let mut cur = self.landing.lock().unwrap_or_else(|e| e.into_inner());
        if **cur != landing {
            *cur = Arc::new(landing);
            self.version.send_modify(|v| *v += 1);
        }
        cur.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}
