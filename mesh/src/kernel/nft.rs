//! The one way meshd runs `nft`: a whole script at a time (one atomic
//! transaction), on the host or inside a container's namespace, and the
//! tables' names and counters. Subsystems build scripts; this runs them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why nft did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run nft (is nftables installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot enter network namespace {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
    /// nft's own message names the failing line of the script.
    #[error("nft refused{where_}: {stderr}")]
    Refused { where_: String, stderr: String },
    #[error("nft printed JSON we cannot read: {0}")]
    Json(#[from] serde_json::Error),
}

/// An nftables address family meshd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Ip,
    Bridge,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Bridge => "bridge",
        })
    }
}

/// The name of meshd's table `what` for a device prefix (nft names allow
/// letters, digits and `_`; prefixes keep labs and hosts apart).
pub fn table_name(prefix: &str, what: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{clean}_{what}")
}

/// A script that replaces `family table` by one with `body` in one
/// transaction: declaring it first makes the delete succeed on a first
/// install, so the replacement is atomic and idempotent.
pub fn replace_table(family: Family, table: &str, body: &str) -> String {
    format!("table {family} {table} {{}}\ndelete table {family} {table}\ntable {family} {table} {{\n{body}}}\n")
}

/// Runs `nft -f -` with `script` on the host.
pub fn run(script: &str) -> Result<(), NftError> {
    exec(None, &["-f", "-"], Some(script)).map(drop)
}

/// Runs `nft -f -` with `script` inside the namespace at `netns`.
pub fn run_in(netns: &Path, script: &str) -> Result<(), NftError> {
    exec(Some(netns), &["-f", "-"], Some(script)).map(drop)
}

/// Deletes `family table` if it is there.
pub fn delete_table(netns: Option<&Path>, family: Family, table: &str) -> Result<(), NftError> {
    let script = format!("table {family} {table} {{}}\ndelete table {family} {table}\n");
    exec(netns, &["-f", "-"], Some(&script)).map(drop)
}

/// Lists the tables (doctor's check that nft works here).
pub fn list_tables() -> Result<String, NftError> {
    exec(None, &["list", "tables"], None)
}

/// The named counters of `family table` (name → packets); an error if
/// the table is not there.
pub fn counters(
    netns: Option<&Path>,
    family: Family,
    table: &str,
) -> Result<BTreeMap<String, u64>, NftError> {
    let family = family.to_string();
    let json = exec(
        netns,
        &["-j", "list", "counters", "table", &family, table],
        None,
    )?;
    parse_counters(&json)
}

/// Counters from `nft -j list counters` output.
pub fn parse_counters(json: &str) -> Result<BTreeMap<String, u64>, NftError> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let mut out = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["counter"];
        if let (Some(name), Some(packets)) = (c["name"].as_str(), c["packets"].as_u64()) {
            out.insert(name.to_string(), packets);
        }
    }
    Ok(out)
}

fn exec(netns: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    let spawn = move || -> Result<std::process::Output, NftError> {
        let mut child = Command::new("nft")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(NftError::Spawn)?;
        if let Some(mut w) = child.stdin.take() {
            w.write_all(stdin.unwrap_or_default().as_bytes())
                .map_err(NftError::Spawn)?;
        }
        child.wait_with_output().map_err(NftError::Spawn)
    };
    let out = match netns {
        None => spawn()?,
        // A process forked on the entered thread starts in that namespace.
        Some(path) => {
            mesh_sys::netns::run_in_net(path, spawn).map_err(|e| NftError::Namespace {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })??
        }
    };
    if !out.status.success() {
        return Err(NftError::Refused {
            where_: netns
                .map(|p| format!(" in {}", p.display()))
                .unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scripts() {
        assert_eq!(table_name("mesh-", "policy"), "mesh__policy");
        let s = replace_table(Family::Bridge, "t", "    chain c { }\n");
        assert!(s.starts_with("table bridge t {}\ndelete table bridge t\ntable bridge t {\n"));
        assert!(s.ends_with("    chain c { }\n}\n"));
    }

    #[test]
    fn counters_parse() {
        let json = r#"{"nftables":[{"metainfo":{}},{"counter":{"family":"inet","name":"drop_1","table":"t","handle":2,"packets":7,"bytes":9}}]}"#;
        assert_eq!(parse_counters(json).unwrap()["drop_1"], 7);
        assert!(parse_counters("not json").is_err());
    }
}
