//! One simulation run's numbers, as a table row.

use std::fmt;

use super::Topology;

#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => Spread::default(),
            n => Spread {
                median: v[n / 2],
                max: v[n - 1],
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimReport {
    pub hosts: usize,
    pub topology: Topology,
    pub links: Spread,
    /// Peers with data-plane keys (sessions) per host.
    pub keys: Spread,
    pub last_join_secs: f64,
    /// From the last join until converged (`None`: not within the limit).
    pub converge_secs: Option<f64>,
    pub change_secs: Option<f64>,
    /// Bytes each host sent from the start until converged.
    pub join_kib_per_host: Spread,
    pub join_window_secs: f64,
    pub idle_bytes_per_sec: Spread,
    pub idle_packets_per_sec: Spread,
    pub killed: usize,
    /// Until no live host holds a link to a killed one.
    pub detect_secs: Option<f64>,
    /// From the restarts until converged again with the new incarnations.
    pub back_secs: Option<f64>,
    /// The membership table's encoding (what a full anti-entropy reply carries).
    pub table_bytes: usize,
    pub events: u64,
    pub wall_secs: f64,
}

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.2} s"))
        .unwrap_or_else(|| "not within limit".into())
}

impl SimReport {
    pub const HEADER: &'static str = "| N | topology | links/host | converged after last join | change on all | join traffic/host | idle control/host | 10 % killed: links closed | back after restart | member table |\n|---|---|---|---|---|---|---|---|---|---|";
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = match self.topology {
            Topology::FullMesh => "full mesh",
            Topology::Bounded => "bounded",
        };
        write!(
            f,
            "| {} | {topology} | {:.0} (max {:.0}) | {} | {} | {:.0} KiB median, {:.0} max | {:.0} B/s ({:.0} pkt/s) | {} | {} | {:.1} KiB |",
            self.hosts,
            self.links.median,
            self.links.max,
            secs(self.converge_secs),
            secs(self.change_secs),
            self.join_kib_per_host.median,
            self.join_kib_per_host.max,
            self.idle_bytes_per_sec.median,
            self.idle_packets_per_sec.median,
            secs(self.detect_secs),
            secs(self.back_secs),
            self.table_bytes as f64 / 1024.0,
        )
    }
}
