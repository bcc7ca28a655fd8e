//! A raw member: a gossip node the test drives by hand, joined to a lab
//! mesh with its token. It writes to the replicated channels what an
//! attacker holding one member host could write, past the daemon's API:
//! the daemons' guards see an authenticated member. It runs in one of the
//! lab's namespaces (a host whose daemon is not started) on a thread and
//! runtime of its own.

use anyhow::{Context, Result};
use gossip::{Identity, MeshSecret, Node, PeerId, PeerInfo, PeerObserver, SessionKeys};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime, &Node) + Send>;

pub struct RawMember {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub id: PeerId,
}

/// A member that takes no data-plane keys.
struct Quiet;

impl PeerObserver for Quiet {
    fn peer_up(&self, _: &PeerInfo) {}
    fn peer_down(&self, _: &PeerId) {}
    fn install_keys(&self, _: &PeerId, _: SessionKeys, _: bool) {}
    fn confirm_keys(&self, _: &PeerId, _: u64) {}
}

impl RawMember {
    /// Starts a node named `name` on `listen` inside the network namespace
    /// `netns` (`/run/netns/<netns>`) and joins the mesh at `seed`.
    pub fn join(
        netns: &str,
        name: &str,
        listen: SocketAddr,
        seed: &str,
        token: &str,
    ) -> Result<RawMember> {
        let fd = mesh_sys::netns::open(format!("/run/netns/{netns}"))?;
        let secret = MeshSecret::from_str(token.trim()).context("the mesh token")?;
        let (name, seed) = (name.to_string(), seed.to_string());
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Result<PeerId>>();
        let thread = std::thread::spawn(move || {
            let started = (|| -> Result<(tokio::runtime::Runtime, Node)> {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("entering the member's namespace")?;
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()?;
                let node = rt.block_on(async {
                    let mut cfg = gossip::Config::new(
                        Identity::generate()?,
                        MeshSecret::generate(),
                        listen,
                        Arc::new(Quiet),
                    );
                    cfg.name = name;
                    let node = Node::start(cfg).await?;
                    node.join(&seed, &secret).await?;
                    anyhow::Ok(node)
                })?;
                Ok((rt, node))
            })();
            let (rt, node) = match started {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(node.id()));
            for job in rx {
                job(&rt, &node);
            }
            rt.block_on(node.shutdown());
        });
        let id = ready.recv().context("the member's thread ended")??;
        Ok(RawMember {
            jobs: Some(jobs),
            thread: Some(thread),
            id,
        })
    }

    /// Runs `f` with the member's node, inside its runtime.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce(&Node) -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |rt, node| {
            let _guard = rt.enter();
            let _ = tx.send(f(node));
        });
        self.jobs
            .as_ref()
            .expect("the member runs")
            .send(job)
            .expect("the member's thread runs");
        rx.recv().expect("the member's thread answers")
    }
}

impl Drop for RawMember {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
