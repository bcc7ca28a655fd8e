//! The `mesh` CNI plugin (CNI spec 1.1): attaches a container's network
//! namespace to a mesh network by asking the host's `meshd` over its local
//! API, so the daemon stays the one owner of bridges, veths and addresses.
//!
//! Network configuration keys (besides the standard `cniVersion`, `name`,
//! `type`, `args`, `runtimeConfig`, `prevResult`, `dns`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `network` | the config's `name` | mesh network id |
//! | `socket` | `/run/mesh/meshd.sock` | meshd's API socket |
//!
//! The address comes from `runtimeConfig.ips` (capability `ips`), else
//! `args.cni.ips`, else `CNI_ARGS` `IP=`; with none, the daemon allocates
//! one (once it can). A DNS name comes from `args.cni.name`, `CNI_ARGS`
//! `MESH_NAME=` or `K8S_POD_NAME=`; a version label from `args.cni.version`
//! or `CNI_ARGS` `MESH_VERSION=`.
//!
//! Every call is one process: [`run`] takes the environment and stdin and
//! returns what to print and the exit code, so all of it is testable.
//!
//! Modules: [`config`] (environment and stdin), [`result`] (the result
//! JSON), [`netns`] (namespace checks), [`error`] (codes, meshd's errors
//! mapped by kind), [`commands`] (what each command does).

/// meshd's local API types and client, shared with the daemon and `meshctl`.
pub use mesh_api as api;

pub mod commands;
pub mod config;
pub mod error;
pub mod netns;
pub mod result;

pub use config::{parse_cni_args, parse_version, requested_ip, Command, Env, NetConf};
pub use error::{api_error, codes, CniError};
pub use netns::{check_netns, inspect_netns};
pub use result::{add_result, CniResult};

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Versions this plugin speaks (the result format is shared from 0.3.0 on).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
pub const CURRENT_VERSION: &str = "1.1.0";
/// meshd's default API socket.
pub const DEFAULT_SOCKET: &str = api::DEFAULT_SOCKET;

/// What the binary prints on stdout and exits with.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: String,
    pub exit_code: i32,
}

/// One CNI call: parses the environment and stdin, talks to meshd, and
/// says what to print. Errors are printed as the spec's error JSON.
pub fn run(env: &HashMap<String, String>, stdin: &[u8]) -> Output {
    /// Just the version, from a configuration that may be broken otherwise.
    #[derive(Deserialize)]
    struct VersionOnly {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    let version_hint = serde_json::from_slice::<VersionOnly>(stdin)
        .ok()
        .map(|v| v.cni_version)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    let printed = dispatch(env, stdin).and_then(|answer| match answer {
        Some(a) => a.to_json().map(Some),
        None => Ok(None),
    });
    match printed {
        Ok(Some(stdout)) => Output {
            stdout,
            exit_code: 0,
        },
        Ok(None) => Output {
            stdout: String::new(),
            exit_code: 0,
        },
        Err(e) => {
            eprintln!("mesh CNI: {e}");
            Output {
                stdout: e.to_json(&version_hint),
                exit_code: 1,
            }
        }
    }
}

/// The answer of VERSION.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: &'static [&'static str],
}

pub fn version_info() -> VersionInfo {
    VersionInfo {
        cni_version: CURRENT_VERSION,
        supported_versions: SUPPORTED_VERSIONS,
    }
}

/// What a successful call prints.
enum Answer {
    Version(VersionInfo),
    Result(Box<CniResult>),
}

impl Answer {
    fn to_json(&self) -> Result<String, CniError> {
        match self {
            Answer::Version(v) => serde_json::to_string(v),
            Answer::Result(r) => serde_json::to_string(r),
        }
        .map_err(|e| CniError::new(codes::IO, format!("encoding the result: {e}")))
    }
}

fn dispatch(env: &HashMap<String, String>, stdin: &[u8]) -> Result<Option<Answer>, CniError> {
    use commands::{add, check, del, gc, status};
    let env = Env::from_map(env)?;
    if env.command == Command::Version {
        return Ok(Some(Answer::Version(version_info())));
    }
    let conf = NetConf::parse(stdin)?;
    match env.command {
        Command::Add => add(&conf, &env).map(|r| Some(Answer::Result(Box::new(r)))),
        Command::Del => del(&conf, &env).map(|()| None),
        Command::Check => {
            if !conf.version_at_least((0, 4, 0)) {
                return Err(CniError::new(
                    codes::INCOMPATIBLE_VERSION,
                    format!(
                        "CHECK needs cniVersion 0.4.0 or later, the configuration says {}",
                        conf.cni_version
                    ),
                ));
            }
            check(&conf, &env).map(|()| None)
        }
        Command::Status => {
            need_1_1(&conf, "STATUS")?;
            status(&conf).map(|()| None)
        }
        Command::Gc => {
            need_1_1(&conf, "GC")?;
            gc(&conf).map(|()| None)
        }
        Command::Version => Ok(Some(Answer::Version(version_info()))),
    }
}

