//! Traffic control: network policy (who may reach whom on a `deny`
//! network) and QoS (rate and ceiling per container interface).
//!
//! - what is replicated (the channels, their keys) is
//!   [`mesh_model::traffic`], and checking user and peer input
//!   [`mesh_model::traffic::spec`],
//! - [`policy`]: the policy table on this host,
//! - [`tc`]: HTB on container interfaces,
//! - [`delay`]: delay, jitter and loss, done by the data plane,
//! - [`ports`]: port security, each container's veth admits only its
//!   own MAC and addresses,
//! - [`plan`]: from replicated records to what this host installs (pure).
//!
//! Rules and shaping are replicated (written by any member); every host installs its own part: the policy of the
//! containers it delivers to, and the shaping of its containers.

mod carried;
pub mod delay;
pub mod plan;
pub mod policy;
pub mod ports;
pub mod tc;

use gossip::PeerId;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, warn};

use crate::api::{self, PolicyRule, QosEntry};
use crate::attach::Attacher;
use crate::error::ApiError;
use crate::kernel::nft::{self as kernel, Family};
use carried::Carried;
use mesh_model::records::{self as rec, Channels, Records};
use mesh_model::services::LabelRecord;
use mesh_model::traffic::{policy_key, qos_key, spec, TrafficChannels};

/// What this host last installed.
#[derive(Default)]
struct Installed {
    ruleset: Option<String>,
    /// Policy drops per (network, container address).
    policy_drops: Carried<(String, String)>,
    /// The port-security table installed.
    ports: Option<String>,
    /// Why the last port-security install failed (cleared by a success).
    ports_error: Option<String>,
    /// Port-security drops per (network, container address, reason).
    port_drops: Carried<(String, String, ports::Reason)>,
    /// Bridges whose IP frames already pass the IP hooks.
    hooked: std::collections::BTreeSet<String>,
    /// Host-side veth → shaping installed on both ends.
    shaped: BTreeMap<String, tc::Htb>,
    /// Networks whose delay, jitter or loss the data plane applies.
    impaired: BTreeMap<String, delay::NetPlan>,
    /// Bridge ports set up for a shaped network (container veths and TAPs).
    isolated: std::collections::BTreeSet<String>,
}

pub struct Traffic {
    me: PeerId,
    prefix: String,
    pub(crate) ch: TrafficChannels,
    channels: Channels,
    labels: Records<LabelRecord>,
    attacher: Arc<Attacher>,
    dp: dataplane::Dataplane,
    installed: Mutex<Installed>,
}

impl Traffic {
    pub fn new(
        me: PeerId,
        prefix: String,
        ch: TrafficChannels,
        channels: Channels,
        labels: Records<LabelRecord>,
        attacher: Arc<Attacher>,
        dp: dataplane::Dataplane,
    ) -> Arc<Traffic> {
        Arc::new(Traffic {
            me,
            prefix,
            ch,
            channels,
            labels,
            attacher,
            dp,
            installed: Mutex::new(Installed::default()),
        })
    }

    fn network(&self, id: &str) -> Result<mesh_model::records::NetworkDef, ApiError> {
        rec::get(&self.channels.networks, id).ok_or_else(|| ApiError::network_not_found(id))
    }

    fn facts(&self) -> plan::Facts {
        plan::Facts {
            me: self.me.to_hex(),
            prefix: self.prefix.clone(),
            networks: rec::live(&self.channels.networks),
            settings: rec::live(&self.channels.settings),
            endpoints: rec::live(&self.channels.endpoints),
            labels: rec::live(&self.labels),
            rules: rec::live(&self.ch.policies),
            qos: rec::live(&self.ch.qos),
            attachments: self.attacher.records(),
        }
    }

    // ---- API operations ----

