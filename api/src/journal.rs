//! Bodies of the audit-trail route (`meshctl log`): the replicated writes
//! this host admitted (its own and those learned from peers) and the ones
//! it refused, with the reason.

use serde::{Deserialize, Serialize};

/// What a write did to its key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum LogOp {
    /// A value where there was none (or a removed one).
    Create,
    /// A value replacing a value.
    Update,
    /// A removal.
    Delete,
}

impl std::fmt::Display for LogOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            LogOp::Create => "create",
            LogOp::Update => "update",
            LogOp::Delete => "delete",
        })
    }
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogEntry {
    /// When this host admitted (or refused) it, ms since the Unix epoch.
    pub time_ms: u64,
    /// The write's own stamp (its author's clock), ms since the epoch.
    pub stamp_ms: u64,
    /// The author's host id (hex); for a forged write, whom it claims.
    pub host_id: String,
    /// The author's name as membership knew it then; `None` if unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The replicated channel (`networks`, `endpoints`, …).
    pub channel: String,
    pub key: String,
    pub op: LogOp,
    /// Why it was refused; absent for an admitted write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// For a refused write that came over a link: the peer that sent it
    /// (its id, and its name if known). A forged write's `host` is whom it
    /// claims; this is who delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl LogEntry {
    /// Whether `host` (a name, or the start of an id) names this entry's author.
    pub fn by(&self, host: &str) -> bool {
        self.host.as_deref() == Some(host)
            || (!host.is_empty() && self.host_id.starts_with(&host.to_ascii_lowercase()))
    }
}

/// `GET /v1/log` query: entries admitted at or after `since_ms` (ms since
/// the epoch), by `host` (a name or the start of an id).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_their_author_by_name_or_id_prefix() {
        let e = LogEntry {
            time_ms: 2,
            stamp_ms: 1,
            host_id: "ab12cd".into(),
            host: Some("h1".into()),
            channel: "networks".into(),
            key: "web".into(),
            op: LogOp::Create,
            rejected: None,
            via_id: None,
            via: None,
        };
        assert!(e.by("h1") && e.by("ab1") && e.by("AB12"));
        assert!(!e.by("h2") && !e.by("cd") && !e.by(""));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""op":"create""#) && !json.contains("rejected"));
        assert_eq!(serde_json::from_str::<LogEntry>(&json).unwrap(), e);
    }
}
