//! The handles a reload of meshd.toml changes settings through (see
//! [`crate::reload`]), and what `meshctl status` shows of the last one.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::Daemon;
use crate::api::ReloadStatus;

/// The last reload's outcome and the keys waiting for a restart.
#[derive(Default)]
pub struct Reloads(Mutex<Option<ReloadStatus>>);

impl Reloads {
    pub fn get(&self) -> Option<ReloadStatus> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, status: ReloadStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
}

impl Daemon {
    pub fn reloads(&self) -> &Reloads {
        &self.reloads
    }

    /// `dns_upstreams`: every network's DNS server forwards there next.
    pub fn set_dns_upstreams(&self, upstreams: Vec<SocketAddr>) {
        self.fabric.resolver().set_upstreams(upstreams);
    }

    /// `rekey_interval`: every link, running or new.
    pub fn set_rekey_interval(&self, rekey: Duration) {
        self.node.set_rekey_interval(rekey);
    }

    /// `fip_pools`: advertised, and the edge weighs them next pass.
    pub fn set_fip_pools(&self, pools: Vec<ipnet::Ipv4Net>) {
        self.edge.set_fip_permits(pools);
    }
}
