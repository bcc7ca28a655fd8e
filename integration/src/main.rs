//! `mesh-lab`: the multi-host lab on one machine.
//!
//! `mesh-lab demo` builds N hosts as network namespaces, starts meshd on
//! each, joins them, attaches a container per host, shows them talking over
//! the encrypted mesh, and tears everything down. `mesh-lab up` does the
//! same and keeps the lab until Ctrl-C.

use anyhow::Result;
use clap::{Parser, Subcommand};
use integration::scale::{file_label, side_by_side, Report};
use integration::{unique_prefix, Lab};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mesh-lab",
    about = "A multi-host mesh lab in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab, show cross-host traffic and status, tear down.
    Demo {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
    },
    /// Build the lab and keep it until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
    },
    /// End-to-end benchmark: the mesh (direct and relayed) against the
    /// plain underlay, kernel VXLAN, tinc, wireguard-go, boringtun and
    /// gotatun, container to container across two hosts; prints one table
    /// and writes TSV+JSON raw results.
    Bench {
        /// Comma-separated modes: underlay,vxlan,tinc,wggo,boringtun,gotatun,mesh,mesh-chacha,mesh-relay (or all).
        #[arg(long, value_delimiter = ',', default_value = "all")]
        modes: Vec<String>,
        /// iperf3 duration per measurement, seconds.
        #[arg(long, default_value_t = 10)]
        secs: u32,
        /// Repetitions per mode (the table shows medians).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Pings per RTT measurement (0.2 s apart).
        #[arg(long, default_value_t = 20)]
        pings: u32,
        /// TSV of raw results (the JSON goes next to it); default /tmp/mesh-bench-<time>.tsv.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Service VIP against the target's own address: new connections/s and
    /// one TCP stream, as ratios.
    SvcBench {
        /// iperf3 duration, seconds (connection rates run min(secs, 5) s).
        #[arg(long, default_value_t = 10)]
        secs: u32,
    },
    /// Scale lab: N complete meshd hosts joined through one seed; measures
    /// convergence, change propagation, pings, idle cost per daemon and
    /// recovery from SIGKILL, and prints one table (see docs/scale.md).
    /// `--compare A.json --against B.json` runs nothing and prints two
    /// saved reports side by side.
    Scale {
        #[arg(long, default_value_t = 50)]
        hosts: usize,
        /// Seconds over which the idle cost is measured.
        #[arg(long, default_value_t = 60)]
        idle_secs: u64,
        /// Containers on other hosts each host pings.
        #[arg(long, default_value_t = 3)]
        pings: usize,
        /// Percentage of hosts SIGKILLed and restarted.
        #[arg(long, default_value_t = 10)]
        kill_percent: u32,
        /// Also write the raw numbers as JSON here.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// A report saved earlier with --out: print it next to this run's.
        #[arg(long, value_name = "FILE")]
        compare: Option<std::path::PathBuf>,
        /// With --compare: run nothing, print the two saved reports side by
        /// side (--compare's on the left).
        #[arg(
            long,
            value_name = "FILE",
            requires = "compare",
            conflicts_with = "out"
        )]
        against: Option<std::path::PathBuf>,
    },
    /// Soak: three hosts under iperf3 load and attach/detach churn; every
    /// meshd's RSS and open fds sampled each minute, growth printed.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Ctrl-C must reach Drop, which removes the namespaces.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let r = match cli.command {
        Cmd::Demo { hosts } => demo(hosts, false),
        Cmd::Up { hosts } => demo(hosts, true),
        Cmd::Bench {
            modes,
            secs,
            runs,
            pings,
            out,
        } => integration::bench::run_bench(
            &integration::bench::Options {
                modes,
                secs,
                runs,
                pings,
                out,
            },
            &STOP,
        ),
        Cmd::SvcBench { secs } => integration::svcbench::run(secs),
        Cmd::Scale {
            hosts,
            idle_secs,
            pings,
            kill_percent,
            out,
            compare,
            against,
        } => match (compare, against) {
            (Some(a), Some(b)) => compare_saved(&a, &b),
            (compare, _) => scale(hosts, idle_secs, pings, kill_percent, out, compare),
        },
        Cmd::Soak { minutes } => integration::soak::run(minutes, &STOP),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-lab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn scale(
    hosts: usize,
    idle_secs: u64,
    pings: usize,
    kill_percent: u32,
    out: Option<std::path::PathBuf>,
    compare: Option<std::path::PathBuf>,
) -> Result<()> {
    // Read before the run: a bad file must not cost a whole lab.
    let earlier = compare
        .map(|path| Ok::<_, anyhow::Error>((Report::load(&path)?, file_label(&path))))
        .transpose()?;
    let opts = integration::scale::Options {
        idle: Duration::from_secs(idle_secs),
        ping_fanout: pings,
        kill_share: f64::from(kill_percent) / 100.0,
        ..integration::scale::Options::new(hosts)
    };
    let report = integration::scale::run(&opts, &STOP)?;
    print!("{}", report.table());
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("raw numbers: {}", path.display());
    }
    if let Some((earlier, label)) = earlier {
        print!("\n{}", side_by_side(&label, &earlier, "this run", &report));
    }
    Ok(())
}

