//! The container's network namespace: is it one, and does it hold the
//! interface and address meshd gave it.

use crate::error::{codes, CniError};
use mesh_sys::netns;
use std::os::fd::AsRawFd;

/// Checks that `path` is a network namespace file: missing is code 3
/// (the container is gone), anything else that is not one is code 4.
pub fn check_netns(path: &str) -> Result<(), CniError> {
    let fd = netns::open(path).map_err(|e| match e {
        netns::Error::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            CniError::new(
                codes::UNKNOWN_CONTAINER,
                format!("CNI_NETNS {path}: no such namespace"),
            )
        }
        netns::Error::Open { source, .. } => CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path}: cannot open: {source}"),
        ),
        other => CniError::new(codes::INVALID_ENV, format!("CNI_NETNS {path}: {other}")),
    })?;
    let stat = nix::sys::statfs::fstatfs(&fd).map_err(|e| {
        CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path}: cannot inspect: {e}"),
        )
    })?;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    if stat.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path} is not a network namespace (not an nsfs file)"),
        ));
    }
    // NS_GET_NSTYPE = _IO(0xb7, 0x3): which kind of namespace the file is.
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), 0xb703 as _) };
    if t >= 0 && t != libc::CLONE_NEWNET {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("CNI_NETNS {path} is a namespace, but not a network namespace"),
        ));
    }
    Ok(())
}

/// Looks inside the namespace: `ifname` exists, is up, and carries `addr`
/// (`ADDR/LEN`).
pub fn inspect_netns(path: &str, ifname: &str, addr: &str) -> Result<(), String> {
    let want: std::net::IpAddr = addr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("bad address {addr:?}"))?;
    let (label, ifname) = (path.to_string(), ifname.to_string());
    let addr = addr.to_string();
    netns::run_in_net(path, move || -> Result<(), String> {
        let mut found = false;
        let mut up = false;
        let mut has_addr = false;
        for ifa in
            nix::ifaddrs::getifaddrs().map_err(|e| format!("listing interfaces in {label}: {e}"))?
        {
            if ifa.interface_name != ifname {
                continue;
            }
            found = true;
            up |= ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let a = ifa.address.as_ref();
            if let Some(sin) = a.and_then(|a| a.as_sockaddr_in()) {
                has_addr |= std::net::IpAddr::V4(sin.ip()) == want;
            }
            if let Some(sin6) = a.and_then(|a| a.as_sockaddr_in6()) {
                has_addr |= std::net::IpAddr::V6(sin6.ip()) == want;
            }
        }
        if !found {
            return Err(format!("interface {ifname} is missing in {label}"));
        }
        if !up {
            return Err(format!("interface {ifname} in {label} is down"));
        }
        if !has_addr {
            return Err(format!(
                "interface {ifname} in {label} lacks address {addr}"
            ));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_checks() {
        assert_eq!(check_netns("/nonexistent/ns").unwrap_err().code, 3);
        let e = check_netns("/etc/hostname").unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("not a network namespace"), "{}", e.msg);
        // Our own namespace is a real one.
        check_netns("/proc/self/ns/net").unwrap();
        // A mount namespace is nsfs but not a network namespace.
        if std::path::Path::new("/proc/self/ns/mnt").exists() {
            assert_eq!(check_netns("/proc/self/ns/mnt").unwrap_err().code, 4);
        }
    }

    #[test]
    fn inspecting_a_missing_namespace_or_interface_says_which() {
        let e = inspect_netns("/nonexistent/ns", "eth0", "10.0.0.2/24").unwrap_err();
        assert!(e.contains("/nonexistent/ns"), "{e}");
        assert!(inspect_netns("/proc/self/ns/net", "eth0", "nonsense")
            .unwrap_err()
            .contains("bad address"));
        // Entering our own namespace needs root; without it the error says so.
        let e = inspect_netns("/proc/self/ns/net", "no-such-if0", "10.0.0.2/24").unwrap_err();
        assert!(e.contains("no-such-if0") || e.contains("entering"), "{e}");
    }
}
