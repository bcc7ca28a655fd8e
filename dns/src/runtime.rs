//! The thread DNS is served on: one current-thread runtime for every
//! network's sockets, apart from the daemon's work-stealing pool.
//!
//! Measured with `benches/dns.sh`: on the shared pool a quarter of the
//! server's CPU went to waking and switching worker threads (each ready
//! socket woke one worker, which woke another to steal), as much as
//! parsing and answering together. On its own thread a ready socket costs
//! one `epoll_wait` return, as in dnsmasq's single loop.

use std::future::Future;
use std::io;
use std::sync::Mutex;
use tokio::runtime::{Builder, Handle};
use tokio::task::JoinHandle;

static DNS: Mutex<Option<Handle>> = Mutex::new(None);

/// The DNS thread's runtime, started on first use.
fn handle() -> io::Result<Handle> {
    let mut dns = DNS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = dns.as_ref() {
        return Ok(h.clone());
    }
    let rt = Builder::new_current_thread().enable_all().build()?;
    let h = rt.handle().clone();
    std::thread::Builder::new()
        .name("mesh-dns".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    *dns = Some(h.clone());
    Ok(h)
}

/// Runs `f` in the DNS thread's context: sockets made in it are served
/// by that thread's reactor.
pub(crate) fn register<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let h = handle()?;
    let _in = h.enter();
    f()
}

/// Runs `task` on the DNS thread; aborting the handle stops it.
pub(crate) fn spawn<F>(task: F) -> io::Result<JoinHandle<()>>
where
    F: Future<Output = ()> + Send + 'static,
{
    Ok(handle()?.spawn(task))
}