    pub fn add_policy(&self, req: api::PolicyAddRequest) -> Result<PolicyRule, ApiError> {
        self.network(&req.network)?;
        let from = spec::parse_from(&req.from)?;
        let to = spec::parse_selector(&req.to)?;
        let mut ports = req
            .ports
            .iter()
            .map(|p| spec::parse_port(p))
            .collect::<Result<Vec<_>, _>>()?;
        ports.sort();
        ports.dedup();
        let name = match req.name {
            Some(n) => n,
            None => spec::default_rule_name(&from, &to, &ports),
        };
        let rule = PolicyRule {
            network: req.network.clone(),
            name,
            from,
            to,
            ports,
        };
        spec::check_rule(&rule)?;
        let key = policy_key(&rule.network, &rule.name);
        let rules = rec::live(&self.ch.policies);
        match rules.get(&key) {
            Some(existing) if *existing == rule => return Ok(rule),
            Some(_) => {
                return Err(ApiError::Conflict(format!(
                    "network {} already has a rule named {:?}; remove it first (`meshctl policy rm {} {}`)",
                    rule.network, rule.name, rule.network, rule.name
                )))
            }
            None => {}
        }
        let count = rules.values().filter(|r| r.network == rule.network).count();
        if count >= spec::MAX_RULES_PER_NETWORK {
            return Err(ApiError::BadRequest(format!(
                "network {} already has {count} rules (the most one network may have)",
                rule.network
            )));
        }
        rec::put(&self.ch.policies, self.me, &key, rule.clone());
        self.install();
        Ok(rule)
    }

    pub fn policies(&self) -> Vec<PolicyRule> {
        rec::live(&self.ch.policies).into_values().collect()
    }

    pub fn remove_policy(&self, network: &str, name: &str) -> Result<PolicyRule, ApiError> {
        self.network(network)?;
        let key = policy_key(network, name);
        let rule = rec::get(&self.ch.policies, &key).ok_or_else(|| {
            ApiError::NotFound(format!(
                "network {network} has no rule named {name:?} (see `meshctl policy list {network}`)"
            ))
        })?;
        rec::remove(&self.ch.policies, self.me, &key);
        self.install();
        Ok(rule)
    }

    /// The container `target` of `network`, as its address: a DNS name, an
    /// address, or (on its host) a PID or namespace path.
    fn container_ip(&self, network: &str, target: &str) -> Result<String, ApiError> {
        let bare = target.split('/').next().unwrap_or(target);
        let endpoints = rec::live(&self.channels.endpoints);
        let on_net = || {
            endpoints
                .values()
                .filter(|e| e.network == network && !e.mac.is_empty())
        };
        if let Some(e) =
            on_net().find(|e| e.ip.to_string() == bare || e.name.as_deref() == Some(target))
        {
            return Ok(e.ip.to_string());
        }
        let netns = if target.chars().all(|c| c.is_ascii_digit()) {
            format!("/proc/{target}/ns/net")
        } else {
            target.to_string()
        };
        let local = self
            .attacher
            .records()
            .into_iter()
            .find(|r| r.attachment.network == network && r.attachment.netns == netns);
        match local.and_then(|r| r.ip().ok()) {
            Some(ip) => Ok(ip.to_string()),
            None => Err(ApiError::NotFound(format!(
                "no container {target:?} on network {network} (a name, an address, or on its host a PID or netns path)"
            ))),
        }
    }

    pub fn set_qos(&self, req: api::QosSetRequest) -> Result<QosEntry, ApiError> {
        self.network(&req.network)?;
        let container = match &req.container {
            Some(t) => Some(self.container_ip(&req.network, t)?),
            None => None,
        };
        let entry = QosEntry {
            network: req.network.clone(),
            container,
            rate_kbit: req.rate_kbit,
            ceiling_kbit: req.ceiling_kbit,
            delay_ms: req.delay_ms,
            jitter_ms: req.jitter_ms,
            loss_percent: req.loss_percent,
        };
        spec::check_qos(&entry)?;
        let key = qos_key(&entry.network, entry.container.as_deref());
        rec::put(&self.ch.qos, self.me, &key, entry.clone());
        self.install();
        Ok(entry)
    }

