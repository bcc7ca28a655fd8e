//! The scale lab's numbers: one JSON document, one table against the
//! issue's targets, and two reports side by side (before/after).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Median and extremes of one quantity over the daemons.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Distribution {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Distribution {
    pub fn of(values: &[f64]) -> Distribution {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Distribution::default();
        }
        v.sort_by(f64::total_cmp);
        Distribution {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        }
    }
}

/// What one host sent during the idle window, per second.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostIdle {
    pub host: String,
    pub control_datagrams_per_sec: f64,
    pub data_datagrams_per_sec: f64,
    #[serde(default)]
    pub probe_datagrams_per_sec: f64,
    pub relay_datagrams_per_sec: f64,
    /// Member records the host flooded on as news during the window (none
    /// in reports saved before they were counted).
    #[serde(default)]
    pub member_updates: Option<u64>,
}

/// Fields added after reports were first saved carry `#[serde(default)]`,
/// so an older JSON still loads (and shows zeros there).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub hosts: usize,
    /// Load average (1, 5, 15 min) at the start, during the idle window, at the end.
    pub load_start: [f64; 3],
    pub load_idle: [f64; 3],
    pub load_after: [f64; 3],
    pub setup_secs: f64,
    /// From the first join request to the last one returning.
    pub joins_secs: f64,
    /// From the last join until every host lists every other up with keys.
    pub convergence_secs: f64,
    pub network_visible_secs: f64,
    pub attach_visible_secs: f64,
    pub pings_ok: usize,
    pub pings_total: usize,
    pub ping_failures: Vec<String>,
    pub rss_mib: Distribution,
    pub fds: Distribution,
    pub threads: Distribution,
    pub idle_cpu_secs_per_min: Distribution,
    /// Mean over the daemons, per thread kind (`comm` without digits).
    pub idle_cpu_by_thread: BTreeMap<String, f64>,
    /// Voluntary context switches per second of each daemon (all threads):
    /// its wake-ups, which idle CPU follows on a loaded machine. Zero in
    /// reports saved before they were counted.
    #[serde(default)]
    pub idle_wakeups_per_sec: Distribution,
    /// UDP bytes sent from the control port (QUIC), IP headers included.
    pub idle_control_bytes_per_sec: Distribution,
    /// UDP bytes sent from any other port: the data plane's probes (no
    /// traffic). Reports saved before datagrams were counted hold only the
    /// data-plane port's (7801) bytes here.
    pub idle_data_bytes_per_sec: Distribution,
    /// Datagrams sent from the control port.
    #[serde(default)]
    pub idle_control_datagrams_per_sec: Distribution,
    /// UDP datagrams sent from any other port (the data plane).
    #[serde(default)]
    pub idle_data_datagrams_per_sec: Distribution,
    /// The subset of those that are path probes sent directly (type 2).
    #[serde(default)]
    pub idle_probe_datagrams_per_sec: Distribution,
    /// The subset of those that are relay envelopes (types 3 and 4).
    #[serde(default)]
    pub idle_relay_datagrams_per_sec: Distribution,
    /// Peers whose data path each host probed at the end of the window.
    #[serde(default)]
    pub active_paths: Distribution,
    /// The three datagram rates of every host.
    #[serde(default)]
    pub idle_by_host: Vec<HostIdle>,
    /// The budgets (`scale::budget`) the run was held to; 0 = not recorded.
    #[serde(default)]
    pub budget_control_datagrams_per_sec: f64,
    #[serde(default)]
    pub budget_data_datagrams_per_sec: f64,
    pub killed: Vec<String>,
    pub marked_down_secs: f64,
    /// From the first restart until every host lists every other up again.
    pub back_up_secs: f64,
}

pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, v) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = v.parse().unwrap_or(0.0);
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

impl Report {
    pub fn new(hosts: usize) -> Report {
        Report {
            hosts,
            load_start: loadavg(),
            ..Report::default()
        }
    }

