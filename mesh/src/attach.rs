//! Attaching containers: a veth pair whose host end is on the network's
//! bridge and whose other end, addressed, is in the container's namespace.

use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tracing::{info, warn};

use crate::api::{self, Attachment};
use crate::daemon::Daemon;
use crate::error::ApiError;
use crate::netdev::{format_mac, in_netns, Netlink, NetnsTarget};
use crate::networks::{self, EndpointRecord, NetworkDef};
use crate::replicated;
use crate::state::AttachmentRecord;

/// For namespaces made by `ip netns add NAME`, `ip netns exec` bind-mounts
/// `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`: we write one
/// there so the network's names resolve. The host's own resolv.conf is
/// never touched.
fn netns_resolv_conf(netns_path: &str) -> Option<std::path::PathBuf> {
    let name = netns_path.strip_prefix("/run/netns/")?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some(
        std::path::Path::new("/etc/netns")
            .join(name)
            .join("resolv.conf"),
    )
}

impl Daemon {
    pub async fn list_attachments(&self) -> Vec<Attachment> {
        self.local
            .lock()
            .await
            .attachments
            .iter()
            .map(|a| a.attachment.clone())
            .collect()
    }

    pub async fn attach(&self, req: api::AttachRequest) -> Result<Attachment, ApiError> {
        let net = self.network(&req.network)?;
        let me = self.id().to_hex();
        if !net.allows_host(&me) {
            return Err(ApiError::BadRequest(format!(
                "network {} is restricted to other hosts; this host is not one of them",
                net.id
            )));
        }
        let requested = match req.ip.as_deref() {
            Some(text) => Some(
                networks::parse_member_address(text, &net)
                    .map_err(ApiError::bad)?
                    .0,
            ),
            None => None,
        };
        let target = NetnsTarget::resolve(&req.target).map_err(|e| {
            let msg = format!("{e:#}");
            if msg.contains("no process") {
                ApiError::NotFound(msg)
            } else {
                ApiError::BadRequest(msg)
            }
        })?;
        if target.is_current() {
            return Err(ApiError::BadRequest(format!(
                "{} is meshd's own network namespace, not a container's",
                target.path.display()
            )));
        }
        let ifname = req
            .ifname
            .clone()
            .unwrap_or_else(|| networks::default_ifname(&net.id));
        networks::validate_ifname(&ifname).map_err(ApiError::bad)?;
        let name = match &req.name {
            Some(name) => {
                validate_dns_label(name)?;
                Some(name.clone())
            }
            None => default_name(&req, &target),
        };

        let mut local = self.local.lock().await;
        if let Some(a) = local.attachments.iter().find(|a| {
            a.attachment.network == net.id && a.netns_dev == target.dev && a.netns_ino == target.ino
        }) {
            return Err(ApiError::Conflict(format!(
                "{} is already attached to network {} as {}",
                req.target, net.id, a.attachment.ip
            )));
        }
        let Some(&wire) = local.realized.get(&net.id) else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "network {} has no bridge on this host; see the meshd log",
                net.id
            )));
        };
        let ip = self.allocate(&net, requested).await?;
        let prefix_len = net.subnet.prefix_len();
        let ip6 = net.ipv6_for(ip);

        let suffix: u32 = rand::random();
        let prefix = &self.settings.link_prefix;
        let host_if = format!("{prefix}v{suffix:08x}");
        let peer_if = format!("{prefix}c{suffix:08x}");
        let plumbed = self
            .plumb_veth(&target, wire, &host_if, &peer_if, &ifname, &net, ip, ip6)
            .await;
        let mac = match plumbed {
            Ok(mac) => mac,
            Err(e) => {
                // Undo: deleting the host end removes the pair, wherever the
                // other end went; the address goes back to the pool.
                if let Err(e2) = self.nl.delete(&host_if).await {
                    warn!("cleanup of {host_if} after a failed attach: {e2:#}");
                }
                self.release(&net.id, ip);
                return Err(ApiError::Internal(e.context(format!(
                    "attaching {} to network {}",
                    req.target, net.id
                ))));
            }
        };
        let dns = crate::ipam::service_address(net.subnet);
        let attachment = Attachment {
            network: net.id.clone(),
            netns: target.path.display().to_string(),
            ifname,
            host_ifname: host_if,
            ip: format!("{ip}/{prefix_len}"),
            ip6: Some(format!("{ip6}/{}", net.subnet6.prefix_len())),
            mac: format_mac(&mac),
            dns_server: Some(dns.to_string()),
            dns_search: Some(net.id.clone()),
            container_id: req.container_id.clone(),
            name: name.clone(),
            version: req.version.clone(),
        };
        local.attachments.push(AttachmentRecord {
            attachment: attachment.clone(),
            netns_dev: target.dev,
            netns_ino: target.ino,
        });
        self.state.save_attachments(&local.attachments)?;
        replicated::put(
            &self.endpoints,
            self.id(),
            &networks::endpoint_key(&net.id, IpAddr::V4(ip)),
            EndpointRecord {
                network: net.id.clone(),
                ip: IpAddr::V4(ip),
                ip6: Some(ip6),
                mac: attachment.mac.clone(),
                host: me,
                name: name.clone(),
                version: req.version.clone(),
            },
        );
        if let Some(path) = netns_resolv_conf(&attachment.netns) {
            if !path.exists() {
                let text = format!(
                    "# written by meshd for network {}\nnameserver {dns}\nsearch {}\n",
                    net.id, net.id
                );
                if let Err(e) = path
                    .parent()
                    .map(std::fs::create_dir_all)
                    .unwrap_or(Ok(()))
                    .and_then(|_| std::fs::write(&path, text))
                {
                    warn!("cannot write {}: {e}", path.display());
                }
            }
        }
        info!(network = %net.id, netns = %attachment.netns, ip = %attachment.ip, "attached");
        Ok(attachment)
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
            .link(&networks::bridge_name(&self.settings.link_prefix, wire))
            .await?
            .context("the network's bridge is missing")?;
        self.nl.create_veth(host_if, peer_if, self.mtu).await?;
        self.nl.enslave(host_if, &bridge, self.mtu).await?;
        self.nl.move_to_netns(peer_if, &target.open()?).await?;
        let (peer_if, ifname, mtu) = (peer_if.to_string(), ifname.to_string(), self.mtu);
        let (len4, len6) = (net.subnet.prefix_len(), net.subnet6.prefix_len());
        in_netns(target, move || async move {
            let nl = Netlink::connect()?;
            let mac = nl
                .configure_interface(&peer_if, &ifname, mtu, IpAddr::V4(ip), len4)
                .await?;
            nl.add_address(&ifname, IpAddr::V6(ip6), len6, true).await?;
            Ok(mac)
        })
        .await
    }

    pub async fn detach(&self, req: api::DetachRequest) -> Result<Attachment, ApiError> {
        let net = self.network(&req.network)?;
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
        let mut local = self.local.lock().await;
        let pos = local.attachments.iter().position(|a| {
            a.attachment.network == net.id
                && match (&req.container_id, &target, &req.target) {
                    (Some(id), _, _) => a.attachment.container_id.as_deref() == Some(id.as_str()),
                    (None, Some(t), _) => a.netns_dev == t.dev && a.netns_ino == t.ino,
                    (None, None, Some(path)) => &a.attachment.netns == path,
                    (None, None, None) => false,
                }
        });
        let Some(pos) = pos else {
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
        let rec = local.attachments[pos].clone();
        self.nl.delete(&rec.attachment.host_ifname).await?;
        local.attachments.remove(pos);
        self.state.save_attachments(&local.attachments)?;
        self.forget_endpoint(&rec);
        if let Some(path) = netns_resolv_conf(&rec.attachment.netns) {
            let ours = std::fs::read_to_string(&path)
                .map(|t| t.starts_with(&format!("# written by meshd for network {}\n", net.id)))
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(&path);
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        info!(network = %net.id, netns = %rec.attachment.netns, "detached");
        Ok(rec.attachment)
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
    let label: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_string();
    (!label.is_empty()).then_some(label)
}

/// The hostname a process sees (its UTS namespace), read on a thread of
/// our own that enters that namespace.
fn hostname_of(pid: u32) -> Option<String> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/uts")).ok()?;
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUTS).ok()?;
        nix::unistd::gethostname().ok()?.into_string().ok()
    })
    .join()
    .ok()
    .flatten()
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
