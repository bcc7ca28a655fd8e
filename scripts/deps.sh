#!/usr/bin/env bash
# Installs the system packages the lab, the tests and the benchmark use.
# Idempotent; needs root. Only Debian's package registry is contacted, and
# crates.io for mdbook (the tests build the book in docs/) when it is missing.
#   scripts/deps.sh        # everything the tests use
#   scripts/deps.sh lab    # only what the main job (scripts/lab.sh) uses
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
updated=
install() {
  local need=() pair bin pkg
  for pair in "$@"; do
    bin=${pair%%:*}; pkg=${pair#*:}
    if [ "${bin#/}" != "$bin" ]; then [ -e "$bin" ] && continue; else command -v "$bin" >/dev/null 2>&1 && continue; fi
    need+=("$pkg")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  echo "installing: ${need[*]}"
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  # Packages installed for the tests must not start system services (on a
  # host with systemd, docker.io's dockerd would set the FORWARD policy to
  # DROP and unbound would take port 53): policy-rc.d refuses every start
  # while we install, unless the host already has a policy of its own.
  local policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && policy=1
  fi
  local rc=0
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  return $rc
}
install ip:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 nft:nftables getent:libc-bin sysctl:procps tar:tar
# meshd shapes container interfaces inside their namespaces (QoS).
install nsenter:util-linux tc:iproute2 bridge:iproute2
[ "${1:-}" = lab ] && exit 0
# Container runtimes for the CNI/OCI tests. runc first: podman accepts crun
# or runc, and crun fails on this kind of host's cgroup layout.
install runc:runc /bin/busybox:busybox-static
install podman:podman
# DNS lab test: dig, and a real caching resolver forwarding to mesh.
# (dnsperf and dnsmasq only for benches/dns.sh, which installs them.)
install dig:dnsutils unbound:unbound
# Path fault tests: flushing a NAT router's mappings.
install conntrack:conntrack
# WireGuard gateway test: a stock userspace client (no kernel module).
install wireguard-go:wireguard-go wg:wireguard-tools
# Docker plugin lab test: a private dockerd per lab host (docker.io brings
# containerd and runc); the package test reads man pages with man-db.
install dockerd:docker.io containerd:containerd man:man-db
# The web console's lab test: headless Chromium reads the pages, and an
# SSH tunnel (as README shows) reaches a loopback console.
install chromium:chromium ssh:openssh-client /usr/sbin/sshd:openssh-server ssh-keygen:openssh-client
# The book in docs/ (scripts/test.sh builds it): mdbook from crates.io,
# only when it is not on PATH already (building it takes minutes).
MDBOOK_VERSION=0.4.52
if ! command -v mdbook >/dev/null 2>&1; then
  echo "installing: mdbook $MDBOOK_VERSION (cargo install)"
  cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features --features search
fi
