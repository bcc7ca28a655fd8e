#!/bin/sh
# Entry point of a compose mesh host (busybox sh).
#   MESH_SEED   empty on the first host; else host:port of it to join through
#   MESH_DEMO_IP   the demo workload's overlay address (ADDR/LEN)
#   MESH_DEMO_PING overlay addresses the workload pings, space separated
# The first host writes the join token to /shared/token; the others wait for
# it, join, and every host attaches a demo workload: a process in a network
# namespace of its own (unshare -n), attached with `meshctl attach PID`.
set -eu
NAME=${MESH_NAME:-$(hostname)}
NETWORK=${MESH_NETWORK:-demo}
SUBNET=${MESH_SUBNET:-198.19.77.0/24}
ADDR=$(ip -4 -o addr show dev eth0 | sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | head -n1)
mkdir -p /run/mesh /var/lib/mesh /tmp
# A token left from an earlier run must not be used (joiners retry anyway).
[ -z "${MESH_SEED:-}" ] && rm -f /shared/token

log() { echo "[$NAME] $*"; }

meshd --name "$NAME" --listen "$ADDR:7800" &
MESHD=$!
trap 'kill -TERM $MESHD 2>/dev/null; [ -n "${APP:-}" ] && kill -TERM $APP 2>/dev/null; wait $MESHD; exit 0' TERM INT

i=0
until meshctl status >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 200 ] && { log "meshd did not start"; exit 1; }
  sleep 0.1
done
log "meshd up at $ADDR:7800"

if [ -z "${MESH_SEED:-}" ]; then
  meshctl network list --json | grep -q "\"$NETWORK\"" || meshctl network create "$NETWORK" --subnet "$SUBNET"
  meshctl token > /shared/token.tmp && mv /shared/token.tmp /shared/token
  log "wrote the join token to /shared/token"
else
  i=0
  until [ -s /shared/token ]; do
    i=$((i + 1)); [ $i -gt 600 ] && { log "no token from the seed"; exit 1; }
    sleep 0.1
  done
  i=0
  until meshctl join "$MESH_SEED" --token "$(cat /shared/token)"; do
    i=$((i + 1)); [ $i -gt 60 ] && { log "cannot join $MESH_SEED"; exit 1; }
    sleep 1
  done
fi

# The demo workload: a process in a new network namespace, attached to the
# overlay (the network arrives by gossip on joining hosts: retry).
unshare -n sh -c 'ip link set lo up; exec sleep 2147483647' &
APP=$!
echo "$APP" > /run/mesh/app.pid
i=0
until meshctl attach "$APP" --network "$NETWORK" --ip "$MESH_DEMO_IP" --name "app-$NAME" >/dev/null; do
  i=$((i + 1)); [ $i -gt 60 ] && { log "cannot attach the workload"; exit 1; }
  sleep 1
done
log "workload (pid $APP) attached to $NETWORK as $MESH_DEMO_IP"

# Cross-host traffic, visible in `docker-compose logs`.
(
  while true; do
    for dst in ${MESH_DEMO_PING:-}; do
      if nsenter -t "$APP" -n ping -c 1 -W 1 "$dst" >/dev/null 2>&1; then
        log "workload -> $dst over the mesh: ok"
      else
        log "workload -> $dst: no answer yet"
      fi
    done
    sleep 10
  done
) &

wait $MESHD
