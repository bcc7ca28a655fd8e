//! The scale lab's numbers: one JSON document and one table against the
//! issue's targets.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Median and extremes of one quantity over the daemons.
#[derive(Clone, Copy, Debug, Default, Serialize)]
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

#[derive(Clone, Debug, Default, Serialize)]
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
    /// UDP bytes sent from the control port (QUIC), IP headers included.
    pub idle_control_bytes_per_sec: Distribution,
    /// UDP bytes sent from the data-plane port (keepalives, no traffic).
    pub idle_data_bytes_per_sec: Distribution,
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

    /// The table README and the closing note carry; targets are the
    /// issue's for N = 50.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let d = |x: &Distribution, unit: &str, digits: usize| {
            format!(
                "{:.*} {unit} median, {:.*} max",
                digits, x.median, digits, x.max
            )
        };
        let cpu_pct = |secs_per_min: f64| secs_per_min / 60.0 * 100.0;
        let rows: Vec<(String, String, String)> = vec![
            (
                "membership converged after the last join".into(),
                format!("{:.2} s", self.convergence_secs),
                format!("< 5 s: {}", verdict(self.convergence_secs < 5.0)),
            ),
            (
                format!("{} joins through one seed took", self.hosts - 1),
                format!("{:.2} s", self.joins_secs),
                String::new(),
            ),
            (
                "new network visible on every host".into(),
                format!("{:.2} s", self.network_visible_secs),
                format!("< 2 s: {}", verdict(self.network_visible_secs < 2.0)),
            ),
            (
                "attach (DNS record) visible on every host".into(),
                format!("{:.2} s", self.attach_visible_secs),
                format!("< 2 s: {}", verdict(self.attach_visible_secs < 2.0)),
            ),
            (
                "container pings answered".into(),
                format!("{} / {}", self.pings_ok, self.pings_total),
                verdict(self.pings_ok == self.pings_total).into(),
            ),
            (
                "RSS per daemon".into(),
                d(&self.rss_mib, "MiB", 1),
                format!("< 30 MiB: {}", verdict(self.rss_mib.max < 30.0)),
            ),
            (
                "open fds per daemon".into(),
                d(&self.fds, "", 0),
                String::new(),
            ),
            (
                "threads per daemon".into(),
                d(&self.threads, "", 0),
                String::new(),
            ),
            (
                "idle CPU per daemon".into(),
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
            (
                "idle control traffic sent per host".into(),
                d(&self.idle_control_bytes_per_sec, "B/s", 0),
                format!(
                    "< 2 KB/s: {}",
                    verdict(self.idle_control_bytes_per_sec.median < 2000.0)
                ),
            ),
            (
                "idle data-plane traffic sent per host".into(),
                d(&self.idle_data_bytes_per_sec, "B/s", 0),
                String::new(),
            ),
            (
                format!(
                    "{} SIGKILLed hosts marked down by all others",
                    self.killed.len()
                ),
                format!("{:.2} s", self.marked_down_secs),
                String::new(),
            ),
            (
                "restarted hosts back up everywhere".into(),
                format!("{:.2} s", self.back_up_secs),
                String::new(),
            ),
        ];
        let _ = writeln!(t, "| N = {} | measured | target |", self.hosts);
        let _ = writeln!(t, "|---|---|---|");
        for (what, value, target) in rows {
            let _ = writeln!(t, "| {what} | {value} | {target} |");
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
}
