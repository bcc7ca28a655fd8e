//! Measurement: iperf3 throughput, ping RTT, and the CPU time spent per GB
//! moved (utime+stime of the overlay processes from `/proc/<pid>/stat`,
//! machine-wide busy time from `/proc/stat`), sampled around each run.

use super::modes::Setup;
use super::{pause, Options};
use crate::Lab;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::fs;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Where every mode's iperf3 server listens (inside the server container).
pub(super) const IPERF_PORT: &str = "5201";

/// One repetition of a mode: RTT, then iperf3 with one stream and with four.
#[derive(Clone, Debug, Default)]
pub(super) struct Sample {
    pub rtt_ms: Option<f64>,
    pub gbps_1: Option<f64>,
    pub gbps_p4: Option<f64>,
    pub dcpu_1: Option<f64>,
    pub dcpu_p4: Option<f64>,
    pub sys_1: Option<f64>,
    pub sys_p4: Option<f64>,
    pub retrans_1: Option<f64>,
    pub retrans_p4: Option<f64>,
    pub steal_s_1: Option<f64>,
    pub errors: Vec<String>,
}

/// Measures one repetition; a failed measurement is recorded in
/// `errors` and the others still run. Errs only on Ctrl-C.
pub(super) fn one_run(lab: &Lab, s: &Setup, o: &Options, stop: &AtomicBool) -> Result<Sample> {
    let mut sm = Sample::default();
    match run_ping(lab, s, o.pings) {
        Ok(v) => sm.rtt_ms = Some(v),
        Err(e) => sm.errors.push(format!("{e:#}")),
    }
    pause(stop, Duration::ZERO)?;
    match run_iperf(lab, s, o.secs, 1) {
        Ok(v) => {
            sm.gbps_1 = Some(v.gbps);
            sm.retrans_1 = v.retrans;
            sm.dcpu_1 = v.dcpu;
            sm.sys_1 = Some(v.sys);
            sm.steal_s_1 = Some(v.steal_s);
        }
        Err(e) => sm.errors.push(format!("{e:#}")),
    }
    pause(stop, Duration::from_secs(1))?;
    match run_iperf(lab, s, o.secs, 4) {
        Ok(v) => {
            sm.gbps_p4 = Some(v.gbps);
            sm.retrans_p4 = v.retrans;
            sm.dcpu_p4 = v.dcpu;
            sm.sys_p4 = Some(v.sys);
        }
        Err(e) => sm.errors.push(format!("{e:#}")),
    }
    let dead: Vec<u32> = s
        .daemons
        .iter()
        .copied()
        .filter(|p| !daemon_alive(*p))
        .collect();
    if !dead.is_empty() {
        sm.errors.push(format!("overlay process(es) {dead:?} died"));
    }
    Ok(sm)
}

pub(super) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|_| "?".into())
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime (ticks) of one process, all its threads included.
fn proc_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime = field 14, stime = field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn daemon_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| proc_ticks(*p)).sum()
}

/// Machine-wide (busy, steal) ticks from /proc/stat.
fn sys_ticks() -> (u64, u64) {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (g(0) + g(1) + g(2) + g(5) + g(6), g(7))
}

/// True while `pid` exists and is not a zombie.
fn daemon_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .map(|zombie| !zombie)
        .unwrap_or(false)
}

struct IperfResult {
    gbps: f64,
    retrans: Option<f64>,
    dcpu: Option<f64>,
    sys: f64,
    steal_s: f64,
}

/// The part of `iperf3 -J` we read. On failure iperf3 still prints JSON,
/// with `error` set and `end` empty.
#[derive(Debug, Default, Deserialize)]
struct IperfReport {
    error: Option<String>,
    #[serde(default)]
    end: IperfEnd,
}

#[derive(Debug, Default, Deserialize)]
struct IperfEnd {
    sum_received: Option<IperfSum>,
    sum_sent: Option<IperfSum>,
}

#[derive(Debug, Default, Deserialize)]
struct IperfSum {
    bits_per_second: Option<f64>,
    bytes: Option<f64>,
    retransmits: Option<f64>,
}

