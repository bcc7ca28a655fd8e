//! End-to-end overlay benchmark (`mesh-lab bench`).
//!
//! Every mode builds a fresh two-host [`Lab`] (three for `mesh-relay`) (underlay namespace with a
//! bridge, hosts `<p>-h1`/`<p>-h2` at 198.18.0.1/.2), puts one container
//! namespace behind each host and measures container → container:
//!
//! * iperf3 TCP, one stream and `-P 4`, `secs` seconds each (receiver Gbit/s);
//! * ping RTT (`pings` probes at 0.2 s, idle link);
//! * CPU seconds per GB moved used by the overlay processes this benchmark
//!   started (utime+stime from `/proc/<pid>/stat` of both hosts' daemons,
//!   before/after each iperf3 run), plus machine-wide busy CPU per GB.
//!
//! Modes (same topology, only the host-to-host part differs):
//!
//! | mode      | host ↔ host                          | container ↔ host        |
//! |-----------|--------------------------------------|-------------------------|
//! | underlay  | plain routing over the underlay      | routed veth             |
//! | vxlan     | kernel VXLAN, no encryption (L2)     | veth on a host bridge   |
//! | tinc      | tinc 1.0 switch mode (L2, userspace) | veth on a host bridge   |
//! | wggo      | wireguard-go (L3, userspace)         | routed veth             |
//! | boringtun | boringtun-cli (L3, userspace)        | routed veth             |
//! | gotatun   | gotatun-cli (Mullvad's boringtun successor, L3) | routed veth  |
//! | mesh      | meshd (L2), AES-256-GCM if both CPUs | `meshctl attach`        |
//! | mesh-chacha | meshd forced to ChaCha20-Poly1305  | `meshctl attach`        |
//! | mesh-relay | meshd, h1↔h2 data port blocked: through h3's relay | `meshctl attach` |
//! | mesh-tcp | meshd, all UDP h1↔h2 dropped: over the TCP fallback | `meshctl attach` |
//!
//! Addresses: only 198.18.0.0/24 (underlay, built by the lab) and
//! 198.19.0.0/16 (overlays and container links). Every namespace carries the
//! lab's unique prefix; links are created inside those namespaces only. The
//! userspace WireGuard sockets (`/var/run/wireguard/<if>.sock`, a global
//! path) are named after the unique prefix and removed after the mode.
//! Processes are ended by the PID we started them with (the lab's `Drop`).
//!
//! A mode that fails to come up yields a FAILED row with the reason; the run
//! goes on with the next mode.
//!
//! Code: [`modes`] builds each mode on a [`Lab`], [`measure`] runs iperf3
//! and ping and reads CPU time, [`report`] computes medians and ratios and
//! writes the table, TSV and JSON, [`chart`] the SVG bar chart beside them;
//! this module runs the modes in turn.

mod chart;
mod measure;
mod modes;
mod report;

use crate::{find_bin_dir, unique_prefix, which, Lab};
use anyhow::{anyhow, bail, Context, Result};
use report::{fmt, ModeResult};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ALL_MODES: &[&str] = &[
    "underlay",
    "vxlan",
    "tinc",
    "wggo",
    "boringtun",
    "gotatun",
    "mesh",
    "mesh-chacha",
    "mesh-relay",
    "mesh-tcp",
];
/// The userspace encrypted peers the mesh is compared against.
pub const PEERS: &[&str] = &["tinc", "wggo", "boringtun", "gotatun"];

#[derive(Clone, Debug)]
pub struct Options {
    pub modes: Vec<String>,
    pub secs: u32,
    pub runs: u32,
    pub pings: u32,
    /// TSV of raw results; the JSON goes next to it (`.json`).
    pub out: Option<PathBuf>,
}