    /// Removes a container's shaping, or a network's with every one of
    /// its containers'. Returns what was removed.
    pub fn reset_qos(&self, req: api::QosResetRequest) -> Result<Vec<QosEntry>, ApiError> {
        self.network(&req.network)?;
        let container = match &req.container {
            Some(t) => Some(self.container_ip(&req.network, t)?),
            None => None,
        };
        let removed: Vec<(String, QosEntry)> = rec::live(&self.ch.qos)
            .into_iter()
            .filter(|(_, q)| {
                q.network == req.network && (container.is_none() || q.container == container)
            })
            .collect();
        for (key, _) in &removed {
            rec::remove(&self.ch.qos, self.me, key);
        }
        self.install();
        Ok(removed.into_iter().map(|(_, q)| q).collect())
    }

    /// `network rm`: the network's rules and shaping go with it (a network
    /// created later under the same id starts clean).
    pub fn forget_network(&self, network: &str) {
        for (key, r) in rec::live(&self.ch.policies) {
            if r.network == network {
                rec::remove(&self.ch.policies, self.me, &key);
            }
        }
        for (key, q) in rec::live(&self.ch.qos) {
            if q.network == network {
                rec::remove(&self.ch.qos, self.me, &key);
            }
        }
    }

    pub fn qos(&self) -> Vec<QosEntry> {
        rec::live(&self.ch.qos).into_values().collect()
    }

    // ---- installing ----

    /// Brings this host's policy table and shaping in line with the
    /// records. Failures are logged and retried by the next pass.
    pub fn install(&self) {
        let facts = self.facts();
        let mut inst = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        self.install_ports(&mut inst);
        self.install_policy(&facts, &mut inst);
        self.install_shaping(&facts, &mut inst);
        self.install_impairment(&facts, &mut inst);
    }

    fn install_impairment(&self, facts: &plan::Facts, inst: &mut Installed) {
        let plans = delay::plan(facts);
        for (id, p) in &plans {
            if inst.impaired.get(id) != Some(p) {
                debug!(network = %id, "data-plane delay/loss set");
                self.dp
                    .set_shaping(dataplane::NetworkId(p.wire), Some(p.shaping()));
            }
        }
        for (id, p) in &inst.impaired {
            if !plans.contains_key(id) {
                self.dp.set_shaping(dataplane::NetworkId(p.wire), None);
            }
        }
        // The ports: every local container port and the TAP of a shaped network.
        let mut want: BTreeMap<String, bool> = BTreeMap::new();
        for r in self.attacher.records() {
            if plans.contains_key(&r.attachment.network) {
                want.insert(r.attachment.host_ifname.clone(), false);
            }
        }
        for p in plans.values() {
            want.insert(mesh_model::networks::tap_name(&self.prefix, p.wire), true);
        }
        for (port, is_tap) in &want {
            if inst.isolated.contains(port) {
                continue;
            }
            let done = match is_tap {
                true => delay::tap_learning(port, false),
                false => delay::isolate(port, true),
            };
            match done {
                Ok(()) => {
                    inst.isolated.insert(port.clone());
                }
                // A port not there yet (a start, an attach in progress).
                Err(e) => debug!("{e:#}"),
            }
        }
        let taps: Vec<String> = inst
            .impaired
            .values()
            .map(|p| mesh_model::networks::tap_name(&self.prefix, p.wire))
            .collect();
        inst.isolated.retain(|port| {
            if want.contains_key(port) {
                return true;
            }
            // Back to a plain bridge port (it may be gone: then nothing to do).
            let _ = match taps.contains(port) {
                true => delay::tap_learning(port, true),
                false => delay::isolate(port, false),
            };
            false
        });
        inst.impaired = plans;
    }

