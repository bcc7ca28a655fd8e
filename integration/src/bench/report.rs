//! The report: medians over the runs, ratios against the best userspace
//! encrypted peer and kernel VXLAN, the table printed at the end, and the raw
//! results as TSV and JSON.

use super::measure::Sample;
use super::{first_line, Options, PEERS};
use anyhow::{Context, Result};
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

/// Everything measured for one mode, or why it failed.
#[derive(Clone, Debug)]
pub(super) struct ModeResult {
    pub mode: String,
    pub ok: bool,
    pub reason: String,
    pub mtu: String,
    pub info: String,
    pub load_start: String,
    pub load_end: String,
    pub samples: Vec<Sample>,
}

/// Medians over a mode's runs, per column.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Medians {
    pub gbps_1: Option<f64>,
    pub gbps_p4: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub dcpu_1: Option<f64>,
    pub dcpu_p4: Option<f64>,
    pub sys_1: Option<f64>,
    pub retrans_1: Option<f64>,
    pub retrans_p4: Option<f64>,
}

impl ModeResult {
    pub(super) fn medians(&self) -> Medians {
        let m = |f: fn(&Sample) -> Option<f64>| median(self.samples.iter().filter_map(f).collect());
        Medians {
            gbps_1: m(|s| s.gbps_1),
            gbps_p4: m(|s| s.gbps_p4),
            rtt_ms: m(|s| s.rtt_ms),
            dcpu_1: m(|s| s.dcpu_1),
            dcpu_p4: m(|s| s.dcpu_p4),
            sys_1: m(|s| s.sys_1),
            retrans_1: m(|s| s.retrans_1),
            retrans_p4: m(|s| s.retrans_p4),
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub(super) fn fmt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn na(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "NA".into())
}

/// The best userspace encrypted peer per column, with its mode name.
struct Best {
    g1: Option<(f64, String)>,
    gp: Option<(f64, String)>,
    cpu: Option<(f64, String)>,
    rtt: Option<(f64, String)>,
}

fn best_peer(results: &[ModeResult]) -> Best {
    let peers: Vec<(&ModeResult, Medians)> = results
        .iter()
        .filter(|r| r.ok && PEERS.contains(&r.mode.as_str()))
        .map(|r| (r, r.medians()))
        .collect();
    let pick = |f: fn(&Medians) -> Option<f64>, max: bool| {
        peers
            .iter()
            .filter_map(|(r, m)| f(m).map(|v| (v, r.mode.clone())))
            .reduce(|a, b| if (b.0 > a.0) == max { b } else { a })
    };
    Best {
        g1: pick(|m| m.gbps_1, true),
        gp: pick(|m| m.gbps_p4, true),
        cpu: pick(|m| m.dcpu_1, false),
        rtt: pick(|m| m.rtt_ms, false),
    }
}

pub(super) fn render_table(
    results: &[ModeResult],
    o: &Options,
    load0: &str,
    load1: &str,
) -> String {
    let best = best_peer(results);
    let vx = results
        .iter()
        .find(|r| r.mode == "vxlan" && r.ok)
        .map(|r| r.medians());
    let mut t = String::new();
    let desc = |b: &Option<(f64, String)>, unit: &str| {
        b.as_ref()
            .map(|(v, m)| format!("{m} {v:.3}{unit}"))
            .unwrap_or_else(|| "n/a".into())
    };
    t += &format!(
        "mesh e2e benchmark: container -> container across 2 hosts (netns lab), iperf3 TCP {} s (1x and -P 4), {} pings at 0.2 s; median of {} run(s)\n",
        o.secs, o.pings, o.runs
    );
    t += &format!(
        "machine: {} x {}, kernel {}; load avg (1/5/15) start {load0}, end {load1}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        first_line("uname", &["-r"])
    );
    t += &format!(
        "best userspace encrypted peer ({}): 1x {}, P4 {}, dCPU {}, RTT {}\n",
        PEERS.join("/"),
        desc(&best.g1, " Gbit/s"),
        desc(&best.gp, " Gbit/s"),
        desc(&best.cpu, " s/GB"),
        desc(&best.rtt, " ms")
    );
    t += "dCPU = utime+stime of the overlay processes we started (both hosts) per GB received; sysCPU = machine-wide busy CPU per GB (includes iperf3, kernel, other load)\n";
    t += "x/peer = value / best peer's value for that column (throughput: higher is better; dCPU: lower is better); x/vxlan = value / kernel VXLAN\n\n";
    let hdr = [
        "mode",
        "status",
        "mtu",
        "1x Gb/s",
        "P4 Gb/s",
        "RTT ms",
        "dCPU 1x",
        "dCPU P4",
        "sysCPU 1x",
        "1x/peer",
        "P4/peer",
        "dCPU/peer",
        "1x/vxlan",
        "P4/vxlan",
        "load",
        "notes",
    ];
    let mut rows: Vec<Vec<String>> = vec![hdr.iter().map(|s| s.to_string()).collect()];
    for r in results {
        let m = r.medians();
        let l1 = r.load_start.split('/').next().unwrap_or("?").to_string();
        if !r.ok {
            let mut row = vec![r.mode.clone(), "FAILED".into(), r.mtu.clone()];
            row.extend(std::iter::repeat_n("-".to_string(), 11));
            row.push(l1);
            row.push(r.reason.clone());
            rows.push(row);
            continue;
        }
        let errs: usize = r.samples.iter().map(|s| s.errors.len()).sum();
        let mut notes = r.info.clone();
        if errs > 0 {
            notes = format!("{errs} failed measurement(s), see JSON; {notes}");
        }
        rows.push(vec![
            r.mode.clone(),
            "ok".into(),
            r.mtu.clone(),
            fmt(m.gbps_1, 2),
            fmt(m.gbps_p4, 2),
            fmt(m.rtt_ms, 3),
            fmt(m.dcpu_1, 2),
            fmt(m.dcpu_p4, 2),
            fmt(m.sys_1, 2),
            ratio(m.gbps_1, best.g1.as_ref().map(|b| b.0)),
            ratio(m.gbps_p4, best.gp.as_ref().map(|b| b.0)),
            ratio(m.dcpu_1, best.cpu.as_ref().map(|b| b.0)),
            ratio(m.gbps_1, vx.and_then(|v| v.gbps_1)),
            ratio(m.gbps_p4, vx.and_then(|v| v.gbps_p4)),
            l1,
            notes,
        ]);
    }
    let ncol = hdr.len();
    let widths: Vec<usize> = (0..ncol - 1)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for c in 0..ncol - 1 {
            if c < 3 {
                line += &format!("{:<w$}  ", row[c], w = widths[c]);
            } else {
                line += &format!("{:>w$}  ", row[c], w = widths[c]);
            }
        }
        line += &row[ncol - 1];
        t += line.trim_end();
        t.push('\n');
        if i == 0 {
            t += &"-".repeat(widths.iter().sum::<usize>() + 2 * (ncol - 1) + 5);
            t.push('\n');
        }
    }
    if let Some(mesh) = results.iter().find(|r| r.mode == "mesh" && r.ok) {
        let m = mesh.medians();
        t += &format!(
            "\nmesh vs best userspace peer: 1x {} ({}), P4 {} ({}), dCPU/GB {} ({}); vs kernel VXLAN: 1x {}, P4 {}\n",
            ratio(m.gbps_1, best.g1.as_ref().map(|b| b.0)),
            best.g1.as_ref().map(|b| b.1.as_str()).unwrap_or("n/a"),
            ratio(m.gbps_p4, best.gp.as_ref().map(|b| b.0)),
            best.gp.as_ref().map(|b| b.1.as_str()).unwrap_or("n/a"),
            ratio(m.dcpu_1, best.cpu.as_ref().map(|b| b.0)),
            best.cpu.as_ref().map(|b| b.1.as_str()).unwrap_or("n/a"),
            ratio(m.gbps_1, vx.and_then(|v| v.gbps_1)),
            ratio(m.gbps_p4, vx.and_then(|v| v.gbps_p4)),
        );
        for (mode, line) in [
            ("mesh-tcp", "mesh over the TCP fallback vs direct UDP"),
            ("mesh-relay", "mesh relayed vs direct"),
        ] {
            if let Some(other) = results.iter().find(|r| r.mode == mode && r.ok) {
                let r = other.medians();
                t += &format!(
                    "{line}: 1x {}, P4 {}, RTT {}\n",
                    ratio(r.gbps_1, m.gbps_1),
                    ratio(r.gbps_p4, m.gbps_p4),
                    ratio(r.rtt_ms, m.rtt_ms),
                );
            }
        }
    }
    t
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

const TSV_HEADER: &str = "time\tmode\tstatus\trun\tmtu\tsecs\tgbps_1\tgbps_p4\trtt_ms\tdaemon_cpu_s_per_GB_1\tdaemon_cpu_s_per_GB_p4\tsys_cpu_s_per_GB_1\tsys_cpu_s_per_GB_p4\tretrans_1\tretrans_p4\tsteal_s_1\tload_start\tload_end\tinfo_or_reason";

pub(super) fn write_results(
    results: &[ModeResult],
    o: &Options,
    started: u64,
    tsv: &Path,
    table: &str,
) -> Result<PathBuf> {
    let mut t = String::from(TSV_HEADER);
    t.push('\n');
    for r in results {
        let status = if r.ok { "ok" } else { "FAILED" };
        let note = if r.ok { &r.info } else { &r.reason };
        let note = note.replace('\t', " ");
        if r.samples.is_empty() {
            t += &format!(
                "{started}\t{}\t{status}\t0\t{}\t{}\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t{}\t{}\t{note}\n",
                r.mode, r.mtu, o.secs, r.load_start, r.load_end
            );
        }
        for (i, s) in r.samples.iter().enumerate() {
            t += &format!(
                "{started}\t{}\t{status}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{note}\n",
                r.mode,
                i + 1,
                r.mtu,
                o.secs,
                na(s.gbps_1),
                na(s.gbps_p4),
                na(s.rtt_ms),
                na(s.dcpu_1),
                na(s.dcpu_p4),
                na(s.sys_1),
                na(s.sys_p4),
                na(s.retrans_1),
                na(s.retrans_p4),
                na(s.steal_s_1),
                r.load_start,
                r.load_end
            );
        }
    }
    if let Some(d) = tsv.parent() {
        if !d.as_os_str().is_empty() {
            fs::create_dir_all(d)?;
        }
    }
    fs::write(tsv, t).with_context(|| format!("writing {}", tsv.display()))?;
    let best = best_peer(results);
    let j = json!({
        "started_unix": started,
        "options": { "modes": o.modes, "secs": o.secs, "runs": o.runs, "pings": o.pings },
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": cpu_model(),
            "kernel": first_line("uname", &["-r"]),
            "iperf3": first_line("iperf3", &["--version"]),
        },
        "best_peer": {
            "gbps_1": best.g1.as_ref().map(|b| json!({"mode": b.1, "value": b.0})),
            "gbps_p4": best.gp.as_ref().map(|b| json!({"mode": b.1, "value": b.0})),
            "daemon_cpu_s_per_GB_1": best.cpu.as_ref().map(|b| json!({"mode": b.1, "value": b.0})),
        },
        "modes": results.iter().map(|r| {
            let m = r.medians();
            json!({
                "mode": r.mode,
                "status": if r.ok { "ok" } else { "FAILED" },
                "reason": r.reason,
                "mtu": r.mtu,
                "info": r.info,
                "load_start": r.load_start,
                "load_end": r.load_end,
                "median": {
                    "gbps_1": m.gbps_1, "gbps_p4": m.gbps_p4, "rtt_ms": m.rtt_ms,
                    "daemon_cpu_s_per_GB_1": m.dcpu_1, "daemon_cpu_s_per_GB_p4": m.dcpu_p4,
                    "sys_cpu_s_per_GB_1": m.sys_1, "retrans_1": m.retrans_1, "retrans_p4": m.retrans_p4,
                },
                "runs": r.samples.iter().map(|s| json!({
                    "gbps_1": s.gbps_1, "gbps_p4": s.gbps_p4, "rtt_ms": s.rtt_ms,
                    "daemon_cpu_s_per_GB_1": s.dcpu_1, "daemon_cpu_s_per_GB_p4": s.dcpu_p4,
                    "sys_cpu_s_per_GB_1": s.sys_1, "sys_cpu_s_per_GB_p4": s.sys_p4,
                    "retrans_1": s.retrans_1, "retrans_p4": s.retrans_p4, "steal_s_1": s.steal_s_1,
                    "errors": s.errors,
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "table": table,
    });
    let jp = tsv.with_extension("json");
    fs::write(&jp, serde_json::to_string_pretty(&j)?)?;
    let title = format!(
        "container to container across two hosts, {} ({} run(s) of {} s)",
        cpu_model(),
        o.runs,
        o.secs
    );
    let svg = tsv.with_extension("svg");
    fs::write(&svg, super::chart::render(results, &title))
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok(jp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(mode: &str, gbps_1: f64, dcpu_1: Option<f64>) -> ModeResult {
        ModeResult {
            mode: mode.into(),
            ok: true,
            reason: String::new(),
            mtu: "1420".into(),
            info: format!("{mode} info"),
            load_start: "0.50/0.40/0.30".into(),
            load_end: "0.60/0.40/0.30".into(),
            samples: vec![Sample {
                gbps_1: Some(gbps_1),
                gbps_p4: Some(gbps_1 * 2.0),
                rtt_ms: Some(0.1),
                dcpu_1,
                ..Sample::default()
            }],
        }
    }

    fn options() -> Options {
        Options {
            modes: vec!["all".into()],
            secs: 2,
            runs: 1,
            pings: 5,
            out: None,
        }
    }

    #[test]
    fn median_ignores_order_and_handles_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn ratios_need_both_values_and_a_positive_base() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50x");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(2.0)), "-");
        assert_eq!(fmt(None, 2), "-");
        assert_eq!(na(Some(1.0)), "1.0000");
        assert_eq!(na(None), "NA");
    }

    #[test]
    fn best_peer_takes_the_fastest_and_the_cheapest_among_peers_only() {
        let results = [
            result("vxlan", 9.0, None),
            result("wggo", 2.0, Some(4.0)),
            result("boringtun", 1.0, Some(3.0)),
            result("mesh", 4.0, Some(2.0)),
        ];
        let best = best_peer(&results);
        assert_eq!(best.g1, Some((2.0, "wggo".into())));
        assert_eq!(best.cpu, Some((3.0, "boringtun".into())));
    }

    #[test]
    fn table_has_ratios_a_failed_row_and_the_mesh_summary() {
        let mut failed = result("tinc", 0.0, None);
        failed.ok = false;
        failed.reason = "tincd not installed".into();
        failed.samples.clear();
        let results = [
            result("vxlan", 8.0, None),
            result("wggo", 2.0, Some(4.0)),
            failed,
            result("mesh", 4.0, Some(2.0)),
        ];
        let table = render_table(&results, &options(), "0.1/0.1/0.1", "0.2/0.1/0.1");
        let row = |mode: &str| {
            table
                .lines()
                .find(|l| {
                    let mut words = l.split_whitespace();
                    words.next() == Some(mode)
                        && matches!(words.next(), Some("ok") | Some("FAILED"))
                })
                .unwrap_or_else(|| panic!("no {mode} row in\n{table}"))
                .to_string()
        };
        let mesh = row("mesh");
        // 1x/peer 4/2, P4/peer 8/4, dCPU/peer 2/4, 1x/vxlan 4/8.
        assert!(mesh.contains("2.00x") && mesh.contains("0.50x"), "{mesh}");
        assert!(row("tinc").contains("FAILED") && row("tinc").contains("tincd not installed"));
        assert!(
            table.contains("mesh vs best userspace peer: 1x 2.00x (wggo)"),
            "{table}"
        );
    }

    #[test]
    fn results_are_written_as_tsv_and_json() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-test-{}", std::process::id()));
        let tsv = dir.join("out.tsv");
        let results = [result("mesh", 4.0, Some(2.0))];
        let json_path = write_results(&results, &options(), 1, &tsv, "table").unwrap();
        let text = fs::read_to_string(&tsv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], TSV_HEADER);
        assert!(
            lines[1].starts_with("1\tmesh\tok\t1\t1420\t2\t4.0000\t8.0000"),
            "{}",
            lines[1]
        );
        let j: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(j["modes"][0]["median"]["gbps_1"], 4.0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
