//! End-to-end overlay benchmark (`mesh-lab bench`).
//!
//! Every mode builds a fresh two-host [`Lab`] (underlay namespace with a
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
//! | mesh      | meshd (L2)                           | `meshctl attach`        |
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

use crate::{find_bin_dir, run, unique_prefix, Lab};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ALL_MODES: &[&str] = &["underlay", "vxlan", "tinc", "wggo", "boringtun", "mesh"];
/// The userspace encrypted peers the mesh is compared against.
pub const PEERS: &[&str] = &["tinc", "wggo", "boringtun"];
const IPERF_PORT: &str = "5201";

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
        "mesh" | "meshd" => "mesh",
        _ => return None,
    })
}

/// What a mode's setup hands to the measurement.
struct Setup {
    client_ns: String,
    server_ns: String,
    server_ip: String,
    mtu: String,
    info: String,
    /// Overlay processes (both hosts) for CPU accounting.
    daemons: Vec<u32>,
    settle: Duration,
}

#[derive(Clone, Debug, Default)]
struct Sample {
    rtt_ms: Option<f64>,
    gbps_1: Option<f64>,
    gbps_p4: Option<f64>,
    dcpu_1: Option<f64>,
    dcpu_p4: Option<f64>,
    sys_1: Option<f64>,
    sys_p4: Option<f64>,
    retrans_1: Option<f64>,
    retrans_p4: Option<f64>,
    steal_s_1: Option<f64>,
    errors: Vec<String>,
}

