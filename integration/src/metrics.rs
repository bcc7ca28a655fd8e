//! Reading a lab host's Prometheus metrics (`meshctl metrics`).

use crate::Lab;

impl Lab {
    /// Frames host `i` dropped at the port of `container` (its address),
    /// for `reason` or for any reason (`mesh_port_dropped_frames_total`).
    pub fn port_drops(&self, i: usize, container: &str, reason: Option<&str>) -> u64 {
        let Ok(metrics) = self.meshctl(i, &["metrics"]) else {
            return 0;
        };
        metrics
            .lines()
            .filter(|l| l.starts_with("mesh_port_dropped_frames_total{"))
            .filter(|l| l.contains(&format!("container=\"{container}\"")))
            .filter(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}
