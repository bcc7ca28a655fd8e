//! Attaching containers: a veth pair whose host end is on the network's
//! bridge and whose other end, addressed, is in the container's namespace.
//! [`Attacher`] owns this host's attachments from request to reaping: an
//! attachment whose namespace or veth is gone is noticed (a link-deletion
//! event, or the periodic sweep) and its address, DNS record and
//! resolv.conf go with it.

use anyhow::{Context, Result};
use futures::StreamExt;
use gossip::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

use crate::alloc::Allocator;
use crate::api::{self, Attachment};
use crate::error::ApiError;
use crate::netdev::{format_mac, hostname_of, in_netns, Netlink, NetnsTarget};
use crate::resolvconf::NetnsEtc;
use crate::state::{AttachmentRecord, AttachmentStore};
use mesh_model::hosts::Members;
use mesh_model::networks;
use mesh_model::records::{self, EndpointRecord, NetworkDef, Records};

mod macvlan;
mod reassert;
pub use macvlan::is_macvlan;
mod runtime;

/// How often attachments are checked for a vanished namespace or veth,
/// besides the check each link-deletion event triggers.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

pub struct Attacher {
    nl: Netlink,
    prefix: String,
    mtu: std::sync::Arc<crate::mtu::Mtus>,
    me: PeerId,
    store: AttachmentStore,
    alloc: Arc<Allocator>,
    endpoints: Records<EndpointRecord>,
    etc: NetnsEtc,
    /// Serialises attach, detach and reaping (taken after the daemon's
    /// device lock where both are held).
    ops: tokio::sync::Mutex<()>,
    /// When each endpoint record may be written again (see [`reassert`]).
    reasserts: std::sync::Mutex<reassert::Backoff>,
}

