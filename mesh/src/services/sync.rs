//! Keeps this host's part of every service in line with the records: the
//! rules in each local container's namespace, the labels this host
//! publishes, the VIPs' address claims. Runs on every change of the
//! records it reads and of the failure detector's verdicts (hosts going
//! up, down or silent change no record), and every second (a lost
//! endpoint record is written again on its own backoff).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use super::lb::{self, Backend, Frontend};
use super::targets::{self, Facts};
use super::Services;
use mesh_model::records::{self as rec};
use mesh_model::services::ServiceDef;

const TICK: Duration = Duration::from_secs(1);
/// Counters are read (one `nft` per namespace) at most this often.
const COUNTER_READ: Duration = Duration::from_secs(2);

/// The frontends of `def`: one per port, each with the targets in its
/// rotation.
pub fn frontends(def: &ServiceDef, facts: &Facts) -> Vec<Frontend> {
    let ts = targets::targets(def, facts);
    def.ports
        .iter()
        .map(|p| Frontend {
            vip: def.vip,
            vip6: def.vip6,
            port: p.port,
            protocol: p.protocol,
            scheduler: def.scheduler,
            backends: ts
                .iter()
                .filter(|t| targets::active(&def.network, t, p, facts))
                .map(|t| Backend {
                    ip: t.ip,
                    ip6: t.ip6,
                    port: t.port_for(p),
                    weight: t.weight,
                    counter: lb::counter_name(&def.key(), t.ip),
                })
                .collect(),
        })
        .collect()
}

impl Services {
    /// Follows the records for as long as the daemon runs.
    pub fn spawn(self: Arc<Self>) {
        let channels = vec![
            self.ch.services.subscribe(),
            self.ch.labels.subscribe(),
            self.ch.health.subscribe(),
            self.channels.endpoints.subscribe(),
            self.channels.networks.subscribe(),
            self.liveness.subscribe(),
        ];
        tokio::spawn(self.clone().health_forever());
        crate::reconcile::follow(self, channels, TICK);
    }

    /// Brings records and rules in line once.
    pub async fn sync_once(&self) {
        self.tidy_records();
        let snap = self.snapshot();
        let facts = snap.facts();
        let services = self.all();
        let mut by_network: BTreeMap<&str, Vec<Frontend>> = BTreeMap::new();
        for def in services.values() {
            by_network
                .entry(def.network.as_str())
                .or_default()
                .extend(frontends(def, &facts));
        }
        // Every namespace attached here, with the frontends of its networks.
        let mut desired: BTreeMap<PathBuf, Vec<Frontend>> = BTreeMap::new();
        for r in self.attacher.records() {
            let fs = by_network
                .get(r.attachment.network.as_str())
                .cloned()
                .unwrap_or_default();
            desired
                .entry(PathBuf::from(&r.attachment.netns))
                .or_default()
                .extend(fs);
        }
        let programmed = self.programmed_snapshot();
        for (netns, fs) in &desired {
            if fs.is_empty() && !programmed.contains_key(netns) {
                continue;
            }
            let script = lb::script(fs);
            if programmed.get(netns) == Some(&script) {
                continue;
            }
            let (path, text) = (netns.clone(), script.clone());
            match tokio::task::spawn_blocking(move || lb::apply(&path, &text)).await {
                Ok(Ok(())) => {
                    debug!(netns = %netns.display(), "service rules installed");
                    self.set_programmed(netns.clone(), Some(script));
                }
                Ok(Err(e)) => {
                    warn!(netns = %netns.display(), "cannot install service rules: {e:#}");
                    self.set_programmed(netns.clone(), None);
                }
                Err(e) => warn!("service rule task failed: {e}"),
            }
        }
        for netns in programmed.keys().filter(|n| !desired.contains_key(*n)) {
            // Detached (or gone): its rules go, if the namespace is still there.
            let path = netns.clone();
            let _ = tokio::task::spawn_blocking(move || lb::remove(&path)).await;
            self.set_programmed(netns.clone(), None);
        }
    }