/// Canonical mode name (accepts a few aliases).
pub fn canonical_mode(m: &str) -> Option<&'static str> {
    Some(match m.trim().to_ascii_lowercase().as_str() {
        "underlay" | "veth" | "plain" => "underlay",
        "vxlan" => "vxlan",
        "tinc" => "tinc",
        "wggo" | "wireguard-go" | "wg-go" => "wggo",
        "boringtun" | "bt" => "boringtun",
        "gotatun" => "gotatun",
        "mesh-relay" | "relay" => "mesh-relay",
        "mesh-tcp" | "tcp" => "mesh-tcp",
        "mesh" | "meshd" => "mesh",
        "mesh-chacha" | "mesh-chacha20" => "mesh-chacha",
        _ => return None,
    })
}

/// The requested modes, canonical, each once, in the order given.
fn requested_modes(o: &Options) -> Result<Vec<&'static str>> {
    let mut modes: Vec<&'static str> = Vec::new();
    for m in &o.modes {
        if m == "all" {
            modes.extend(ALL_MODES);
            continue;
        }
        let c = canonical_mode(m)
            .ok_or_else(|| anyhow!("unknown mode {m:?} (modes: {})", ALL_MODES.join(",")))?;
        if !modes.contains(&c) {
            modes.push(c);
        }
    }
    if modes.is_empty() {
        bail!("no modes given");
    }
    Ok(modes)
}

/// A progress line on stderr, with the UTC time of day.
fn log(msg: &str) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    eprintln!(
        "[{:02}:{:02}:{:02}] {msg}",
        (t / 3600) % 24,
        (t / 60) % 60,
        t % 60
    );
}

