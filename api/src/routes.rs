//! Route paths, so server and client cannot drift apart. Every JSON route
//! lives under `/v1`.

pub const STATUS: &str = "/v1/status";
/// Prometheus text format (not JSON).
pub const METRICS: &str = "/metrics";
pub const PEERS: &str = "/v1/peers";
pub const TOKEN: &str = "/v1/token";
/// `POST`: rotate the mesh secret; answers the new token.
pub const TOKEN_ROTATE: &str = "/v1/token/rotate";
pub const JOIN: &str = "/v1/join";
pub const NETWORKS: &str = "/v1/networks";
pub const ATTACHMENTS: &str = "/v1/attachments";
pub const ATTACH: &str = "/v1/attach";
pub const DETACH: &str = "/v1/detach";
pub const IPAM: &str = "/v1/ipam";
pub const IPAM_RESERVE: &str = "/v1/ipam/reserve";
pub const IPAM_RELEASE: &str = "/v1/ipam/release";
pub const DNS: &str = "/v1/dns";
/// `GET [?peer=NAME]`: `meshctl doctor`'s checks.
pub const DOCTOR: &str = "/v1/doctor";
/// `GET`: per-attachment traffic counters (`meshctl top`).
pub const ATTACHMENT_STATS: &str = "/v1/attachments/stats";
/// `GET [?since_ms=MS&host=H]`: the audit trail of replicated writes (`meshctl log`).
pub const LOG: &str = "/v1/log";
/// `GET`: the web console's login token (made on first use).
pub const CONSOLE_TOKEN: &str = "/v1/console/token";

/// `DELETE /v1/peers/{peer}`: the peer is gone for good.
pub fn peer(id: &str) -> String {
    format!("{PEERS}/{id}")
}

/// `DELETE /v1/networks/{id}?force=true`; `PATCH` updates its settings.
pub fn network(id: &str) -> String {
    format!("{NETWORKS}/{id}")
}

/// `GET` lists, `POST` creates services.
pub const SERVICES: &str = "/v1/services";

/// `DELETE /v1/services/{name}?network=NET` (`network` only if ambiguous);
/// `PATCH` changes it in place.
pub fn service(name: &str) -> String {
    format!("{SERVICES}/{name}")
}

/// `POST /v1/services/{name}/targets`: add an explicit target.
pub fn service_targets(name: &str) -> String {
    format!("{SERVICES}/{name}/targets")
}

/// `POST /v1/services/{name}/targets/remove`: remove an explicit target.
pub fn service_targets_remove(name: &str) -> String {
    format!("{SERVICES}/{name}/targets/remove")
}

/// `GET` lists, `POST` adds network policy rules.
pub const POLICIES: &str = "/v1/policies";

/// `DELETE /v1/policies/{network}/{name}`.
pub fn policy(network: &str, name: &str) -> String {
    format!("{POLICIES}/{network}/{name}")
}

/// `GET` lists, `POST` sets traffic shaping (QoS).
pub const QOS: &str = "/v1/qos";
/// `POST`: remove a network's (or a container's) shaping.
pub const QOS_RESET: &str = "/v1/qos/reset";
/// `POST`: give this host an address on a network.
pub const EXPOSE: &str = "/v1/expose";
/// `POST`: take it away.
pub const HIDE: &str = "/v1/hide";
/// `GET` lists, `POST` adds floating-IP pools.
pub const FIP_POOLS: &str = "/v1/fip-pools";
/// `POST`: remove a pool (its CIDR has a slash, so it goes in the body).
pub const FIP_POOLS_REMOVE: &str = "/v1/fip-pools/remove";
/// `GET` lists, `POST` creates floating IPs.
pub const FIPS: &str = "/v1/fips";

/// `DELETE /v1/fips/{addr}?force=true`: release.
pub fn fip(addr: &str) -> String {
    format!("{FIPS}/{addr}")
}

/// `POST /v1/fips/{addr}/associate`
pub fn fip_associate(addr: &str) -> String {
    format!("{FIPS}/{addr}/associate")
}

/// `POST /v1/fips/{addr}/dissociate`
pub fn fip_dissociate(addr: &str) -> String {
    format!("{FIPS}/{addr}/dissociate")
}

/// `POST`: a veth on a network's bridge for a runtime to move
/// ([`crate::runtime`]).
pub const RUNTIME_VETHS: &str = "/v1/runtime/veths";
/// `POST`: record the attachment of a veth the runtime has moved in.
pub const RUNTIME_ATTACHMENTS: &str = "/v1/runtime/attachments";
/// `POST`: name a runtime attachment's container.
pub const RUNTIME_IDENTIFY: &str = "/v1/runtime/attachments/identify";
/// `POST`: undo a runtime attachment (or an unrecorded veth).
pub const RUNTIME_DETACH: &str = "/v1/runtime/attachments/detach";
/// `GET`: the IPv4 space a new network must stay out of on this host.
pub const RUNTIME_OCCUPIED: &str = "/v1/runtime/occupied";

/// `GET /v1/runtime/gateway/{network}`: a network's egress gateway here.
pub fn runtime_gateway(network: &str) -> String {
    format!("/v1/runtime/gateway/{network}")
}

/// `GET` lists, `POST` adds WireGuard clients.
pub const WG_CLIENTS: &str = "/v1/wg";

/// `DELETE /v1/wg/{name}`: revoke a WireGuard client.
pub fn wg_client(name: &str) -> String {
    format!("{WG_CLIENTS}/{name}")
}

/// `POST /v1/wg/{name}/move`: hand a client to another gateway.
pub fn wg_move(name: &str) -> String {
    format!("{WG_CLIENTS}/{name}/move")
}
