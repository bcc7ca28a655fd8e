#!/usr/bin/env bash
# The test command (README): unit, property and namespace-lab tests.
# Run as root: the data-plane and lab tests build network namespaces, TAP
# devices and bridges (each with a unique prefix, removed on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The lab tests run the meshd and meshctl binaries: build them first.
cargo build --workspace --bins
cargo test --workspace -- --test-threads 2