/// The first non-empty line a command prints (stdout, then stderr), or "".
fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// Sleeps, but returns early (with an error) on Ctrl-C.
fn pause(stop: &AtomicBool, d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// Builds one mode, measures it, tears it down (Lab's Drop).
fn run_mode(mode: &str, o: &Options, stop: &AtomicBool) -> ModeResult {
    let mut r = ModeResult {
        mode: mode.to_string(),
        ok: false,
        reason: String::new(),
        mtu: "-".into(),
        info: String::new(),
        load_start: measure::loadavg(),
        load_end: String::new(),
        samples: Vec::new(),
    };
    // Declared before the lab so it is dropped after it (daemons gone first).
    let mut sockets = modes::SocketGuard::default();
    let res = (|| -> Result<()> {
        let mut lab =
            Lab::new(&unique_prefix("b"), modes::hosts(mode)).context("building the lab")?;
        log(&format!(
            "== {mode}: lab {} (namespaces {}-*)",
            lab.prefix, lab.prefix
        ));
        let s = modes::build(mode, &mut lab, &mut sockets)?;
        r.mtu = s.mtu.clone();
        r.info = s.info.clone();
        lab.wait_ping(&s.client_ns, &s.server_ip, Duration::from_secs(30))
            .context("overlay never answered ping")?;
        pause(stop, s.settle)?;
        log(&format!("   {mode} up (mtu {}): {}", s.mtu, s.info));
        let (out, err) = modes::log_file(&lab, "iperf3-server.log")?;
        let mut srv = lab.exec(&s.server_ns, &["iperf3", "-s", "-p", measure::IPERF_PORT]);
        srv.stdout(out).stderr(err);
        lab.spawn_helper(srv)?;
        pause(stop, Duration::from_millis(500))?;
        measure::warm_up(&lab, &s);
        pause(stop, Duration::from_secs(1))?;
        for run in 1..=o.runs {
            let sm = measure::one_run(&lab, &s, o, stop)?;
            log(&format!(
                "   run {run}/{}: 1x {} Gbit/s, P4 {} Gbit/s, rtt {} ms, dCPU {} s/GB, sysCPU {} s/GB, load {}{}",
                o.runs,
                fmt(sm.gbps_1, 2),
                fmt(sm.gbps_p4, 2),
                fmt(sm.rtt_ms, 3),
                fmt(sm.dcpu_1, 2),
                fmt(sm.sys_1, 2),
                measure::loadavg(),
                if sm.errors.is_empty() { String::new() } else { format!("; errors: {}", sm.errors.join("; ")) }
            ));
            r.samples.push(sm);
            pause(stop, Duration::from_secs(1))?;
        }
        Ok(())
    })();
    r.load_end = measure::loadavg();
    match res {
        Err(e) => {
            r.reason = one_line(&format!("{e:#}"));
            // Keep what was measured before an interruption or late failure.
            if r.samples
                .iter()
                .any(|s| s.gbps_1.is_some() || s.gbps_p4.is_some())
            {
                r.ok = true;
                r.info = format!("PARTIAL ({}); {}", r.reason, r.info);
            }
        }
        Ok(()) => {
            let m = r.medians();
            if m.gbps_1.is_none() && m.gbps_p4.is_none() {
                r.reason = one_line(
                    r.samples
                        .iter()
                        .flat_map(|s| s.errors.first())
                        .next()
                        .map(String::as_str)
                        .unwrap_or("no result"),
                );
            } else {
                r.ok = true;
            }
        }
    }
    drop(sockets);
    if !r.ok {
        log(&format!("   {mode}: FAILED: {}", r.reason));
    }
    r
}

/// Runs every requested mode in turn and prints one table.
pub fn run_bench(o: &Options, stop: &AtomicBool) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark needs root (network namespaces, TUN/TAP)");
    }
    let modes = requested_modes(o)?;
    if o.runs == 0 || o.secs == 0 || o.pings == 0 {
        bail!("--runs, --secs and --pings must be positive");
    }
    for t in ["ip", "iperf3", "ping", "timeout"] {
        if which(t).is_none() {
            bail!("missing {t} (apt-get install iproute2 iperf3 iputils-ping coreutils)");
        }
    }
    // Lab::new wants meshd/meshctl; the non-mesh modes do not need them.
    // Point it somewhere harmless so those modes run; the mesh mode then
    // reports the missing binaries as its FAILED reason.
    if find_bin_dir().is_err() {
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        std::env::set_var("MESH_BIN_DIR", dir);
    }
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let tsv = o
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("mesh-bench-{started}.tsv")));
    let load0 = measure::loadavg();
    log(&format!(
        "modes: {}; secs={} runs={} pings={}; results -> {}",
        modes.join(","),
        o.secs,
        o.runs,
        o.pings,
        tsv.display()
    ));
    let mut results = Vec::new();
    let mut interrupted = false;
    for m in modes {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        results.push(run_mode(m, o, stop));
    }
    if stop.load(Ordering::SeqCst) {
        interrupted = true;
    }
    let load1 = measure::loadavg();
    let table = report::render_table(&results, o, &load0, &load1);
    println!("\n{table}");
    let jp = report::write_results(&results, o, started, &tsv, &table)?;
    println!("raw results: {} and {}", tsv.display(), jp.display());
    if interrupted {
        bail!("interrupted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(modes: &[&str]) -> Options {
        Options {
            modes: modes.iter().map(|m| m.to_string()).collect(),
            secs: 1,
            runs: 1,
            pings: 1,
            out: None,
        }
    }

    #[test]
    fn mode_aliases() {
        assert_eq!(canonical_mode("wireguard-go"), Some("wggo"));
        assert_eq!(canonical_mode("VXLAN"), Some("vxlan"));
        assert_eq!(canonical_mode("veth"), Some("underlay"));
        assert_eq!(canonical_mode("nope"), None);
        for m in ALL_MODES {
            assert_eq!(canonical_mode(m), Some(*m));
        }
    }

    #[test]
    fn requested_modes_are_canonical_unique_and_ordered() {
        assert_eq!(
            requested_modes(&options(&["meshd", "veth", "mesh"])).unwrap(),
            ["mesh", "underlay"]
        );
        assert_eq!(requested_modes(&options(&["all"])).unwrap(), ALL_MODES);
        let e = requested_modes(&options(&["tinc", "ipsec"])).unwrap_err();
        assert!(e.to_string().contains("ipsec"), "{e}");
        assert!(requested_modes(&options(&[])).is_err());
    }
}