impl IperfReport {
    /// Receiver bits per second, bytes received and sender retransmits.
    fn totals(&self, streams: u32) -> Result<(f64, f64, Option<f64>)> {
        if let Some(e) = &self.error {
            bail!("iperf3 -P {streams}: {e}");
        }
        let received = self
            .end
            .sum_received
            .as_ref()
            .context("iperf3: no sum_received")?;
        let bps = received
            .bits_per_second
            .context("iperf3: no sum_received")?;
        let bytes = received.bytes.context("iperf3: no bytes")?;
        if bytes <= 0.0 {
            bail!("iperf3 -P {streams}: no bytes received");
        }
        let retrans = self.end.sum_sent.as_ref().and_then(|s| s.retransmits);
        Ok((bps, bytes, retrans))
    }
}

fn run_iperf(lab: &Lab, s: &Setup, secs: u32, streams: u32) -> Result<IperfResult> {
    let hz = clk_tck();
    let d0 = daemon_ticks(&s.daemons);
    let (b0, st0) = sys_ticks();
    let out = lab
        .exec(
            &s.client_ns,
            &[
                "timeout",
                &(secs + 30).to_string(),
                "iperf3",
                "-c",
                &s.server_ip,
                "-p",
                IPERF_PORT,
                "-t",
                &secs.to_string(),
                "-P",
                &streams.to_string(),
                "-J",
                "--connect-timeout",
                "5000",
            ],
        )
        .stdin(Stdio::null())
        .output()
        .context("running iperf3")?;
    let d1 = daemon_ticks(&s.daemons);
    let (b1, st1) = sys_ticks();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: IperfReport = serde_json::from_str(&text).map_err(|_| {
        anyhow!(
            "iperf3 -P {streams} printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let (bps, bytes, retrans) = report.totals(streams)?;
    let gb = bytes / 1e9;
    Ok(IperfResult {
        gbps: bps / 1e9,
        retrans,
        dcpu: (!s.daemons.is_empty()).then(|| (d1.saturating_sub(d0)) as f64 / hz / gb),
        sys: b1.saturating_sub(b0) as f64 / hz / gb,
        steal_s: st1.saturating_sub(st0) as f64 / hz,
    })
}

/// Warm-up run (not recorded): ARP, handshakes, PMTU, TCP caches.
pub(super) fn warm_up(lab: &Lab, s: &Setup) {
    let _ = run_iperf(lab, s, 2, 1);
}

fn run_ping(lab: &Lab, s: &Setup, pings: u32) -> Result<f64> {
    let out = lab
        .exec(
            &s.client_ns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &pings.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                &s.server_ip,
            ],
        )
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ping_average_ms(&text)
        .ok_or_else(|| anyhow!("ping failed: {}", text.lines().last().unwrap_or("").trim()))
}

/// The average of ping's summary line,
/// `rtt min/avg/max/mdev = 0.031/0.045/0.070/0.010 ms`.
fn ping_average_ms(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|a| a.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn reads_cpu_ticks_of_a_live_process() {
        let me = std::process::id();
        // Burn a little CPU so the counter is not trivially zero.
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(proc_ticks(me).is_some());
        assert!(daemon_alive(me));
        assert_eq!(proc_ticks(u32::MAX), None);
    }

    #[test]
    fn iperf_report_totals_and_errors() {
        let ok: IperfReport = serde_json::from_str(
            r#"{"start": {}, "end": {
                "sum_sent": {"bits_per_second": 2.1e9, "bytes": 2625000000, "retransmits": 12},
                "sum_received": {"bits_per_second": 2.0e9, "bytes": 2500000000}}}"#,
        )
        .unwrap();
        assert_eq!(ok.totals(1).unwrap(), (2.0e9, 2.5e9, Some(12.0)));

        let failed: IperfReport = serde_json::from_str(
            r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server"}"#,
        )
        .unwrap();
        let e = failed.totals(4).unwrap_err().to_string();
        assert!(e.contains("-P 4") && e.contains("unable to connect"), "{e}");

        let empty: IperfReport = serde_json::from_str(
            r#"{"end": {"sum_received": {"bits_per_second": 0, "bytes": 0}}}"#,
        )
        .unwrap();
        assert!(empty.totals(1).is_err());
    }

    #[test]
    fn ping_summary_average() {
        let text = "PING 198.19.9.2 (198.19.9.2) 56(84) bytes of data.\n\n--- 198.19.9.2 ping statistics ---\n20 packets transmitted, 20 received, 0% packet loss, time 3805ms\nrtt min/avg/max/mdev = 0.031/0.045/0.070/0.010 ms\n";
        assert_eq!(ping_average_ms(text), Some(0.045));
        assert_eq!(
            ping_average_ms("3 packets transmitted, 0 received, 100% packet loss"),
            None
        );
    }
}
