//! The modes: each builds the same two-host topology on a fresh [`Lab`]
//! (a container namespace behind each host) and differs only in how the
//! hosts carry the containers' traffic. See the table in [`super`].

use crate::{run, wait_for, which, Lab};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::first_line;

/// What a mode's setup hands to the measurement.
pub(super) struct Setup {
    pub client_ns: String,
    pub server_ns: String,
    pub server_ip: String,
    pub mtu: String,
    pub info: String,
    /// Overlay processes (both hosts) for CPU accounting.
    pub daemons: Vec<u32>,
    /// How long to let the overlay settle after the first ping answers.
    pub settle: Duration,
}

/// Builds `mode` (a canonical name) in `lab`. WireGuard's global socket
/// paths are recorded in `sockets` for removal after the mode.
pub(super) fn build(mode: &str, lab: &mut Lab, sockets: &mut SocketGuard) -> Result<Setup> {
    match mode {
        "underlay" => setup_underlay(lab),
        "vxlan" => setup_vxlan(lab),
        "tinc" => setup_tinc(lab),
        "wggo" => setup_wireguard(lab, Wg::Go, &mut sockets.0),
        "boringtun" => setup_wireguard(lab, Wg::Boringtun, &mut sockets.0),
        "gotatun" => setup_wireguard(lab, Wg::Gotatun, &mut sockets.0),
        "mesh" => setup_mesh(lab, None),
        "mesh-relay" => setup_mesh_relay(lab),
        "mesh-tcp" => setup_mesh_tcp(lab),
        "mesh-chacha" => setup_mesh(lab, Some("chacha20-poly1305")),
        m => Err(anyhow!("unknown mode {m}")),
    }
}

/// Lab hosts a mode needs: the relayed mesh goes through a third.
pub(super) fn hosts(mode: &str) -> usize {
    if mode == "mesh-relay" {
        3
    } else {
        2
    }
}