    /// Reads a report saved with `mesh-lab scale --out`.
    pub fn load(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the scale report {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a scale report (one written by mesh-lab scale --out)",
                path.display()
            )
        })
    }

    /// One row per measured quantity. Labels do not depend on N, so two
    /// reports' rows line up in [`side_by_side`].
    fn rows(&self) -> Vec<Row> {
        let d = |x: &Distribution, unit: &str, digits: usize| {
            format!(
                "{:.*} {unit} median, {:.*} max",
                digits, x.median, digits, x.max
            )
        };
        // Reports saved before datagrams were counted have no per-host
        // rates: their zeros are not measurements.
        let datagrams = |x: &Distribution, unit: &str, digits: usize| {
            if self.idle_by_host.is_empty() {
                "not counted (older report)".to_string()
            } else {
                d(x, unit, digits)
            }
        };
        let cpu_pct = |secs_per_min: f64| secs_per_min / 60.0 * 100.0;
        // Budgets are only known for reports that recorded them.
        let budget = |limit: f64, max: f64| {
            if limit > 0.0 {
                format!("≤ {limit:.2}/s (CI budget): {}", verdict(max <= limit))
            } else {
                String::new()
            }
        };
        let relay_target = if self.budget_data_datagrams_per_sec > 0.0 {
            format!(
                "0 (direct paths work): {}",
                verdict(self.idle_relay_datagrams_per_sec.max == 0.0)
            )
        } else {
            String::new()
        };
        let flooded: Vec<f64> = self
            .idle_by_host
            .iter()
            .filter_map(|h| h.member_updates)
            .map(|n| n as f64)
            .collect();
        let (flooded_value, flooded_target) = if flooded.is_empty() {
            (
                "not counted (an older meshd or report)".to_string(),
                String::new(),
            )
        } else {
            let x = Distribution::of(&flooded);
            (d(&x, "", 0), format!("0: {}", verdict(x.max == 0.0)))
        };
        vec![
            Row::new(
                "membership converged after the last join",
                format!("{:.2} s", self.convergence_secs),
                format!("< 5 s: {}", verdict(self.convergence_secs < 5.0)),
            ),
            Row::new(
                "joins through one seed took",
                format!(
                    "{:.2} s ({} joins)",
                    self.joins_secs,
                    self.hosts.saturating_sub(1)
                ),
                String::new(),
            ),
            Row::new(
                "new network visible on every host",
                format!("{:.2} s", self.network_visible_secs),
                format!("< 2 s: {}", verdict(self.network_visible_secs < 2.0)),
            ),
            Row::new(
                "attach (DNS record) visible on every host",
                format!("{:.2} s", self.attach_visible_secs),
                format!("< 2 s: {}", verdict(self.attach_visible_secs < 2.0)),
            ),
            Row::new(
                "container pings answered",
                format!("{} / {}", self.pings_ok, self.pings_total),
                verdict(self.pings_ok == self.pings_total).into(),
            ),
            Row::new(
                "RSS per daemon",
                d(&self.rss_mib, "MiB", 1),
                format!("< 30 MiB: {}", verdict(self.rss_mib.max < 30.0)),
            ),
            Row::new("open fds per daemon", d(&self.fds, "", 0), String::new()),
            Row::new("threads per daemon", d(&self.threads, "", 0), String::new()),
            Row::new(
                "idle CPU per daemon",
                format!(
                    "{:.2} % median, {:.2} % max of a core ({:.2} s/min median)",
                    cpu_pct(self.idle_cpu_secs_per_min.median),
                    cpu_pct(self.idle_cpu_secs_per_min.max),
                    self.idle_cpu_secs_per_min.median
                ),
                format!(
                    "< 1 %: {}",
                    verdict(cpu_pct(self.idle_cpu_secs_per_min.median) < 1.0)
                ),
            ),
            Row::new(
                "idle wake-ups per daemon",
                if self.idle_wakeups_per_sec.max > 0.0 {
                    d(&self.idle_wakeups_per_sec, "per s", 0)
                } else {
                    "not counted (older report)".to_string()
                },
                String::new(),
            ),
            Row::new(
                "idle control traffic sent per host",
                d(&self.idle_control_bytes_per_sec, "B/s", 0),
                format!(
                    "< 2 KB/s: {}",
                    verdict(self.idle_control_bytes_per_sec.median < 2000.0)
                ),
            ),
            Row::new(
                "idle data-plane traffic sent per host",
                d(&self.idle_data_bytes_per_sec, "B/s", 0),
                String::new(),
            ),
            Row::new(
                "idle control datagrams sent per host",
                datagrams(&self.idle_control_datagrams_per_sec, "datagrams/s", 1),
                budget(
                    self.budget_control_datagrams_per_sec,
                    self.idle_control_datagrams_per_sec.max,
                ),
            ),
            Row::new(
                "idle data-plane datagrams sent per host",
                datagrams(&self.idle_data_datagrams_per_sec, "datagrams/s", 1),
                String::new(),
            ),
            Row::new(
                "of which path probes (direct)",
                datagrams(&self.idle_probe_datagrams_per_sec, "datagrams/s", 1),
                budget(
                    self.budget_data_datagrams_per_sec,
                    self.idle_probe_datagrams_per_sec.max,
                ),
            ),
            Row::new(
                "active (probed) data paths per host",
                datagrams(&self.active_paths, "", 0),
                String::new(),
            ),
            Row::new(
                "idle relay datagrams sent per host",
                datagrams(&self.idle_relay_datagrams_per_sec, "datagrams/s", 1),
                relay_target,
            ),
            Row::new(
                "member records flooded while idle, per host",
                flooded_value,
                flooded_target,
            ),
            Row::new(
                "SIGKILLed hosts marked down by all others",
                format!(
                    "{:.2} s ({} killed)",
                    self.marked_down_secs,
                    self.killed.len()
                ),
                String::new(),
            ),
            Row::new(
                "restarted hosts back up everywhere",
                format!("{:.2} s", self.back_up_secs),
                String::new(),
            ),
        ]
    }

    /// The table docs/scale-lab.md and the closing note carry; targets are the
    /// issue's for N = 50.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| N = {} | measured | target |", self.hosts);
        let _ = writeln!(t, "|---|---|---|");
        for row in self.rows() {
            let _ = writeln!(t, "| {} | {} | {} |", row.what, row.value, row.target);
        }
        let _ = writeln!(
            t,
            "\nload average (1/5/15 min): start {:?}, idle window {:?}, end {:?}",
            self.load_start, self.load_idle, self.load_after
        );
        let mut threads: Vec<_> = self.idle_cpu_by_thread.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let shares: Vec<String> = threads
            .iter()
            .filter(|(_, s)| **s > 0.0)
            .map(|(k, s)| format!("{k} {:.3}", s))
            .collect();
        let _ = writeln!(
            t,
            "idle CPU s/min per daemon by thread: {}",
            if shares.is_empty() {
                "none measurable".to_string()
            } else {
                shares.join(", ")
            }
        );
        if !self.ping_failures.is_empty() {
            let _ = writeln!(t, "unanswered pings: {}", self.ping_failures.join(", "));
        }
        t
    }
}