    fn programmed_snapshot(&self) -> BTreeMap<PathBuf, String> {
        self.programmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_programmed(&self, netns: PathBuf, script: Option<String>) {
        let mut p = self.programmed.lock().unwrap_or_else(|p| p.into_inner());
        match script {
            Some(s) => p.insert(netns, s),
            None => p.remove(&netns),
        };
    }

    /// Labels of this host's attachments published, stale ones removed;
    /// services of removed networks dropped; every VIP claimed.
    fn tidy_records(&self) {
        let me = self.me_hex();
        // First this host's own endpoints, which its labels hang on.
        self.attacher
            .reassert_endpoints(&rec::live(&self.channels.networks));
        for r in self.attacher.records() {
            self.note_attachment(&r.attachment);
        }
        let endpoints = rec::live(&self.channels.endpoints);
        for (key, l) in rec::live(&self.ch.labels) {
            let current = endpoints
                .get(&key)
                .is_some_and(|e| e.mac == l.mac && e.host == l.host);
            if l.host == me && !current {
                rec::remove(&self.ch.labels, self.me, &key);
            }
        }
        let networks = rec::live(&self.channels.networks);
        let vips: BTreeSet<String> = self.vip_keys().into_iter().collect();
        for (key, e) in &endpoints {
            // A claim of ours whose service is gone (deleted while the claim
            // was on its way): the address goes back. Only the claim's own
            // host does this: elsewhere the claim may simply have arrived
            // before the service that made it.
            if super::is_vip_claim(e) && e.host == me && !vips.contains(key) {
                rec::remove(&self.channels.endpoints, self.me, key);
            }
        }
        let live = self.live_hosts(&(self.hosts)());
        for def in self.all().into_values() {
            if !networks.contains_key(&def.network) {
                self.forget(&def);
                continue;
            }
            let key = rec::endpoint_key(&def.network, std::net::IpAddr::V4(def.vip));
            if !endpoints.contains_key(&key) && vip_keeper(&def, &live) == Some(&me) {
                self.claim_vip(&def);
            }
        }
    }

    /// Sums the connection counters of every namespace programmed here.
    async fn read_counters(&self) {
        let namespaces: BTreeSet<PathBuf> = self.programmed_snapshot().into_keys().collect();
        let read = tokio::task::spawn_blocking(move || {
            let mut sum: BTreeMap<String, u64> = BTreeMap::new();
            for ns in namespaces {
                if let Ok(cs) = lb::read_counters(&ns) {
                    for (name, n) in cs {
                        *sum.entry(name).or_default() += n;
                    }
                }
            }
            sum
        })
        .await;
        if let Ok(sum) = read {
            *self.counters.lock().unwrap_or_else(|p| p.into_inner()) = sum;
        }
    }
}

impl crate::reconcile::Reconciler for Services {
    async fn reconcile(self: Arc<Self>) {
        self.sync_once().await;
        let due = {
            let mut last = self.counters_read.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= COUNTER_READ);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            self.read_counters().await;
        }
    }
}

/// The one host that re-claims a service's VIP when its claim is missing:
/// the creator while it is up, else the lowest live host. One keeper, so a
/// host that has seen the claim's removal but not yet the service's cannot
/// take the address back from under a delete and re-create.
fn vip_keeper<'a>(def: &'a ServiceDef, live: &'a BTreeSet<String>) -> Option<&'a String> {
    if live.contains(&def.created_by) {
        return Some(&def.created_by);
    }
    live.iter().next()
}

#[cfg(test)]
mod keeper_tests {
    use super::*;

    fn def(creator: &str) -> ServiceDef {
        ServiceDef {
            network: "web".into(),
            name: "nginx".into(),
            vip: "10.40.0.2".parse().unwrap(),
            vip6: "fd00::2".parse().unwrap(),
            ports: Vec::new(),
            selector: Default::default(),
            scheduler: Default::default(),
            explicit: Vec::new(),
            health_interval_ms: 1000,
            created_by: creator.into(),
        }
    }

    #[test]
    fn the_creator_keeps_its_vip_while_up_then_the_lowest_live_host() {
        let live: BTreeSet<String> = ["bb", "cc"].map(String::from).into();
        assert_eq!(
            vip_keeper(&def("cc"), &live).map(String::as_str),
            Some("cc")
        );
        assert_eq!(
            vip_keeper(&def("aa"), &live).map(String::as_str),
            Some("bb")
        );
        assert_eq!(vip_keeper(&def("aa"), &BTreeSet::new()), None);
    }
}
