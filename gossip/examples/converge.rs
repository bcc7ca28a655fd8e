//! Convergence time and bytes for one channel change in an in-process mesh.
//!
//! `cargo run --release -p gossip --example converge -- [nodes]` (default 50).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gossip::node::NoopObserver;
use gossip::{Config, Identity, LwwMap, MeshSecret, Node, PeerState};

fn total_bytes_sent(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .flat_map(|n| n.members())
        .map(|m| m.bytes_sent)
        .sum()
}

async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let start = |secret: MeshSecret| async move {
        let mut cfg = Config::new(
            Identity::generate().unwrap(),
            secret,
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(NoopObserver),
        );
        // Slow background timers so the bytes of one change stand out from
        // heartbeats and anti-entropy (which the idle_cpu example measures).
        cfg.heartbeat_interval = Duration::from_secs(5);
        cfg.dead_after = Duration::from_secs(20);
        cfg.anti_entropy_interval = Duration::from_secs(30);
        Node::start(cfg).await.unwrap()
    };
    let seed = start(MeshSecret::generate()).await;
    let token: MeshSecret = seed.token().parse().unwrap();
    let begin = Instant::now();
    let mut nodes = vec![seed.clone()];
    for _ in 1..count {
        let node = start(MeshSecret::generate()).await;
        node.join(&seed.local_addr().to_string(), &token)
            .await
            .unwrap();
        nodes.push(node);
    }
    let joined = begin.elapsed();
    let full_mesh = wait_for(Duration::from_secs(120), || {
        nodes.iter().all(|n| {
            n.members()
                .iter()
                .filter(|m| m.state == PeerState::Up)
                .count()
                == count - 1
        })
    })
    .await;
    println!("nodes: {count}");
    println!("all joins returned after: {joined:?}");
    println!(
        "full mesh ({} connections) after joins: {full_mesh:?}",
        count * (count - 1) / 2
    );

    let channels: Vec<_> = nodes
        .iter()
        .map(|n| n.channel("bench", LwwMap::<String, String>::new()))
        .collect();
    // Let registration traffic and handshakes settle.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let idle_window = Duration::from_secs(3);
    let before_idle = total_bytes_sent(&nodes);
    tokio::time::sleep(idle_window).await;
    let idle_bytes = total_bytes_sent(&nodes) - before_idle;

    // Five separate changes from different writers; each is timed from the
    // write until every node holds it.
    for round in 0..5usize {
        let before = total_bytes_sent(&nodes);
        let key = format!("service-{round}");
        let writer_index = (count / 2 + round * 7) % count;
        let writer = nodes[writer_index].id();
        let t0 = Instant::now();
        channels[writer_index].modify(|m| m.set(writer, key.clone(), "10.32.0.1".into()));
        let mut converged = None;
        while t0.elapsed() < Duration::from_secs(60) {
            if channels.iter().all(|c| c.get().contains_key(&key)) {
                converged = Some(t0.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Let trailing ACKs go out, then subtract the idle background rate.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let window = t0.elapsed();
        let spent = total_bytes_sent(&nodes) - before;
        let background = idle_bytes as f64 * window.as_secs_f64() / idle_window.as_secs_f64();
        println!(
            "change {round}: reached all {count} nodes in {converged:?}; UDP bytes in the {:.0} ms window {spent} (background ≈ {background:.0}, change ≈ {:.0})",
            window.as_secs_f64() * 1e3,
            spent as f64 - background
        );
    }
    println!(
        "idle background: {:.0} B/s for the whole mesh ({:.0} B/s per node)",
        idle_bytes as f64 / idle_window.as_secs_f64(),
        idle_bytes as f64 / idle_window.as_secs_f64() / count as f64
    );
    for node in &nodes {
        node.shutdown().await;
    }
}
