//! The path MTU search of one peer's route (see [`crate::path`]).

use std::time::Instant;

use crate::path::PathConfig;
use crate::wire::MIN_PROBE_DATAGRAM;

/// Binary search for the largest datagram that gets through.
#[derive(Clone, Debug)]
pub(crate) struct MtuSearch {
    /// Largest size confirmed on this route (0: none).
    pub(crate) lo: u32,
    /// Largest size not yet known to fail.
    pub(crate) hi: u32,
    /// Result of the last finished search, still in force.
    pub(crate) found: Option<u32>,
    pub(crate) outstanding: bool,
    pub(crate) next_at: Instant,
    pub(crate) found_at: Instant,
    pub(crate) confirm_failures: u32,
}

impl MtuSearch {
    pub(crate) fn new(now: Instant, config: &PathConfig) -> MtuSearch {
        MtuSearch {
            lo: 0,
            hi: config.max_datagram,
            found: None,
            outstanding: false,
            next_at: now,
            found_at: now,
            confirm_failures: 0,
        }
    }

    pub(crate) fn searching(&self) -> bool {
        self.found.is_none()
    }

    /// Next size to try: the ceiling first (the common case is one probe).
    pub(crate) fn next_size(&self, config: &PathConfig) -> u32 {
        match self.found {
            Some(found) => found,
            None if self.lo == 0 && self.hi == config.max_datagram => self.hi,
            None => (self.lo.max(config.min_datagram) + self.hi).div_ceil(2),
        }
        .max(config.min_datagram.max(MIN_PROBE_DATAGRAM as u32))
    }

    pub(crate) fn settle(&mut self, now: Instant, config: &PathConfig) {
        let floor = config.min_datagram;
        if self.lo != 0 && self.hi <= self.lo + 8 {
            self.found = Some(self.lo);
            self.found_at = now;
            self.next_at = now + config.mtu_confirm;
        } else if self.lo == 0 && self.hi <= floor + 8 {
            // Not even the smallest size passed: report the floor rather
            // than nothing (small datagrams demonstrably pass).
            self.found = Some(floor);
            self.found_at = now;
            self.next_at = now + config.mtu_confirm;
        }
    }

    pub(crate) fn answered(&mut self, size: u32, now: Instant, config: &PathConfig) {
        self.outstanding = false;
        self.confirm_failures = 0;
        if self.found.is_none() {
            self.lo = self.lo.max(size);
            self.hi = self.hi.max(self.lo);
            self.settle(now, config);
        } else {
            self.next_at = now + config.mtu_confirm;
        }
    }

    pub(crate) fn lost(&mut self, size: u32, now: Instant, config: &PathConfig) {
        self.outstanding = false;
        match self.found {
            None => {
                if size > self.lo {
                    self.hi = size - 1;
                }
                self.settle(now, config);
            }
            Some(found) if size >= found => {
                self.confirm_failures += 1;
                if self.confirm_failures >= 2 {
                    // The largest size stopped passing: search again.
                    *self = MtuSearch::new(now, config);
                } else {
                    self.next_at = now;
                }
            }
            Some(_) => {}
        }
    }
}