/// Finds an executable: `$ENVVAR`, then PATH, then cargo's bin directory
/// (where `cargo install boringtun-cli gotatun-cli` puts them).
pub(super) fn find_tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    which(name).or_else(|| {
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
        home.into_iter()
            .chain([PathBuf::from("/root/.cargo/bin")])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn tool(name: &str, env: &str) -> Result<String> {
    let p = find_tool(name, env).ok_or_else(|| anyhow!("{name} not installed (or set ${env})"))?;
    Ok(p.to_string_lossy().into_owned())
}

/// A log file in the lab's directory, as (stdout, stderr) of a child.
pub(super) fn log_file(lab: &Lab, name: &str) -> Result<(fs::File, fs::File)> {
    let f = fs::File::create(lab.dir.join(name))?;
    Ok((f.try_clone()?, f))
}

/// The last `n` lines of a log, on one line (for error messages).
fn tail(path: &Path, n: usize) -> String {
    let t = fs::read_to_string(path).unwrap_or_default();
    let l: Vec<&str> = t.lines().collect();
    l[l.len().saturating_sub(n)..].join(" | ")
}

/// Starts a long-running overlay process in `ns` (the PID is the process
/// itself: `ip netns exec` execs it), logging to `<lab dir>/<log>`; the
/// lab ends it by that PID.
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
        wait_for(Duration::from_secs(10), || {
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

/// The userspace WireGuard implementations compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wg {
    /// Debian's wireguard-go.
    Go,
    /// Cloudflare's boringtun-cli (Rust).
    Boringtun,
    /// Mullvad's gotatun-cli (Rust, boringtun's maintained successor).
    Gotatun,
}

/// A userspace WireGuard between the hosts (L3), routed containers.
fn setup_wireguard(lab: &mut Lab, kind: Wg, sockets: &mut Vec<PathBuf>) -> Result<Setup> {
    let wg = tool("wg", "WG")?;
    let (bin, net, tag) = match kind {
        Wg::Go => (tool("wireguard-go", "WIREGUARD_GO")?, 4u32, "g"),
        Wg::Boringtun => (tool("boringtun-cli", "BORINGTUN")?, 5u32, "b"),
        // `cargo install gotatun-cli` installs it as `gotatun`.
        Wg::Gotatun => (tool("gotatun", "GOTATUN")?, 6u32, "t"),
    };
    let mtu = 1420;
    let ifs: Vec<String> = (1..=2).map(|i| format!("{}{tag}{i}", lab.prefix)).collect();
    if ifs[0].len() > 15 {
        bail!("interface name {} too long", ifs[0]);
    }
    let c1 = routed_container(lab, 0, net * 10 + 1, mtu)?;
    let c2 = routed_container(lab, 1, net * 10 + 2, mtu)?;
    let mut daemons = Vec::new();
    for (i, ifname) in ifs.iter().enumerate() {
        let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        if sock.exists() {
            bail!("stale socket {} exists", sock.display());
        }
        sockets.push(sock.clone());
        let ns = lab.hosts[i].netns.clone();
        let logname = format!("wg{}.log", i + 1);
        let pid = if kind != Wg::Go {
            // boringtun-cli and gotatun take the same arguments.
            let out = lab
                .dir
                .join(format!("{tag}wg{}.out", i + 1))
                .to_string_lossy()
                .into_owned();
            spawn_daemon(
                lab,
                &ns,
                &[&bin, "-f", "--disable-drop-privileges", "-l", &out, ifname],
                &[("WG_SUDO", "1")],
                &logname,
            )?
        } else {
            spawn_daemon(
                lab,
                &ns,
                &[&bin, "-f", ifname],
                &[
                    ("LOG_LEVEL", "error"),
                    ("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1"),
                ],
                &logname,
            )?
        };
        daemons.push(pid);
        wait_for(Duration::from_secs(10), || {
            if sock.exists() {
                Ok(())
            } else {
                Err(anyhow!("{} did not appear", sock.display()))
            }
        })
        .with_context(|| tail(&lab.dir.join(&logname), 3))?;
    }
    let keydir = lab.dir.join("wgkeys");
    fs::create_dir_all(&keydir)?;
    let mut keys = Vec::new();
    for i in 1..=2 {
        let (private, public) = wg_keypair(&wg)?;
        let path = keydir.join(format!("k{i}"));
        fs::write(&path, private)?;
        keys.push((path.to_string_lossy().into_owned(), public));
    }
    for (i, ifname) in ifs.iter().enumerate() {
        let j = 1 - i;
        let ns = lab.hosts[i].netns.clone();
        let endpoint = format!("198.18.0.{}:51820", j + 1);
        let remote_containers = format!("198.19.{}.0/24", net * 10 + j as u32 + 1);
        let allowed = format!("198.19.{net}.{}/32,{remote_containers}", j + 1);
        lab.exec_ok(
            &ns,
            &[
                &wg,
                "set",
                ifname,
                "private-key",
                &keys[i].0,
                "listen-port",
                "51820",
                "peer",
                &keys[j].1,
                "endpoint",
                &endpoint,
                "allowed-ips",
                &allowed,
            ],
        )?;
        lab.exec_ok(
            &ns,
            &["ip", "link", "set", ifname, "mtu", &mtu.to_string(), "up"],
        )?;
        let address = format!("198.19.{net}.{}/24", i + 1);
        lab.exec_ok(&ns, &["ip", "addr", "add", &address, "dev", ifname])?;
        lab.exec_ok(
            &ns,
            &["ip", "route", "add", &remote_containers, "dev", ifname],
        )?;
    }
    let info = if kind != Wg::Go {
        format!(
            "{} (defaults); ChaCha20-Poly1305",
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

/// A fresh WireGuard key pair from `wg genkey | wg pubkey`: (private, public).
fn wg_keypair(wg: &str) -> Result<(String, String)> {
    use std::io::Write;
    let private = String::from_utf8(run(Command::new(wg).arg("genkey"))?.stdout)?;
    let mut c = Command::new(wg)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    c.stdin
        .take()
        .context("stdin")?
        .write_all(private.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!("wg pubkey failed ({})", out.status);
    }
    Ok((private, String::from_utf8(out.stdout)?.trim().to_string()))
}

/// The mesh: meshd on both hosts, a network, a container attached per host.
/// `cipher` forces meshd's data-plane cipher (through `MESH_DP_CIPHER`);
/// `None`: its default (AES-256-GCM where both CPUs have AES).
fn setup_mesh(lab: &mut Lab, cipher: Option<&str>) -> Result<Setup> {
    for b in ["meshd", "meshctl"] {
        if !lab.bin(b).is_file() {
            bail!(
                "no {} (build mesh/meshctl or set MESH_BIN_DIR)",
                lab.bin(b).display()
            );
        }
    }
    // The daemons inherit the variable; it is gone again before any other
    // mode starts.
    match cipher {
        Some(c) => std::env::set_var("MESH_DP_CIPHER", c),
        None => std::env::remove_var("MESH_DP_CIPHER"),
    }
    let started = lab.start_mesh().context("starting the mesh");
    std::env::remove_var("MESH_DP_CIPHER");
    started?;
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
    let negotiated = lab
        .status(0)
        .ok()
        .and_then(|s| s.peers.iter().find_map(|p| p.cipher.clone()))
        .unwrap_or_else(|| "cipher unknown".into());
    Ok(Setup {
        client_ns: cns[0].clone(),
        server_ns: cns[1].clone(),
        server_ip: "198.19.9.2".into(),
        mtu,
        info: format!(
            "{}, {negotiated}; container-to-container over the mesh",
            if ver.is_empty() { "meshd" } else { &ver }
        ),
        daemons,
        settle: Duration::from_secs(1),
    })
}

/// The mesh between h1 and h2 with their direct data path blocked (UDP to
/// the data port, both ways): frames go through h3's relay.
fn setup_mesh_relay(lab: &mut Lab) -> Result<Setup> {
    let mut s = setup_mesh(lab, None)?;
    lab.wait_path(0, "h2", "direct", Duration::from_secs(15))
        .context("the direct path before the block")?;
    lab.block_udp_port(0, 1, DATA_PORT)?;
    lab.wait_path(0, "h2", "relayed via h3", Duration::from_secs(15))?;
    lab.wait_path(1, "h1", "relayed via h3", Duration::from_secs(15))?;
    s.info = format!("{}; relayed through h3 (data port blocked h1<->h2)", s.info);
    // Wait for the relayed path's MTU probes before measuring.
    s.settle = Duration::from_secs(3);
    Ok(s)
}

/// The mesh with all UDP between h1 and h2 dropped: control and data over
/// the TCP fallback.
fn setup_mesh_tcp(lab: &mut Lab) -> Result<Setup> {
    let mut s = setup_mesh(lab, None)?;
    lab.wait_path(0, "h2", "direct", Duration::from_secs(15))
        .context("the direct path before the block")?;
    lab.block_udp(0, &[1])?;
    lab.wait_path(0, "h2", "tcp", Duration::from_secs(60))?;
    lab.wait_path(1, "h1", "tcp", Duration::from_secs(20))?;
    s.info = format!(
        "{}; over the TCP fallback (all UDP h1<->h2 dropped)",
        s.info
    );
    s.settle = Duration::from_secs(3);
    Ok(s)
}

/// meshd's data port in the lab (`Lab::start_mesh`).
const DATA_PORT: u16 = 7801;

/// Removes the userspace WireGuard sockets (exact paths we created).
#[derive(Default)]
pub(super) struct SocketGuard(Vec<PathBuf>);
impl Drop for SocketGuard {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}
