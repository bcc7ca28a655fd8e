#!/usr/bin/env bash
# Builds the Debian package with cargo-deb: target/debian/mesh_<version>-1_<arch>.deb
# (meshd, meshctl, the CNI plugin, systemd unit, default config, man pages,
# bash/zsh/fish completions; see packaging/Cargo.toml).
#   scripts/package.sh        release build
# Environment: MESH_PACKAGE_PROFILE=release|debug (default release; CI
# packages the debug build it has already made).
# cargo-deb is installed from crates.io with cargo if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
PROFILE=${MESH_PACKAGE_PROFILE:-release}
case "$PROFILE" in
  release) build=(--release); deb=(); dir=release ;;
  debug) build=(); deb=(--profile dev); dir=debug ;;
  *) echo "MESH_PACKAGE_PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "installing cargo-deb (cargo install)"
  cargo install cargo-deb --locked --version 3.8.0
fi
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build "${build[@]}" -p mesh -p meshctl -p mesh-cni -p mesh-packaging --bins
# Man pages and completions, rendered from the clap definitions.
DOCS="$TARGET_DIR/$dir/package-docs"
rm -rf "$DOCS"
"$TARGET_DIR/$dir/mesh-gen-docs" "$DOCS"
gzip -9n "$DOCS"/man/*.8
cargo deb -p mesh-packaging --no-build "${deb[@]}" --strip --no-separate-debug-symbols --fast
