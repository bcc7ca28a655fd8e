//! The scale lab (`mesh-lab scale --hosts N`): N complete `meshd`s, each in
//! its own namespace on the lab underlay, joined through one seed, with one
//! network and one container per host. It measures what the scale issue
//! asks for — membership convergence, how fast a change reaches every
//! host, reachability between a sample of containers, the per-daemon cost
//! while idle, and failure detection and recovery after SIGKILL — and
//! reports one row of numbers ([`Report`]).
//!
//! Each phase polls the hosts' APIs from one thread per host; the idle
//! phase polls nothing (readings come from /proc and nftables counters), so
//! the daemons' idle cost is their own.

pub mod budget;
mod neigh;
pub mod procfs;
mod report;

use anyhow::{anyhow, bail, Context, Result};
use mesh_api::{AttachRequest, CreateNetworkRequest, JoinRequest, PeerState, StatusResponse};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{unique_prefix, Lab, CONTROL_PORT};
pub use report::{file_label, side_by_side, Distribution, HostIdle, Report};

/// The network every container is attached to.
pub const NETWORK: &str = "scale";
const SUBNET: &str = "10.77.0.0/16";
/// The underlay is one /24 with host i at .i.
pub const MAX_HOSTS: usize = 250;

#[derive(Clone, Debug)]
pub struct Options {
    pub hosts: usize,
    /// How long the idle cost is measured over.
    pub idle: Duration,
    /// Each host pings this many containers on other hosts.
    pub ping_fanout: usize,
    /// Share of the hosts killed with SIGKILL and restarted.
    pub kill_share: f64,
    /// Upper bound of every wait (a phase taking longer fails the run).
    pub timeout: Duration,
}

impl Options {
    pub fn new(hosts: usize) -> Options {
        Options {
            hosts,
            idle: Duration::from_secs(60),
            ping_fanout: 3,
            kill_share: 0.1,
            timeout: Duration::from_secs(120),
        }
    }

    fn validate(&self) -> Result<()> {
        if !(4..=MAX_HOSTS).contains(&self.hosts) {
            bail!("--hosts must be between 4 and {MAX_HOSTS}");
        }
        if self.ping_fanout == 0 || self.ping_fanout >= self.hosts {
            bail!("the ping fan-out must be between 1 and hosts-1");
        }
        if !(self.kill_share > 0.0 && self.kill_share < 0.5) {
            bail!("the kill share must be above 0 and below 0.5");
        }
        Ok(())
    }
}

