#!/usr/bin/env bash
# CI: runs the mixed-version lab test (integration/tests/versions.rs) with
# the newest release's meshd and meshctl on two of its three hosts (on a
# release commit, the release before it), whenever the code differs
# (PROTOCOL.md, "How this is tested").
# The release's binaries are built once from its commit and cached in
# $MESH_COMPAT_CACHE (default /var/cache/mesh-ci), one directory per commit.
# Needs the lab test's binaries built first (MESH_BIN_DIR, default
# target/debug). MESH_COMPAT_REF=COMMIT compares with that commit instead.
set -euo pipefail
cd "$(dirname "$0")/.."

code=(Cargo.toml Cargo.lock api sys dataplane gossip model dns docker mesh cli)
if [ -n "${MESH_COMPAT_REF:-}" ]; then
  version=ref
  commit=$(git rev-parse --verify "$MESH_COMPAT_REF^{commit}")
else
  # Releases are found in the history: a shallow clone has too little of it.
  if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    git fetch -q --unshallow 2>/dev/null ||
      echo "compat: warning: shallow clone and no remote to deepen it from: releases may be missed" >&2
  fi
  # The newest release whose code differs from HEAD's: on a release commit
  # itself, that is the release before it (PROTOCOL.md: the previous minor
  # release stays supported).
  version='' commit=''
  while read -r v c; do
    if ! git diff --quiet "$c" HEAD -- "${code[@]}"; then
      version=$v commit=$c
      break
    fi
  done < <(bash scripts/release.sh list)
fi
if [ -z "${commit:-}" ]; then
  echo "compat: no release in the history whose code differs from this one: nothing to compare with"
  exit 0
fi
if git diff --quiet "$commit" HEAD -- "${code[@]}"; then
  echo "compat: the code is release $version's ($commit): nothing to compare with"
  exit 0
fi

cache=${MESH_COMPAT_CACHE:-/var/cache/mesh-ci}/release-$commit
if [ ! -x "$cache/bin/meshd" ] || [ ! -x "$cache/bin/meshctl" ]; then
  echo "compat: building release $version ($commit) once, into $cache"
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  git archive "$commit" | tar -x -C "$src"
  mkdir -p "$cache"
  (cd "$src" && CARGO_TARGET_DIR="$cache/target" cargo build --locked -p mesh -p meshctl --bins)
  mkdir -p "$cache/bin"
  cp "$cache/target/debug/meshd" "$cache/target/debug/meshctl" "$cache/bin/"
  rm -rf "$cache/target"
fi
echo "compat: today's build against release $version ($commit)"
MESH_BIN_DIR=${MESH_BIN_DIR:-$PWD/target/debug} MESH_COMPAT_BIN_DIR=$cache/bin \
  cargo test -p integration --test versions -- --test-threads 1 latest_release
