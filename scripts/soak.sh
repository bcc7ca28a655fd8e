#!/usr/bin/env bash
# Soak (not in CI): three lab hosts under an iperf3 ring and attach/detach
# churn for SOAK_MINUTES (default 30); every meshd's RSS and open fds are
# sampled each minute and their growth printed. Root; traffic stays in the
# lab's namespaces, which are removed at the end (also on Ctrl-C).
#   scripts/soak.sh                     # 30 minutes, release build
#   SOAK_MINUTES=3 SOAK_PROFILE=debug scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${SOAK_MINUTES:-30}"
profile="${SOAK_PROFILE:-release}"
case "$minutes" in
    ''|*[!0-9]*) echo "SOAK_MINUTES must be a whole number of minutes, not '$minutes'" >&2; exit 2 ;;
esac
bash scripts/deps.sh lab
if [ "$profile" = release ]; then
    cargo build --release -p mesh -p meshctl -p integration --bins
else
    cargo build -p mesh -p meshctl -p integration --bins
fi
exec "./target/$profile/mesh-lab" soak --minutes "$minutes"
