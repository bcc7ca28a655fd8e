//! Attachments whose container end the runtime moves in itself (Docker's
//! network-plugin protocol, through the API's runtime routes): meshd makes the veth and puts its host end on
//! the network's bridge; the runtime moves the other end into the
//! container, renames and addresses it. From then on the attachment is
//! listed, announced in DNS and reaped like any other: its host end going
//! away is the one signal that the container is gone.

use anyhow::Context;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Attacher;
use crate::api::{Attachment, RuntimeIdentity, RuntimeVeth};
use crate::error::ApiError;
use crate::netdev::{format_mac, NetnsTarget};
use crate::state::AttachmentRecord;
use mesh_model::networks;
use mesh_model::records::NetworkDef;

impl Attacher {
    /// Makes a veth pair with its host end on the bridge of wire id `wire`.
    /// On failure nothing is left behind.
    pub async fn runtime_veth(&self, wire: u32) -> Result<RuntimeVeth, ApiError> {
        let suffix: u32 = rand::random();
        let host_if = format!("{}v{suffix:08x}", self.prefix);
        let peer_if = format!("{}c{suffix:08x}", self.prefix);
        let made = async {
            let bridge = self
                .nl
                .link(&networks::bridge_name(&self.prefix, wire))
                .await?
                .context("the network's bridge is missing")?;
            let mtu = self.mtu.of_wire(wire);
            self.nl.create_veth(&host_if, &peer_if, mtu).await?;
            self.nl.enslave(&host_if, &bridge, mtu).await?;
            let peer = self
                .nl
                .link(&peer_if)
                .await?
                .context("the container end of the new veth is missing")?;
            peer.mac.context("the new veth has no MAC address")
        }
        .await;
        match made {
            Ok(mac) => Ok(RuntimeVeth {
                host_if,
                peer_if,
                mac: format_mac(&mac),
            }),
            Err(e) => {
                if self.nl.link(&host_if).await.ok().flatten().is_some() {
                    let _ = self.nl.delete(&host_if).await;
                }
                Err(ApiError::Internal(
                    e.context("creating a veth for the runtime"),
                ))
            }
        }
    }

    /// Records the attachment of `veth`, whose container end the runtime
    /// has moved into `netns` as `ifname`, with address `ip` (already
    /// allocated by the caller), and announces it.
    pub async fn record_runtime(
        &self,
        net: &NetworkDef,
        veth: &RuntimeVeth,
        ip: Ipv4Addr,
        netns: &str,
        ifname: &str,
    ) -> Result<Attachment, ApiError> {
        let _ops = self.ops.lock().await;
        if let Some(a) = self
            .store
            .snapshot()
            .iter()
            .find(|a| a.attachment.host_ifname == veth.host_if)
        {
            return Ok(a.attachment.clone());
        }
        let dns = mesh_model::ipam::service_address(net.subnet);
        let attachment = Attachment {
            network: net.id.clone(),
            netns: netns.to_string(),
            ifname: ifname.to_string(),
            host_ifname: veth.host_if.clone(),
            ip: format!("{ip}/{}", net.subnet.prefix_len()),
            // The runtime addresses the interface: IPv4 only.
            ip6: None,
            mac: veth.mac.clone(),
            dns_server: Some(dns.to_string()),
            dns_search: Some(net.id.clone()),
            container_id: None,
            name: None,
            version: None,
            labels: BTreeMap::new(),
            origin: crate::api::Origin::Docker,
        };
        // The namespace's identity where meshd can see it (a runtime in
        // another mount namespace keeps its sandbox files to itself).
        let (dev, ino) = NetnsTarget::resolve(netns)
            .map(|t| (t.dev, t.ino))
            .unwrap_or((0, 0));
        self.store
            .add(AttachmentRecord {
                attachment: attachment.clone(),
                netns_dev: dev,
                netns_ino: ino,
                runtime_plumbed: true,
            })
            .map_err(ApiError::Internal)?;
        self.announce(&attachment, net, ip, None);
        tracing::info!(network = %net.id, netns, ip = %attachment.ip, "attached (runtime-plumbed)");
        Ok(attachment)
    }

    /// Sets who the container of the attachment on `host_if` is: its DNS
    /// name (announced), labels and container id. `None` if there is no
    /// such attachment (any more).
    pub async fn identify_runtime(
        &self,
        net: &NetworkDef,
        host_if: &str,
        who: RuntimeIdentity,
    ) -> Result<Option<Attachment>, ApiError> {
        mesh_model::services::spec::check_labels(&who.labels)?;
        let _ops = self.ops.lock().await;
        let Some(rec) = self
            .store
            .update(host_if, |r| {
                r.attachment.container_id = who.container_id;
                r.attachment.name = who.name;
                r.attachment.labels = who.labels;
            })
            .map_err(ApiError::Internal)?
        else {
            return Ok(None);
        };
        let ip = rec.ip().map_err(|e| ApiError::Internal(e.into()))?;
        self.announce(&rec.attachment, net, ip, None);
        Ok(Some(rec.attachment))
    }

    /// Undoes a runtime attachment: its veth, record, DNS name and address.
    /// A veth made but never recorded (the runtime gave up before joining)
    /// is deleted too. Returns the attachment if there was one.
    pub async fn detach_runtime(&self, host_if: &str) -> Result<Option<Attachment>, ApiError> {
        let _ops = self.ops.lock().await;
        let found = self
            .store
            .snapshot()
            .into_iter()
            .find(|a| a.attachment.host_ifname == host_if);
        match &found {
            Some(_) => {
                self.drop_where(|a| a.attachment.host_ifname == host_if)
                    .await?;
            }
            None => {
                if self.nl.link(host_if).await?.is_some() {
                    self.nl.delete(host_if).await?;
                }
            }
        }
        Ok(found.map(|r| r.attachment))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_records_survive_a_round_trip_and_old_files_read_as_ours() {
        use crate::state::AttachmentRecord;
        let old = r#"{"network":"n","netns":"/proc/1/ns/net","ifname":"eth-n","host_ifname":"msv00000001",
            "ip":"10.0.0.2/24","mac":"02:00:00:00:00:01","netns_dev":4,"netns_ino":5}"#;
        let rec: AttachmentRecord = serde_json::from_str(old).unwrap();
        assert!(!rec.runtime_plumbed);
        // Records from before origins: no CNI configuration collects them.
        assert_eq!(rec.attachment.origin, crate::api::Origin::Unknown);
        let mut docker = rec.clone();
        docker.runtime_plumbed = true;
        let text = serde_json::to_string(&docker).unwrap();
        assert!(text.contains("runtime_plumbed"));
        assert_eq!(
            serde_json::from_str::<AttachmentRecord>(&text).unwrap(),
            docker
        );
        assert!(!serde_json::to_string(&rec)
            .unwrap()
            .contains("runtime_plumbed"));
    }
}
