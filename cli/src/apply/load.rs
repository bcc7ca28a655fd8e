//! Reading `-f FILE|DIR|-`: every YAML document of every file, each
//! read as its kind. Every error is kept (file, document, field), so one
//! run shows them all and nothing is applied.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::kinds::{Doc, Kind};

/// Where a document came from: `FILE: document N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    /// 1-based, counting the file's non-empty documents.
    pub doc: usize,
    /// `Kind name`, once known.
    pub title: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.doc)?;
        if let Some(t) = &self.title {
            write!(f, " ({t})")?;
        }
        Ok(())
    }
}

/// Problems found in the files; applying nothing.
#[derive(Debug, Default)]
pub struct Invalid(pub Vec<String>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nothing applied: {} problem(s) in the files",
            self.0.len()
        )?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// The files `-f` names: a file, `-` (standard input), or a directory's
/// `*.yaml` and `*.yml` files (by name, not recursive).
fn expand(paths: &[PathBuf], errors: &mut Vec<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" || !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        match std::fs::read_dir(p) {
            Ok(rd) => {
                let mut files: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        f.is_file()
                            && matches!(
                                f.extension().and_then(|e| e.to_str()),
                                Some("yaml" | "yml")
                            )
                    })
                    .collect();
                files.sort();
                if files.is_empty() {
                    errors.push(format!("{}: no *.yaml or *.yml file", p.display()));
                }
                out.extend(files);
            }
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    out
}

fn read_text(p: &Path) -> std::io::Result<String> {
    if p.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return Ok(s);
    }
    std::fs::read_to_string(p)
}

/// Every document of `paths`, or every problem.
pub fn load(paths: &[PathBuf]) -> Result<Vec<(Origin, Doc)>, Invalid> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for file in expand(paths, &mut errors) {
        let name = if file.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            file.display().to_string()
        };
        match read_text(&file) {
            Ok(text) => docs.extend(parse(&name, &text, &mut errors)),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if docs.is_empty() && errors.is_empty() {
        errors.push("no document in the files".into());
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(Invalid(errors))
    }
}

/// The documents of one file's text. Two passes over the stream: the
/// first finds each document's kind, the second reads it as that kind
/// straight from the text, so errors keep their field path and line.
pub fn parse(file: &str, text: &str, errors: &mut Vec<String>) -> Vec<(Origin, Doc)> {
    let mut kinds: Vec<Option<Result<Kind, String>>> = Vec::new();
    for d in yaml_serde::Deserializer::from_str(text) {
        match yaml_serde::Value::deserialize(d) {
            Ok(yaml_serde::Value::Null) => kinds.push(None),
            Ok(v) => kinds.push(Some(kind_of(&v))),
            Err(e) => {
                // A syntax error ends the stream: nothing after it is read.
                errors.push(format!("{file}: {e}"));
                return Vec::new();
            }
        }
    }
    let mut out = Vec::new();
    let mut n = 0;
    for (d, kind) in yaml_serde::Deserializer::from_str(text).zip(kinds) {
        let Some(kind) = kind else { continue };
        n += 1;
        let mut origin = Origin {
            file: file.to_string(),
            doc: n,
            title: None,
        };
        match kind {
            Err(e) => errors.push(format!("{origin}: {e}")),
            Ok(kind) => match kind.read(d) {
                Ok(doc) => {
                    origin.title = Some(doc.title());
                    out.push((origin, doc));
                }
                Err(e) => errors.push(format!("{origin}: {e}")),
            },
        }
    }
    out
}

fn kind_of(v: &yaml_serde::Value) -> Result<Kind, String> {
    let field = |name: &str| -> Result<String, String> {
        match v.get(name) {
            Some(yaml_serde::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{name}: expected a string")),
            None if v.as_mapping().is_none() => {
                Err("expected a mapping with apiVersion, kind, …".into())
            }
            None => Err(format!("missing field `{name}`")),
        }
    };
    Kind::of(&field("apiVersion")?, &field("kind")?)
}
