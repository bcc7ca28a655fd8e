//! The namespace lab: N mesh hosts on one machine.
//!
//! ```text
//!   <p>-ul  (underlay namespace: bridge br0, 198.18.0.0/24)
//!     ├── veth ── <p>-h1 (ul0 198.18.0.1, meshd) ── bridge ── veth ── <p>-c… (container)
//!     ├── veth ── <p>-h2 (ul0 198.18.0.2, meshd) ── …
//!     └── …
//! ```
//! Every namespace carries the lab's unique prefix; links live inside those
//! namespaces, so the root namespace is never touched. [`Lab`]'s `Drop`
//! stops the daemons it started (by PID) and deletes its namespaces, also
//! when a test panics. Tests, the demo (`mesh-lab demo`) and the benchmark
//! all build their hosts with this one harness.

pub mod bench;
pub mod cnitool;
pub mod console;
mod dnsclient;
pub mod docker;
mod faults;
pub mod frames;
pub mod http;
pub mod initials;
pub mod member;
mod metrics;
mod outside;
mod partition;
pub mod podman;
pub mod scale;
pub mod soak;
pub mod svcbench;

pub use dnsclient::dns_query;

use anyhow::{anyhow, bail, Context, Result};
pub use faults::Nat;
use mesh_api::{Attachment, Client, ClientError, StatusResponse};
use serde::de::DeserializeOwned;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Control port of every lab daemon (each host has its own namespace).
pub const CONTROL_PORT: u16 = mesh_api::DEFAULT_CONTROL_PORT;

pub struct Host {
    pub name: String,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// More `meshd` flags for this host (e.g. the Docker plugin's).
    pub extra_args: Vec<String>,
    /// `--listen` instead of `<underlay_ip>:7800` (e.g. `0.0.0.0:7800` for
    /// a host whose address changes; see `faults.rs`).
    pub listen: Option<String>,
    /// Environment for this host's `meshd` (e.g. the mixed-version test's
    /// `MESH_TEST_NEXT_PROTOCOL=1`).
    pub env: Vec<(String, String)>,
    /// Where this host's `meshd` and `meshctl` are, when not the lab's
    /// (another release's build, in the mixed-version test).
    pub bin_dir: Option<PathBuf>,
    daemon: Option<Child>,
}

impl Host {
    pub fn control_address(&self) -> String {
        format!("{}:{CONTROL_PORT}", self.underlay_ip)
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }
}

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    pub underlay: String,
    pub hosts: Vec<Host>,
    bin_dir: PathBuf,
    /// Namespaces we created, deleted in reverse order on drop.
    namespaces: Vec<String>,
    /// Other processes we started (captures, servers), ended by PID.
    helpers: Vec<Child>,
    keep: bool,
    /// Hosts put behind a NAT router (host index → router namespace).
    routers: std::collections::BTreeMap<usize, String>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A prefix unique to this process and call: `ml<pid><n>`.
pub fn unique_prefix(tag: &str) -> String {
    let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("ml{}{tag}{n}", std::process::id())
}

/// Where `meshd` and `meshctl` are: `$MESH_BIN_DIR`, else next to (or one
/// level above) the running executable, as cargo lays out target/<profile>.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(d) = std::env::var("MESH_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d.join("meshd").is_file() && d.join("meshctl").is_file() {
            return Ok(d);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!("cannot find the meshd and meshctl binaries: run `cargo build --workspace` first or set MESH_BIN_DIR")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The lab a test runs on: `hosts` hosts with a unique prefix built from
/// `tag`, or `None` (and a note) when not root, so the test skips.
pub fn test_lab(tag: &str, hosts: usize) -> Option<Lab> {
    if !is_root() {
        eprintln!("skipping: the namespace lab needs root");
        return None;
    }
    Some(Lab::new(&unique_prefix(tag), hosts).expect("building the lab"))
}

/// [`test_lab`] with the mesh already joined.
pub fn test_mesh(tag: &str, hosts: usize) -> Option<Lab> {
    let mut lab = test_lab(tag, hosts)?;
    lab.start_mesh().expect("mesh up");
    Some(lab)
}