impl Attacher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        nl: Netlink,
        prefix: String,
        mtu: std::sync::Arc<crate::mtu::Mtus>,
        me: PeerId,
        store: AttachmentStore,
        alloc: Arc<Allocator>,
        endpoints: Records<EndpointRecord>,
        etc: NetnsEtc,
    ) -> Attacher {
        Attacher {
            nl,
            prefix,
            mtu,
            me,
            store,
            alloc,
            endpoints,
            etc,
            ops: tokio::sync::Mutex::new(()),
            reasserts: Default::default(),
        }
    }

    /// Never waits for an attach in progress.
    pub fn list(&self) -> Vec<Attachment> {
        self.store
            .snapshot()
            .into_iter()
            .map(|a| a.attachment)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.store.len()
    }

    pub fn records(&self) -> Vec<AttachmentRecord> {
        self.store.snapshot()
    }

    /// Attaches `req.target` to `net`, whose bridge here has wire id `wire`.
    /// Any failure undoes every step: no veth, no address, no record.
    pub async fn attach(
        &self,
        net: &NetworkDef,
        wire: u32,
        req: &api::AttachRequest,
        members: &dyn Members,
    ) -> Result<Attachment, ApiError> {
        mesh_model::services::spec::check_labels(&req.labels)?;
        let target = NetnsTarget::resolve(&req.target).map_err(|e| {
            if e.is_missing() {
                ApiError::NotFound(e.to_string())
            } else {
                ApiError::BadRequest(e.to_string())
            }
        })?;
        if target.is_current() {
            return Err(ApiError::BadRequest(format!(
                "{} is meshd's own network namespace, not a container's",
                target.path.display()
            )));
        }
        let name = match &req.name {
            Some(name) => {
                validate_dns_label(name)?;
                Some(name.clone())
            }
            None => default_name(req, &target),
        };
        if req.mode == Some(api::AttachMode::Macvlan) {
            return self.attach_macvlan(net, req, &target, name, members).await;
        }
        if req.parent.is_some() {
            return Err(ApiError::BadRequest(
                "--parent is for --mode macvlan".into(),
            ));
        }
        let requested = networks::requested_address(req.ip.as_deref(), net)?;
        let ifname = req
            .ifname
            .clone()
            .unwrap_or_else(|| networks::default_ifname(&net.id));
        networks::validate_ifname(&ifname).map_err(ApiError::bad)?;

        let _ops = self.ops.lock().await;
        if let Some(a) = self.store.snapshot().iter().find(|a| {
            !is_macvlan(a)
                && a.attachment.network == net.id
                && a.netns_dev == target.dev
                && a.netns_ino == target.ino
        }) {
            return Err(ApiError::Conflict(format!(
                "{} is already attached to network {} as {}",
                req.target, net.id, a.attachment.ip
            )));
        }
        let ip = self.alloc.allocate(net, requested, members).await?;
        let ip6 = net.ipv6_for(ip);
        let suffix: u32 = rand::random();
        let host_if = format!("{}v{suffix:08x}", self.prefix);
        let peer_if = format!("{}c{suffix:08x}", self.prefix);
        let mac = match self
            .plumb_veth(&target, wire, &host_if, &peer_if, &ifname, net, ip, ip6)
            .await
        {
            Ok(mac) => mac,
            Err(e) => return Err(self.undo(&host_if, net, ip, &req.target, e).await),
        };
        let dns = mesh_model::ipam::service_address(net.subnet);
        let attachment = Attachment {
            network: net.id.clone(),
            netns: target.path.display().to_string(),
            ifname,
            host_ifname: host_if.clone(),
            ip: format!("{ip}/{}", net.subnet.prefix_len()),
            ip6: Some(format!("{ip6}/{}", net.subnet6.prefix_len())),
            mac: format_mac(&mac),
            dns_server: Some(dns.to_string()),
            dns_search: Some(net.id.clone()),
            container_id: req.container_id.clone(),
            name,
            version: req.version.clone(),
            labels: req.labels.clone(),
            origin: req.origin.clone(),
        };
        let rec = AttachmentRecord {
            attachment: attachment.clone(),
            netns_dev: target.dev,
            netns_ino: target.ino,
            runtime_plumbed: false,
        };
        if let Err(e) = self.store.add(rec) {
            return Err(self.undo(&host_if, net, ip, &req.target, e).await);
        }
        self.announce(&attachment, net, ip, Some(ip6));
        if let Err(e) = self.etc.write(&attachment.netns, &net.id, dns) {
            warn!(netns = %attachment.netns, "cannot write the namespace's resolv.conf: {e}");
        }
        info!(network = %net.id, netns = %attachment.netns, ip = %attachment.ip, "attached");
        Ok(attachment)
    }

    /// Puts the attachment's endpoint record (its DNS name and address).
    fn announce(&self, a: &Attachment, net: &NetworkDef, ip: Ipv4Addr, ip6: Option<Ipv6Addr>) {
        self.announce_as(a, net, ip, ip6, a.version.clone());
    }

    /// [`Self::announce`] with the record's version field given (macvlan
    /// attachments carry a mark there instead of a version).
    fn announce_as(
        &self,
        a: &Attachment,
        net: &NetworkDef,
        ip: Ipv4Addr,
        ip6: Option<Ipv6Addr>,
        version: Option<String>,
    ) {
        records::put(
            &self.endpoints,
            self.me,
            &records::endpoint_key(&net.id, IpAddr::V4(ip)),
            EndpointRecord {
                network: net.id.clone(),
                ip: IpAddr::V4(ip),
                ip6,
                mac: a.mac.clone(),
                host: self.me.to_hex(),
                name: a.name.clone(),
                version,
            },
        );
    }

    /// Undoes a failed attach: deleting the host end removes the pair,
    /// wherever the other end went; the address goes back to the pool.
    async fn undo(
        &self,
        host_if: &str,
        net: &NetworkDef,
        ip: Ipv4Addr,
        target: &str,
        cause: anyhow::Error,
    ) -> ApiError {
        if let Err(e) = self.nl.delete(host_if).await {
            warn!("cleanup of {host_if} after a failed attach: {e:#}");
        }
        self.alloc.release(&net.id, ip);
        ApiError::Internal(cause.context(format!("attaching {target} to network {}", net.id)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn plumb_veth(
        &self,
        target: &NetnsTarget,
        wire: u32,
        host_if: &str,
        peer_if: &str,
        ifname: &str,
        net: &NetworkDef,
        ip: Ipv4Addr,
        ip6: Ipv6Addr,
    ) -> Result<[u8; 6]> {
        let bridge = self
            .nl
            .link(&networks::bridge_name(&self.prefix, wire))
            .await?
            .context("the network's bridge is missing")?;
        let mtu = self.mtu.of(&net.id);
        self.nl.create_veth(host_if, peer_if, mtu).await?;
        self.nl.enslave(host_if, &bridge, mtu).await?;
        self.nl.move_to_netns(peer_if, &target.open()?).await?;
        let (peer_if, ifname) = (peer_if.to_string(), ifname.to_string());
        let (len4, len6) = (net.subnet.prefix_len(), net.subnet6.prefix_len());
        in_netns(target, move || async move {
            // Before it comes up: the link-local address port security
            // admits is the EUI-64 one, and routers are the hosts' alone.
            for (key, value) in [("addr_gen_mode", "0"), ("accept_ra", "0")] {
                let path = format!("/proc/sys/net/ipv6/conf/{peer_if}/{key}");
                // No IPv6 in the namespace (disabled): nothing to set.
                let _ = std::fs::write(&path, value);
            }
            let nl = Netlink::connect()?;
            let mac = nl
                .configure_interface(&peer_if, &ifname, mtu, IpAddr::V4(ip), len4)
                .await?;
            nl.add_address(&ifname, IpAddr::V6(ip6), len6, true).await?;
            Ok(mac)
        })
        .await
    }

    pub async fn detach(
        &self,
        net: &NetworkDef,
        req: &api::DetachRequest,
    ) -> Result<Attachment, ApiError> {
        if req.target.is_none() && req.container_id.is_none() {
            return Err(ApiError::BadRequest(
                "detach needs a target (PID or netns path) or a container id".into(),
            ));
        }
        // The namespace may be gone already (the container exited): then
        // match the path we recorded, or the container id.
        let target = req
            .target
            .as_deref()
            .and_then(|t| NetnsTarget::resolve(t).ok());
        let _ops = self.ops.lock().await;
        let matches = |a: &AttachmentRecord| {
            a.attachment.network == net.id
                && req
                    .origin
                    .as_ref()
                    .is_none_or(|o| *o == a.attachment.origin)
                && match (&req.container_id, &target, &req.target) {
                    (Some(id), _, _) => a.attachment.container_id.as_deref() == Some(id.as_str()),
                    (None, Some(t), _) => a.netns_dev == t.dev && a.netns_ino == t.ino,
                    (None, None, Some(path)) => &a.attachment.netns == path,
                    (None, None, None) => false,
                }
        };
        let Some(rec) = self.store.snapshot().into_iter().find(|a| matches(a)) else {
            let what = req
                .container_id
                .as_deref()
                .map(|c| format!("container {c}"))
                .or(req.target.clone())
                .unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "{what} is not attached to network {}",
                net.id
            )));
        };
        if is_macvlan(&rec) {
            self.remove_macvlan(&rec).await;
        } else {
            self.nl.delete(&rec.attachment.host_ifname).await?;
        }
        let (_, saved) = self
            .store
            .remove_where(|a| a.attachment.host_ifname == rec.attachment.host_ifname);
        self.forget(&rec);
        saved?;
        info!(network = %net.id, netns = %rec.attachment.netns, "detached");
        Ok(rec.attachment)
    }

    /// What an attachment leaves in the mesh once its devices are gone:
    /// the DNS record, the address, the namespace's resolv.conf.
    fn forget(&self, rec: &AttachmentRecord) {
        match rec.ip() {
            Ok(ip) => {
                let key = records::endpoint_key(&rec.attachment.network, IpAddr::V4(ip));
                records::remove(&self.endpoints, self.me, &key);
                self.alloc.release(&rec.attachment.network, ip);
            }
            // The store admits no such record; say so if one slips through.
            Err(e) => {
                warn!(netns = %rec.attachment.netns, "cannot release an attachment's address: {e}")
            }
        }
        self.etc
            .remove(&rec.attachment.netns, &rec.attachment.network);
    }

    /// Removes the attachments `stale` picks: devices, records, addresses.
    /// Every picked attachment is forgotten even if deleting one device
    /// fails (a leftover veth is removed as stale at the next start), so
    /// no address or DNS record leaks; the first error is returned.
    async fn drop_where(&self, stale: impl FnMut(&AttachmentRecord) -> bool) -> Result<usize> {
        let (gone, saved) = self.store.remove_where(stale);
        let mut first_error = None;
        for rec in &gone {
            if is_macvlan(rec) {
                self.remove_macvlan(rec).await;
                self.forget(rec);
                continue;
            }
            if let Err(e) = self.nl.delete(&rec.attachment.host_ifname).await {
                warn!(dev = %rec.attachment.host_ifname, "cannot delete a detached container's veth: {e:#}");
                first_error.get_or_insert(e);
            }
            self.forget(rec);
        }
        saved?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(gone.len()),
        }
    }

    /// Detaches every container of a network about to be taken down.
    pub async fn drop_network(&self, network: &str) -> Result<usize> {
        let _ops = self.ops.lock().await;
        self.drop_where(|a| a.attachment.network == network).await
    }

    /// Reaps attachments whose host-side veth is gone. The kernel deletes
    /// the pair when the container's namespace dies, so that is the one
    /// signal: the recorded path is not (a `/proc/PID/ns/net` path vanishes
    /// when that process exits even while another keeps the namespace).
    pub async fn sweep(&self) -> Result<usize> {
        let _ops = self.ops.lock().await;
        let links: BTreeSet<String> = self.nl.links().await?.into_iter().map(|l| l.name).collect();
        let n = self
            .drop_where(|rec| {
                let stale = if is_macvlan(rec) {
                    !namespace_of(rec).still_exists()
                } else {
                    !links.contains(&rec.attachment.host_ifname)
                };
                if stale {
                    info!(network = %rec.attachment.network, netns = %rec.attachment.netns, ip = %rec.attachment.ip, "reaping an attachment whose namespace is gone");
                }
                stale
            })
            .await?;
        Ok(n)
    }

    /// At start: keeps the attachments whose namespace, veth and network
    /// still exist, reaps the rest, and notes the kept addresses.
    pub async fn adopt(&self, networks: &BTreeMap<String, NetworkDef>) -> Result<()> {
        let _ops = self.ops.lock().await;
        let links: BTreeSet<String> = self.nl.links().await?.into_iter().map(|l| l.name).collect();
        self.drop_where(|rec| {
            let keep = (is_macvlan(rec) || links.contains(&rec.attachment.host_ifname))
                && (rec.runtime_plumbed || namespace_of(rec).still_exists())
                && networks.contains_key(&rec.attachment.network);
            if !keep {
                info!(network = %rec.attachment.network, netns = %rec.attachment.netns, "dropping stale attachment");
            }
            !keep
        })
        .await?;
        for rec in self.store.snapshot() {
            if let Ok(ip) = rec.ip() {
                self.alloc.note_allocated(&rec.attachment.network, ip);
            }
        }
        Ok(())
    }

    /// Follows link deletions, and sweeps every [`SWEEP_INTERVAL`], so a
    /// vanished container is reaped within seconds even if an event is lost
    /// (or came while meshd was not running).
    pub async fn reap_forever(self: Arc<Self>) {
        let prefix = format!("{}v", self.prefix);
        let mut events = match Netlink::link_deletions() {
            Ok(s) => Some(Box::pin(s)),
            Err(e) => {
                warn!("no link events, relying on the sweep alone: {e:#}");
                None
            }
        };
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deleted = async {
                match events.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                name = deleted => match name {
                    Some(name) if name.starts_with(&prefix) => {}
                    Some(_) => continue,
                    None => {
                        warn!("link events ended, relying on the sweep alone");
                        events = None;
                        continue;
                    }
                },
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sweep().await {
                warn!("sweeping attachments: {e:#}");
            }
        }
    }
}

fn namespace_of(rec: &AttachmentRecord) -> NetnsTarget {
    NetnsTarget {
        path: rec.attachment.netns.clone().into(),
        dev: rec.netns_dev,
        ino: rec.netns_ino,
    }
}

/// The DNS name of a container attached without `--name`: its runtime id,
/// else its hostname (for a PID), else the name of its `ip netns`
/// namespace; made into a valid DNS label.
fn default_name(req: &api::AttachRequest, target: &NetnsTarget) -> Option<String> {
    let raw = req
        .container_id
        .clone()
        .or_else(|| {
            let pid: u32 = req.target.trim().parse().ok()?;
            hostname_of(pid)
        })
        .or_else(|| {
            target
                .path
                .strip_prefix("/run/netns")
                .ok()
                .map(|p| p.display().to_string())
        })?;
    networks::dns_label_from(&raw)
}

/// Container names become DNS labels: keep them to what DNS allows.
fn validate_dns_label(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "name {name:?} is not a valid DNS label (1-63 of letters, digits, '-', '_')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dns_labels() {
        assert!(validate_dns_label("web_1").is_ok());
        assert!(validate_dns_label("-web").is_err());
        assert!(validate_dns_label("").is_err());
    }
}
