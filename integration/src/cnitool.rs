//! A cnitool-like driver for CNI plugins, written here because there is no
//! `cnitool` package and Go modules cannot be fetched: it executes a plugin
//! binary the way a container runtime does — `CNI_*` environment, network
//! configuration on stdin, result or error JSON on stdout — and remembers
//! each container's ADD result to pass as `prevResult` to CHECK and DEL.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One plugin invocation's outcome.
#[derive(Debug, Clone)]
pub struct CniOutcome {
    pub success: bool,
    /// stdout parsed as JSON (`Null` when empty).
    pub json: Value,
    pub stderr: String,
    pub elapsed: Duration,
}

/// The error JSON of the spec, as a failed call prints it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CniErrorReply {
    pub code: u64,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// What VERSION prints.
#[derive(Debug, Clone, Deserialize)]
pub struct VersionReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// The result of ADD (re-exported from the plugin: one definition).
pub use mesh_cni::result::CniResult;

impl CniOutcome {
    /// The error of a failed call (`None` on success or without error JSON).
    pub fn error(&self) -> Option<CniErrorReply> {
        if self.success {
            None
        } else {
            serde_json::from_value(self.json.clone()).ok()
        }
    }

    /// The error code of a failed call.
    pub fn code(&self) -> Option<u64> {
        self.error().map(|e| e.code)
    }

    pub fn msg(&self) -> String {
        self.error().map(|e| e.msg).unwrap_or_default()
    }

    /// The output of a successful call as `T` (`CniResult` for ADD,
    /// `VersionReply` for VERSION, `()` for the silent commands), or an
    /// error with the CNI error.
    pub fn ok<T: DeserializeOwned>(self) -> Result<T> {
        if !self.success {
            bail!(
                "plugin failed: {} (stderr: {})",
                self.json,
                self.stderr.trim()
            )
        }
        serde_json::from_value(self.json.clone())
            .with_context(|| format!("plugin output is not what was expected: {}", self.json))
    }
}

/// The identity of one attachment, as a runtime keeps it.
#[derive(Debug, Clone, Default)]
pub struct Container {
    pub id: String,
    /// `CNI_NETNS`; empty for a DEL after the namespace is gone.
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: String,
}

pub struct CniTool {
    pub plugin: PathBuf,
    /// Network namespace to run the plugin in (the runtime's host
    /// namespace); `None`: the caller's.
    pub host_netns: Option<String>,
    /// The network configuration (a single plugin's, not a list).
    pub conf: Value,
    results: Mutex<HashMap<String, Value>>,
}

impl CniTool {
    pub fn new(
        plugin: impl Into<PathBuf>,
        host_netns: Option<&str>,
        conf: Value,
    ) -> Result<CniTool> {
        let plugin = plugin.into();
        if !plugin.is_file() {
            bail!(
                "CNI plugin {} not found: build it with `cargo build --workspace --bins`",
                plugin.display()
            );
        }
        Ok(CniTool {
            plugin,
            host_netns: host_netns.map(str::to_string),
            conf,
            results: Mutex::new(HashMap::new()),
        })
    }

    /// Executes the plugin with `command`, the container's identity and
    /// `conf` (already completed with runtimeConfig/prevResult) on stdin.
    pub fn exec_raw(&self, command: &str, c: &Container, stdin: &[u8]) -> Result<CniOutcome> {
        let mut cmd = match &self.host_netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.plugin);
                cmd
            }
            None => Command::new(&self.plugin),
        };
        let dir = self
            .plugin
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &c.id)
            .env("CNI_NETNS", &c.netns)
            .env("CNI_IFNAME", &c.ifname)
            .env("CNI_ARGS", &c.args)
            .env("CNI_PATH", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.plugin.display()))?;
        child
            .stdin
            .take()
            .context("plugin stdin")?
            .write_all(stdin)
            .context("writing the configuration to the plugin")?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("plugin printed no JSON: {text:?}"))?
        };
        Ok(CniOutcome {
            success: out.status.success(),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        })
    }

    /// Executes `command` with this tool's configuration plus `extra` keys
    /// (runtimeConfig, prevResult, cni.dev/valid-attachments, …).
    pub fn exec(&self, command: &str, c: &Container, extra: Value) -> Result<CniOutcome> {
        let mut conf = self.conf.clone();
        if let (Some(obj), Some(add)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in add {
                obj.insert(k.clone(), v.clone());
            }
        }
        self.exec_raw(command, c, conf.to_string().as_bytes())
    }

    /// ADD with `runtime_config` (e.g. `{"ips": ["10.0.0.2/24"]}`); the
    /// result is kept for CHECK and DEL.
    pub fn add(&self, c: &Container, runtime_config: Value) -> Result<CniOutcome> {
        let extra = if runtime_config.is_null() {
            json!({})
        } else {
            json!({ "runtimeConfig": runtime_config })
        };
        let out = self.exec("ADD", c, extra)?;
        if out.success {
            self.results
                .lock()
                .unwrap()
                .insert(c.id.clone(), out.json.clone());
        }
        Ok(out)
    }

    fn with_prev(&self, c: &Container) -> Value {
        match self.results.lock().unwrap().get(&c.id) {
            Some(r) => json!({ "prevResult": r }),
            None => json!({}),
        }
    }

    pub fn check(&self, c: &Container) -> Result<CniOutcome> {
        self.exec("CHECK", c, self.with_prev(c))
    }

    pub fn del(&self, c: &Container) -> Result<CniOutcome> {
        let out = self.exec("DEL", c, self.with_prev(c))?;
        if out.success {
            self.results.lock().unwrap().remove(&c.id);
        }
        Ok(out)
    }

    /// GC keeping `valid` (container id, ifname) attachments.
    pub fn gc(&self, valid: &[(&str, &str)]) -> Result<CniOutcome> {
        let list: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        self.exec(
            "GC",
            &Container::default(),
            json!({ "cni.dev/valid-attachments": list }),
        )
    }

    pub fn status(&self) -> Result<CniOutcome> {
        self.exec("STATUS", &Container::default(), json!({}))
    }

    pub fn version(&self) -> Result<CniOutcome> {
        let v = self.conf["cniVersion"].clone();
        self.exec_raw(
            "VERSION",
            &Container::default(),
            json!({ "cniVersion": v }).to_string().as_bytes(),
        )
    }
}
