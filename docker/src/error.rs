//! What a plugin call can fail with. dockerd is told only the message
//! (`{"Err": "…"}`); the kinds are for the plugin's own branching and its
//! tests. meshd's refusals keep meshd's message and [`mesh_api::ErrorKind`].

use std::path::PathBuf;

use mesh_api::{ClientError, ErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// dockerd (or the user, through it) asked for what the mesh driver
    /// does not do, or sent something that does not parse.
    #[error("{0}")]
    BadRequest(String),
    /// The Docker network, or the mesh network a request names, is not
    /// one the plugin knows.
    #[error("{0}")]
    NetworkNotFound(String),
    /// The endpoint is not one the plugin knows.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists: a pool, an endpoint, a mapping.
    #[error("{0}")]
    Conflict(String),
    /// meshd refused or failed, or could not be reached.
    #[error(transparent)]
    Daemon(#[from] ClientError),
    /// meshd answered something the plugin cannot use.
    #[error("{0}")]
    Answer(String),
    /// The plugin's own state could not be read or saved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The plugin socket could not be bound.
    #[error(transparent)]
    Socket(#[from] mesh_sys::socket::BindError),
}

impl Error {
    /// The kind of the error as meshd's API would name it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadRequest(_) => ErrorKind::BadRequest,
            Error::NetworkNotFound(_) => ErrorKind::NetworkNotFound,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Daemon(e) => e.kind().unwrap_or(ErrorKind::Internal),
            Error::Answer(_) | Error::Store(_) | Error::Socket(_) => ErrorKind::Internal,
        }
    }
}

/// `docker.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("encoding the Docker plugin's state: {0}")]
    Encode(serde_json::Error),
    #[error(transparent)]
    Write(#[from] mesh_sys::fs::Error),
}
