//! `meshctl metrics --json`: the Prometheus text format read into samples.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `NaN` and infinities print as `null` (JSON has no such numbers).
    pub value: f64,
}

/// Parses the text exposition format (comments and `# EOF` skipped). An
/// unparsable line is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|e| anyhow!("metrics line {}: {e}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| anyhow!("no value"))?;
    let name = &line[..name_end];
    if name.is_empty() {
        bail!("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    // A value, then an optional timestamp.
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("no value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .map_err(|_| anyhow!("value {v:?} is not a number"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `k="v",k2="v\"2"}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(tail) = s.strip_prefix('}') {
            return Ok((labels, tail));
        }
        let (key, after) = s
            .split_once("=\"")
            .ok_or_else(|| anyhow!("label without =\"value\""))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => bail!("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP mesh_peer_up Peer state\n# TYPE mesh_peer_up gauge\n\
            mesh_peer_up{peer=\"h2\",peer_id=\"ab12\"} 1\n\
            mesh_mesh_size 3\n\
            mesh_peer_rtt_seconds{peer=\"h\\\"q\\\\\"} 0.00025 1700000000\n\
            mesh_x{a=\"1\"} +Inf\n# EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "mesh_peer_up");
        assert_eq!(s[0].labels["peer"], "h2");
        assert_eq!(s[0].labels["peer_id"], "ab12");
        assert_eq!(s[0].value, 1.0);
        assert!(s[1].labels.is_empty());
        assert_eq!(s[1].value, 3.0);
        assert_eq!(s[2].labels["peer"], "h\"q\\");
        assert_eq!(s[2].value, 0.00025);
        assert!(s[3].value.is_infinite());
        let v = serde_json::to_value(&s[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "mesh_peer_up", "labels": {"peer": "h2", "peer_id": "ab12"}, "value": 1.0})
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let e = parse("ok 1\nbroken{a=\"x} 1\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse("m{a=\"1\"} notanumber").is_err());
        assert!(parse("lonely").is_err());
    }
}
