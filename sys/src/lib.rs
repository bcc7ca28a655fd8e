//! The recurring system chores of mesh, each written once and used by the
//! daemon, the CNI plugin, the lab and the tests:
//! - [`netns`]: run a closure on a fresh thread inside another namespace;
//! - [`fs`]: replace a file atomically (write, fsync, rename) with a fixed mode;
//! - [`ifaddrs`]: the host's own IP addresses;
//! - [`netwatch`]: the kernel's announcements of interface, address and
//!   route changes;
//! - [`socket`]: bind a root-only Unix socket to serve on.

pub mod fs;
pub mod ifaddrs;
pub mod netns;
pub mod netwatch;
pub mod socket;
