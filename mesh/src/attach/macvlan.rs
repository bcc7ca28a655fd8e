//! `attach --mode macvlan --parent IFACE`: the container gets a macvlan
//! interface on the host's NIC instead of a veth on the overlay, and sits
//! on the physical network (the workloads that must). It is named in the
//! network's DNS like any attachment; its address is one of the physical
//! network (`--ip`), or, without `--ip`, one allocated from the network
//! (for a network whose subnet is that LAN's). It has no host end, so
//! `host_ifname` is empty, and it goes when its namespace goes.
//!
//! Limits, by what macvlan is: the host itself cannot reach its own
//! macvlan containers through the parent, and they are not on the overlay
//! (no mesh DNS server, no service VIPs) unless also attached in bridge mode.

use super::*;
use mesh_model::records::MACVLAN_MARK;

/// Whether an attachment is a macvlan one (it has no host end).
pub fn is_macvlan(rec: &AttachmentRecord) -> bool {
    rec.attachment.host_ifname.is_empty()
}

impl Attacher {
    pub(super) async fn attach_macvlan(
        &self,
        net: &NetworkDef,
        req: &api::AttachRequest,
        target: &NetnsTarget,
        name: Option<String>,
        members: &dyn Members,
    ) -> Result<Attachment, ApiError> {
        let parent = req.parent.as_deref().ok_or_else(|| {
            ApiError::BadRequest("--mode macvlan needs --parent IFACE (the host's NIC)".into())
        })?;
        if req.version.is_some() || !req.labels.is_empty() {
            return Err(ApiError::BadRequest(
                "--version and --label (service targets) need --mode bridge".into(),
            ));
        }
        let ifname = req
            .ifname
            .clone()
            .unwrap_or_else(|| format!("mv-{}", net.id));
        networks::validate_ifname(&ifname).map_err(ApiError::bad)?;
        let parent_link = self.nl.link(parent).await?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "parent interface {parent:?} does not exist on this host"
            ))
        })?;
        let given = match req.ip.as_deref() {
            Some(t) => {
                let n: ipnet::Ipv4Net = t.parse().map_err(|_| {
                    ApiError::BadRequest(format!("{t:?} is not ADDR/LEN (an IPv4 address)"))
                })?;
                Some((n.addr(), n.prefix_len()))
            }
            None => None,
        };
        let _ops = self.ops.lock().await;
        if self.store.snapshot().iter().any(|a| {
            is_macvlan(a)
                && a.attachment.network == net.id
                && a.netns_dev == target.dev
                && a.netns_ino == target.ino
        }) {
            return Err(ApiError::Conflict(format!(
                "{} already has a macvlan interface on network {}",
                req.target, net.id
            )));
        }
        let (ip, len, allocated) = match given {
            Some((ip, len)) => {
                let key = records::endpoint_key(&net.id, IpAddr::V4(ip));
                if records::get(&self.endpoints, &key).is_some() {
                    return Err(ApiError::Conflict(format!(
                        "{ip} is already in use on network {}",
                        net.id
                    )));
                }
                if net.subnet.contains(&ip) {
                    // Inside the subnet, IPAM decides (and refuses a taken one).
                    let ip = self.alloc.allocate(net, Some(ip), members).await?;
                    (ip, len, true)
                } else {
                    (ip, len, false)
                }
            }
            None => (
                self.alloc.allocate(net, None, members).await?,
                net.subnet.prefix_len(),
                true,
            ),
        };
        let suffix: u32 = rand::random();
        let tmp = format!("{}m{suffix:08x}", self.prefix);
        let mac = match self
            .plumb_macvlan(target, &tmp, parent_link.index, &ifname, ip, len)
            .await
        {
            Ok(mac) => mac,
            Err(e) => {
                let _ = self.nl.delete(&tmp).await;
                if allocated {
                    self.alloc.release(&net.id, ip);
                }
                return Err(ApiError::Internal(e.context(format!(
                    "attaching {} to network {} (macvlan)",
                    req.target, net.id
                ))));
            }
        };
        let attachment = Attachment {
            network: net.id.clone(),
            netns: target.path.display().to_string(),
            ifname: ifname.clone(),
            host_ifname: String::new(),
            ip: format!("{ip}/{len}"),
            ip6: None,
            mac: format_mac(&mac),
            dns_server: None,
            dns_search: None,
            container_id: req.container_id.clone(),
            name: name.clone(),
            version: None,
            labels: BTreeMap::new(),
            origin: req.origin.clone(),
        };
        let rec = AttachmentRecord {
            attachment: attachment.clone(),
            netns_dev: target.dev,
            netns_ino: target.ino,
            runtime_plumbed: false,
        };
        if let Err(e) = self.store.add(rec.clone()) {
            self.remove_macvlan(&rec).await;
            if allocated {
                self.alloc.release(&net.id, ip);
            }
            return Err(ApiError::Internal(e));
        }
        // Marked, so that its address may lie outside the network's subnet.
        self.announce_as(&attachment, net, ip, None, Some(MACVLAN_MARK.into()));
        info!(network = %net.id, netns = %attachment.netns, ip = %attachment.ip, %parent, "attached (macvlan)");
        Ok(attachment)
    }

    async fn plumb_macvlan(
        &self,
        target: &NetnsTarget,
        tmp: &str,
        parent: u32,
        ifname: &str,
        ip: Ipv4Addr,
        len: u8,
    ) -> Result<[u8; 6]> {
        self.nl.create_macvlan(tmp, parent).await?;
        self.nl.move_to_netns(tmp, &target.open()?).await?;
        let (tmp, ifname) = (tmp.to_string(), ifname.to_string());
        in_netns(target, move || async move {
            let nl = Netlink::connect()?;
            let r = nl
                .configure_interface(&tmp, &ifname, 1500, IpAddr::V4(ip), len)
                .await;
            if r.is_err() {
                let _ = nl.delete(&tmp).await;
            }
            r
        })
        .await
    }

    /// Deletes a macvlan attachment's interface inside its namespace (gone
    /// already if the namespace is).
    pub(super) async fn remove_macvlan(&self, rec: &AttachmentRecord) {
        let target = namespace_of(rec);
        if !target.still_exists() {
            return;
        }
        let ifname = rec.attachment.ifname.clone();
        let r = in_netns(&target, move || async move {
            Netlink::connect()?.delete(&ifname).await
        })
        .await;
        if let Err(e) = r {
            warn!(netns = %rec.attachment.netns, "cannot remove the macvlan interface: {e:#}");
        }
    }
}