    fn install_policy(&self, facts: &plan::Facts, inst: &mut Installed) {
        let nets = plan::deny_networks(facts);
        let script = policy::ruleset(&self.prefix, &nets);
        if inst.ruleset.as_deref() != Some(script.as_str()) {
            let before = policy::read_counters(&self.prefix);
            match policy::apply(&self.prefix, &nets) {
                Ok(()) => {
                    inst.policy_drops.carry(&before);
                    debug!(networks = nets.len(), "policy table installed");
                    inst.ruleset = Some(script);
                    inst.policy_drops.installed(
                        nets.iter()
                            .flat_map(|n| {
                                n.containers.iter().map(move |c| {
                                    (
                                        policy::counter_name(n.wire, c.ip),
                                        (c.network.clone(), c.ip.to_string()),
                                    )
                                })
                            })
                            .collect(),
                    );
                }
                Err(e) => {
                    inst.ruleset = None;
                    warn!("network policy NOT installed on this host: {e:#}");
                }
            }
        }
        for n in &nets {
            if inst.hooked.contains(&n.bridge) {
                continue;
            }
            // The bridge may not be up yet (a start); the next pass retries.
            match policy::route_through_ip_hooks(&n.bridge) {
                Ok(()) => {
                    inst.hooked.insert(n.bridge.clone());
                }
                Err(e) => debug!("{e:#}"),
            }
        }
    }

    /// Installs what the records say now and tells whether every local
    /// container's port security is in place (an attach is not done
    /// without it).
    pub fn install_checked(&self) -> Result<(), String> {
        self.install();
        let inst = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        match &inst.ports_error {
            Some(e) => Err(format!("port security could not be installed: {e}")),
            None => Ok(()),
        }
    }

    /// Port security first: a container's frames are checked before any
    /// rule that trusts their source address.
    fn install_ports(&self, inst: &mut Installed) {
        let ports = plan::ports(&self.attacher.records());
        let script = ports::ruleset(&self.prefix, &ports);
        if inst.ports.as_deref() == Some(script.as_str()) {
            return;
        }
        let table = ports::table_name(&self.prefix);
        let before = kernel::counters(None, Family::Bridge, &table).unwrap_or_default();
        match kernel::run(&script) {
            Ok(()) => {
                inst.ports_error = None;
                // Only now is the old table gone with its counts.
                inst.port_drops.carry(&before);
                debug!(ports = ports.len(), "port security installed");
                inst.ports = Some(script);
                inst.port_drops.installed(
                    ports
                        .iter()
                        .flat_map(|p| {
                            ports::Reason::ALL.map(|r| {
                                (
                                    ports::counter_name(&p.host_if, r),
                                    (p.network.clone(), p.ip.to_string(), r),
                                )
                            })
                        })
                        .collect(),
                );
            }
            Err(e) => {
                inst.ports = None;
                inst.ports_error = Some(e.to_string());
                warn!("port security NOT installed on this host: {e:#}");
            }
        }
    }

    fn install_shaping(&self, facts: &plan::Facts, inst: &mut Installed) {
        let locals = self.attacher.records();
        let mut seen = std::collections::BTreeSet::new();
        for r in &locals {
            let a = &r.attachment;
            seen.insert(a.host_ifname.clone());
            let Ok(ip) = r.ip() else { continue };
            let want = plan::htb_for(facts, &a.network, &ip.to_string());
            let have = inst.shaped.get(&a.host_ifname).copied();
            if want == have {
                continue;
            }
            let result = tc::shape(None, &a.host_ifname, want)
                .and_then(|()| tc::shape(Some(Path::new(&a.netns)), &a.ifname, want));
            match result {
                Ok(()) => {
                    debug!(dev = %a.host_ifname, ?want, "shaping installed");
                    match want {
                        Some(h) => inst.shaped.insert(a.host_ifname.clone(), h),
                        None => inst.shaped.remove(&a.host_ifname),
                    };
                }
                Err(e) => warn!(container = %a.ip, "cannot shape the container's traffic: {e:#}"),
            }
        }
        inst.shaped.retain(|dev, _| seen.contains(dev));
    }

