//! Health checks: each host checks only its own targets (a TCP connect
//! from inside the target's namespace, so no route from the host is
//! needed) and publishes the result; every host reads it when it builds
//! rules. A target is out after [`FAILS_TO_FAIL`] failed checks in a row
//! and back after one good one.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

use super::targets;
use super::Services;
use mesh_model::records as rec;
use mesh_model::services::{health_key, HealthRecord};

/// Failed checks in a row before a target leaves the rotation.
pub const FAILS_TO_FAIL: u32 = 2;
/// The shortest time between two rounds of checks (a round also starts
/// when a check is due or an input changed).
const TICK: Duration = Duration::from_millis(250);
/// After a first failed check, the next comes this soon (HAProxy's
/// `fastinter`).
const CONFIRM_AFTER: Duration = Duration::from_millis(250);
/// Which checks this host runs is worked out again when a record or a
/// verdict it depends on changes, and at least this often.
const RECOMPUTE: Duration = Duration::from_secs(5);

type Check = (String, Ipv4Addr, u16);

#[derive(Debug, Default)]
struct CheckState {
    fails: u32,
    next: Option<Instant>,
}

/// A connect to `addr` from inside `netns`.
fn probe(netns: PathBuf, addr: SocketAddr, timeout: Duration) -> bool {
    mesh_sys::netns::run_in_net(&netns, move || {
        TcpStream::connect_timeout(&addr, timeout).is_ok()
    })
    .unwrap_or(false)
}

/// What a check's result means for the published state, if anything.
pub fn verdict(fails: u32, ok: bool) -> (u32, Option<bool>) {
    if ok {
        (0, Some(true))
    } else if fails + 1 >= FAILS_TO_FAIL {
        (fails + 1, Some(false))
    } else {
        (fails + 1, None)
    }
}

impl Services {
    /// The checks this host runs now, with their intervals.
    fn my_checks(&self) -> BTreeMap<Check, Duration> {
        let snap = self.snapshot();
        let facts = snap.facts();
        let me = self.me_hex();
        let mut out: BTreeMap<Check, Duration> = BTreeMap::new();
        for def in self.all().values() {
            let every = Duration::from_millis(def.health_interval_ms);
            for (ip, port) in targets::checks_of(def, &facts, &me) {
                let e = out.entry((def.network.clone(), ip, port)).or_insert(every);
                *e = (*e).min(every);
            }
        }
        out
    }

    pub(crate) async fn health_forever(self: Arc<Self>) {
        let mut state: BTreeMap<Check, CheckState> = BTreeMap::new();
        let mut inputs = [
            self.ch.services.subscribe(),
            self.ch.labels.subscribe(),
            self.channels.endpoints.subscribe(),
            self.liveness.subscribe(),
        ];
        let mut checks: BTreeMap<Check, Duration> = BTreeMap::new();
        let mut computed: Option<Instant> = None;
        let mut last = Instant::now();
        loop {
            // Asleep until a check is due, the checks are to be worked out
            // again, or an input changed; at most every TICK.
            let next_check = checks
                .keys()
                .map(|c| state.get(c).and_then(|st| st.next).unwrap_or(last))
                .min();
            let recompute = computed.map_or(last, |t| t + RECOMPUTE);
            let at = next_check.map_or(recompute, |t| t.min(recompute));
            let inputs_changed =
                futures::future::select_all(inputs.iter_mut().map(|rx| Box::pin(rx.changed())));
            let mut changed = tokio::select! {
                () = tokio::time::sleep_until(at.into()) => false,
                (r, _, _) = inputs_changed => r.is_ok(),
            };
            tokio::time::sleep_until((last + TICK).into()).await;
            last = Instant::now();
            for rx in &mut inputs {
                changed |= rx.has_changed().unwrap_or(false);
                rx.borrow_and_update();
            }
            if changed || computed.is_none_or(|t| t.elapsed() >= RECOMPUTE) {
                checks = self.my_checks();
                state.retain(|c, _| checks.contains_key(c));
                self.drop_stale_health(&checks);
                computed = Some(Instant::now());
            }
            let now = Instant::now();
            let due = |c: &Check| {
                state
                    .get(c)
                    .and_then(|st: &CheckState| st.next)
                    .is_none_or(|t| t <= now)
            };
            if !checks.keys().any(due) {
                continue;
            }
            let netns: BTreeMap<(String, Ipv4Addr), PathBuf> = self
                .attacher
                .records()
                .iter()
                .filter_map(|r| {
                    Some((
                        (r.attachment.network.clone(), r.ip().ok()?),
                        PathBuf::from(&r.attachment.netns),
                    ))
                })
                .collect();
            let mut probes = Vec::new();
            for (check, every) in &checks {
                let st = state.entry(check.clone()).or_default();
                if st.next.is_some_and(|t| t > now) {
                    continue;
                }
                st.next = Some(now + *every);
                let Some(ns) = netns.get(&(check.0.clone(), check.1)).cloned() else {
                    continue;
                };
                let addr = SocketAddr::new(check.1.into(), check.2);
                let timeout = (*every).min(Duration::from_secs(1));
                let c = check.clone();
                probes.push(async move {
                    let ok = tokio::task::spawn_blocking(move || probe(ns, addr, timeout))
                        .await
                        .unwrap_or(false);
                    (c, ok)
                });
            }
            for (check, ok) in futures::future::join_all(probes).await {
                let st = state.entry(check.clone()).or_default();
                let (fails, publish) = verdict(st.fails, ok);
                st.fails = fails;
                if fails > 0 && fails < FAILS_TO_FAIL {
                    // A first failure is confirmed soon, not a whole
                    // interval later: a dead target leaves within about
                    // one interval, a blip costs one extra check.
                    st.next = Some(Instant::now() + CONFIRM_AFTER);
                }
                if let Some(healthy) = publish {
                    self.publish_health(&check, healthy);
                }
            }
        }
    }

    fn publish_health(&self, (network, ip, port): &Check, healthy: bool) {
        let key = health_key(network, *ip, *port);
        let record = HealthRecord {
            network: network.clone(),
            ip: *ip,
            port: *port,
            healthy,
            host: self.me_hex(),
        };
        if rec::get(&self.ch.health, &key).as_ref() != Some(&record) {
            info!(target = %key, healthy, "service target health changed");
            rec::put(&self.ch.health, self.me, &key, record);
        }
    }

    /// This host's health records for checks it no longer runs.
    fn drop_stale_health(&self, checks: &BTreeMap<Check, Duration>) {
        let me = self.me_hex();
        for (key, h) in rec::live(&self.ch.health) {
            if h.host == me && !checks.contains_key(&(h.network.clone(), h.ip, h.port)) {
                rec::remove(&self.ch.health, self.me, &key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_after_two_failures_back_after_one_success() {
        assert_eq!(verdict(0, false), (1, None));
        assert_eq!(verdict(1, false), (2, Some(false)));
        assert_eq!(verdict(2, false), (3, Some(false)));
        assert_eq!(verdict(3, true), (0, Some(true)));
    }
}
