//! `meshctl hook`: the OCI runtime hook. The runtime passes the container's
//! state on stdin; `start` attaches the container per its `mesh.*`
//! annotations, `stop` detaches it by container id.

use crate::args::HookPhase;
use anyhow::{bail, Result};
use mesh_api::{AttachRequest, Client, DetachRequest, Origin};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The OCI state a runtime passes to hooks on stdin (the fields we use).
#[derive(Debug, serde::Deserialize)]
pub struct OciState {
    pub id: String,
    #[serde(default)]
    pub pid: Option<i64>,
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The part of a bundle's config.json the hook reads.
#[derive(Debug, serde::Deserialize)]
struct BundleConfig {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The `mesh.*` annotations of a container: from the state, else (runtimes
/// that leave them out at poststop) from the bundle's config.json.
pub fn hook_annotations(state: &OciState) -> BTreeMap<String, String> {
    if state.annotations.contains_key("mesh.network") {
        return state.annotations.clone();
    }
    state
        .bundle
        .as_ref()
        .and_then(|b| std::fs::read(b.join("config.json")).ok())
        .and_then(|bytes| serde_json::from_slice::<BundleConfig>(&bytes).ok())
        .map(|c| c.annotations)
        .unwrap_or_else(|| state.annotations.clone())
}

pub async fn run(c: &Client, phase: HookPhase) -> Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let state: OciState = serde_json::from_str(&input)
        .map_err(|e| anyhow::anyhow!("hook: stdin is not an OCI state JSON: {e}"))?;
    if state.id.is_empty() {
        bail!("hook: the OCI state has an empty container id");
    }
    let ann = hook_annotations(&state);
    let get = |k: &str| {
        ann.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let Some(network) = get("mesh.network") else {
        bail!(
            "hook: container {} has no mesh.network annotation (the network to attach it to)",
            state.id
        );
    };
    match phase {
        HookPhase::Start => {
            let pid = match state.pid {
                Some(p) if p > 0 => p,
                _ => bail!("hook start: the OCI state of {} has no pid (run this as a createRuntime or prestart hook)", state.id),
            };
            let req = AttachRequest {
                target: format!("/proc/{pid}/ns/net"),
                network,
                ip: get("mesh.ip"),
                ifname: get("mesh.ifname"),
                container_id: Some(state.id.clone()),
                name: get("mesh.name"),
                version: get("mesh.version"),
                labels: parse_labels(get("mesh.labels").as_deref())?,
                mode: None,
                parent: None,
                origin: Origin::Hook,
            };
            let a = c.attach(&req).await?;
            println!(
                "attached {} to {} as {} ({})",
                state.id, a.network, a.ip, a.ifname
            );
        }
        HookPhase::Stop => {
            let req = DetachRequest {
                target: None,
                network: network.clone(),
                container_id: Some(state.id.clone()),
                origin: None,
            };
            match c.detach(&req).await {
                Ok(a) => println!("detached {} from {} ({})", state.id, a.network, a.ip),
                // Already detached (or the network is gone): nothing to undo.
                Err(e) if e.kind().is_some_and(|k| k.is_not_found()) => {
                    println!("{} was not attached to {network}", state.id)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_state() {
        let s: OciState = serde_json::from_str(
            r#"{"ociVersion":"1.0.2-dev","id":"x","status":"creating","pid":32372,"bundle":"/b","annotations":{"mesh.network":"blue"}}"#,
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.pid), ("x", Some(32372)));
        assert_eq!(hook_annotations(&s)["mesh.network"], "blue");
        // poststop: no pid, annotations from the bundle.
        let dir = std::env::temp_dir().join(format!("meshctl-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"mesh.network":"red"}}"#,
        )
        .unwrap();
        let s: OciState = serde_json::from_value(
            serde_json::json!({"id": "x", "status": "stopped", "bundle": dir}),
        )
        .unwrap();
        assert_eq!(s.pid, None);
        assert_eq!(hook_annotations(&s)["mesh.network"], "red");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The `mesh.labels` annotation: `key=value,key=value`.
fn parse_labels(text: Option<&str>) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for item in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => bail!("annotation mesh.labels: {item:?} is not key=value"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_annotation_is_comma_separated_pairs() {
        let l = parse_labels(Some("app=nginx, tier=web")).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l["tier"], "web");
        assert!(parse_labels(None).unwrap().is_empty());
        assert!(parse_labels(Some("app")).is_err());
    }
}
