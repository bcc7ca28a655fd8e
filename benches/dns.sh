#!/usr/bin/env bash
# DNS benchmark (not a test): dnsperf against mesh's DNS and against
# dnsmasq serving the same names from a hosts file, on this machine, in
# one run; prints queries per second, latency, the servers' CPU time per
# query and the mesh/dnsmasq ratios (medians of alternating rounds).
#
#   sudo benches/dns.sh                       # 3 rounds of 5 s per server
#   sudo benches/dns.sh --secs 2 --rounds 1   # quick
# Options: --secs N (default 5) --rounds N (default 3) --names N (default
#   20) --clients N (dnsperf -c, default 4).
#
# Layout, all in namespaces named mldns<pid>-*, removed on exit:
#   -h1   meshd (listening on 198.18.0.1 on its loopback), network "bench" 198.19.9.0/24
#   -nI   N containers attached as nI.bench
#   -c    the client: attached to "bench" (asks mesh on the service address)
#         and on a veth to a bridge port in -dm (192.0.2.1/30)
#   -dm   dnsmasq on the bridge's address 192.0.2.2, hosts file with the
#         same nI.bench names
# The machine is shared: compare the two within one run, not across runs.
# Env: CARGO_TARGET_DIR (default ./target), MESH_BIN_DIR (default the
# release dir), SKIP_BUILD=1, SKIP_INSTALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=5 names=20 clients=4 rounds=3
while (($#)); do
  case $1 in
    --secs) secs=$2; shift 2 ;;
    --names) names=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "dns.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ $EUID -ne 0 ]]; then
  echo "dns.sh: needs root (network namespaces)" >&2
  exit 1
fi

