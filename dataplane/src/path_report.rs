//! What one peer's path reports (`meshctl status`, metrics).

use std::time::Instant;

use super::{PathState, Route};
use crate::stats::{PathMode, PathStats};

impl PathState {
    pub fn stats(&self, now: Instant) -> PathStats {
        let mode = match self.route {
            Route::Unknown => PathMode::Unknown,
            Route::Direct(addr) if Some(addr) == self.fallback => PathMode::Tcp,
            Route::Direct(_) => PathMode::Direct,
            Route::Relayed(idx) => PathMode::Relayed(idx),
        };
        let loss = (!self.outcomes.is_empty()).then(|| {
            self.outcomes.iter().filter(|ok| !**ok).count() as f64 / self.outcomes.len() as f64
        });
        PathStats {
            mode,
            endpoint: match self.route {
                Route::Direct(addr) => Some(addr),
                _ => None,
            },
            mtu: Some(self.path_mtu()).filter(|mtu| *mtu > 0),
            rtt: self.rtt,
            loss,
            clock_skew_ms: self.skew_ms,
            last_heard: self.heard_ago(now),
        }
    }
}
