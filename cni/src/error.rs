//! CNI errors: the spec's codes, the error JSON, and meshd's API errors
//! mapped to codes by their kind.

use crate::api::{ClientError, ErrorKind};
use serde::Serialize;
use std::path::Path;

/// Error codes of the CNI spec (1–99 reserved by it) and our own (≥ 100).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_CHECK: u32 = 51;
    /// meshd refused the request (address in use, already attached, …).
    pub const REFUSED: u32 = 100;
    /// CHECK found the attachment missing or different from prevResult.
    pub const CHECK_FAILED: u32 = 101;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }

    /// The spec's error JSON.
    pub fn to_json(&self, version: &str) -> String {
        serde_json::to_string(&ErrorJson {
            cni_version: version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_else(|_| format!("{{\"code\": {}}}", self.code))
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// The error JSON of the spec.
#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    details: &'a str,
}

/// The CNI code for an error meshd answered, by its kind.
pub fn code_for_kind(kind: ErrorKind) -> u32 {
    match kind {
        // The configuration names a network meshd does not have.
        ErrorKind::NetworkNotFound => codes::INVALID_CONFIG,
        // The container (process, namespace, attachment) is unknown.
        ErrorKind::NotFound => codes::UNKNOWN_CONTAINER,
        // Address in use, already attached, restricted network, ...
        ErrorKind::BadRequest | ErrorKind::Forbidden | ErrorKind::Conflict => codes::REFUSED,
        ErrorKind::Unreachable => codes::TRY_AGAIN_LATER,
        ErrorKind::Internal => codes::IO,
    }
}

/// Maps a meshd API error to a CNI error; `socket` and `doing` go into
/// the message.
pub fn api_error(e: ClientError, socket: &Path, doing: &str) -> CniError {
    let socket = socket.display().to_string();
    match e {
        ClientError::NotRunning(p) => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "{doing}: meshd is not running (no socket at {})",
                p.display()
            ),
        )
        .details("start meshd, or set \"socket\" in the network configuration"),
        ClientError::PermissionDenied(p) => CniError::new(
            codes::IO,
            format!(
                "{doing}: permission denied on meshd's socket {}",
                p.display()
            ),
        ),
        ClientError::Connect { path, source } => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "{doing}: cannot reach meshd at {}: {source}",
                path.display()
            ),
        ),
        ClientError::Http(h) => CniError::new(
            codes::IO,
            format!("{doing}: HTTP to meshd at {socket} failed: {h}"),
        ),
        ClientError::Decode(d) => CniError::new(
            codes::IO,
            format!("{doing}: unexpected answer from meshd: {d}"),
        ),
        ClientError::Api {
            status,
            kind,
            message,
        } => CniError::new(code_for_kind(kind), format!("{doing}: {message}"))
            .details(format!("meshd at {socket} answered HTTP {status} ({kind})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(kind: ErrorKind, message: &str) -> ClientError {
        ClientError::Api {
            status: kind.status(),
            kind,
            message: message.into(),
        }
    }

    #[test]
    fn api_errors_map_to_codes_by_kind() {
        let socket = Path::new("/run/mesh/meshd.sock");
        let e = api_error(ClientError::NotRunning("/x".into()), socket, "attaching");
        assert_eq!(e.code, 11);
        // The same status, told apart by kind alone (the text says nothing).
        let e = api_error(api(ErrorKind::NetworkNotFound, "gone"), socket, "attaching");
        assert_eq!(e.code, 7);
        let e = api_error(api(ErrorKind::NotFound, "gone"), socket, "attaching");
        assert_eq!(e.code, 3);
        for k in [
            ErrorKind::BadRequest,
            ErrorKind::Forbidden,
            ErrorKind::Conflict,
        ] {
            assert_eq!(api_error(api(k, "no"), socket, "a").code, 100, "{k}");
        }
        let e = api_error(api(ErrorKind::Unreachable, "peer away"), socket, "a");
        assert_eq!(e.code, 11);
        let e = api_error(api(ErrorKind::Internal, "disk"), socket, "a");
        assert_eq!(e.code, 5);
        let e = api_error(api(ErrorKind::Conflict, "address in use"), socket, "adding");
        assert_eq!(e.msg, "adding: address in use");
        assert!(
            e.details.contains("409") && e.details.contains("conflict"),
            "{}",
            e.details
        );
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(codes::REFUSED, "no \"way\"").details("d");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "0.4.0", "code": 100, "msg": "no \"way\"", "details": "d"})
        );
    }
}
