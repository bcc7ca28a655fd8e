//! The runtime routes (`/v1/runtime/...`): what a container runtime that
//! moves the container's interface in itself needs of meshd (Docker's
//! network plugin, `mesh-docker`). meshd makes a veth on a network's
//! bridge, the runtime moves one end into the container and addresses it
//! (with an address reserved through `/v1/ipam/reserve`), and meshd then
//! records the attachment, names it once the runtime knows the container,
//! and undoes it. Beside those: the IPv4 space a new network's pool must
//! stay out of, and a network's egress gateway for the container's
//! default route.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::types::Attachment;

/// `POST /v1/runtime/veths`: a veth on the bridge of `network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVethRequest {
    pub network: String,
}

/// A veth made for a runtime: the host end on the bridge, the other end
/// still in meshd's namespace for the runtime to move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVeth {
    pub host_if: String,
    pub peer_if: String,
    pub mac: String,
}

/// `POST /v1/runtime/attachments`: the runtime has moved the container
/// end of `veth` into `netns` as `ifname` and given it `ip` (`A.B.C.D`,
/// reserved on `network` beforehand; the attachment takes the
/// reservation over). Answers the [`Attachment`]; asking again for the
/// same veth answers the attachment already recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRuntimeRequest {
    pub network: String,
    pub veth: RuntimeVeth,
    pub ip: String,
    pub netns: String,
    pub ifname: String,
}

/// Who the container behind a runtime attachment is, once the runtime
/// says (Docker tells its plugin only after the container started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeIdentity {
    pub container_id: Option<String>,
    /// The DNS name: a valid label.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/runtime/attachments/identify`: sets who the container of the
/// attachment on `host_if` is (its DNS name is announced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyRuntimeRequest {
    pub network: String,
    pub host_if: String,
    #[serde(flatten)]
    pub who: RuntimeIdentity,
}

/// `POST /v1/runtime/attachments/detach`: undoes the runtime attachment
/// on `host_if` (its veth, record, DNS name and address), or deletes the
/// veth if it was never recorded. Nothing there is no error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInterface {
    pub host_if: String,
}

/// The answer of identify and detach: the attachment, or `null` if there
/// was none (any more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeAttachment {
    pub attachment: Option<Attachment>,
}

/// `GET /v1/runtime/occupied`: IPv4 space a new network must stay out of
/// on this host: its routes and the mesh members' LANs (`A.B.C.D/LEN`).
/// Mesh networks' own subnets are in `GET /v1/networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OccupiedPrefixes {
    pub v4: Vec<String>,
}

/// `GET /v1/runtime/gateway/{network}`: this host's address on `network`
/// if it is an egress network and the host has one there (`A.B.C.D`),
/// the default route a runtime gives a container it plumbs itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressGateway {
    pub network: String,
    pub gateway: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_requests_carry_the_identity_flat_and_default_it() {
        let r = IdentifyRuntimeRequest {
            network: "web".into(),
            host_if: "msv1".into(),
            who: RuntimeIdentity {
                container_id: Some("abc".into()),
                name: Some("db".into()),
                labels: [("app".to_string(), "db".to_string())].into(),
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["container_id"], "abc");
        assert_eq!(v["labels"]["app"], "db");
        assert_eq!(
            serde_json::from_value::<IdentifyRuntimeRequest>(v).unwrap(),
            r
        );
        let bare: IdentifyRuntimeRequest =
            serde_json::from_str(r#"{"network":"web","host_if":"msv1"}"#).unwrap();
        assert_eq!(bare.who, RuntimeIdentity::default());
    }

    #[test]
    fn no_attachment_is_null() {
        let v = serde_json::to_value(RuntimeAttachment { attachment: None }).unwrap();
        assert_eq!(v, serde_json::json!({"attachment": null}));
    }
}
