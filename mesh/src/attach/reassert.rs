//! This host's endpoint records, kept. Another member may delete or
//! overwrite any record (a later stamp wins: `network rm --force` and
//! `peer rm` need that), which would take an attachment's name, MAC pin and
//! service membership away everywhere. The host writes such a record again,
//! at once after a first loss and with a growing wait after repeated ones,
//! so two hosts that both claim a key (a macvlan address outside IPAM, a
//! network re-created while a host was away) do not write it at gossip
//! speed forever, and neither can a member that keeps deleting it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use super::{is_macvlan, Attacher};
use mesh_model::records::{self, NetworkDef, MACVLAN_MARK};

const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(300);

/// Per endpoint key: when it may be written again, and the wait after that.
#[derive(Default)]
pub struct Backoff(HashMap<String, (Instant, Duration)>);

impl Backoff {
    /// Whether `key` may be written at `now`; if so, the next write waits
    /// twice as long (up to five minutes).
    fn take(&mut self, key: &str, now: Instant) -> bool {
        match self.0.get_mut(key) {
            Some((next, _)) if now < *next => false,
            Some((next, wait)) => {
                *wait = (*wait * 2).min(LONGEST_WAIT);
                *next = now + *wait;
                true
            }
            None => {
                self.0
                    .insert(key.to_string(), (now + FIRST_WAIT, FIRST_WAIT));
                true
            }
        }
    }

    /// Keys whose records stood for a while start over.
    fn forget_settled(&mut self, now: Instant) {
        self.0.retain(|_, (next, wait)| now < *next + *wait * 4);
    }
}

impl Attacher {
    /// Writes again the endpoint record of each of this host's attachments
    /// that another member deleted or overwrote, on networks that still
    /// exist (removing a network removes its records, and its attachments
    /// go with it). Returns how many it wrote.
    pub fn reassert_endpoints(&self, networks: &BTreeMap<String, NetworkDef>) -> usize {
        let state = self.endpoints.get();
        let me = self.me.to_hex();
        let now = Instant::now();
        let mut backoff = self.reasserts.lock().unwrap_or_else(|p| p.into_inner());
        backoff.forget_settled(now);
        let mut written = 0;
        for r in self.records() {
            let a = &r.attachment;
            let (Some(net), Ok(ip)) = (networks.get(&a.network), r.ip()) else {
                continue;
            };
            let macvlan = is_macvlan(&r);
            if !macvlan && !net.subnet.contains(&ip) {
                continue; // the guard would refuse it: an older network's
            }
            let key = records::endpoint_key(&net.id, IpAddr::V4(ip));
            let Some(entry) = state.entry(&key) else {
                // Not written yet: an attach in progress writes it.
                continue;
            };
            let ours = entry
                .value
                .as_ref()
                .is_some_and(|e| e.host == me && e.mac == a.mac);
            if ours {
                continue;
            }
            if !backoff.take(&key, now) {
                debug!(%key, "endpoint record lost again; written again later");
                continue;
            }
            let by = entry.stamp.writer.to_hex();
            let what = if entry.value.is_some() {
                "overwrote"
            } else {
                "deleted"
            };
            warn!(network = %net.id, %ip, writer = %by, "another member {what} this host's endpoint record; writing it again");
            let version = match macvlan {
                true => Some(MACVLAN_MARK.to_string()),
                false => a.version.clone(),
            };
            let ip6 = a
                .ip6
                .as_deref()
                .and_then(|v| v.parse::<ipnet::Ipv6Net>().ok())
                .map(|n| n.addr());
            self.announce_as(a, net, ip, ip6, version);
            written += 1;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_losses_wait_longer_and_settled_keys_start_over() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert!(b.take("k", t0), "the first loss: at once");
        assert!(!b.take("k", t0 + Duration::from_millis(500)));
        assert!(b.take("k", t0 + Duration::from_secs(1)));
        assert!(!b.take("k", t0 + Duration::from_secs(2)), "then 2 s");
        assert!(b.take("k", t0 + Duration::from_secs(3)));
        assert!(b.take("other", t0), "per key");
        b.forget_settled(t0 + Duration::from_secs(60));
        assert!(b.0.is_empty());
    }
}
