#!/usr/bin/env bash
# End-to-end overlay benchmark: mesh vs the plain underlay, kernel VXLAN,
# tinc 1.0 (switch mode), wireguard-go, boringtun and gotatun, container to
# container across two hosts built as network namespaces (integration::Lab);
# mesh-relay: the same through a third host's relay (direct path blocked);
# mesh-tcp: the same over the TCP fallback (all UDP between the hosts dropped).
#
# Installs what it needs (Debian packages; boringtun-cli and gotatun-cli
# via cargo install if missing), builds the release binaries and runs
#   target/release/mesh-lab bench "$@"
# Options (passed through): --modes underlay,vxlan,tinc,wggo,boringtun,gotatun,mesh,mesh-chacha,mesh-relay,mesh-tcp
#   --secs N (default 10) --runs N (default 3) --pings N (default 20)
#   --out FILE.tsv (JSON written next to it; default /tmp/mesh-bench-<time>.tsv)
# Quick check:  benches/e2e.sh --secs 3 --runs 1
# Quicker:      benches/e2e.sh --modes underlay,mesh --secs 2 --runs 1
# Full run:     benches/e2e.sh            (about 15 minutes for all 9 modes)
#
# Needs root. Everything it creates lives in namespaces named ml<pid>b<n>-*
# and is removed on exit, failure or Ctrl-C.
# Env: CARGO_TARGET_DIR (default ./target), MESH_BIN_DIR (meshd/meshctl,
# default the release dir), SKIP_BUILD=1, SKIP_INSTALL=1; tool overrides
# TINCD WG WIREGUARD_GO BORINGTUN GOTATUN.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "e2e.sh: needs root (network namespaces, TUN/TAP)" >&2
  exit 1
fi

if [[ -z ${SKIP_INSTALL:-} ]]; then
  need=()
  for pair in ip:iproute2 ping:iputils-ping iperf3:iperf3 tincd:tinc \
              wireguard-go:wireguard-go wg:wireguard-tools timeout:coreutils; do
    bin=${pair%%:*}; pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
  done
  if (( ${#need[@]} )); then
    echo "e2e.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  # executable:crate
  for pair in boringtun-cli:boringtun-cli gotatun:gotatun-cli; do
    bin=${pair%%:*}; crate=${pair#*:}
    if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x ${CARGO_HOME:-$HOME/.cargo}/bin/$bin ]]; then
      echo "e2e.sh: cargo install $crate (a few minutes)" >&2
      # its own target dir, so the workspace's is not disturbed
      CARGO_TARGET_DIR=${TMPDIR:-/tmp}/$crate-build cargo install --locked "$crate" \
        || CARGO_TARGET_DIR=${TMPDIR:-/tmp}/$crate-build cargo install "$crate" \
        || echo "e2e.sh: $crate install failed; its row will say FAILED" >&2
    fi
  done
fi
export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"

target=${CARGO_TARGET_DIR:-$PWD/target}
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build --release --workspace --bins
fi
export MESH_BIN_DIR=${MESH_BIN_DIR:-$target/release}
exec "$target/release/mesh-lab" bench "$@"
