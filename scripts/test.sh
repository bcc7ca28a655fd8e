#!/usr/bin/env bash
# The test command (README): unit, property and namespace-lab tests.
# Run as root: the data-plane and lab tests build network namespaces, TAP
# devices and bridges (each with a unique prefix, removed on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The book (docs/, mdBook): links checked, then built.
bash scripts/check-docs.sh
# The lab tests run the meshd and meshctl binaries: build them first.
cargo build --workspace --bins
cargo test --workspace -- --test-threads 2
# Today's build in a mesh with the newest release's (PROTOCOL.md): only when
# the code differs from that release; its build is cached.
bash scripts/compat-release.sh
# The Debian package: build it (the debug binaries above), dpkg -i, check
# it, purge it. MESH_SKIP_PACKAGE=1 skips it.
if [ -z "${MESH_SKIP_PACKAGE:-}" ]; then
  MESH_PACKAGE_PROFILE=${MESH_PACKAGE_PROFILE:-debug} bash scripts/package-test.sh
fi
# The compose lab (docker-compose.yml, a private dockerd): only where it can
# run (root, /dev/net/tun, dockerd or apt-get); MESH_SKIP_COMPOSE=1 skips it.
if [ -z "${MESH_SKIP_COMPOSE:-}" ] && why=$(bash scripts/compose-test.sh --check); then
  MESH_COMPOSE_PROFILE=${MESH_COMPOSE_PROFILE:-debug} bash scripts/compose-test.sh
else
  echo "skipping the compose lab: ${why:-MESH_SKIP_COMPOSE is set}"
fi
