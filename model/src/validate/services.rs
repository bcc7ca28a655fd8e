//! Guards of the service channels.

use super::*;
use crate::services::{
    health_key, HealthRecord, LabelRecord, ServiceDef, HEALTH_CHANNEL, LABELS_CHANNEL,
    SERVICES_CHANNEL,
};

/// The service channels (see [`crate::services`]): a service may be
/// written by any member (`service add` on any host changes its targets)
/// but only under its own key, on a network that exists, with its VIP in
/// that network; labels and health results only by the host that has the
/// container.
impl Guards {
    pub fn services(networks: Records<NetworkDef>) -> LwwMap<String, ServiceDef> {
        guard(SERVICES_CHANNEL, move |key, def: &ServiceDef, _, _, _| {
            check(*key == def.key(), || {
                format!("key {key:?} does not match the service")
            })?;
            check(dns_label(&def.name), || {
                format!("service name {:?} is not a DNS label", def.name)
            })?;
            let net = records::get(&networks, &def.network).ok_or_else(|| {
                format!("service {key:?} is on unknown network {:?}", def.network)
            })?;
            check(net.subnet.contains(&def.vip), || {
                format!("VIP {} is outside network {}'s subnet", def.vip, net.id)
            })
        })
    }

    pub fn labels() -> LwwMap<String, LabelRecord> {
        guard(LABELS_CHANNEL, |key, rec: &LabelRecord, writer, _, _| {
            check(rec.host == writer_hex(writer), || {
                format!("labels {key:?} are for another host's container")
            })?;
            check(
                *key == records::endpoint_key(&rec.network, IpAddr::V4(rec.ip)),
                || format!("key {key:?} does not match the labels"),
            )
        })
        .expiring(OWNED_RECORDS_HORIZON)
    }

    pub fn health() -> LwwMap<String, HealthRecord> {
        guard(HEALTH_CHANNEL, |key, rec: &HealthRecord, writer, _, _| {
            check(rec.host == writer_hex(writer), || {
                format!("health {key:?} is reported for another host's target")
            })?;
            check(*key == health_key(&rec.network, rec.ip, rec.port), || {
                format!("key {key:?} does not match the health record")
            })
        })
        .expiring(OWNED_RECORDS_HORIZON)
    }
}
