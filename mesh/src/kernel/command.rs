//! The one way meshd runs iproute2 (`ip`, `tc`, `bridge`), on the host or
//! inside a container's namespace (entered with `mesh_sys::netns`, not
//! `nsenter`), for what netlink here does not do yet.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An iproute2 tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Ip,
    Tc,
    Bridge,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Ip => "ip",
            Tool::Tc => "tc",
            Tool::Bridge => "bridge",
        }
    }
}

/// Why a tool did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {0} (is iproute2 installed?): {1}")]
    Spawn(&'static str, #[source] std::io::Error),
    #[error("cannot enter network namespace {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
    #[error("{tool} {args}: {stderr}")]
    Failed {
        tool: &'static str,
        args: String,
        stderr: String,
    },
}

/// Runs `tool args` on the host (`netns` none) or in the namespace at
/// `netns`; its standard output.
pub fn run(netns: Option<&Path>, tool: Tool, args: &[&str]) -> Result<String, CommandError> {
    let program = tool.program();
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let spawn = move || Command::new(program).args(&owned).output();
    let out = match netns {
        None => spawn(),
        // A process forked on the entered thread starts in that namespace.
        Some(path) => {
            mesh_sys::netns::run_in_net(path, spawn).map_err(|e| CommandError::Namespace {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
        }
    }
    .map_err(|e| CommandError::Spawn(program, e))?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            tool: program,
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
