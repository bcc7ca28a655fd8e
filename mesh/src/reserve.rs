//! Addresses taken without an attachment (`meshctl ipam reserve`): for a
//! service, a VM, or a runtime that plumbs the interface itself. The
//! reservations are this host's, kept in `reservations.json` (written only
//! here) and announced as endpoint records so no host reuses them.

use gossip::PeerId;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use tokio::sync::Mutex;

use crate::alloc::Allocator;
use crate::api;
use crate::error::ApiError;
use crate::state::{Reservation, StateDir};
use mesh_model::hosts::Members;
use mesh_model::networks;
use mesh_model::records::{self, EndpointRecord, NetworkDef, Records};

pub struct Reservations {
    state: StateDir,
    list: Mutex<Vec<Reservation>>,
    alloc: Arc<Allocator>,
    endpoints: Records<EndpointRecord>,
    me: PeerId,
}

impl Reservations {
    /// Loads the reservations and notes their addresses as allocated.
    pub fn load(
        state: StateDir,
        alloc: Arc<Allocator>,
        endpoints: Records<EndpointRecord>,
        me: PeerId,
    ) -> anyhow::Result<Reservations> {
        let list = state.load_reservations()?;
        for r in &list {
            alloc.note_allocated(&r.network, r.ip);
        }
        Ok(Reservations {
            state,
            list: Mutex::new(list),
            alloc,
            endpoints,
            me,
        })
    }

    /// The endpoint keys the reservations back.
    pub async fn keys(&self) -> Vec<String> {
        self.list
            .lock()
            .await
            .iter()
            .map(|r| records::endpoint_key(&r.network, IpAddr::V4(r.ip)))
            .collect()
    }

    pub async fn reserve(
        &self,
        net: &NetworkDef,
        req: &api::ReserveRequest,
        members: &dyn Members,
    ) -> Result<api::Reservation, ApiError> {
        let want = networks::requested_address(req.ip.as_deref(), net)?;
        let ip = self.alloc.allocate(net, want, members).await?;
        let mut all = self.list.lock().await;
        all.push(Reservation {
            network: net.id.clone(),
            ip,
            label: req.label.clone(),
        });
        if let Err(e) = self.state.save_reservations(&all) {
            all.pop();
            self.alloc.release(&net.id, ip);
            return Err(ApiError::Internal(e));
        }
        drop(all);
        records::put(
            &self.endpoints,
            self.me,
            &records::endpoint_key(&net.id, IpAddr::V4(ip)),
            EndpointRecord {
                network: net.id.clone(),
                ip: IpAddr::V4(ip),
                ip6: Some(net.ipv6_for(ip)),
                mac: String::new(),
                host: self.me.to_hex(),
                name: None,
                version: None,
            },
        );
        Ok(api::Reservation {
            network: net.id.clone(),
            ip: format!("{ip}/{}", net.subnet.prefix_len()),
            label: req.label.clone(),
        })
    }

    /// Hands a reservation's address over to an attachment that now holds
    /// it (Docker's IPAM reserves before the endpoint joins): the
    /// reservation goes, the address stays allocated and announced.
    /// `false` if `ip` was not reserved here.
    pub async fn hand_over(&self, network: &str, ip: Ipv4Addr) -> anyhow::Result<bool> {
        let mut all = self.list.lock().await;
        let Some(pos) = all.iter().position(|r| r.network == network && r.ip == ip) else {
            return Ok(false);
        };
        let rec = all.remove(pos);
        if let Err(e) = self.state.save_reservations(&all) {
            all.insert(pos, rec);
            return Err(e);
        }
        Ok(true)
    }

    pub async fn release(&self, req: &api::ReleaseRequest) -> Result<api::Reservation, ApiError> {
        let ip: Ipv4Addr = records::parse_ipv4(&req.ip)
            .map_err(|_| ApiError::BadRequest(format!("{:?} is not an IPv4 address", req.ip)))?;
        let mut all = self.list.lock().await;
        let Some(pos) = all
            .iter()
            .position(|r| r.network == req.network && r.ip == ip)
        else {
            return Err(ApiError::NotFound(format!(
                "{ip} is not reserved on network {} by this host",
                req.network
            )));
        };
        let rec = all.remove(pos);
        if let Err(e) = self.state.save_reservations(&all) {
            all.insert(pos, rec);
            return Err(ApiError::Internal(e));
        }
        drop(all);
        records::remove(
            &self.endpoints,
            self.me,
            &records::endpoint_key(&rec.network, IpAddr::V4(ip)),
        );
        self.alloc.release(&rec.network, ip);
        Ok(api::Reservation {
            network: rec.network,
            ip: ip.to_string(),
            label: rec.label,
        })
    }
}