/// Runs a command; an error names the command and carries its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

impl Lab {
    /// Builds the underlay and `hosts` host namespaces; starts no daemon.
    pub fn new(prefix: &str, hosts: usize) -> Result<Lab> {
        if !is_root() {
            bail!("the lab needs root (network namespaces)");
        }
        let dir = std::env::temp_dir().join(format!("mesh-lab-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            dir,
            underlay: format!("{prefix}-ul"),
            hosts: Vec::new(),
            bin_dir: find_bin_dir()?,
            namespaces: Vec::new(),
            helpers: Vec::new(),
            keep: std::env::var_os("MESH_LAB_KEEP").is_some(),
            routers: Default::default(),
        };
        let ul = lab.underlay.clone();
        lab.add_netns(&ul)?;
        lab.exec_ok(&ul, &["ip", "link", "add", "br0", "type", "bridge"])?;
        lab.exec_ok(&ul, &["ip", "link", "set", "br0", "up"])?;
        for i in 1..=hosts {
            lab.add_host(i)?;
        }
        Ok(lab)
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        self.exec_ok(name, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn add_host(&mut self, i: usize) -> Result<()> {
        let name = format!("h{i}");
        let netns = format!("{}-{name}", self.prefix);
        self.add_netns(&netns)?;
        let ul = self.underlay.clone();
        let port = format!("p{i}");
        self.exec_ok(
            &ul,
            &[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &netns,
            ],
        )?;
        self.exec_ok(&ul, &["ip", "link", "set", &port, "master", "br0", "up"])?;
        let addr = Ipv4Addr::new(198, 18, 0, i as u8);
        self.exec_ok(
            &netns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "ul0"],
        )?;
        self.exec_ok(&netns, &["ip", "link", "set", "ul0", "up"])?;
        let state_dir = self.dir.join(&name);
        std::fs::create_dir_all(&state_dir)?;
        self.hosts.push(Host {
            socket: state_dir.join("meshd.sock"),
            log: state_dir.join("meshd.log"),
            state_dir,
            name,
            netns,
            underlay_ip: addr,
            extra_args: Vec::new(),
            listen: None,
            env: Vec::new(),
            bin_dir: None,
            daemon: None,
        });
        Ok(())
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Host `i`'s binary `name` (its own build's, if it has one).
    pub fn host_bin(&self, i: usize, name: &str) -> PathBuf {
        self.hosts[i]
            .bin_dir
            .as_ref()
            .unwrap_or(&self.bin_dir)
            .join(name)
    }

    /// `ip netns exec NS cmd…`
    pub fn exec(&self, netns: &str, cmd: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", netns]).args(cmd);
        c
    }

    pub fn exec_ok(&self, netns: &str, cmd: &[&str]) -> Result<String> {
        let out = run(&mut self.exec(netns, cmd))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `meshd` in host `i` (0-based) and waits for its API socket.
    pub fn start_daemon(&mut self, i: usize) -> Result<()> {
        let meshd = self.host_bin(i, "meshd");
        let h = &self.hosts[i];
        if h.daemon.is_some() {
            bail!("{} already runs a daemon", h.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)?;
        let listen = h.listen.clone().unwrap_or_else(|| h.control_address());
        let mut cmd = self.exec(
            &h.netns,
            &[
                meshd.to_str().context("binary path is not UTF-8")?,
                "--state-dir",
                h.state_dir.to_str().context("path is not UTF-8")?,
                "--listen",
                &listen,
                "--api-socket",
                h.socket.to_str().context("path is not UTF-8")?,
                "--name",
                &h.name,
            ],
        );
        cmd.args(&h.extra_args);
        cmd.envs(h.env.iter().map(|(k, v)| (k, v)));
        cmd.env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting meshd")?;
        self.hosts[i].daemon = Some(child);
        self.wait_api(i, Duration::from_secs(20))
    }

    fn wait_api(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.meshctl(i, &["status", "--json"]).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.hosts[i].daemon.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.hosts[i].daemon = None;
                    bail!(
                        "meshd on {} exited ({status}):\n{}",
                        self.hosts[i].name,
                        self.log_tail(i, 30)
                    );
                }
            }
            if start.elapsed() > timeout {
                bail!(
                    "meshd on {} did not come up:\n{}",
                    self.hosts[i].name,
                    self.log_tail(i, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to host `i`'s daemon (by the PID we started) and
    /// reaps it.
    pub fn stop_daemon(&mut self, i: usize, signal: nix::sys::signal::Signal) -> Result<()> {
        match self.hosts[i].daemon.take() {
            Some(child) => terminate(child, signal, Duration::from_secs(10)),
            None => Ok(()),
        }
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.hosts[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `meshctl --socket <host i> args…`; an error carries its stderr.
    pub fn meshctl(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = Command::new(self.host_bin(i, "meshctl"))
            .arg("--socket")
            .arg(&self.hosts[i].socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running meshctl")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `meshctl … --json` and reads what it prints as `T` (a
    /// `mesh_api` type, or `serde_json::Value` for anything).
    pub fn meshctl_json<T: DeserializeOwned>(&self, i: usize, args: &[&str]) -> Result<T> {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.meshctl(i, &a)?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "meshctl {args:?} did not print a {}: {text}",
                std::any::type_name::<T>()
            )
        })
    }

    /// `meshctl status` of host `i`.
    pub fn status(&self, i: usize) -> Result<StatusResponse> {
        self.meshctl_json(i, &["status"])
    }

    /// A client of host `i`'s API socket, for what meshctl does not show
    /// (the error kinds).
    pub fn client(&self, i: usize) -> Client {
        Client::new(&self.hosts[i].socket)
    }

    /// Runs one call of host `i`'s API client to completion.
    pub fn api<T, F, Fut>(&self, i: usize, call: F) -> Result<T, ClientError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Connect {
                path: self.hosts[i].socket.clone(),
                source: e,
            })?;
        rt.block_on(call(self.client(i)))
    }

    /// Starts every daemon, joins hosts 2..N through host 1 and waits until
    /// every host sees every other one up.
    pub fn start_mesh(&mut self) -> Result<()> {
        for i in 0..self.hosts.len() {
            self.start_daemon(i)?;
        }
        let token = self.meshctl(0, &["token"])?.trim().to_string();
        let seed = self.hosts[0].control_address();
        for i in 1..self.hosts.len() {
            self.meshctl(i, &["join", &seed, "--token", &token])
                .with_context(|| format!("{} joining {seed}", self.hosts[i].name))?;
        }
        self.wait_all_up(Duration::from_secs(30))
    }

    /// Peers host `i` sees up with a session key.
    pub fn peers_up(&self, i: usize) -> Result<usize> {
        let s = self.status(i)?;
        Ok(s.peers
            .iter()
            .filter(|p| p.state == mesh_api::PeerState::Up && p.key_generation.is_some())
            .count())
    }

    /// Waits until every running daemon sees all other running daemons up
    /// with session keys.
    pub fn wait_all_up(&self, timeout: Duration) -> Result<()> {
        let running: Vec<usize> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].daemon.is_some())
            .collect();
        let want = running.len().saturating_sub(1);
        wait_for(timeout, || {
            for &i in &running {
                let n = self.peers_up(i)?;
                if n < want {
                    bail!("{} sees {n} of {want} peers up", self.hosts[i].name);
                }
            }
            Ok(())
        })
    }

    /// Adds a "container": a network namespace of its own.
    pub fn add_container(&mut self, name: &str) -> Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        self.add_netns(&ns)?;
        Ok(ns)
    }

    /// Attaches container namespace `ns` on host `i` to `network` at `ip`.
    pub fn attach(&self, i: usize, ns: &str, network: &str, ip: &str) -> Result<Attachment> {
        let path = format!("/run/netns/{ns}");
        self.meshctl_json(i, &["attach", &path, "--network", network, "--ip", ip])
    }

    /// `meshctl attach /run/netns/NS --network NET EXTRA…` on host `i`,
    /// retried for up to 10 s while the network is still on its way there.
    pub fn attach_netns(&self, i: usize, ns: &str, network: &str, extra: &[&str]) -> Attachment {
        let path = format!("/run/netns/{ns}");
        let mut args = vec!["attach", path.as_str(), "--network", network];
        args.extend_from_slice(extra);
        wait_for(Duration::from_secs(10), || self.meshctl_json(i, &args))
            .unwrap_or_else(|e| panic!("attach {ns} on host {i}: {e:#}"))
    }

    /// Starts a helper process (capture, server) that the lab ends on drop.
    pub fn spawn_helper(&mut self, mut cmd: Command) -> Result<u32> {
        // A group of its own, so that stopping it also ends what a helper
        // shell started (a `while true; do nc -l …; done` loop's nc).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let pid = child.id();
        self.helpers.push(child);
        Ok(pid)
    }

    /// Ends a helper with SIGTERM (so captures flush) and reaps it.
    pub fn stop_helper(&mut self, pid: u32) -> Result<()> {
        if let Some(pos) = self.helpers.iter().position(|c| c.id() == pid) {
            let child = self.helpers.remove(pos);
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
            terminate(
                child,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(5),
            )?;
            // Whatever the helper left in its group (its leader is reaped).
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        Ok(())
    }

    /// Starts an iperf3 server in namespace `ns` on `port` (ended with the
    /// lab) and waits until it listens, so a client never races it.
    pub fn iperf_server(&mut self, ns: &str, port: u16) -> Result<u32> {
        let cmd = self.exec(ns, &["iperf3", "-s", "-p", &port.to_string()]);
        let pid = self.spawn_helper(cmd)?;
        let wanted = format!(":{port} ");
        wait_for(Duration::from_secs(5), || {
            let out = self.exec_ok(ns, &["ss", "-Htln"])?;
            match out.lines().any(|l| l.contains(&wanted)) {
                true => Ok(()),
                false => bail!("iperf3 in {ns} does not listen on {port} yet"),
            }
        })?;
        Ok(pid)
    }

    /// Keeps traffic flowing from namespace `ns` to `dst` (a ping every
    /// 0.5 s) until the lab ends or [`Self::stop_helper`]: data paths are
    /// probed, and so fail over, only while they carry traffic.
    pub fn keep_talking(&mut self, ns: &str, dst: &str) -> Result<u32> {
        let cmd = self.exec(ns, &["ping", "-n", "-q", "-i", "0.5", dst]);
        self.spawn_helper(cmd)
    }

    /// One iperf3 TCP stream of `secs` seconds from namespace `ns` to an
    /// iperf3 server at `dst`:`port`, in Gbit/s as the receiver counted.
    pub fn iperf_gbps(&self, ns: &str, dst: &str, port: u16, secs: u32) -> Result<f64> {
        let (port, secs) = (port.to_string(), secs.to_string());
        let out = self.exec_ok(ns, &["iperf3", "-c", dst, "-p", &port, "-t", &secs, "-J"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("iperf3 JSON")?;
        match v["end"]["sum_received"]["bits_per_second"].as_f64() {
            Some(bps) => Ok(bps / 1e9),
            None => bail!("iperf3 gave no result: {}", v["error"]),
        }
    }

    /// Host `i`'s view of the peer named `name`.
    pub fn peer_status(&self, i: usize, name: &str) -> Result<mesh_api::PeerStatus> {
        self.status(i)?
            .peers
            .into_iter()
            .find(|p| p.name == name)
            .with_context(|| format!("{} does not know {name}", self.hosts[i].name))
    }

    /// Polls until host `i` shows the data path to `name` as `want`
    /// (`direct`, `relayed via h3`, …); returns how long that took.
    pub fn wait_path(
        &self,
        i: usize,
        name: &str,
        want: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        wait_for(timeout, || {
            let p = self.peer_status(i, name)?;
            anyhow::ensure!(
                p.path == want,
                "{} sees the path to {name} {:?}",
                self.hosts[i].name,
                p.path
            );
            Ok(())
        })?;
        Ok(start.elapsed())
    }

    /// Polls until host `i` has `name` up with its control connection
    /// `want` (`direct`, `relayed via h3`); returns how long that took.
    pub fn wait_control(
        &self,
        i: usize,
        name: &str,
        want: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        wait_for(timeout, || {
            let p = self.peer_status(i, name)?;
            match p.control.as_deref() {
                Some(c) if c == want && p.state == mesh_api::PeerState::Up => Ok(()),
                other => bail!(
                    "{} sees {name} control {other:?} ({})",
                    self.hosts[i].name,
                    p.state
                ),
            }
        })?;
        Ok(start.elapsed())
    }

    /// `ping -c count` from namespace `ns`; true if every probe answered.
    pub fn ping(&self, ns: &str, dst: &str, count: u32) -> bool {
        self.exec(
            ns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                dst,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    }

    /// Polls `ping` until it succeeds or `timeout` passes.
    /// Replies to `count` pings (0.2 s apart) from `ns` to `dst`.
    pub fn ping_replies(&self, ns: &str, dst: &str, count: u32) -> u32 {
        let n = count.to_string();
        let Ok(out) = self
            .exec(
                ns,
                &["ping", "-n", "-q", "-c", &n, "-i", "0.2", "-W", "1", dst],
            )
            .output()
        else {
            return 0;
        };
        // "5 packets transmitted, 5 received, 0% packet loss, time 1204ms"
        String::from_utf8_lossy(&out.stdout)
            .split(',')
            .find_map(|p| p.trim().strip_suffix(" received")?.parse().ok())
            .unwrap_or(0)
    }

    pub fn wait_ping(&self, ns: &str, dst: &str, timeout: Duration) -> Result<()> {
        wait_for(timeout, || {
            if self.ping(ns, dst, 1) {
                Ok(())
            } else {
                Err(anyhow!("{ns} cannot reach {dst}"))
            }
        })
    }

    pub fn dump_logs(&self) {
        for (i, h) in self.hosts.iter().enumerate() {
            eprintln!(
                "---- {} meshd log (last 40 lines) ----\n{}",
                h.name,
                self.log_tail(i, 40)
            );
        }
    }
}

/// Sends `signal` to a child we started (by its PID), waits up to `grace`
/// for it to exit, then kills it; always reaps it.
pub fn terminate(
    mut child: Child,
    signal: nix::sys::signal::Signal,
    grace: Duration,
) -> Result<()> {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > grace {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Retries `f` every 200 ms until it succeeds or `timeout` passes; the
/// last error explains the failure.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > timeout => {
                return Err(e.context(format!("still failing after {timeout:?}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for pid in self.helpers.iter().map(|c| c.id()).collect::<Vec<_>>() {
            let _ = self.stop_helper(pid);
        }
        for i in 0..self.hosts.len() {
            let _ = self.stop_daemon(i, nix::sys::signal::Signal::SIGTERM);
        }
        if self.keep {
            eprintln!(
                "MESH_LAB_KEEP set: leaving namespaces {:?} and {}",
                self.namespaces,
                self.dir.display()
            );
            return;
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // meshd writes a container's resolver config here; the name
            // carries the lab's prefix, so the directory is ours.
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finds an executable on PATH.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// A statically linked busybox (busybox-static): it must run inside a rootfs
/// without libc.
pub fn static_busybox() -> Option<PathBuf> {
    let b = which("busybox")?;
    let out = Command::new("ldd").arg(&b).output().ok()?;
    (!String::from_utf8_lossy(&out.stdout).contains("=>")).then_some(b)
}

impl Lab {
    /// `meshctl attachments` of host `i` (empty when meshd does not answer).
    pub fn attachments(&self, i: usize) -> Vec<Attachment> {
        self.meshctl_json(i, &["attachments"]).unwrap_or_default()
    }

    /// Container ids of host `i`'s attachments.
    pub fn attached_ids(&self, i: usize) -> Vec<String> {
        self.attachments(i)
            .into_iter()
            .filter_map(|a| a.container_id)
            .collect()
    }
}