#[derive(Clone, Debug)]
struct ModeResult {
    mode: String,
    ok: bool,
    reason: String,
    mtu: String,
    info: String,
    load_start: String,
    load_end: String,
    has_daemons: bool,
    samples: Vec<Sample>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Medians {
    gbps_1: Option<f64>,
    gbps_p4: Option<f64>,
    rtt_ms: Option<f64>,
    dcpu_1: Option<f64>,
    dcpu_p4: Option<f64>,
    sys_1: Option<f64>,
    retrans_1: Option<f64>,
    retrans_p4: Option<f64>,
}

impl ModeResult {
    fn medians(&self) -> Medians {
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

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|_| "?".into())
}

fn clk_tck() -> f64 {
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

/// Finds an executable: `$ENVVAR`, then PATH, then ~/.cargo/bin.
fn find_tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/root/.cargo/bin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn tool(name: &str, env: &str) -> Result<String> {
    let p = find_tool(name, env).ok_or_else(|| anyhow!("{name} not installed (or set ${env})"))?;
    Ok(p.to_string_lossy().into_owned())
}

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

fn wait_file(p: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !p.exists() {
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", p.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn log_file(lab: &Lab, name: &str) -> Result<(fs::File, fs::File)> {
    let f = fs::File::create(lab.dir.join(name))?;
    Ok((f.try_clone()?, f))
}

fn tail(path: &Path, n: usize) -> String {
    let t = fs::read_to_string(path).unwrap_or_default();
    let l: Vec<&str> = t.lines().collect();
    l[l.len().saturating_sub(n)..].join(" | ")
}

/// Starts a long-running overlay process in `ns` (the PID is the process
/// itself: `ip netns exec` execs it), logging to `<lab dir>/<log>`.
fn spawn_daemon(
    lab: &mut Lab,
    ns: &str,
    argv: &[&str],
    envs: &[(&str, &str)],
    logname: &str,
) -> Result<u32> {
    let (out, err) = log_file(lab, logname)?;
    let mut c = lab.exec(ns, argv);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.stdout(out).stderr(err);
    lab.spawn_helper(c)
}

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

// ---------------------------------------------------------------------------
// topology helpers
// ---------------------------------------------------------------------------

/// Container namespace behind host `i` (0-based), linked by a veth pair:
/// `bnc0` in the host, `eth0` in the container, both at `mtu`, both up.
fn container_behind(lab: &mut Lab, i: usize, mtu: u32) -> Result<String> {
    let cns = lab.add_container(&format!("c{}", i + 1))?;
    let hns = lab.hosts[i].netns.clone();
    let m = mtu.to_string();
    lab.exec_ok(
        &hns,
        &[
            "ip", "link", "add", "bnc0", "mtu", &m, "type", "veth", "peer", "name", "eth0", "mtu",
            &m, "netns", &cns,
        ],
    )?;
    lab.exec_ok(&hns, &["ip", "link", "set", "bnc0", "up"])?;
    lab.exec_ok(&cns, &["ip", "link", "set", "eth0", "up"])?;
    Ok(cns)
}

/// Routed container: 198.19.<net>.2/24 in the container, .1 on the host
/// side, default route via the host; forwarding on in the host namespace.
fn routed_container(lab: &mut Lab, i: usize, net: u32, mtu: u32) -> Result<String> {
    let cns = container_behind(lab, i, mtu)?;
    let hns = lab.hosts[i].netns.clone();
    lab.exec_ok(
        &hns,
        &[
            "ip",
            "addr",
            "add",
            &format!("198.19.{net}.1/24"),
            "dev",
            "bnc0",
        ],
    )?;
    lab.exec_ok(
        &cns,
        &[
            "ip",
            "addr",
            "add",
            &format!("198.19.{net}.2/24"),
            "dev",
            "eth0",
        ],
    )?;
    lab.exec_ok(
        &cns,
        &[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("198.19.{net}.1"),
        ],
    )?;
    lab.exec_ok(&hns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
    Ok(cns)
}

/// Bridged container: bridge `bnbr` in the host with the container's veth
/// on it; the container gets `addr` (CIDR).
fn bridged_container(lab: &mut Lab, i: usize, addr: &str, mtu: u32) -> Result<String> {
    let hns = lab.hosts[i].netns.clone();
    lab.exec_ok(&hns, &["ip", "link", "add", "bnbr", "type", "bridge"])?;
    lab.exec_ok(&hns, &["ip", "link", "set", "bnbr", "up"])?;
    let cns = container_behind(lab, i, mtu)?;
    lab.exec_ok(&hns, &["ip", "link", "set", "bnc0", "master", "bnbr"])?;
    lab.exec_ok(&cns, &["ip", "addr", "add", addr, "dev", "eth0"])?;
    Ok(cns)
}

// ---------------------------------------------------------------------------
// modes
// ---------------------------------------------------------------------------

/// Plain routing over the underlay: the lab's limit.
fn setup_underlay(lab: &mut Lab) -> Result<Setup> {
    let c1 = routed_container(lab, 0, 11, 1500)?;
    let c2 = routed_container(lab, 1, 12, 1500)?;
    let (h1, h2) = (lab.hosts[0].netns.clone(), lab.hosts[1].netns.clone());
    lab.exec_ok(
        &h1,
        &["ip", "route", "add", "198.19.12.0/24", "via", "198.18.0.2"],
    )?;
    lab.exec_ok(
        &h2,
        &["ip", "route", "add", "198.19.11.0/24", "via", "198.18.0.1"],
    )?;
    Ok(Setup {
        client_ns: c1,
        server_ns: c2,
        server_ip: "198.19.12.2".into(),
        mtu: "1500".into(),
        info: format!(
            "routed over the underlay (veth+bridge), kernel {}",
            first_line("uname", &["-r"])
        ),
        daemons: vec![],
        settle: Duration::from_secs(1),
    })
}

/// Kernel VXLAN between the hosts, bridged to the containers.
fn setup_vxlan(lab: &mut Lab) -> Result<Setup> {
    let mtu = 1450;
    let mut cns = Vec::new();
    for i in 0..2 {
        let c = bridged_container(lab, i, &format!("198.19.2.{}/24", i + 1), mtu)?;
        let hns = lab.hosts[i].netns.clone();
        let (local, remote) = (format!("198.18.0.{}", i + 1), format!("198.18.0.{}", 2 - i));
        lab.exec_ok(
            &hns,
            &[
                "ip",
                "link",
                "add",
                "bnvx",
                "mtu",
                &mtu.to_string(),
                "type",
                "vxlan",
                "id",
                "4242",
                "local",
                &local,
                "remote",
                &remote,
                "dstport",
                "4789",
                "dev",
                "ul0",
            ],
        )?;
        lab.exec_ok(&hns, &["ip", "link", "set", "bnvx", "master", "bnbr", "up"])?;
        cns.push(c);
    }
    Ok(Setup {
        client_ns: cns[0].clone(),
        server_ns: cns[1].clone(),
        server_ip: "198.19.2.2".into(),
        mtu: mtu.to_string(),
        info: "kernel vxlan id 4242 udp/4789, no encryption".into(),
        daemons: vec![],
        settle: Duration::from_secs(1),
    })
}

/// tinc 1.0 in switch mode (TAP), bridged to the containers.
fn setup_tinc(lab: &mut Lab) -> Result<Setup> {
    let tincd = tool("tincd", "TINCD")?;
    let mtu = 1500;
    let mut cns = Vec::new();
    for i in 0..2 {
        cns.push(bridged_container(
            lab,
            i,
            &format!("198.19.3.{}/24", i + 1),
            mtu,
        )?);
    }
    let crypto = "Cipher = aes-256-cbc\nDigest = sha256\nMACLength = 16\n";
    for i in 1..=2u32 {
        let d = lab.dir.join(format!("tinc{i}"));
        fs::create_dir_all(d.join("hosts"))?;
        fs::write(
            d.join("tinc.conf"),
            format!(
                "Name = h{i}\nMode = switch\nInterface = bntinc\nAddressFamily = ipv4\nBindToAddress = 198.18.0.{i}\nConnectTo = h{}\n{crypto}",
                3 - i
            ),
        )?;
        fs::write(
            d.join(format!("hosts/h{i}")),
            format!("Address = 198.18.0.{i}\nPort = 655\n{crypto}"),
        )?;
        let up = d.join("tinc-up");
        fs::write(&up, format!("#!/bin/sh\nip link set \"$INTERFACE\" mtu {mtu} up\nip link set \"$INTERFACE\" master bnbr\n"))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&up, fs::Permissions::from_mode(0o755))?;
        run(Command::new(&tincd)
            .arg("-c")
            .arg(&d)
            .arg("-K2048")
            .stdout(Stdio::null()))
        .context("tinc key generation")?;
    }
    for (a, b) in [(1, 2), (2, 1)] {
        fs::copy(
            lab.dir.join(format!("tinc{a}/hosts/h{a}")),
            lab.dir.join(format!("tinc{b}/hosts/h{a}")),
        )?;
    }
    let mut daemons = Vec::new();
    for i in 0..2 {
        let d = lab.dir.join(format!("tinc{}", i + 1));
        let ds = d.to_string_lossy().into_owned();
        let pidfile = format!("--pidfile={ds}/tinc.pid");
        let ns = lab.hosts[i].netns.clone();
        daemons.push(spawn_daemon(
            lab,
            &ns,
            &[&tincd, "-c", &ds, "-D", "-d1", &pidfile],
            &[],
            &format!("tincd{}.log", i + 1),
        )?);
    }
    // The TAP must exist and be on the bridge before pinging.
    for i in 0..2 {
        let ns = lab.hosts[i].netns.clone();
        crate::wait_for(Duration::from_secs(10), || {
            let out = lab.exec_ok(&ns, &["ip", "-o", "link", "show", "master", "bnbr"])?;
            if out.contains("bntinc") {
                Ok(())
            } else {
                Err(anyhow!(
                    "tinc interface not on the bridge in {ns}: {}",
                    tail(&lab.dir.join(format!("tincd{}.log", i + 1)), 3)
                ))
            }
        })?;
    }
    Ok(Setup {
        client_ns: cns[0].clone(),
        server_ns: cns[1].clone(),
        server_ip: "198.19.3.2".into(),
        mtu: mtu.to_string(),
        info: format!(
            "{}; switch mode, aes-256-cbc+HMAC-SHA256/128, RSA-2048, PMTUDiscovery+ClampMSS (defaults)",
            first_line(&tincd, &["--version"])
        ),
        daemons,
        settle: Duration::from_secs(6), // let PMTU discovery finish
    })
}

/// wireguard-go / boringtun-cli between the hosts (L3), routed containers.
fn setup_wireguard(lab: &mut Lab, boringtun: bool, sockets: &mut Vec<PathBuf>) -> Result<Setup> {
    let wg = tool("wg", "WG")?;
    let (bin, net, tag) = if boringtun {
        (tool("boringtun-cli", "BORINGTUN")?, 5u32, "b")
    } else {
        (tool("wireguard-go", "WIREGUARD_GO")?, 4u32, "g")
    };
    let mtu = 1420;
    let ifs: Vec<String> = (1..=2).map(|i| format!("{}{tag}{i}", lab.prefix)).collect();
    if ifs[0].len() > 15 {
        bail!("interface name {} too long", ifs[0]);
    }
    let c1 = routed_container(lab, 0, net * 10 + 1, mtu)?;
    let c2 = routed_container(lab, 1, net * 10 + 2, mtu)?;
    let mut daemons = Vec::new();
    for i in 0..2 {
        let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", ifs[i]));
        if sock.exists() {
            bail!("stale socket {} exists", sock.display());
        }
        sockets.push(sock);
        let ns = lab.hosts[i].netns.clone();
        let logname = format!("wg{}.log", i + 1);
        let pid = if boringtun {
            let out = lab
                .dir
                .join(format!("boringtun{}.out", i + 1))
                .to_string_lossy()
                .into_owned();
            spawn_daemon(
                lab,
                &ns,
                &[&bin, "-f", "--disable-drop-privileges", "-l", &out, &ifs[i]],
                &[("WG_SUDO", "1")],
                &logname,
            )?
        } else {
            spawn_daemon(
                lab,
                &ns,
                &[&bin, "-f", &ifs[i]],
                &[
                    ("LOG_LEVEL", "error"),
                    ("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1"),
                ],
                &logname,
            )?
        };
        daemons.push(pid);
    }
    for i in 0..2 {
        wait_file(&sockets[sockets.len() - 2 + i], Duration::from_secs(10))
            .with_context(|| tail(&lab.dir.join(format!("wg{}.log", i + 1)), 3))?;
    }
    let keydir = lab.dir.join("wgkeys");
    fs::create_dir_all(&keydir)?;
    let mut pubs = Vec::new();
    for i in 1..=2 {
        let k = String::from_utf8(run(Command::new(&wg).arg("genkey"))?.stdout)?;
        let kp = keydir.join(format!("k{i}"));
        fs::write(&kp, &k)?;
        let mut c = Command::new(&wg)
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        use std::io::Write;
        c.stdin.take().context("stdin")?.write_all(k.as_bytes())?;
        let o = c.wait_with_output()?;
        pubs.push(String::from_utf8(o.stdout)?.trim().to_string());
    }
    for i in 0..2 {
        let j = 1 - i;
        let ns = lab.hosts[i].netns.clone();
        let key = keydir
            .join(format!("k{}", i + 1))
            .to_string_lossy()
            .into_owned();
        let endpoint = format!("198.18.0.{}:51820", j + 1);
        let allowed = format!(
            "198.19.{net}.{}/32,198.19.{}.0/24",
            j + 1,
            net * 10 + j as u32 + 1
        );
        lab.exec_ok(
            &ns,
            &[
                &wg,
                "set",
                &ifs[i],
                "private-key",
                &key,
                "listen-port",
                "51820",
                "peer",
                &pubs[j],
                "endpoint",
                &endpoint,
                "allowed-ips",
                &allowed,
            ],
        )?;
        lab.exec_ok(
            &ns,
            &["ip", "link", "set", &ifs[i], "mtu", &mtu.to_string(), "up"],
        )?;
        lab.exec_ok(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("198.19.{net}.{}/24", i + 1),
                "dev",
                &ifs[i],
            ],
        )?;
        lab.exec_ok(
            &ns,
            &[
                "ip",
                "route",
                "add",
                &format!("198.19.{}.0/24", net * 10 + j as u32 + 1),
                "dev",
                &ifs[i],
            ],
        )?;
    }
    let info = if boringtun {
        format!(
            "{} (default 4 threads); ChaCha20-Poly1305",
            first_line(&bin, &["--version"])
        )
    } else {
        format!(
            "wireguard-go {}; ChaCha20-Poly1305",
            first_line(&bin, &["--version"])
                .split_whitespace()
                .nth(1)
                .unwrap_or("?")
        )
    };
    Ok(Setup {
        client_ns: c1,
        server_ns: c2,
        server_ip: format!("198.19.{}.2", net * 10 + 2),
        mtu: mtu.to_string(),
        info,
        daemons,
        settle: Duration::from_secs(1),
    })
}

/// The mesh: meshd on both hosts, a network, a container attached per host.
fn setup_mesh(lab: &mut Lab) -> Result<Setup> {
    for b in ["meshd", "meshctl"] {
        if !lab.bin(b).is_file() {
            bail!(
                "no {} (build mesh/meshctl or set MESH_BIN_DIR)",
                lab.bin(b).display()
            );
        }
    }
    lab.start_mesh().context("starting the mesh")?;
    lab.meshctl(
        0,
        &["network", "create", "bench", "--subnet", "198.19.9.0/24"],
    )
    .context("network create")?;
    let mut cns = Vec::new();
    for i in 0..2 {
        let ns = lab.add_container(&format!("c{}", i + 1))?;
        lab.attach(i, &ns, "bench", &format!("198.19.9.{}/24", i + 1))
            .with_context(|| format!("attaching {ns} on h{}", i + 1))?;
        cns.push(ns);
    }
    let mtu = lab
        .exec_ok(&cns[0], &["ip", "-o", "link", "show"])
        .ok()
        .and_then(|t| {
            t.lines().filter(|l| !l.contains(" lo:")).find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.iter()
                    .position(|x| *x == "mtu")
                    .and_then(|p| w.get(p + 1))
                    .map(|s| s.to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let daemons: Vec<u32> = lab.hosts.iter().filter_map(|h| h.daemon_pid()).collect();
    let ver = first_line(&lab.bin("meshd").to_string_lossy(), &["--version"]);
    Ok(Setup {
        client_ns: cns[0].clone(),
        server_ns: cns[1].clone(),
        server_ip: "198.19.9.2".into(),
        mtu,
        info: format!(
            "{}; container-to-container over the mesh",
            if ver.is_empty() { "meshd" } else { &ver }
        ),
        daemons,
        settle: Duration::from_secs(1),
    })
}

// ---------------------------------------------------------------------------
// measurement
// ---------------------------------------------------------------------------

struct IperfResult {
    gbps: f64,
    bytes: f64,
    retrans: Option<f64>,
    dcpu: Option<f64>,
    sys: f64,
    steal_s: f64,
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
    let v: Value = serde_json::from_str(&text).map_err(|_| {
        anyhow!(
            "iperf3 -P {streams} printed no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 -P {streams}: {e}");
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let bytes = v["end"]["sum_received"]["bytes"]
        .as_f64()
        .context("iperf3: no bytes")?;
    if bytes <= 0.0 {
        bail!("iperf3 -P {streams}: no bytes received");
    }
    let gb = bytes / 1e9;
    Ok(IperfResult {
        gbps: bps / 1e9,
        bytes,
        retrans: v["end"]["sum_sent"]["retransmits"].as_f64(),
        dcpu: (!s.daemons.is_empty()).then(|| (d1.saturating_sub(d0)) as f64 / hz / gb),
        sys: b1.saturating_sub(b0) as f64 / hz / gb,
        steal_s: st1.saturating_sub(st0) as f64 / hz,
    })
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
    // rtt min/avg/max/mdev = 0.031/0.045/0.070/0.010 ms
    text.lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("ping failed: {}", text.lines().last().unwrap_or("").trim()))
}

/// Builds one mode, measures it, tears it down (Lab's Drop).
fn run_mode(mode: &str, o: &Options, stop: &AtomicBool) -> ModeResult {
    let mut r = ModeResult {
        mode: mode.to_string(),
        ok: false,
        reason: String::new(),
        mtu: "-".into(),
        info: String::new(),
        load_start: loadavg(),
        load_end: String::new(),
        has_daemons: false,
        samples: Vec::new(),
    };
    // Declared before the lab so it is dropped after it (daemons gone first).
    let mut sockets = SocketGuard(Vec::new());
    let res = (|| -> Result<()> {
        let mut lab = Lab::new(&unique_prefix("b"), 2).context("building the lab")?;
        log(&format!(
            "== {mode}: lab {} (namespaces {}-*)",
            lab.prefix, lab.prefix
        ));
        let s = match mode {
            "underlay" => setup_underlay(&mut lab),
            "vxlan" => setup_vxlan(&mut lab),
            "tinc" => setup_tinc(&mut lab),
            "wggo" => setup_wireguard(&mut lab, false, &mut sockets.0),
            "boringtun" => setup_wireguard(&mut lab, true, &mut sockets.0),
            "mesh" => setup_mesh(&mut lab),
            m => Err(anyhow!("unknown mode {m}")),
        }?;
        r.mtu = s.mtu.clone();
        r.info = s.info.clone();
        r.has_daemons = !s.daemons.is_empty();
        lab.wait_ping(&s.client_ns, &s.server_ip, Duration::from_secs(30))
            .context("overlay never answered ping")?;
        pause(stop, s.settle)?;
        log(&format!("   {mode} up (mtu {}): {}", s.mtu, s.info));
        let (out, err) = log_file(&lab, "iperf3-server.log")?;
        let mut srv = lab.exec(&s.server_ns, &["iperf3", "-s", "-p", IPERF_PORT]);
        srv.stdout(out).stderr(err);
        lab.spawn_helper(srv)?;
        pause(stop, Duration::from_millis(500))?;
        // Warm-up (not recorded): ARP, handshakes, PMTU, TCP caches.
        let _ = run_iperf(&lab, &s, 2, 1);
        pause(stop, Duration::from_secs(1))?;
        for run in 1..=o.runs {
            let mut sm = Sample::default();
            match run_ping(&lab, &s, o.pings) {
                Ok(v) => sm.rtt_ms = Some(v),
                Err(e) => sm.errors.push(format!("{e:#}")),
            }
            pause(stop, Duration::ZERO)?;
            match run_iperf(&lab, &s, o.secs, 1) {
                Ok(v) => {
                    sm.gbps_1 = Some(v.gbps);
                    sm.retrans_1 = v.retrans;
                    sm.dcpu_1 = v.dcpu;
                    sm.sys_1 = Some(v.sys);
                    sm.steal_s_1 = Some(v.steal_s);
                    let _ = v.bytes;
                }
                Err(e) => sm.errors.push(format!("{e:#}")),
            }
            pause(stop, Duration::from_secs(1))?;
            match run_iperf(&lab, &s, o.secs, 4) {
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
            log(&format!(
                "   run {run}/{}: 1x {} Gbit/s, P4 {} Gbit/s, rtt {} ms, dCPU {} s/GB, sysCPU {} s/GB, load {}{}",
                o.runs,
                fmt(sm.gbps_1, 2),
                fmt(sm.gbps_p4, 2),
                fmt(sm.rtt_ms, 3),
                fmt(sm.dcpu_1, 2),
                fmt(sm.sys_1, 2),
                loadavg(),
                if sm.errors.is_empty() { String::new() } else { format!("; errors: {}", sm.errors.join("; ")) }
            ));
            r.samples.push(sm);
            pause(stop, Duration::from_secs(1))?;
        }
        Ok(())
    })();
    r.load_end = loadavg();
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

/// Removes the userspace WireGuard sockets (exact paths we created).
struct SocketGuard(Vec<PathBuf>);
impl Drop for SocketGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

fn fmt(v: Option<f64>, prec: usize) -> String {
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

// ---------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------

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

fn render_table(results: &[ModeResult], o: &Options, load0: &str, load1: &str) -> String {
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
        "best userspace encrypted peer (tinc/wggo/boringtun): 1x {}, P4 {}, dCPU {}, RTT {}\n",
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

fn write_results(
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
    Ok(jp)
}

/// Runs every requested mode in turn and prints one table.
pub fn run_bench(o: &Options, stop: &AtomicBool) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark needs root (network namespaces, TUN/TAP)");
    }
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
    if o.runs == 0 || o.secs == 0 || o.pings == 0 {
        bail!("--runs, --secs and --pings must be positive");
    }
    for t in ["ip", "iperf3", "ping", "timeout"] {
        if find_tool(t, "__MESH_BENCH_NONE__").is_none() {
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
    let load0 = loadavg();
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
    let load1 = loadavg();
    let table = render_table(&results, o, &load0, &load1);
    println!("\n{table}");
    let jp = write_results(&results, o, started, &tsv, &table)?;
    println!("raw results: {} and {}", tsv.display(), jp.display());
    if interrupted {
        bail!("interrupted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_order_and_handles_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

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
    fn mode_aliases() {
        assert_eq!(canonical_mode("wireguard-go"), Some("wggo"));
        assert_eq!(canonical_mode("VXLAN"), Some("vxlan"));
        assert_eq!(canonical_mode("veth"), Some("underlay"));
        assert_eq!(canonical_mode("nope"), None);
        for m in ALL_MODES {
            assert_eq!(canonical_mode(m), Some(*m));
        }
    }
}
