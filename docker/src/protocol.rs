//! The messages of Docker's remote plugin protocols, as libnetwork's
//! `docs/remote.md` (NetworkDriver) and `docs/ipam.md` (IpamDriver) give
//! them: JSON bodies of HTTP POSTs to `/<Interface>.<Method>`. Fields
//! dockerd may leave out or send as `null` default to empty.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// Content type of every request and answer.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// The one address space this IPAM driver serves (local and global).
pub const ADDRESS_SPACE: &str = "mesh";
/// Driver option (`-o`) and IPAM option (`--ipam-opt`) naming the mesh
/// network a Docker network maps to.
pub const NETWORK_OPTION: &str = "mesh.network";
/// `docker network create -o com.docker.network.driver.mtu=N`.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// Where dockerd puts the `-o` options in `CreateNetwork.Options`.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// `RequestAddress` option: what the address is for.
pub const ADDRESS_TYPE_OPTION: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";
/// Docker names the moved interface this plus an index (`eth0`).
pub const DST_PREFIX: &str = "eth";

/// `null` reads as the default, like a missing field.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

type Options = BTreeMap<String, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    #[serde(deserialize_with = "nullable")]
    pub sub_pool: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolAnswer {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: Options,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReleasePool {
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RequestAddress {
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    #[serde(rename = "Address", deserialize_with = "nullable")]
    pub address: String,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: Options,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressAnswer {
    /// `A.B.C.D/LEN`.
    pub address: String,
    pub data: Options,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    #[serde(rename = "Address", deserialize_with = "nullable")]
    pub address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// Arbitrary JSON: the `-o` options sit under [`GENERIC_OPTIONS`].
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

impl CreateNetwork {
    /// A `-o KEY=VALUE` driver option.
    pub fn driver_option(&self, key: &str) -> Option<String> {
        self.options
            .get(GENERIC_OPTIONS)?
            .get(key)?
            .as_str()
            .map(str::to_string)
    }
}

/// `DeleteNetwork`, and the `NetworkID` of any request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EndpointInterface {
    #[serde(rename = "Address", deserialize_with = "nullable")]
    pub address: String,
    #[serde(rename = "AddressIPv6", deserialize_with = "nullable")]
    pub address_ipv6: String,
    #[serde(rename = "MacAddress", deserialize_with = "nullable")]
    pub mac_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", deserialize_with = "nullable")]
    pub interface: EndpointInterface,
}

/// `DeleteEndpoint`, `EndpointOperInfo`, `Leave`,
/// `ProgramExternalConnectivity`, `RevokeExternalConnectivity`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Join {
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", deserialize_with = "nullable")]
    pub sandbox_key: String,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

/// A mesh network is one L2 segment, reached through the connected route
/// of the address; on an egress network `Gateway` is this host's address
/// on it, so dockerd sets the default route before the container starts.
/// `DisableGatewayService` keeps dockerd from adding a `docker_gwbridge`
/// leg for a default route.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct JoinAnswer {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "DisableGatewayService")]
    pub disable_gateway_service: bool,
}

#[derive(Debug, Serialize)]
pub struct ErrAnswer {
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_nulls_and_missing_fields_as_empty() {
        let r: RequestPool = serde_json::from_str(
            r#"{"AddressSpace":"mesh","Pool":"10.1.0.0/24","SubPool":"","Options":null,"V6":false}"#,
        )
        .unwrap();
        assert_eq!(r.pool, "10.1.0.0/24");
        assert!(r.options.is_empty());
        let e: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.1.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{"x":{}}}"#,
        )
        .unwrap();
        assert_eq!(e.interface.address, "10.1.0.2/24");
        let n: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"mesh.network":"web"}},"IPv4Data":[{"AddressSpace":"mesh","Gateway":"10.1.0.254/24","Pool":"10.1.0.0/24"}],"IPv6Data":null}"#,
        )
        .unwrap();
        assert_eq!(n.driver_option(NETWORK_OPTION).as_deref(), Some("web"));
        assert_eq!(n.ipv4_data[0].pool, "10.1.0.0/24");
        assert!(n.ipv6_data.is_empty());
        let a: RequestAddress = serde_json::from_str(
            r#"{"PoolID":"10.1.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(a.options[ADDRESS_TYPE_OPTION], GATEWAY_ADDRESS_TYPE);
    }

    #[test]
    fn answers_use_the_protocols_field_names() {
        let j = serde_json::to_value(JoinAnswer {
            interface_name: InterfaceName {
                src_name: "msc1".into(),
                dst_prefix: DST_PREFIX.into(),
            },
            gateway: String::new(),
            disable_gateway_service: true,
        })
        .unwrap();
        assert_eq!(j["InterfaceName"]["SrcName"], "msc1");
        assert_eq!(j["InterfaceName"]["DstPrefix"], "eth");
        assert!(j.get("Gateway").is_none(), "no egress: no gateway");
        let p = serde_json::to_value(PoolAnswer {
            pool_id: "p".into(),
            pool: "10.1.0.0/24".into(),
            data: Options::new(),
        })
        .unwrap();
        assert_eq!(p["PoolID"], "p");
        assert_eq!(p["Pool"], "10.1.0.0/24");
    }
}
