//! Namespace plumbing shared by the data plane's root tests (netns.rs,
//! netns_workers.rs).
#![allow(dead_code)]

use std::process::Command;
use std::thread;

/// Why the root tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, TAP devices)");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun missing");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` command missing (iproute2)");
    }
    None
}

/// Runs `ip ARGS…`; a failure fails the test with ip's own message.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Deletes the namespaces (and with them the veth and TAPs) even on panic.
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs `f` inside namespace `ns` (on mesh-sys's fresh thread) without
/// waiting for it: the probes on both sides run at the same time.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || mesh_sys::netns::run_in_net(&path, f).expect("inside the namespace"))
}
