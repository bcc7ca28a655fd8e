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
/// An attachment whose record has no slot at all for this long is not an
/// attach under way (that writes it within milliseconds): its removal was
/// forgotten past the horizon (`gossip::state::expiry`), so it is lost.
const UNWRITTEN_GRACE: Duration = Duration::from_secs(5);

/// Per endpoint key: when it may be written again, and the wait after that;
/// and since when a key of an attachment has had no slot.
#[derive(Default)]
pub struct Backoff {
    waits: HashMap<String, (Instant, Duration)>,
    unwritten: HashMap<String, Instant>,
}

impl Backoff {
    /// Whether `key` may be written at `now`; if so, the next write waits
    /// twice as long (up to five minutes).
    fn take(&mut self, key: &str, now: Instant) -> bool {
        match self.waits.get_mut(key) {
            Some((next, _)) if now < *next => false,
            Some((next, wait)) => {
                *wait = (*wait * 2).min(LONGEST_WAIT);
                *next = now + *wait;
                true
            }
            None => {
                self.waits
                    .insert(key.to_string(), (now + FIRST_WAIT, FIRST_WAIT));
                true
            }
        }
    }

    /// Keys whose records stood for a while start over.
    fn forget_settled(&mut self, now: Instant) {
        self.waits.retain(|_, (next, wait)| now < *next + *wait * 4);
        // Keys of attachments gone meanwhile are not visited again.
        self.unwritten
            .retain(|_, since| now.duration_since(*since) < LONGEST_WAIT * 12);
    }

    /// Whether `key` (an attachment's, with no slot) has had none for
    /// [`UNWRITTEN_GRACE`]; `written` clears it.
    fn unwritten_too_long(&mut self, key: &str, now: Instant) -> bool {
        let since = *self.unwritten.entry(key.to_string()).or_insert(now);
        now.duration_since(since) >= UNWRITTEN_GRACE
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
                // Not written yet: an attach in progress writes it. Still
                // none after the grace: a removal of it was forgotten.
                if backoff.unwritten_too_long(&key, now) && backoff.take(&key, now) {
                    warn!(network = %net.id, %ip, "this host's endpoint record is gone without a trace (removed longer ago than the tombstone horizon); writing it again");
                    backoff.unwritten.remove(&key);
                    self.announce_again(a, net, ip, macvlan);
                    written += 1;
                }
                continue;
            };
            backoff.unwritten.remove(&key);
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
            self.announce_again(a, net, ip, macvlan);
            written += 1;
        }
        written
    }

    fn announce_again(
        &self,
        a: &mesh_api::Attachment,
        net: &NetworkDef,
        ip: std::net::Ipv4Addr,
        macvlan: bool,
    ) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_without_a_slot_is_lost_only_after_the_grace() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert!(!b.unwritten_too_long("k", t0), "an attach under way");
        assert!(!b.unwritten_too_long("k", t0 + Duration::from_secs(4)));
        assert!(b.unwritten_too_long("k", t0 + UNWRITTEN_GRACE));
        b.unwritten.remove("k");
        assert!(
            !b.unwritten_too_long("k", t0 + Duration::from_secs(9)),
            "written since: starts over"
        );
    }

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
        assert!(b.waits.is_empty());
    }
}
