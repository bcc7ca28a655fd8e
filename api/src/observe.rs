//! Bodies of the observability routes: `meshctl doctor` (checks, each with
//! what to do about a problem) and `meshctl top` (per-attachment counters).

use serde::{Deserialize, Serialize};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    /// Could not be checked (not measured yet, not available): no problem.
    Skipped,
    /// Works, but not as it should (relayed path, late key rotation).
    Warn,
    /// Broken, or about to break.
    Fail,
}

impl CheckStatus {
    /// A problem: `meshctl doctor` prints its line and exits non-zero.
    pub fn is_problem(self) -> bool {
        matches!(self, CheckStatus::Warn | CheckStatus::Fail)
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Skipped => "skipped",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// What was checked: `control`, `data_path`, `path_mtu`, `probe`,
    /// `key_age`, `clock_skew`, `version`, `tun`, `vnet_hdr`, `htb`,
    /// `nftables`, `ip_forward`, `br_netfilter`, `underlay_mtu`.
    pub name: String,
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do about it (problems only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, CheckStatus::Ok, detail, None)
    }

    pub fn skipped(name: &str, detail: impl Into<String>) -> Check {
        Check::new(name, CheckStatus::Skipped, detail, None)
    }

    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, CheckStatus::Warn, detail, Some(fix.into()))
    }

    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(name, CheckStatus::Fail, detail, Some(fix.into()))
    }

    fn new(
        name: &str,
        status: CheckStatus,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix,
        }
    }
}

/// The checks of one peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerDiagnosis {
    pub name: String,
    pub id: String,
    pub checks: Vec<Check>,
}

/// `GET /v1/doctor[?peer=NAME]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DoctorReport {
    pub host: String,
    /// This host's meshd version.
    pub version: String,
    /// The host's own checks (kernel features, sysctls, underlay).
    pub checks: Vec<Check>,
    pub peers: Vec<PeerDiagnosis>,
}

impl DoctorReport {
    /// Every problem, with the peer it is about (None: this host).
    pub fn problems(&self) -> Vec<(Option<&str>, &Check)> {
        let own = self.checks.iter().map(|c| (None, c));
        let peers = self
            .peers
            .iter()
            .flat_map(|p| p.checks.iter().map(move |c| (Some(p.name.as_str()), c)));
        own.chain(peers)
            .filter(|(_, c)| c.status.is_problem())
            .collect()
    }
}

/// Counters of one direction of an attachment, as the container sees it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
}

/// `GET /v1/attachments/stats`: one attachment's traffic, read from the
/// host end of its veth (so `tx` is what the container sent: the host
/// end's receive counters).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentStats {
    pub network: String,
    /// The container's DNS name, else its runtime id, else its namespace.
    pub container: String,
    pub host_ifname: String,
    /// `ADDR/LEN`.
    pub ip: String,
    pub tx: InterfaceCounters,
    pub rx: InterfaceCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_warnings_and_failures_with_their_peer() {
        let r = DoctorReport {
            host: "h1".into(),
            version: "0.1.0".into(),
            checks: vec![
                Check::ok("tun", "ok"),
                Check::warn("htb", "missing", "modprobe"),
            ],
            peers: vec![PeerDiagnosis {
                name: "h2".into(),
                id: "b".into(),
                checks: vec![
                    Check::skipped("probe", "n/a"),
                    Check::fail("control", "down", "start meshd"),
                ],
            }],
        };
        let p: Vec<(Option<&str>, &str)> = r
            .problems()
            .into_iter()
            .map(|(peer, c)| (peer, c.name.as_str()))
            .collect();
        assert_eq!(p, [(None, "htb"), (Some("h2"), "control")]);
        let back: DoctorReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