if [[ -z ${SKIP_INSTALL:-} ]]; then
  need=()
  for pair in ip:iproute2 dnsperf:dnsperf dnsmasq:dnsmasq-base python3:python3; do
    bin=${pair%%:*}; pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
  done
  if (( ${#need[@]} )); then
    echo "dns.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
target=${CARGO_TARGET_DIR:-target}
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build --release --bins -p mesh -p meshctl >&2
fi
bin=${MESH_BIN_DIR:-$target/release}

P=mldns$$
dir=$(mktemp -d "/tmp/$P.XXXX")
namespaces=() pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ((i = ${#namespaces[@]} - 1; i >= 0; i--)); do
    ip netns del "${namespaces[i]}" 2>/dev/null || true
    # meshd writes each container's resolver config here.
    rm -rf "/etc/netns/${namespaces[i]}"
  done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM
netns() {
  ip netns add "$1"
  namespaces+=("$1")
  ip -n "$1" link set lo up
}
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
meshctl() { "$bin/meshctl" --socket "$dir/meshd.sock" "$@"; }

netns "$P-h1"
# One host, no peers: its control address can live on loopback.
ip -n "$P-h1" addr add 198.18.0.1/32 dev lo
# Started with plain `ip netns exec` (it execs): $! is the daemon itself.
ip netns exec "$P-h1" "$bin/meshd" --state-dir "$dir/h1" --listen 198.18.0.1:7800 \
  --api-socket "$dir/meshd.sock" --name h1 >"$dir/meshd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do meshctl status >/dev/null 2>&1 && break; sleep 0.1; done
meshctl network create bench --subnet 198.19.9.0/24 >/dev/null
dns=$(meshctl network list --json | python3 -c \
  'import json,sys; print(next(n["dns"] for n in json.load(sys.stdin) if n["id"]=="bench"))')

attach() { # ns name → address
  local out
  for _ in $(seq 50); do
    if out=$(meshctl attach "/run/netns/$1" --network bench --name "$2" --json 2>/dev/null); then
      python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"].split("/")[0])' <<<"$out"
      return
    fi
    sleep 0.2
  done
  echo "dns.sh: attaching $1 failed" >&2; return 1
}
: >"$dir/hosts"
: >"$dir/queries"
for ((i = 0; i < names; i++)); do
  netns "$P-n$i"
  addr=$(attach "$P-n$i" "n$i")
  echo "$addr n$i.bench" >>"$dir/hosts"
  echo "n$i.bench A" >>"$dir/queries"
done
netns "$P-c"
attach "$P-c" client >/dev/null
netns "$P-dm"
# dnsmasq on a bridge's address, as libvirt and most container hosts run
# it: a query crosses a bridge port (and br_netfilter's hooks, where that
# module is loaded) on its way to either server, not only to mesh's.
ip -n "$P-c" link add dm0 type veth peer name dm0 netns "$P-dm"
ip -n "$P-dm" link add br0 type bridge
ip -n "$P-dm" link set dm0 master br0
ip -n "$P-c" addr add 192.0.2.1/30 dev dm0
ip -n "$P-dm" addr add 192.0.2.2/30 dev br0
ip -n "$P-c" link set dm0 up
ip -n "$P-dm" link set dm0 up
ip -n "$P-dm" link set br0 up
ip netns exec "$P-dm" dnsmasq --keep-in-foreground --no-resolv --no-hosts --user=root \
  --pid-file= --addn-hosts="$dir/hosts" --listen-address=192.0.2.2 \
  --bind-interfaces --local=/bench/ --local-ttl=5 --cache-size=1000 \
  --log-facility="$dir/dnsmasq.log" &
pids+=($!)
sleep 0.5

# Both must answer the same names before they are measured.
for server in "$dns" 192.0.2.2; do
  for _ in $(seq 50); do
    got=$(in_ns "$P-c" dnsperf -s "$server" -d "$dir/queries" -n 1 2>/dev/null |
      awk '/Queries completed:/ {print $3}')
    [[ ${got:-0} -eq $names ]] && break
    sleep 0.2
  done
  in_ns "$P-c" dnsperf -s "$server" -d "$dir/queries" -n 1 2>/dev/null |
    grep -q "NOERROR $names" || { echo "dns.sh: $server does not answer every name" >&2; exit 1; }
done

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # label server pid → "qps latency_s cpu_us_per_query"
  local out qps lat done t0 t1
  t0=$(cpu_ticks "$3")
  out=$(in_ns "$P-c" dnsperf -s "$2" -d "$dir/queries" -l "$secs" -c "$clients" -q 200 2>&1)
  t1=$(cpu_ticks "$3")
  qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
  lat=$(awk '/Average Latency/ {print $4}' <<<"$out")
  done=$(awk '/Queries completed:/ {print $3}' <<<"$out")
  awk -v q="$qps" -v l="$lat" -v d="$done" -v t="$((t1 - t0))" -v hz="$hz" \
    'BEGIN { printf "%s %s %.2f\n", q, l, t / hz / d * 1e6 }'
}
# Alternating rounds, medians: the machine is shared, and a neighbour's
# burst should not land on one server only.
echo "dnsperf: $rounds rounds of $secs s per server, $names names, $clients clients" >&2
: >"$dir/mesh.txt"; : >"$dir/dnsmasq.txt"
for ((r = 0; r < rounds; r++)); do
  run mesh "$dns" "${pids[0]}" >>"$dir/mesh.txt"
  run dnsmasq 192.0.2.2 "${pids[1]}" >>"$dir/dnsmasq.txt"
done
python3 - "$dir/mesh.txt" "$dir/dnsmasq.txt" <<'PY'
import statistics, sys
def load(path):
    rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
    return [statistics.median(c) for c in zip(*rows)]
m, d = load(sys.argv[1]), load(sys.argv[2])
for name, (q, l, c) in (("mesh", m), ("dnsmasq", d)):
    print(f"{name:8} {q:10.0f} qps  {l * 1e3:7.3f} ms avg latency  {c:6.2f} us CPU/query")
print(f"ratio mesh/dnsmasq: {m[0] / d[0]:.2f}x qps, {m[1] / d[1]:.2f}x latency, "
      f"{m[2] / d[2]:.2f}x CPU per query")
PY
