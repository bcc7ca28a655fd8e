//! Guards of the policy and QoS channels.

use super::*;

/// Policy rules and shaping (see [`crate::traffic`]): written by any
/// member, under their own key, for a network that exists, with values the
/// API accepts.
impl Guards {
    pub fn policies(networks: Records<NetworkDef>) -> LwwMap<String, mesh_api::PolicyRule> {
        use crate::traffic::{policy_key, spec, POLICY_CHANNEL};
        guard(
            POLICY_CHANNEL,
            move |key, r: &mesh_api::PolicyRule, _, _, _| {
                check(*key == policy_key(&r.network, &r.name), || {
                    format!("key {key:?} does not match the rule")
                })?;
                check(records::get(&networks, &r.network).is_some(), || {
                    format!("rule of unknown network {:?}", r.network)
                })?;
                spec::check_rule(r).map_err(|e| e.0)
            },
        )
    }

    pub fn qos(networks: Records<NetworkDef>) -> LwwMap<String, mesh_api::QosEntry> {
        use crate::traffic::{qos_key, spec, QOS_CHANNEL};
        guard(QOS_CHANNEL, move |key, q: &mesh_api::QosEntry, _, _, _| {
            check(*key == qos_key(&q.network, q.container.as_deref()), || {
                format!("key {key:?} does not match the shaping")
            })?;
            let net = records::get(&networks, &q.network)
                .ok_or_else(|| format!("shaping of unknown network {:?}", q.network))?;
            if let Some(c) = &q.container {
                let ip: std::net::Ipv4Addr = c.parse().map_err(|_| format!("bad address {c:?}"))?;
                check(net.subnet.contains(&ip), || {
                    format!("{ip} is outside network {}'s subnet", net.id)
                })?;
            }
            spec::check_qos(q).map_err(|e| e.0)
        })
    }
}
