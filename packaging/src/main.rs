//! `mesh-gen-docs OUT_DIR`: renders the man pages (`OUT_DIR/man/*.8`) and
//! the bash, zsh and fish completions (`OUT_DIR/completions/`) of `meshd`
//! and `meshctl` from their clap definitions, the same ones the binaries
//! parse, so the packaged docs can never drift from the flags.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

fn render(out: &Path, name: &str, mut cmd: clap::Command) -> Result<()> {
    let man_dir = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)
        .with_context(|| format!("rendering the man page of {name}"))?;
    std::fs::write(man_dir.join(format!("{name}.8")), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, name, &completions)
            .with_context(|| format!("{shell} completions of {name}"))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: mesh-gen-docs OUT_DIR")?
        .into();
    render(&out, "meshd", mesh::config::Flags::command())?;
    render(&out, "meshctl", meshctl::args::Cli::command())?;
    println!("rendered man pages and completions into {}", out.display());
    Ok(())
}