    /// Follows the records: reinstalls on every change of the channels the
    /// plan reads, and every 2 s (devices that were not there yet).
    pub fn spawn(self: Arc<Self>) {
        let channels = vec![
            self.ch.policies.subscribe(),
            self.ch.qos.subscribe(),
            self.channels.settings.subscribe(),
            self.channels.endpoints.subscribe(),
            self.channels.networks.subscribe(),
            self.labels.subscribe(),
        ];
        crate::reconcile::follow(self, channels, Duration::from_secs(2));
    }

    /// Prometheus text of the drops by policy (and by QoS loss, counted
    /// by the data plane per network).
    pub fn metrics(&self) -> String {
        use prometheus_client::encoding::text::encode;
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        let mut reg = prometheus_client::registry::Registry::with_prefix("mesh");
        let policy = Family::<Vec<(String, String)>, Counter>::default();
        for ((network, container), n) in self.policy_drops() {
            policy
                .get_or_create(&vec![
                    ("network".into(), network),
                    ("container".into(), container),
                ])
                .inc_by(n);
        }
        let port = Family::<Vec<(String, String)>, Counter>::default();
        for ((network, container, reason), n) in self.port_drops() {
            port.get_or_create(&vec![
                ("network".into(), network),
                ("container".into(), container),
                ("reason".into(), reason.as_str().into()),
            ])
            .inc_by(n);
        }
        reg.register(
            "port_dropped_frames",
            "Frames from or to a container of this host dropped because they are not its own (source MAC or address, ARP, neighbour advertisement, router messages, DHCP server, ethertype; destination: to an address not the container's)",
            port,
        );
        reg.register(
            "policy_dropped_packets",
            "Packets to a container of this host dropped by its network's policy",
            policy,
        );
        let lost = Family::<Vec<(String, String)>, Counter>::default();
        let nets = rec::live(&self.channels.networks);
        let endpoints = rec::live(&self.channels.endpoints);
        for ((net, mac), n) in self.dp.qos_losses() {
            let Some(id) = nets
                .keys()
                .find(|id| mesh_model::networks::wire_id(id) == net.0)
            else {
                continue;
            };
            let container = match mac {
                None => "all".to_string(),
                Some(mac) => match endpoints
                    .values()
                    .find(|e| e.network == *id && delay::parse_mac(&e.mac) == Some(mac))
                {
                    Some(e) => e.ip.to_string(),
                    None => continue,
                },
            };
            lost.get_or_create(&vec![
                ("network".into(), id.clone()),
                ("container".into(), container),
            ])
            .inc_by(n);
        }
        reg.register(
            "qos_lost_frames",
            "Frames read from this host's containers dropped by QoS loss (container=\"all\": the network's total)",
            lost,
        );
        let mut text = String::new();
        if encode(&mut text, &reg).is_err() {
            return String::new();
        }
        text
    }

    /// Policy drops per (network, container address), since meshd started.
    pub fn policy_drops(&self) -> BTreeMap<(String, String), u64> {
        let inst = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        inst.policy_drops
            .totals(&policy::read_counters(&self.prefix))
    }

    /// Port-security drops per (network, container address, reason),
    /// since meshd started.
    pub fn port_drops(&self) -> BTreeMap<(String, String, ports::Reason), u64> {
        let inst = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        let now = kernel::counters(None, Family::Bridge, &ports::table_name(&self.prefix))
            .unwrap_or_default();
        inst.port_drops.totals(&now)
    }
}

impl crate::reconcile::Reconciler for Traffic {
    async fn reconcile(self: Arc<Self>) {
        // nft and tc are processes: off the async threads.
        let _ = tokio::task::spawn_blocking(move || self.install()).await;
    }
}
