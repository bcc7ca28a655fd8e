//! `meshctl doctor`: every check in a table, then one line per problem
//! ("what is wrong — what to do"); the exit status says whether any.

use anyhow::{bail, Result};
use mesh_api::{Check, Client, DoctorReport};

use crate::print;

pub async fn run(c: &Client, args: meshctl::args::DoctorArgs) -> Result<()> {
    let r = c.doctor(args.host.as_deref()).await?;
    if args.json {
        print::json(&r)?;
    } else {
        print!("{}", render(&r));
    }
    let n = r.problems().len();
    if n > 0 {
        bail!("{n} problem(s) found");
    }
    Ok(())
}

fn row(c: &Check) -> String {
    format!("  {:<7} {:<13} {}\n", c.status, c.name, c.detail)
}

/// The report as text.
pub fn render(r: &DoctorReport) -> String {
    let mut out = format!("host {} (meshd {})\n", r.host, r.version);
    out.extend(r.checks.iter().map(row));
    for p in &r.peers {
        out.push_str(&format!("peer {}\n", p.name));
        out.extend(p.checks.iter().map(row));
    }
    let problems = r.problems();
    if problems.is_empty() {
        out.push_str("no problems found\n");
    } else {
        out.push_str(&format!("\n{} problem(s):\n", problems.len()));
        for (peer, c) in problems {
            let who = peer.unwrap_or(&r.host);
            let fix = c.fix.as_deref().unwrap_or("see the meshd log");
            out.push_str(&format!("{who}: {}: {} — {fix}\n", c.name, c.detail));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::PeerDiagnosis;

    #[test]
    fn each_problem_is_one_line_with_what_to_do() {
        let r = DoctorReport {
            host: "h1".into(),
            version: "0.1.0".into(),
            checks: vec![Check::ok("tun", "/dev/net/tun opens a TAP")],
            peers: vec![PeerDiagnosis {
                name: "h2".into(),
                id: "b".into(),
                checks: vec![Check::warn(
                    "data_path",
                    "relayed via h3",
                    "let UDP to its data port through",
                )],
            }],
        };
        let text = render(&r);
        assert!(text.contains("  ok      tun"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "h2: data_path: relayed via h3 — let UDP to its data port through"),
            "{text}"
        );
        assert!(text.contains("1 problem(s):"), "{text}");
    }
}
