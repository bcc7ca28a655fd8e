//! dockerd's own API, asked which container an endpoint belongs to: the
//! network protocol never tells a driver the container's name or labels.
//! A plain HTTP/1.0 GET over dockerd's Unix socket (connection closes after
//! the answer, so no chunked bodies), only ever to the configured socket.

use mesh_api::RuntimeIdentity;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long to look for a container after its endpoint joined: dockerd
/// lists the endpoint once the container has started.
const IDENTIFY_FOR: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(300);
const ANSWER_LIMIT: usize = 16 << 20;

/// Why dockerd could not say who a container is.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("connecting to dockerd at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to dockerd: {0}")]
    Io(#[from] std::io::Error),
    #[error("dockerd's answer has no header end")]
    NoHeaderEnd,
    #[error("dockerd answered GET {path} with {status_line}")]
    Status { path: String, status_line: String },
    #[error("reading dockerd's container list: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("dockerd lists no container with endpoint {0}")]
    NotListed(String),
}

#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Container {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkSettings {
    #[serde(default)]
    networks: Option<BTreeMap<String, EndpointSettings>>,
}

#[derive(Debug, Deserialize)]
struct EndpointSettings {
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
}

impl Engine {
    pub fn new(socket: PathBuf) -> Engine {
        Engine { socket }
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, EngineError> {
        let mut s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| EngineError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        (&mut s)
            .take(ANSWER_LIMIT as u64)
            .read_to_end(&mut raw)
            .await?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(EngineError::NoHeaderEnd)?;
        let head = String::from_utf8_lossy(&raw[..split]);
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(EngineError::Status {
                path: path.to_string(),
                status_line: head.lines().next().unwrap_or("").to_string(),
            });
        }
        Ok(raw[split + 4..].to_vec())
    }

    /// The container whose endpoint on Docker network `network` is
    /// `endpoint`, if dockerd lists it now.
    pub async fn find(
        &self,
        network: &str,
        endpoint: &str,
    ) -> Result<Option<RuntimeIdentity>, EngineError> {
        // filters={"network":["<id>"]}, URL-encoded.
        let path =
            format!("/containers/json?all=1&filters=%7B%22network%22%3A%5B%22{network}%22%5D%7D");
        let list: Vec<Container> = serde_json::from_slice(&self.get(&path).await?)?;
        Ok(identity_of(list, endpoint))
    }

    /// The name of Docker network `id`; `None` while dockerd does not
    /// list it (it does once the driver's `CreateNetwork` has answered).
    pub async fn network_name(&self, id: &str) -> Result<Option<String>, EngineError> {
        #[derive(Deserialize)]
        struct Named {
            #[serde(rename = "Name")]
            name: String,
        }
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None); // Not a Docker id: nothing to ask.
        }
        match self.get(&format!("/networks/{id}")).await {
            Ok(body) => Ok(Some(serde_json::from_slice::<Named>(&body)?.name)),
            Err(EngineError::Status { status_line, .. }) if status_line.contains(" 404") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Polls until dockerd lists the container of `endpoint`.
    pub async fn identify(
        &self,
        network: &str,
        endpoint: &str,
    ) -> Result<RuntimeIdentity, EngineError> {
        let start = tokio::time::Instant::now();
        loop {
            match self.find(network, endpoint).await {
                Ok(Some(who)) => return Ok(who),
                Ok(None) => {}
                Err(e) if start.elapsed() > IDENTIFY_FOR => return Err(e),
                Err(e) => tracing::debug!("asking dockerd: {e}"),
            }
            if start.elapsed() > IDENTIFY_FOR {
                return Err(EngineError::NotListed(endpoint.to_string()));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn identity_of(list: Vec<Container>, endpoint: &str) -> Option<RuntimeIdentity> {
    let c = list.into_iter().find(|c| {
        c.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .is_some_and(|n| n.values().any(|e| e.endpoint_id == endpoint))
    })?;
    let name = c
        .names
        .first()
        .and_then(|n| mesh_model::networks::dns_label_from(n.trim_start_matches('/')));
    // Labels service selectors cannot match (image metadata, say) stay out.
    let labels = c
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| {
            let one = BTreeMap::from([(k.clone(), v.clone())]);
            mesh_model::services::spec::check_labels(&one).is_ok()
        })
        .collect();
    Some(RuntimeIdentity {
        container_id: Some(c.id),
        name,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_with_the_endpoint_gives_name_and_labels() {
        let list: Vec<Container> = serde_json::from_str(
            r#"[{"Id":"aaa","Names":["/db"],"Labels":{},"NetworkSettings":{"Networks":{"n":{"EndpointID":"e1"}}}},
                {"Id":"bbb","Names":["/Web_1"],"Labels":{"app":"web","bad key":"x"},
                 "NetworkSettings":{"Networks":{"n":{"EndpointID":"e2"}}}}]"#,
        )
        .unwrap();
        let who = identity_of(list, "e2").unwrap();
        assert_eq!(who.container_id.as_deref(), Some("bbb"));
        assert_eq!(who.name.as_deref(), Some("web-1"));
        assert_eq!(who.labels.get("app").map(String::as_str), Some("web"));
        assert!(!who.labels.contains_key("bad key"));
        assert!(identity_of(Vec::new(), "e2").is_none());
    }
}
