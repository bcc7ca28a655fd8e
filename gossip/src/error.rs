use std::fmt;

/// Errors of the gossip layer. Messages never include key material or tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote end refused our proof of the mesh secret, or failed to prove its own.
    #[error("authentication rejected: {reason}")]
    AuthRejected { reason: String },
    /// No connection could be established to `addr`.
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: BoxError,
    },
    /// A host name did not resolve to any address.
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    /// The peer closed the connection for a reason other than authentication.
    #[error("refused by peer: {reason} (code {code})")]
    Refused { code: u64, reason: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that violates the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A join token that cannot be parsed.
    #[error("invalid mesh token: {0}")]
    InvalidToken(String),
    /// The identity file is unusable.
    #[error("identity error: {0}")]
    Identity(String),
    /// TLS/QUIC configuration failed.
    #[error("TLS setup error: {0}")]
    Tls(String),
    /// The node was shut down.
    #[error("node is shut down")]
    Shutdown,
}

impl From<mesh_sys::fs::Error> for Error {
    /// Keeps the path and the step that failed in the message.
    fn from(e: mesh_sys::fs::Error) -> Self {
        Error::Io(std::io::Error::new(e.source.kind(), e.to_string()))
    }
}

/// Boxed source error (keeps quinn types out of the public enum).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Marker so `Error` stays usable in `fmt` contexts of tests.
impl Error {
    pub(crate) fn protocol(msg: impl fmt::Display) -> Self {
        Error::Protocol(msg.to_string())
    }
}
