#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gossip::{Config, Identity, MeshSecret, Node, PeerId, PeerInfo, PeerObserver, SessionKeys};

#[derive(Debug, Clone)]
pub enum Event {
    Up(PeerId),
    Down(PeerId),
    Install {
        peer: PeerId,
        keys: SessionKeys,
        send_now: bool,
    },
    Confirm(PeerId, u64),
}

/// Observer that records every callback in order.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl PeerObserver for Recorder {
    fn peer_up(&self, peer: &PeerInfo) {
        self.events.lock().unwrap().push(Event::Up(peer.id));
    }
    fn peer_down(&self, peer: &PeerId) {
        self.events.lock().unwrap().push(Event::Down(*peer));
    }
    fn install_keys(&self, peer: &PeerId, keys: SessionKeys, send_now: bool) {
        self.events.lock().unwrap().push(Event::Install {
            peer: *peer,
            keys,
            send_now,
        });
    }
    fn confirm_keys(&self, peer: &PeerId, generation: u64) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Confirm(*peer, generation));
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "gossip=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gossip-{tag}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn config(identity: Identity, observer: Arc<dyn PeerObserver>) -> Config {
    let mut cfg = Config::new(identity, MeshSecret::generate(), loopback(), observer);
    cfg.name = "test".into();
    cfg.anti_entropy_interval = Duration::from_secs(2);
    cfg
}

pub async fn start(observer: Arc<dyn PeerObserver>) -> Node {
    Node::start(config(Identity::generate().unwrap(), observer))
        .await
        .unwrap()
}

/// A seed plus `n - 1` nodes that joined through it.
pub async fn cluster(n: usize) -> Vec<Node> {
    let seed = start(Arc::new(gossip::node::NoopObserver)).await;
    let token: MeshSecret = seed.token().parse().unwrap();
    let mut nodes = vec![seed.clone()];
    for _ in 1..n {
        let node = start(Arc::new(gossip::node::NoopObserver)).await;
        node.join(&seed.local_addr().to_string(), &token)
            .await
            .unwrap();
        nodes.push(node);
    }
    nodes
}

/// Polls `cond` every 50 ms until true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn up_count(node: &Node) -> usize {
    node.members()
        .iter()
        .filter(|m| m.state == gossip::PeerState::Up)
        .count()
}

pub async fn shutdown_all(nodes: &[Node]) {
    for node in nodes {
        node.shutdown().await;
    }
}
