//! The scale simulation: the real gossip state machines for N hosts on
//! virtual time, full mesh against bounded neighbour sets.
//!
//! ```text
//! cargo run --release -p gossip --features sim --example scale_sim -- [N…] [--full-mesh-max M]
//! ```
//! Default N = 100 300 1000; the full mesh is simulated up to M = 300
//! (beyond, its join flood is O(N³) merges and takes too long to
//! simulate — which is the point).

use gossip::simnet::{Sim, SimConfig, SimReport, Topology};

fn main() -> std::process::ExitCode {
    let mut sizes = Vec::new();
    let mut full_mesh_max = 300usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = if arg == "--full-mesh-max" {
            args.next()
                .and_then(|v| v.parse().ok())
                .map(|v| full_mesh_max = v)
        } else {
            arg.parse().ok().map(|n| sizes.push(n))
        };
        if parsed.is_none() {
            eprintln!("usage: scale_sim [N…] [--full-mesh-max M]   (bad argument {arg:?})");
            return std::process::ExitCode::FAILURE;
        }
    }
    if sizes.is_empty() {
        sizes = vec![100, 300, 1000];
    }
    if let Some(n) = sizes.iter().find(|n| **n < 2) {
        eprintln!("scale_sim: N = {n} is too small (at least 2)");
        return std::process::ExitCode::FAILURE;
    }
    println!("{}", SimReport::HEADER);
    for &n in &sizes {
        for topology in [Topology::FullMesh, Topology::Bounded] {
            if topology == Topology::FullMesh && n > full_mesh_max {
                continue;
            }
            let report = Sim::new(SimConfig::new(n, topology)).run();
            println!("{report}");
            eprintln!(
                "  (N = {n} {topology:?}: {} events in {:.1} s wall; keys/host {:.0}; joins over {:.1} s)",
                report.events, report.wall_secs, report.keys.median, report.last_join_secs
            );
        }
    }
    std::process::ExitCode::SUCCESS
}
