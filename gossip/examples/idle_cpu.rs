//! Process CPU time of an idle 3-node in-process mesh over 10 s (getrusage).
//!
//! `cargo run --release -p gossip --example idle_cpu`

use std::sync::Arc;
use std::time::{Duration, Instant};

use gossip::node::NoopObserver;
use gossip::{Config, Identity, LwwMap, MeshSecret, Node, PeerState};

fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut nodes = Vec::new();
    let secret = MeshSecret::generate();
    for i in 0..3 {
        let cfg = Config::new(
            Identity::generate().unwrap(),
            secret.clone(),
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(NoopObserver),
        );
        let node = Node::start(cfg).await.unwrap();
        if i > 0 {
            let seed: &Node = &nodes[0];
            node.join(&seed.local_addr().to_string(), &secret)
                .await
                .unwrap();
        }
        nodes.push(node);
    }
    let channels: Vec<_> = nodes
        .iter()
        .map(|n| n.channel("dns", LwwMap::<String, String>::new()))
        .collect();
    let writer = nodes[0].id();
    channels[0].modify(|m| m.set(writer, "a".into(), "b".into()));
    while !nodes.iter().all(|n| {
        n.members()
            .iter()
            .filter(|m| m.state == PeerState::Up)
            .count()
            == 2
    }) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes = |nodes: &[Node]| {
        nodes
            .iter()
            .flat_map(|n| n.members())
            .map(|m| m.bytes_sent)
            .sum::<u64>()
    };
    let (cpu0, wall0, bytes0) = (cpu_time(), Instant::now(), bytes(&nodes));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu, wall, sent) = (cpu_time() - cpu0, wall0.elapsed(), bytes(&nodes) - bytes0);
    println!(
        "idle 3-node mesh: {cpu:?} CPU over {wall:?} = {:.3}% of one core; {sent} UDP bytes sent ({:.0} B/s per node)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64() / 3.0
    );
    for node in &nodes {
        node.shutdown().await;
    }
}
