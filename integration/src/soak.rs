//! `mesh-lab soak`: three hosts under iperf3 load and attach/detach churn
//! for a while, sampling every meshd's resident memory and open file
//! descriptors each minute; prints the samples and their growth. Not a
//! CI test: leaks show over tens of minutes (`scripts/soak.sh`).

use anyhow::{bail, Context, Result};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{unique_prefix, wait_for, Lab};

const SUBNET: &str = "198.19.9.0/24";
const HOSTS: usize = 3;

/// One meshd at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: u64,
}

/// VmRSS and the open descriptors of process `pid`.
pub fn usage(pid: u32) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS for {pid}"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count() as u64;
    Ok(Usage { rss_kib, fds })
}

/// Growth of one host from the first sample to the last, and over the
/// second half (after warm-up: caches, pools and tables filled).
pub fn growth(samples: &[Usage]) -> Option<(i64, i64, i64, i64)> {
    let (first, last) = (samples.first()?, samples.last()?);
    let mid = samples[samples.len() / 2];
    let d = |a: u64, b: u64| b as i64 - a as i64;
    Some((
        d(first.rss_kib, last.rss_kib),
        d(first.fds, last.fds),
        d(mid.rss_kib, last.rss_kib),
        d(mid.fds, last.fds),
    ))
}

fn shell_loop(lab: &Lab, ns: &str, script: &str) -> std::process::Command {
    let mut c = lab.exec(ns, &["bash", "-c", script]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

pub fn run(minutes: u64, stop: &AtomicBool) -> Result<()> {
    let mut lab = Lab::new(&unique_prefix("soak"), HOSTS)?;
    lab.start_mesh()?;
    lab.meshctl(0, &["network", "create", "soak", "--subnet", SUBNET])?;
    let mut steady = Vec::new();
    for i in 0..HOSTS {
        let ns = lab.add_container(&format!("c{}", i + 1))?;
        let ip = format!("198.19.9.{}", i + 1);
        wait_for(Duration::from_secs(10), || {
            lab.attach(i, &ns, "soak", &format!("{ip}/24"))
        })?;
        steady.push((ns, ip));
    }
    lab.wait_ping(&steady[0].0, &steady[1].1, Duration::from_secs(15))?;
    // A ring of iperf3 streams (c1→c2→c3→c1), capped so the soak loads
    // the mesh without starving the machine; restarted as they end.
    for (ns, ip) in &steady {
        lab.spawn_helper(shell_loop(
            &lab,
            ns,
            &format!("exec iperf3 -s -B {ip} -p 5401"),
        ))?;
    }
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..HOSTS {
        let (ns, _) = &steady[i];
        let dst = &steady[(i + 1) % HOSTS].1;
        let script = format!(
            "while true; do iperf3 -c {dst} -p 5401 -t 30 -b 50M >/dev/null; sleep 1; done"
        );
        lab.spawn_helper(shell_loop(&lab, ns, &script))?;
    }
    let churn: Vec<String> = (0..HOSTS)
        .map(|i| lab.add_container(&format!("k{}", i + 1)))
        .collect::<Result<_>>()?;

    let pids: Vec<u32> = lab
        .hosts
        .iter()
        .map(|h| h.daemon_pid().context("meshd not running"))
        .collect::<Result<_>>()?;
    let mut samples: Vec<Vec<Usage>> = vec![Vec::new(); HOSTS];
    let sample = |samples: &mut Vec<Vec<Usage>>, at: Duration| -> Result<()> {
        let mut row = format!("{:>5.1} min", at.as_secs_f64() / 60.0);
        for (i, pid) in pids.iter().enumerate() {
            let u = usage(*pid)?;
            row.push_str(&format!(
                "  h{}: {:>7} KiB {:>4} fds",
                i + 1,
                u.rss_kib,
                u.fds
            ));
            samples[i].push(u);
        }
        println!("{row}");
        Ok(())
    };

    println!(
        "soak: {minutes} min, iperf3 ring at 50 Mbit/s per stream, attach/detach churn every 2 s"
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut next_sample = start;
    let (mut cycles, mut failures) = (0u64, 0u64);
    let mut turn = 0usize;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() >= next_sample {
            sample(&mut samples, start.elapsed())?;
            next_sample += Duration::from_secs(60);
        }
        let i = turn % HOSTS;
        turn += 1;
        let path = format!("/run/netns/{}", churn[i]);
        let name = format!("churn{}", turn % 7);
        let ok = lab
            .meshctl(i, &["attach", &path, "--network", "soak", "--name", &name])
            .and_then(|_| lab.meshctl(i, &["detach", &path, "--network", "soak"]));
        cycles += 1;
        if let Err(e) = ok {
            failures += 1;
            eprintln!("churn on h{}: {e:#}", i + 1);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    sample(&mut samples, start.elapsed())?;
    for (i, pid) in pids.iter().enumerate() {
        if lab.hosts[i].daemon_pid() != Some(*pid) {
            bail!("meshd on h{} restarted during the soak", i + 1);
        }
    }
    println!("\nattach/detach cycles: {cycles}, failed: {failures}");
    println!("growth per meshd (whole run; second half):");
    for (i, s) in samples.iter().enumerate() {
        if let Some((rss, fds, rss2, fds2)) = growth(s) {
            println!(
                "  h{}: RSS {rss:+} KiB, fds {fds:+}; second half: RSS {rss2:+} KiB, fds {fds2:+}",
                i + 1
            );
        }
    }
    lab.wait_ping(&steady[0].0, &steady[2].1, Duration::from_secs(10))
        .context("containers still talk after the soak")?;
    if failures > 0 {
        bail!("{failures} of {cycles} attach/detach cycles failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_is_read_and_growth_is_last_minus_first() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_kib > 0 && u.fds >= 3, "{u:?}");
        let s = |rss_kib, fds| Usage { rss_kib, fds };
        assert_eq!(
            growth(&[s(100, 10), s(150, 12), s(140, 11)]),
            Some((40, 1, -10, -1))
        );
        assert_eq!(growth(&[]), None);
    }
}
