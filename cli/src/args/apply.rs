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

#[cfg(test)]
mod tests {
    use crate::args::{Cli, Command};
    use clap::Parser;

    #[test]
    fn apply_delete_and_export_parse() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "apply",
            "-f",
            "a.yaml",
            "--filename",
            "dir",
            "--network",
            "web",
            "--dry-run",
        ])
        .unwrap();
        match cli.command {
            Command::Apply(a) => {
                assert_eq!(a.files, ["a.yaml", "dir"].map(std::path::PathBuf::from));
                assert_eq!(a.network.as_deref(), Some("web"));
                assert!(a.dry_run);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["meshctl", "apply"]).is_err(),
            "-f is required"
        );
        assert!(Cli::try_parse_from(["meshctl", "delete", "-f", "x.yaml", "--dry-run"]).is_err());
        match Cli::try_parse_from(["meshctl", "delete", "-f", "-"])
            .unwrap()
            .command
        {
            Command::Delete(d) => assert_eq!(d.files, [std::path::PathBuf::from("-")]),
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["meshctl", "export", "-o", "b.yaml"])
            .unwrap()
            .command
        {
            Command::Export(e) => assert_eq!(e.output, Some("b.yaml".into())),
            other => panic!("{other:?}"),
        }
    }
}