/// `--compare A --against B`: two saved reports, nothing run.
fn compare_saved(a: &std::path::Path, b: &std::path::Path) -> Result<()> {
    let (ra, rb) = (Report::load(a)?, Report::load(b)?);
    let (mut la, mut lb) = (file_label(a), file_label(b));
    if la == lb {
        (la, lb) = (a.display().to_string(), b.display().to_string());
    }
    print!("{}", side_by_side(&la, &ra, &lb, &rb));
    Ok(())
}

fn step(msg: &str) -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    println!("\n==> {msg}");
    Ok(())
}

fn demo(hosts: usize, hold: bool) -> Result<()> {
    let hosts = hosts.clamp(2, 20);
    step(&format!(
        "building {hosts} hosts as network namespaces on a shared underlay"
    ))?;
    let mut lab = Lab::new(&unique_prefix("demo"), hosts)?;
    for h in &lab.hosts {
        println!("    {} in netns {} at {}", h.name, h.netns, h.underlay_ip);
    }
    step("starting meshd on every host and joining hosts 2.. through host 1")?;
    lab.start_mesh()?;
    step("creating network `demo` (198.19.1.0/24) on host 1")?;
    print!(
        "{}",
        lab.meshctl(
            0,
            &["network", "create", "demo", "--subnet", "198.19.1.0/24"]
        )?
    );
    let mut containers = Vec::new();
    for i in 0..hosts {
        let ns = lab.add_container(&format!("c{}", i + 1))?;
        let ip = format!("198.19.1.{}/24", i + 10);
        let a = lab.attach(i, &ns, "demo", &ip)?;
        println!(
            "    container {ns} on {} attached as {} ({})",
            lab.hosts[i].name, a.ip, a.ifname
        );
        containers.push((ns, format!("198.19.1.{}", i + 10)));
    }
    step("pinging across hosts through the encrypted mesh")?;
    let (src, _) = containers[0].clone();
    for (_, dst) in &containers[1..] {
        lab.wait_ping(&src, dst, Duration::from_secs(10))?;
        let out = lab
            .exec(&src, &["ping", "-n", "-c", "3", "-i", "0.2", dst])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "    {src} -> {dst}: {}",
            text.lines().last().unwrap_or("").trim()
        );
    }
    if integration::which("iperf3").is_some() {
        step("TCP throughput container 1 -> container 2 (iperf3, 3 s)")?;
        let (dst_ns, dst) = containers[1].clone();
        let server = lab.spawn_helper({
            let mut c = lab.exec(&dst_ns, &["iperf3", "-s", "-1"]);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            c
        })?;
        std::thread::sleep(Duration::from_millis(300));
        let out = lab
            .exec(&src, &["iperf3", "-c", &dst, "-t", "3", "-f", "g"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text
            .lines()
            .filter(|l| l.contains("receiver") || l.contains("sender"))
        {
            println!("    {}", l.trim());
        }
        lab.stop_helper(server)?;
    }
    step("meshctl status on host 1")?;
    print!("{}", lab.meshctl(0, &["status"])?);
    if hold {
        step("lab is up; Ctrl-C tears it down")?;
        println!(
            "    enter a container:  ip netns exec {} bash",
            containers[0].0
        );
        println!(
            "    talk to host 1:     {} --socket {} status",
            lab.bin("meshctl").display(),
            lab.hosts[0].socket.display()
        );
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\n==> tearing down");
    drop(lab);
    println!("    done");
    Ok(())
}
