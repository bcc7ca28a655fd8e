//! `mesh-lab svc-bench`: what a service VIP costs. Two hosts, a backend
//! container on one and a client on the other; new TCP connections per
//! second and one iperf3 stream, through the VIP and to the target's own
//! address; printed with their VIP/direct ratios. Not a test: numbers only.

use anyhow::{Context, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::{unique_prefix, wait_for, Lab};

const NET: &str = "bench";
const IPERF_PORT: u16 = 5201;
const ACCEPT_PORT: u16 = 7000;

/// Accepts and drops connections in `ns` for as long as the process lives.
fn accept_forever(ns: &str, addr: SocketAddr) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let l = mesh_sys::netns::run_in_net(&path, move || TcpListener::bind(addr))??;
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    Ok(())
}

/// New connections per second from `ns` to `dst` over `secs` seconds.
fn connect_rate(ns: &str, dst: SocketAddr, secs: f64) -> Result<f64> {
    let path = format!("/run/netns/{ns}");
    mesh_sys::netns::run_in_net(&path, move || -> Result<f64> {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
                .with_context(|| format!("connect {dst}"))?;
            // RST on close: no TIME_WAIT pile-up on the client.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger)?;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    })?
}

pub fn run(secs: u32) -> Result<()> {
    let mut lab = Lab::new(&unique_prefix("svcb"), 2)?;
    lab.start_mesh()?;
    lab.meshctl(0, &["network", "create", NET, "--subnet", "10.78.0.0/24"])?;
    let server = lab.add_container("srv")?;
    let client = lab.add_container("cli")?;
    let local = lab.add_container("loc")?;
    let attach = |i: usize, ns: &str| -> Result<String> {
        let path = format!("/run/netns/{ns}");
        let a: mesh_api::Attachment = wait_for(Duration::from_secs(10), || {
            lab.meshctl_json(i, &["attach", &path, "--network", NET])
        })?;
        Ok(a.ip.split('/').next().unwrap_or_default().to_string())
    };
    let target = attach(0, &server)?;
    attach(1, &client)?;
    attach(0, &local)?;
    let ports = [format!("{IPERF_PORT}"), format!("{ACCEPT_PORT}")];
    let svc: mesh_api::Service = lab.meshctl_json(
        0,
        &[
            "service",
            "create",
            "b",
            "--network",
            NET,
            "--port",
            &ports[0],
            "--port",
            &ports[1],
        ],
    )?;
    lab.meshctl(0, &["service", "add", "b", &target])?;
    let srv_cmd = lab.exec(&server, &["iperf3", "-s", "-p", &IPERF_PORT.to_string()]);
    lab.spawn_helper(srv_cmd)?;
    accept_forever(&server, format!("{target}:{ACCEPT_PORT}").parse()?)?;
    let vip_accept: SocketAddr = format!("{}:{ACCEPT_PORT}", svc.vip).parse()?;
    let direct_accept: SocketAddr = format!("{target}:{ACCEPT_PORT}").parse()?;
    // The rules are in the client namespaces once a connect through the VIP works.
    for ns in [&client, &local] {
        wait_for(Duration::from_secs(10), || {
            connect_rate(ns, vip_accept, 0.1)
        })?;
    }
    let rate_secs = f64::from(secs.min(5));
    println!("service VIP vs the target's own address");
    println!(
        "{:<40} {:>10} {:>10} {:>7}",
        "", "direct", "via VIP", "ratio"
    );
    for (what, ns) in [("other host", &client), ("same host", &local)] {
        // Interleaved, best of three each: the machine may be shared.
        let (mut direct_cps, mut vip_cps) = (0f64, 0f64);
        for _ in 0..3 {
            direct_cps = direct_cps.max(connect_rate(ns, direct_accept, rate_secs)?);
            vip_cps = vip_cps.max(connect_rate(ns, vip_accept, rate_secs)?);
        }
        let direct_gbps = lab.iperf_gbps(ns, &target, IPERF_PORT, secs)?;
        let vip_gbps = lab.iperf_gbps(ns, &svc.vip, IPERF_PORT, secs)?;
        println!(
            "{:<40} {:>10.0} {:>10.0} {:>7.3}",
            format!("new connections/s, client on {what}"),
            direct_cps,
            vip_cps,
            vip_cps / direct_cps
        );
        println!(
            "{:<40} {:>10.2} {:>10.2} {:>7.3}",
            format!("1 TCP stream Gbit/s, client on {what}"),
            direct_gbps,
            vip_gbps,
            vip_gbps / direct_gbps
        );
    }
    Ok(())
}
