//! The error body of every non-2xx answer: a message for people and a
//! machine-readable [`ErrorKind`] for programs. Clients branch on the kind,
//! never on the message text.

use serde::{Deserialize, Serialize};

/// What went wrong, as a program needs to know it. Each kind is answered
/// with one HTTP status ([`ErrorKind::status`]); a status can carry more than
/// one kind where clients must tell the cases apart (an unknown network is a
/// configuration error to the CNI plugin, an unknown container is not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (400).
    BadRequest,
    /// Not allowed: a wrong join token, a host outside a restricted network (403).
    Forbidden,
    /// The network named in the request does not exist (404).
    NetworkNotFound,
    /// Something else the request names does not exist: an attachment, a
    /// process, a peer, a reservation (404).
    NotFound,
    /// The request clashes with the current state: an address in use, a
    /// namespace already attached, a network still in use (409).
    Conflict,
    /// A peer this host had to reach did not answer as it should (502).
    Unreachable,
    /// meshd failed; its log says more (500).
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::BadRequest,
        ErrorKind::Forbidden,
        ErrorKind::NetworkNotFound,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Unreachable,
        ErrorKind::Internal,
    ];

    /// The HTTP status this kind is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden => 403,
            ErrorKind::NetworkNotFound | ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Unreachable => 502,
            ErrorKind::Internal => 500,
        }
    }

    /// The kind an answer without one (an older meshd, a proxy) most likely
    /// meant, from its status alone.
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            400 | 422 => ErrorKind::BadRequest,
            401 | 403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            502..=504 => ErrorKind::Unreachable,
            _ => ErrorKind::Internal,
        }
    }

    /// The name used on the wire (`"network_not_found"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NetworkNotFound => "network_not_found",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Internal => "internal",
        }
    }

    /// Parses a wire name; `None` for a kind this build does not know.
    pub fn from_wire(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Either flavour of "does not exist".
    pub fn is_not_found(self) -> bool {
        matches!(self, ErrorKind::NotFound | ErrorKind::NetworkNotFound)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Body of every non-2xx answer: `{"error": "...", "kind": "conflict"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message, for people (kept under this name for older clients).
    pub error: String,
    pub kind: ErrorKind,
}

impl ErrorBody {
    /// Reads an error answer leniently: a missing or unknown `kind` (an
    /// older or newer meshd) is inferred from the status; a body that is
    /// not JSON becomes the message.
    pub fn parse(status: u16, body: &[u8]) -> ErrorBody {
        #[derive(Deserialize)]
        struct Lenient {
            error: String,
            #[serde(default)]
            kind: Option<String>,
        }
        match serde_json::from_slice::<Lenient>(body) {
            Ok(l) => ErrorBody {
                kind: l
                    .kind
                    .as_deref()
                    .and_then(ErrorKind::from_wire)
                    .unwrap_or_else(|| ErrorKind::from_status(status)),
                error: l.error,
            },
            Err(_) => ErrorBody {
                error: String::from_utf8_lossy(body).trim().to_string(),
                kind: ErrorKind::from_status(status),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_serde() {
        for k in ErrorKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(ErrorKind::from_wire(k.as_str()), Some(k));
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), k);
        }
        assert_eq!(ErrorKind::from_wire("teapot"), None);
    }

    #[test]
    fn every_kind_survives_its_status() {
        // A kind-less answer maps back to a kind of the same status.
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_status(k.status()).status(), k.status());
        }
    }

    #[test]
    fn body_serializes_error_and_kind() {
        let b = ErrorBody {
            error: "address 10.0.0.2 is already in use".into(),
            kind: ErrorKind::Conflict,
        };
        let v: serde_json::Value = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "address 10.0.0.2 is already in use", "kind": "conflict"})
        );
        assert_eq!(ErrorBody::parse(409, v.to_string().as_bytes()), b);
    }

    #[test]
    fn lenient_parse_infers_missing_or_unknown_kinds() {
        let old = ErrorBody::parse(404, br#"{"error": "gone"}"#);
        assert_eq!(
            (old.error.as_str(), old.kind),
            ("gone", ErrorKind::NotFound)
        );
        let newer = ErrorBody::parse(409, br#"{"error": "x", "kind": "quota_exceeded"}"#);
        assert_eq!(newer.kind, ErrorKind::Conflict);
        let net = ErrorBody::parse(404, br#"{"error": "x", "kind": "network_not_found"}"#);
        assert_eq!(net.kind, ErrorKind::NetworkNotFound);
        let text = ErrorBody::parse(502, b"Bad Gateway\n");
        assert_eq!(
            (text.error.as_str(), text.kind),
            ("Bad Gateway", ErrorKind::Unreachable)
        );
    }
}
