//! Which runtime made an attachment: `cni:<network-config-name>`,
//! `docker`, `hook`, `cli`, `wireguard`. A CNI configuration's GC collects only the
//! attachments of its own origin, never another runtime's.

use serde::{Deserialize, Serialize};

/// The runtime an attachment came from. Records written before origins
/// existed (and requests of older clients) read as [`Origin::Unknown`],
/// which no CNI GC ever collects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Origin {
    /// The CNI plugin, under the network configuration of this name.
    Cni(String),
    /// The Docker network plugin (`meshd --docker-plugin`).
    Docker,
    /// `meshctl hook`, the OCI runtime hook.
    Hook,
    /// `meshctl attach` (or another API client that says so).
    Cli,
    /// A WireGuard client's namespace on its gateway (`meshctl wg add`).
    Wireguard,
    #[default]
    Unknown,
}

/// An origin that is none of the known forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("origin {0:?} is none of cni:<name>, docker, hook, cli, wireguard, unknown")]
pub struct BadOrigin(pub String);

/// The longest CNI network configuration name an origin carries.
const MAX_NAME: usize = 253;

impl std::str::FromStr for Origin {
    type Err = BadOrigin;
    fn from_str(s: &str) -> Result<Origin, BadOrigin> {
        match s {
            "docker" => Ok(Origin::Docker),
            "hook" => Ok(Origin::Hook),
            "cli" => Ok(Origin::Cli),
            "wireguard" => Ok(Origin::Wireguard),
            "unknown" => Ok(Origin::Unknown),
            _ => match s.strip_prefix("cni:") {
                Some(name)
                    if !name.is_empty()
                        && name.len() <= MAX_NAME
                        && !name.chars().any(char::is_control) =>
                {
                    Ok(Origin::Cni(name.to_string()))
                }
                _ => Err(BadOrigin(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for Origin {
    type Error = BadOrigin;
    fn try_from(s: String) -> Result<Origin, BadOrigin> {
        s.parse()
    }
}

impl From<Origin> for String {
    fn from(o: Origin) -> String {
        o.to_string()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Cni(name) => write!(f, "cni:{name}"),
            Origin::Docker => f.pad("docker"),
            Origin::Hook => f.pad("hook"),
            Origin::Cli => f.pad("cli"),
            Origin::Wireguard => f.pad("wireguard"),
            Origin::Unknown => f.pad("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_and_bad_ones_are_refused() {
        for o in [
            Origin::Cni("blue".into()),
            Origin::Docker,
            Origin::Hook,
            Origin::Cli,
            Origin::Wireguard,
            Origin::Unknown,
        ] {
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Origin>(&text).unwrap(), o);
        }
        assert_eq!(
            serde_json::to_string(&Origin::Cni("k8s-pod-network".into())).unwrap(),
            "\"cni:k8s-pod-network\""
        );
        for bad in ["", "cni:", "cni", "podman", "Docker", "cni:a\nb"] {
            let e =
                serde_json::from_str::<Origin>(&serde_json::to_string(bad).unwrap()).unwrap_err();
            assert!(e.to_string().contains("origin"), "{bad:?}: {e}");
        }
        assert!(format!("cni:{}", "n".repeat(254))
            .parse::<Origin>()
            .is_err());
    }
}
