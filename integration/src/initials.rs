//! A flood of QUIC connection attempts from many source addresses whose
//! answers never come back — what spoofed Initial packets look like to the
//! host they hit (issue 27, item 5).
//!
//! The Initials are real ones (quinn builds them, ClientHello and padding
//! included), so the target's QUIC stack treats each as a new connection
//! attempt; an Initial that does not decrypt would be dropped before the
//! application sees it. Each attempt leaves from its own address of a
//! namespace the lab created; the caller makes the target's answers vanish
//! (a blackhole route back), as they would for a spoofed source. Attempts
//! are kept open, never closed, so the target holds whatever it allotted
//! them until its own timeout.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

pub struct InitialFlood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl InitialFlood {
    /// Starts sending, from namespace `netns` (by name, under /run/netns),
    /// `per_second` connection attempts to `target`, round robin over
    /// `sources` (addresses of that namespace).
    pub fn start(
        netns: &str,
        sources: Vec<IpAddr>,
        target: SocketAddr,
        per_second: u32,
    ) -> Result<InitialFlood> {
        let ns = std::fs::File::open(format!("/run/netns/{netns}"))
            .with_context(|| format!("opening namespace {netns}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            // Namespaces are per thread: this one only ever lives in `netns`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                let _ = ready_tx.send(Err(anyhow::anyhow!("setns: {e}")));
                return Err(e.into());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(flood(sources, target, per_second, &stop2, &sent2, ready_tx));
            rt.shutdown_timeout(Duration::from_millis(100));
            result
        });
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("the flood did not start"),
        }
        Ok(InitialFlood {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// Connection attempts sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for InitialFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn flood(
    sources: Vec<IpAddr>,
    target: SocketAddr,
    per_second: u32,
    stop: &AtomicBool,
    sent: &AtomicU64,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Result<()> {
    let identity = gossip::Identity::generate()?;
    let timers = gossip::transport::TransportTimers {
        keep_alive: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
    };
    let mut endpoints = Vec::new();
    for ip in &sources {
        // Bound on this thread, so the socket is this namespace's.
        let addr = SocketAddr::new(*ip, 0);
        let endpoint = match gossip::transport::bind_endpoint(&identity, addr, timers) {
            Ok(e) => e,
            Err(e) => {
                let _ = ready.send(Err(anyhow::anyhow!("endpoint on {addr}: {e}")));
                return Err(anyhow::anyhow!("endpoint on {addr}: {e}"));
            }
        };
        endpoints.push(endpoint);
    }
    let _ = ready.send(Ok(()));
    let mut pending = Vec::new();
    let interval = Duration::from_secs(1) / per_second.max(1);
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let endpoint = &endpoints[next % endpoints.len()];
        next += 1;
        if let Ok(connecting) = endpoint.connect(target, gossip::transport::SERVER_NAME) {
            // Held, never dropped: dropping would close the attempt.
            pending.push(tokio::spawn(async move {
                let _ = connecting.await;
            }));
            sent.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(interval).await;
    }
    for task in pending {
        task.abort();
    }
    Ok(())
}