fn need_1_1(conf: &NetConf, what: &str) -> Result<(), CniError> {
    if conf.version_at_least((1, 1, 0)) {
        Ok(())
    } else {
        Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "{what} needs cniVersion 1.1.0, the configuration says {}",
                conf.cni_version
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run_err(e: &[(&str, &str)], stdin: &str) -> Value {
        let out = run(&env(e), stdin.as_bytes());
        assert_eq!(out.exit_code, 1, "{}", out.stdout);
        serde_json::from_str(&out.stdout).unwrap()
    }

    #[test]
    fn version_command_needs_nothing_else() {
        let out = run(&env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(out.exit_code, 0);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("0.4.0")));
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = run_err(&[], "{}");
        assert_eq!(e["code"], 4);
        assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"));
        let e = run_err(&[("CNI_COMMAND", "FOO")], "{}");
        assert_eq!(e["code"], 4);
        let e = run_err(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c")], "{}");
        assert_eq!(e["code"], 4);
        let m = e["msg"].as_str().unwrap();
        assert!(
            m.contains("CNI_NETNS") && m.contains("CNI_IFNAME") && !m.contains("CNI_CONTAINERID"),
            "{m}"
        );
        // DEL without a namespace is fine (env-wise).
        Env::from_map(&env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")])).unwrap();
        let e = run_err(&[("CNI_COMMAND", "DEL")], "{}");
        assert!(e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
    }

    #[test]
    fn config_errors_have_the_spec_codes() {
        let del = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")];
        let e = run_err(&del, "{not json");
        assert_eq!(e["code"], 6);
        assert_eq!(e["cniVersion"], "1.1.0");
        let e = run_err(&del, r#"{"cniVersion":"9.9.9","name":"n"}"#);
        assert_eq!(e["code"], 1);
        assert!(e["msg"].as_str().unwrap().contains("9.9.9"));
        let e = run_err(&del, r#"{"name":"n"}"#);
        assert_eq!(e["code"], 7);
        let e = run_err(&del, r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!(
            (e["code"].clone(), e["cniVersion"].clone()),
            (json!(7), json!("1.0.0"))
        );
        let e = run_err(
            &del,
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}"#,
        );
        assert_eq!(e["code"], 2);
        let e = run_err(
            &del,
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":"x"}}"#,
        );
        assert_eq!(e["code"], 7);
        let e = run_err(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(e["code"], 1);
        let e = run_err(
            &[("CNI_COMMAND", "GC")],
            r#"{"cniVersion":"0.4.0","name":"n"}"#,
        );
        assert_eq!(e["code"], 1);
        // GC without the list of attachments in use detaches nothing.
        let e = run_err(
            &[("CNI_COMMAND", "GC")],
            r#"{"cniVersion":"1.1.0","name":"n","socket":"/nonexistent/meshd.sock"}"#,
        );
        assert_eq!(e["code"], 7);
        assert!(e["msg"].as_str().unwrap().contains("valid-attachments"));
        let chk = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "e"),
        ];
        let e = run_err(&chk, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!(e["code"], 1);
    }

    #[test]
    fn unreachable_daemon() {
        let stdin =
            json!({"cniVersion": "1.1.0", "name": "blue", "socket": "/nonexistent/meshd.sock"})
                .to_string();
        let e = run_err(&[("CNI_COMMAND", "STATUS")], &stdin);
        assert_eq!(e["code"], 50);
        // DEL with the namespace gone and meshd away: nothing left to undo.
        let out = run(
            &env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c")]),
            stdin.as_bytes(),
        );
        assert_eq!(out.exit_code, 0, "{}", out.stdout);
        let e = run_err(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/proc/self/ns/net"),
                ("CNI_IFNAME", "e"),
            ],
            &stdin,
        );
        assert_eq!(e["code"], 11);
        let e = run_err(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_NETNS", "/etc/hostname"),
                ("CNI_IFNAME", "e"),
            ],
            &stdin,
        );
        assert_eq!(e["code"], 4);
    }
}
