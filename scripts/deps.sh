#!/usr/bin/env bash
# Installs the system packages the lab, the tests and the benchmark use.
# Idempotent; needs root. Only Debian's package registry is contacted.
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
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
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
# Docker plugin lab test: a private dockerd per lab host (docker.io brings
# containerd and runc); the package test reads man pages with man-db.
install dockerd:docker.io containerd:containerd man:man-db
