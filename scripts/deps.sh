#!/usr/bin/env bash
# Installs the system packages the lab, the tests and the benchmark use.
# Idempotent; needs root. Only Debian's package registry is contacted.
set -euo pipefail
need=()
for pair in ip:iproute2 ping:iputils-ping tcpdump:tcpdump iperf3:iperf3 nft:nftables; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