fn check_stop(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs `check(i)` for every host in `hosts`, one thread per host, every
/// `every`, until it holds on all of them; returns when each first held.
fn until_all(
    hosts: &[usize],
    every: Duration,
    timeout: Duration,
    check: impl Fn(usize) -> Result<bool> + Sync,
) -> Result<Vec<Instant>> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .iter()
            .map(|&i| {
                let check = &check;
                scope.spawn(move || -> Result<Instant> {
                    let mut last_error = None;
                    while start.elapsed() < timeout {
                        match check(i) {
                            Ok(true) => return Ok(Instant::now()),
                            Ok(false) => {}
                            Err(e) => last_error = Some(e),
                        }
                        std::thread::sleep(every);
                    }
                    let why = last_error.map(|e| format!(": {e:#}")).unwrap_or_default();
                    Err(anyhow!("host {} not there after {timeout:?}{why}", i + 1))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().map_err(|_| anyhow!("polling thread panicked"))?)
            .collect()
    })
}

fn latest(times: &[Instant], since: Instant) -> Duration {
    times
        .iter()
        .map(|t| t.saturating_duration_since(since))
        .max()
        .unwrap_or_default()
}

fn status(lab: &Lab, i: usize) -> Result<StatusResponse> {
    Ok(lab.api(i, |c| async move { c.status().await })?)
}

/// Peers host `i` sees up with a session key, by name.
fn up_names(s: &StatusResponse) -> Vec<&str> {
    s.peers
        .iter()
        .filter(|p| p.state == PeerState::Up && p.key_generation.is_some())
        .map(|p| p.name.as_str())
        .collect()
}

fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Builds the lab, runs every phase and tears the lab down.
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<Report> {
    opts.validate()?;
    let n = opts.hosts;
    let _neigh = neigh::NeighGuard::raise(n).context("raising the neighbour table limits")?;
    let mut report = Report::new(n);
    report.budget_control_datagrams_per_sec = budget::control_datagrams_per_sec(opts);
    report.budget_data_datagrams_per_sec = budget::data_datagrams_per_sec(opts);
    let built = Instant::now();
    let mut lab = Lab::new(&unique_prefix("sc"), n)?;
    let rules = lab.dir.join("counters.nft");
    std::fs::write(&rules, procfs::counter_rules(CONTROL_PORT))?;
    let rules = rules.to_str().context("lab path is not UTF-8")?.to_string();
    for i in 0..n {
        check_stop(stop)?;
        let ns = lab.hosts[i].netns.clone();
        lab.exec_ok(&ns, &["nft", "-f", &rules])?;
        lab.start_daemon(i)?;
    }
    report.setup_secs = built.elapsed().as_secs_f64();
    eprintln!(
        "scale: {n} daemons running after {:.1} s",
        report.setup_secs
    );

    // Joins through host 1, one after the other, as an operator would.
    let token = lab.api(0, |c| async move { c.token().await })?.token;
    let seed = lab.hosts[0].control_address();
    let first_join = Instant::now();
    for i in 1..n {
        check_stop(stop)?;
        let req = JoinRequest {
            address: seed.clone(),
            token: token.clone(),
        };
        lab.api(i, |c| async move { c.join(&req).await })
            .with_context(|| format!("{} joining {seed}", lab.hosts[i].name))?;
    }
    let last_join = Instant::now();
    report.joins_secs = last_join.duration_since(first_join).as_secs_f64();
    let all: Vec<usize> = (0..n).collect();
    let converged = until_all(&all, Duration::from_millis(200), opts.timeout, |i| {
        Ok(up_names(&status(&lab, i)?).len() == n - 1)
    })?;
    report.convergence_secs = latest(&converged, last_join).as_secs_f64();
    eprintln!(
        "scale: membership converged {:.2} s after the last join",
        report.convergence_secs
    );

    check_stop(stop)?;
    let created = Instant::now();
    let req = CreateNetworkRequest {
        id: NETWORK.into(),
        subnet: SUBNET.into(),
        subnet6: None,
        labels: BTreeMap::new(),
        hosts: Vec::new(),
        policy: None,
        egress: false,
        mtu: None,
    };
    lab.api(0, |c| async move { c.create_network(&req).await })?;
    let seen = until_all(&all, Duration::from_millis(50), opts.timeout, |i| {
        let nets = lab.api(i, |c| async move { c.networks().await })?;
        Ok(nets.iter().any(|net| net.id == NETWORK))
    })?;
    report.network_visible_secs = latest(&seen, created).as_secs_f64();

    // Containers on hosts 2..N first; host 1's attach is then timed on a
    // settled mesh until its DNS record is on every host.
    let mut ips = vec![String::new(); n];
    let mut containers = vec![String::new(); n];
    for i in (1..n).chain([0]) {
        check_stop(stop)?;
        let ns = lab.add_container(&format!("c{}", i + 1))?;
        let req = AttachRequest {
            target: format!("/run/netns/{ns}"),
            network: NETWORK.into(),
            ip: None,
            ifname: None,
            container_id: None,
            name: Some(format!("c{}", i + 1)),
            version: None,
            labels: Default::default(),
            mode: None,
            parent: None,
            origin: mesh_api::Origin::Cli,
        };
        let attached = Instant::now();
        let a = crate::wait_for(Duration::from_secs(10), || {
            let req = req.clone();
            Ok(lab.api(i, |c| async move { c.attach(&req).await })?)
        })
        .with_context(|| format!("attaching a container on {}", lab.hosts[i].name))?;
        ips[i] = bare(&a.ip).to_string();
        containers[i] = ns;
        if i == 0 {
            let ip = ips[0].clone();
            let seen = until_all(&all, Duration::from_millis(50), opts.timeout, |h| {
                let records = lab.api(h, |c| async move { c.dns().await })?;
                Ok(records.iter().any(|r| bare(&r.ip) == ip))
            })?;
            report.attach_visible_secs = latest(&seen, attached).as_secs_f64();
        }
    }
    eprintln!(
        "scale: network on all hosts in {:.2} s, an attach's DNS record in {:.2} s",
        report.network_visible_secs, report.attach_visible_secs
    );

    check_stop(stop)?;
    ping_sample(&lab, opts, &containers, &ips, &mut report)?;
    check_stop(stop)?;
    idle_cost(&lab, opts, stop, &mut report)?;
    // Read after the window, so that the API calls are not in it.
    let active: Vec<f64> = (0..opts.hosts)
        .map(|i| Ok(status(&lab, i)?.probing.active_peers as f64))
        .collect::<Result<_>>()?;
    report.active_paths = Distribution::of(&active);
    check_stop(stop)?;
    kill_and_restart(&mut lab, opts, &mut report)?;
    report.load_after = report::loadavg();
    Ok(report)
}

/// Host i pings the containers of hosts i+1 … i+fanout (mod N), ten hosts
/// at a time.
fn ping_sample(
    lab: &Lab,
    opts: &Options,
    containers: &[String],
    ips: &[String],
    report: &mut Report,
) -> Result<()> {
    let n = opts.hosts;
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (1..=opts.ping_fanout).map(move |k| (i, (i + k) % n)))
        .collect();
    let mut failed = Vec::new();
    for batch in pairs.chunks(10) {
        let results: Vec<bool> = std::thread::scope(|scope| {
            let threads: Vec<_> = batch
                .iter()
                .map(|&(from, to)| {
                    scope.spawn(move || {
                        lab.wait_ping(&containers[from], &ips[to], Duration::from_secs(10))
                            .is_ok()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or(false))
                .collect()
        });
        for (&(from, to), ok) in batch.iter().zip(results) {
            if !ok {
                failed.push(format!("c{} -> c{}", from + 1, to + 1));
            }
        }
    }
    report.pings_total = pairs.len();
    report.pings_ok = pairs.len() - failed.len();
    report.ping_failures = failed;
    eprintln!(
        "scale: {} of {} container pings answered",
        report.pings_ok, report.pings_total
    );
    Ok(())
}

/// A host's send counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    control: procfs::Counter,
    data: procfs::Counter,
    probe: procfs::Counter,
    relay: procfs::Counter,
}

fn sent_counters(lab: &Lab, i: usize) -> Result<Sent> {
    let ns = &lab.hosts[i].netns;
    let read = |name: &str| -> Result<procfs::Counter> {
        let text = lab.exec_ok(
            ns,
            &["nft", "list", "counter", "inet", "meshlab_scale", name],
        )?;
        procfs::parse_counter(&text)
            .with_context(|| format!("counter {name} of {}", lab.hosts[i].name))
    };
    Ok(Sent {
        control: read("control")?,
        data: read("data")?,
        probe: read("probe")?,
        relay: read("relay")?,
    })
}

/// Lets the mesh settle, then reads every daemon before and after
/// `opts.idle` with nothing asked of them.
fn idle_cost(lab: &Lab, opts: &Options, stop: &AtomicBool, report: &mut Report) -> Result<()> {
    let n = opts.hosts;
    std::thread::sleep(Duration::from_secs(5));
    let pid = |i: usize| {
        lab.hosts[i]
            .daemon_pid()
            .ok_or_else(|| anyhow!("{} runs no daemon", lab.hosts[i].name))
    };
    let read_all = || -> Result<Vec<(procfs::ProcSample, Sent)>> {
        (0..n)
            .map(|i| Ok((procfs::sample(pid(i)?)?, sent_counters(lab, i)?)))
            .collect()
    };
    // Read through the API outside the window, so that the calls are not in it.
    // None from a daemon that predates the count.
    let member_updates = || -> Result<Vec<Option<u64>>> {
        (0..n)
            .map(|i| Ok(status(lab, i)?.gossip.map(|g| g.member_updates)))
            .collect()
    };
    let updates_before = member_updates()?;
    eprintln!("scale: measuring the idle cost for {:?}", opts.idle);
    let before = read_all()?;
    let started = Instant::now();
    while started.elapsed() < opts.idle {
        check_stop(stop)?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = read_all()?;
    let secs = started.elapsed().as_secs_f64();
    let updates_after = member_updates()?;
    report.load_idle = report::loadavg();
    let tick = procfs::clock_ticks_per_sec();
    let mut by_thread: BTreeMap<String, f64> = BTreeMap::new();
    let mut cpu = Vec::new();
    let mut wakeups = Vec::new();
    let (mut control_bytes, mut data_bytes) = (Vec::new(), Vec::new());
    let mut by_host = Vec::new();
    for (i, ((b, sb), (a, sa))) in before.iter().zip(&after).enumerate() {
        let spent = a.since(b);
        let ticks: u64 = spent.values().map(|s| s.ticks).sum();
        cpu.push(ticks as f64 / tick * 60.0 / secs);
        wakeups.push(spent.values().map(|s| s.wakeups).sum::<u64>() as f64 / secs);
        let (control, data) = (sa.control.since(sb.control), sa.data.since(sb.data));
        control_bytes.push(control.bytes as f64 / secs);
        data_bytes.push(data.bytes as f64 / secs);
        by_host.push(HostIdle {
            host: lab.hosts[i].name.clone(),
            control_datagrams_per_sec: control.packets as f64 / secs,
            data_datagrams_per_sec: data.packets as f64 / secs,
            probe_datagrams_per_sec: sa.probe.since(sb.probe).packets as f64 / secs,
            relay_datagrams_per_sec: sa.relay.since(sb.relay).packets as f64 / secs,
            member_updates: updates_after[i]
                .zip(updates_before[i])
                .map(|(a, b)| a.saturating_sub(b)),
        });
        for (kind, s) in &spent {
            *by_thread.entry(kind.clone()).or_default() +=
                s.ticks as f64 / tick * 60.0 / secs / n as f64;
        }
    }
    let rates =
        |f: fn(&HostIdle) -> f64| Distribution::of(&by_host.iter().map(f).collect::<Vec<_>>());
    report.idle_cpu_secs_per_min = Distribution::of(&cpu);
    report.idle_wakeups_per_sec = Distribution::of(&wakeups);
    report.idle_control_bytes_per_sec = Distribution::of(&control_bytes);
    report.idle_data_bytes_per_sec = Distribution::of(&data_bytes);
    report.idle_control_datagrams_per_sec = rates(|h| h.control_datagrams_per_sec);
    report.idle_data_datagrams_per_sec = rates(|h| h.data_datagrams_per_sec);
    report.idle_probe_datagrams_per_sec = rates(|h| h.probe_datagrams_per_sec);
    report.idle_relay_datagrams_per_sec = rates(|h| h.relay_datagrams_per_sec);
    report.idle_by_host = by_host;
    report.idle_cpu_by_thread = by_thread;
    report.rss_mib = Distribution::of(
        &after
            .iter()
            .map(|(s, _)| s.rss_kib as f64 / 1024.0)
            .collect::<Vec<_>>(),
    );
    report.fds = Distribution::of(&after.iter().map(|(s, _)| s.fds as f64).collect::<Vec<_>>());
    report.threads = Distribution::of(
        &after
            .iter()
            .map(|(s, _)| s.threads as f64)
            .collect::<Vec<_>>(),
    );
    Ok(())
}

/// SIGKILLs a share of the hosts (never the seed), times until every other
/// host marks them down, restarts them and times until the mesh is whole.
fn kill_and_restart(lab: &mut Lab, opts: &Options, report: &mut Report) -> Result<()> {
    let n = opts.hosts;
    let k = ((n as f64 * opts.kill_share).round() as usize).max(1);
    // Spread over the hosts: 10 % of 50 kills h6, h16, h26, h36, h46.
    let victims: Vec<usize> = (0..k).map(|j| (j * n / k + n / (2 * k)).max(1)).collect();
    let names: Vec<String> = victims.iter().map(|&v| lab.hosts[v].name.clone()).collect();
    let survivors: Vec<usize> = (0..n).filter(|i| !victims.contains(i)).collect();
    eprintln!("scale: SIGKILL {}", names.join(" "));
    let killed = Instant::now();
    for &v in &victims {
        lab.stop_daemon(v, Signal::SIGKILL)?;
    }
    let lab_ref: &Lab = lab;
    let down = until_all(&survivors, Duration::from_millis(200), opts.timeout, |i| {
        let s = status(lab_ref, i)?;
        Ok(s.peers
            .iter()
            .filter(|p| names.contains(&p.name))
            .all(|p| p.state != PeerState::Up))
    })?;
    report.killed = names;
    report.marked_down_secs = latest(&down, killed).as_secs_f64();
    let restarted = Instant::now();
    for &v in &victims {
        lab.start_daemon(v)?;
    }
    let all: Vec<usize> = (0..n).collect();
    let lab_ref: &Lab = lab;
    let back = until_all(&all, Duration::from_millis(200), opts.timeout, |i| {
        Ok(up_names(&status(lab_ref, i)?).len() == n - 1)
    })?;
    report.back_up_secs = latest(&back, restarted).as_secs_f64();
    eprintln!(
        "scale: marked down after {:.2} s; whole again {:.2} s after the restarts began",
        report.marked_down_secs, report.back_up_secs
    );
    Ok(())
}
