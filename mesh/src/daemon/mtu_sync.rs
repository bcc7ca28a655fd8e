//! Keeps the MTUs current: the default network MTU follows the members'
//! advertised underlay MTUs, each peer's path bound follows its own, and a
//! network whose MTU changed (a smaller host joined, `network set --mtu`)
//! has every device re-set: container ends (in their namespaces), the
//! bridge's ports (veths, TAP) and the bridge.

use super::*;
use std::time::Duration;

/// Members' meta changes arrive by gossip without a signal of their own.
const SYNC_INTERVAL: Duration = Duration::from_secs(2);

impl Daemon {
    pub(super) fn spawn_mtu_sync(self: Arc<Self>) {
        let mut settings = self.channels.settings.subscribe();
        let mut host_changes = self.host_changes.follower();
        tokio::spawn(async move {
            // Read until found, then again on the kernel's word of a change.
            let mut read_underlay = true;
            loop {
                read_underlay |= host_changes.take();
                read_underlay &= !self.sync_mtus(read_underlay).await;
                tokio::select! {
                    _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                    r = settings.changed() => if r.is_err() { break },
                }
            }
        });
    }

    /// One round; the underlay interface's MTU is read if `read_underlay`.
    /// Returns whether it was read.
    async fn sync_mtus(&self, read_underlay: bool) -> bool {
        let mtus = self.fabric.mtus().clone();
        // The own interface's MTU counts here at once, and the own record
        // is re-signed with it so that the other hosts follow.
        let underlay = read_underlay
            .then(|| crate::mtu::underlay_mtu(self.settings.listen.ip()))
            .flatten();
        if let Some(own) = underlay {
            if mtus.set_own_underlay(own) {
                warn!(underlay_mtu = own, "the underlay interface's MTU changed");
                self.node
                    .set_meta(crate::mtu::META_UNDERLAY_MTU, Some(own.to_string()));
            }
        }
        let members = self.node.members();
        if mtus.refresh(members.iter().map(|m| &m.meta)) {
            info!(mtu = mtus.default_mtu(), "default network MTU changed");
        }
        for m in &members {
            if let Some(idx) = self.peers.handle(&m.id) {
                let cap = mtus.path_cap(crate::mtu::advertised(&m.meta));
                self.dp.set_mtu_cap(idx, cap);
            }
        }
        let devices = self.devices.lock().await;
        for (id, &w) in &devices.wires {
            let want = mtus.of(id);
            if mtus.applied(id) == Some(want) {
                continue;
            }
            match self.apply_mtu(id, w, want).await {
                Ok(()) => {
                    mtus.note_applied(id, want);
                    info!(network = %id, mtu = want, "network MTU applied");
                }
                Err(e) => {
                    warn!(network = %id, mtu = want, "cannot apply the network's MTU (retrying): {e:#}")
                }
            }
        }
        underlay.is_some()
    }

    async fn apply_mtu(&self, id: &str, wire: u32, mtu: u32) -> Result<()> {
        for rec in self.attacher.records() {
            if rec.attachment.network != id || crate::attach::is_macvlan(&rec) {
                continue;
            }
            let Ok(target) = crate::netdev::NetnsTarget::resolve(&rec.attachment.netns) else {
                continue; // gone: the reaper takes it
            };
            let ifname = rec.attachment.ifname.clone();
            crate::netdev::in_netns(&target, move || async move {
                Netlink::connect()?.set_mtu(&ifname, mtu).await
            })
            .await
            .with_context(|| format!("in {}", rec.attachment.netns))?;
        }
        let nl = &self.fabric.nl;
        let bridge_name = self.fabric.bridge_of(wire);
        let bridge = nl
            .link(&bridge_name)
            .await?
            .with_context(|| format!("bridge {bridge_name} is missing"))?;
        for port in nl.links().await? {
            if port.controller == Some(bridge.index) {
                nl.set_mtu(&port.name, mtu).await?;
            }
        }
        nl.set_mtu(&bridge_name, mtu).await
    }
}