/// One line of the table.
struct Row {
    what: String,
    value: String,
    target: String,
}

impl Row {
    fn new(what: &str, value: String, target: String) -> Row {
        Row {
            what: what.to_string(),
            value,
            target,
        }
    }
}

/// A saved report's label in a comparison: its file name.
pub fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Two reports in one table, one value column each (`a` on the left), with
/// the rows of [`Report::table`].
pub fn side_by_side(a_label: &str, a: &Report, b_label: &str, b: &Report) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| quantity | {a_label} (N = {}) | {b_label} (N = {}) |",
        a.hosts, b.hosts
    );
    let _ = writeln!(t, "|---|---|---|");
    for (ra, rb) in a.rows().into_iter().zip(b.rows()) {
        let _ = writeln!(t, "| {} | {} | {} |", ra.what, ra.value, rb.value);
    }
    let _ = writeln!(
        t,
        "\nload average in the idle window (1/5/15 min): {a_label} {:?}, {b_label} {:?}",
        a.load_idle, b.load_idle
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_takes_median_and_extremes() {
        let d = Distribution::of(&[3.0, 1.0, f64::NAN, 2.0]);
        assert_eq!((d.min, d.median, d.max), (1.0, 2.0, 3.0));
        assert_eq!(Distribution::of(&[]).max, 0.0);
    }

    #[test]
    fn table_flags_missed_targets() {
        let mut r = Report::new(50);
        r.convergence_secs = 7.0;
        r.pings_ok = 150;
        r.pings_total = 150;
        let t = r.table();
        assert!(t.contains("< 5 s: MISSED"), "{t}");
        assert!(t.contains("150 / 150 | met"), "{t}");
    }

    #[test]
    fn table_holds_datagrams_to_the_recorded_budgets() {
        let mut r = Report::new(12);
        r.idle_by_host.push(HostIdle::default());
        r.budget_data_datagrams_per_sec = 13.0;
        r.budget_control_datagrams_per_sec = 10.25;
        r.idle_data_datagrams_per_sec = Distribution::of(&[95.0, 130.0]);
        r.idle_probe_datagrams_per_sec = Distribution::of(&[90.0, 121.5]);
        r.idle_control_datagrams_per_sec = Distribution::of(&[6.0]);
        r.idle_relay_datagrams_per_sec = Distribution::of(&[0.0, 60.0]);
        let t = r.table();
        assert!(
            t.contains("121.5 max | ≤ 13.00/s (CI budget): MISSED"),
            "{t}"
        );
        assert!(t.contains("6.0 max | ≤ 10.25/s (CI budget): met"), "{t}");
        assert!(t.contains("0 (direct paths work): MISSED"), "{t}");
    }

    #[test]
    fn side_by_side_lines_up_two_reports() {
        let mut before = Report::new(50);
        before.convergence_secs = 1.27;
        before.idle_by_host.push(HostIdle::default());
        before.idle_data_datagrams_per_sec = Distribution::of(&[2450.0]);
        before.killed = vec!["h6".into(); 5];
        let mut after = Report::new(12);
        after.idle_by_host.push(HostIdle::default());
        after.convergence_secs = 1.1;
        after.idle_data_datagrams_per_sec = Distribution::of(&[7.5]);
        let t = side_by_side("before.json", &before, "this run", &after);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| quantity | before.json (N = 50) | this run (N = 12) |"
        );
        assert_eq!(lines.len(), 2 + before.rows().len() + 2, "{t}");
        assert!(
            t.contains("| membership converged after the last join | 1.27 s | 1.10 s |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| idle data-plane datagrams sent per host \
                 | 2450.0 datagrams/s median, 2450.0 max \
                 | 7.5 datagrams/s median, 7.5 max |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| 0.00 s (5 killed) | 0.00 s (0 killed) |"),
            "{t}"
        );
    }

    #[test]
    fn reports_saved_before_datagrams_were_counted_still_load() {
        let mut json = serde_json::to_value(Report::new(50)).unwrap();
        let map = json.as_object_mut().unwrap();
        for new in [
            "idle_control_datagrams_per_sec",
            "idle_data_datagrams_per_sec",
            "idle_relay_datagrams_per_sec",
            "idle_by_host",
            "budget_control_datagrams_per_sec",
            "budget_data_datagrams_per_sec",
        ] {
            assert!(map.remove(new).is_some(), "{new}");
        }
        let dir = std::env::temp_dir().join(format!("mesh-scale-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = dir.join("old.json");
        std::fs::write(&old, json.to_string()).unwrap();
        let r = Report::load(&old).unwrap();
        assert_eq!((r.hosts, r.idle_data_datagrams_per_sec.max), (50, 0.0));
        assert!(r
            .table()
            .contains("| idle relay datagrams sent per host | not counted"));
        assert_eq!(file_label(&old), "old.json");

        let missing = dir.join("missing.json");
        let e = format!("{:#}", Report::load(&missing).unwrap_err());
        assert!(e.contains("missing.json"), "{e}");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"hosts\": \"many\"}").unwrap();
        let e = format!("{:#}", Report::load(&bad).unwrap_err());
        assert!(e.contains("bad.json is not a scale report"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
