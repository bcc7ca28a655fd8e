#!/usr/bin/env bash
# The main job (README): a multi-host mesh lab on this machine. Builds
# release binaries, then `mesh-lab demo` builds 3 hosts as network
# namespaces, joins them, attaches a container per host, shows them talking
# through the encrypted mesh, and tears it all down.
#   scripts/lab.sh            # demo, then tear down
#   scripts/lab.sh up         # keep the lab until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh lab
cargo build --release --workspace --bins
exec ./target/release/mesh-lab "${1:-demo}" "${@:2}"
