//! What the answers read: the records and network definitions of the
//! replicated state, taken from the [`RecordSource`] at most every
//! [`MAX_AGE`] and shared between queries. Reading them fresh per query
//! copies every endpoint of every network, which was most of a query's
//! cost; a snapshot a fraction of a second old is far inside the records'
//! 5 s TTL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::RecordSource;
use mesh_model::records::{EndpointRecord, NetworkDef};

/// How stale an answer may be, beyond what the TTL already allows.
pub const MAX_AGE: Duration = Duration::from_millis(100);

pub struct Snapshots {
    source: Arc<dyn RecordSource>,
    max_age: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    networks: Option<(Instant, Arc<Vec<NetworkDef>>)>,
    /// Only for names that are networks, so random query names cannot
    /// grow it.
    records: HashMap<String, (Instant, Arc<Vec<EndpointRecord>>)>,
}

fn fresh<T>(entry: Option<&(Instant, Arc<T>)>, now: Instant, max_age: Duration) -> Option<Arc<T>> {
    entry
        .filter(|(at, _)| now.duration_since(*at) < max_age)
        .map(|(_, v)| v.clone())
}

impl Snapshots {
    pub fn new(source: Arc<dyn RecordSource>, max_age: Duration) -> Snapshots {
        Snapshots {
            source,
            max_age,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn networks(&self) -> Arc<Vec<NetworkDef>> {
        let now = Instant::now();
        if let Some(v) = fresh(self.lock().networks.as_ref(), now, self.max_age) {
            return v;
        }
        let v = Arc::new(self.source.networks());
        self.lock().networks = Some((now, v.clone()));
        v
    }

    /// The records of `network` that may be served.
    pub fn records(&self, network: &str) -> Arc<Vec<EndpointRecord>> {
        let now = Instant::now();
        if let Some(v) = fresh(self.lock().records.get(network), now, self.max_age) {
            return v;
        }
        let v = Arc::new(self.source.records(network));
        let known = !v.is_empty() || self.networks().iter().any(|n| n.id == network);
        if known {
            let mut state = self.lock();
            // Networks that went away drop out here.
            state
                .records
                .retain(|_, (at, _)| now.duration_since(*at) < self.max_age);
            state.records.insert(network.to_string(), (now, v.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::tests::{fixed, rec};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(crate::zone::tests::Fixed, AtomicUsize);
    impl RecordSource for Counting {
        fn records(&self, network: &str) -> Vec<EndpointRecord> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.records(network)
        }
        fn networks(&self) -> Vec<NetworkDef> {
            self.0.networks()
        }
    }

    #[test]
    fn snapshots_are_shared_while_fresh_and_only_for_networks() {
        let src = Arc::new(Counting(
            fixed(vec![rec("10.0.0.2", "web", None)]),
            AtomicUsize::new(0),
        ));
        let s = Snapshots::new(src.clone(), Duration::from_secs(3600));
        assert_eq!(s.records("blue").len(), 1);
        assert_eq!(s.records("blue").len(), 1);
        assert_eq!(src.1.load(Ordering::SeqCst), 1, "second read shared");
        for _ in 0..3 {
            assert!(s.records("com").is_empty());
        }
        assert_eq!(src.1.load(Ordering::SeqCst), 4, "unknown names never kept");
        assert_eq!(s.lock().records.len(), 1);
        // Without an age, every read is fresh.
        let exact = Snapshots::new(src.clone(), Duration::ZERO);
        exact.records("blue");
        exact.records("blue");
        assert_eq!(src.1.load(Ordering::SeqCst), 6);
    }
}
