//! `meshctl apply`, `meshctl delete` and `meshctl export` (see
//! docs/apply.md, Declarative configuration).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A YAML file, a directory of them (*.yaml, *.yml), or - (standard
    /// input); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The network of Kubernetes Services that name none
    /// (metadata.namespace or the mesh/network annotation).
    #[arg(long)]
    pub network: Option<String>,
    /// Print what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DeleteFilesArgs {
    /// A YAML file, a directory of them, or - (standard input); repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The network of Kubernetes Services that name none.
    #[arg(long)]
    pub network: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}
