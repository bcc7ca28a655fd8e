#!/usr/bin/env bash
# The compose lab: three mesh hosts in containers (docker-compose.yml).
#   scripts/compose-test.sh           install, start a private dockerd, build,
#                                     up, check cross-host traffic and peers,
#                                     tear everything down (also on failure)
#   scripts/compose-test.sh up        the same, but leave it up until Ctrl-C
#   scripts/compose-test.sh --check   exit 0 if this machine can run it
# Environment: MESH_COMPOSE_PROFILE=release|debug (default release).
#
# dockerd is our own: its own socket, exec root and data root, started with
# --iptables=false --ip-forward=false --bridge=none (a plain dockerd sets the
# FORWARD policy to DROP and breaks every other bridge), stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-test}

can_run() {
  [ "$(id -u)" = 0 ] || { echo "needs root"; return 1; }
  [ -c /dev/net/tun ] || { echo "no /dev/net/tun"; return 1; }
  command -v dockerd >/dev/null 2>&1 || command -v apt-get >/dev/null 2>&1 ||
    { echo "no dockerd and no apt-get to install it"; return 1; }
  [ "$(uname -m)" = x86_64 ] || { echo "the static build targets x86_64"; return 1; }
  return 0
}
if [ "$MODE" = --check ]; then can_run; exit; fi
can_run >&2 || { echo "compose-test: cannot run here" >&2; exit 1; }

# --- packages (Debian's registry only) ---
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- static binaries and the image root ---
PROFILE=${MESH_COMPOSE_PROFILE:-release}
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-target}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
echo "building static meshd and meshctl ($PROFILE)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build "${flag[@]}" --target "$TARGET" -p mesh -p meshctl --bins
BIN="$TARGET_DIR/$TARGET/$PROFILE"
for b in meshd meshctl; do
  if ldd "$BIN/$b" 2>/dev/null | grep -q '=>'; then echo "$BIN/$b is not static" >&2; exit 1; fi
done
ROOTFS=docker/build/rootfs
rm -rf docker/build
mkdir -p "$ROOTFS/bin" "$ROOTFS/usr/bin" "$ROOTFS/tmp" "$ROOTFS/run" "$ROOTFS/var/lib/mesh" \
         "$ROOTFS/etc" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/shared"
cp /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"; done
cp "$BIN/meshd" "$BIN/meshctl" "$ROOTFS/usr/bin/"
# nft, with the libraries and loader it needs: meshd programs port security,
# isolation and policy with it (an attach fails without port security).
cp "$(command -v nft)" "$ROOTFS/usr/bin/nft"
for lib in $(ldd "$(command -v nft)" | grep -o '/[^ ]*'); do
  cp --parents -L "$lib" "$ROOTFS"
done
for f in /etc/protocols /etc/services; do [ -e "$f" ] && cp "$f" "$ROOTFS/etc/"; done
! command -v strip >/dev/null 2>&1 || strip "$ROOTFS/usr/bin/meshd" "$ROOTFS/usr/bin/meshctl"
chmod 1777 "$ROOTFS/tmp"

# --- a private dockerd ---
RUN_DIR=/run/mesh-compose.$$
DATA_DIR=/var/lib/mesh-compose.$$
mkdir -p "$RUN_DIR" "$DATA_DIR"
export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
export COMPOSE_PROJECT_NAME="meshc$$"
DOCKERD_PID=
BRIDGE=
cleanup() {
  set +e
  if [ -n "$DOCKERD_PID" ]; then
    echo "tearing down the compose lab"
    timeout 120 docker-compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    kill -TERM "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$DOCKERD_PID" 2>/dev/null
    wait "$DOCKERD_PID" 2>/dev/null
    [ -n "$BRIDGE" ] && ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  fi
  rm -rf "$RUN_DIR" "$DATA_DIR" docker/build
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# setsid: its own process group, so a Ctrl-C reaches this script (which
# tears down through dockerd) but not dockerd itself.
setsid dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
  --host "$DOCKER_HOST" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
  --data-root "$DATA_DIR" >"$RUN_DIR/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for i in $(seq 1 150); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || { cat "$RUN_DIR/dockerd.log" >&2; echo "dockerd exited" >&2; exit 1; }
  [ "$i" = 150 ] && { tail -20 "$RUN_DIR/dockerd.log" >&2; echo "dockerd did not come up" >&2; exit 1; }
  sleep 0.2
done
echo "dockerd (pid $DOCKERD_PID) is up"

START=$(date +%s)
docker-compose build
docker-compose up -d
BRIDGE=br-$(docker network inspect -f '{{.Id}}' "${COMPOSE_PROJECT_NAME}_underlay" | cut -c1-12)

dc_exec() { docker-compose exec -T "$@"; }
fail() {
  echo "compose-test: FAILED: $*" >&2
  docker-compose ps >&2 || true
  docker-compose logs --tail 40 >&2 || true
  exit 1
}

# Every host sees both others up with session keys.
peers_up() {
  dc_exec "$1" meshctl status --json 2>/dev/null |
    tr -d ' \n' | grep -o '"state":"up"' | wc -l
}
for h in host1 host2 host3; do
  ok=
  for _ in $(seq 1 90); do
    [ "$(peers_up "$h")" -ge 2 ] && { ok=1; break; }
    sleep 1
  done
  [ -n "$ok" ] || fail "$h does not see 2 peers up"
done
echo "every host sees 2 peers up ($(( $(date +%s) - START )) s after up)"

# Workload to workload, across hosts, over the encrypted overlay.
wl_ping() {
  dc_exec "$1" sh -c "nsenter -t \$(cat /run/mesh/app.pid) -n ping -c 3 -W 2 $2"
}
for pair in "host1 198.19.77.2" "host1 198.19.77.3" "host2 198.19.77.3" "host3 198.19.77.1"; do
  set -- $pair
  ok=
  for _ in $(seq 1 30); do
    wl_ping "$1" "$2" >/dev/null 2>&1 && { ok=1; break; }
    sleep 1
  done
  [ -n "$ok" ] || fail "workload on $1 cannot reach $2"
  echo "workload on $1 -> $2: ok"
done

dc_exec host1 meshctl status
status=$(dc_exec host1 meshctl status)
echo "$status" | grep -q "2 peer(s) up" || fail "meshctl status on host1 does not show 2 peers up"
echo "compose lab: OK ($(( $(date +%s) - START )) s)"

if [ "$MODE" = up ]; then
  echo "leaving it up; Ctrl-C tears it down (DOCKER_HOST=$DOCKER_HOST docker-compose -p $COMPOSE_PROJECT_NAME ...)"
  docker-compose logs -f || true
fi
