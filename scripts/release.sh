#!/usr/bin/env bash
# Finds releases in the history itself (tags may not travel with the
# repository): a release is the commit that set the workspace version in
# Cargo.toml to X.Y.Z and whose CHANGELOG.md has a "## [X.Y.Z]" section.
#   scripts/release.sh latest     "VERSION COMMIT" of the newest release (nothing if none)
#   scripts/release.sh list       every release, newest first
#   scripts/release.sh current    the workspace version at HEAD
set -euo pipefail
cd "$(dirname "$0")/.."

# The workspace version at a commit (empty if none).
version_at() {
  git show "$1:Cargo.toml" 2>/dev/null |
    awk '/^\[workspace.package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/[" ]/,"",$0); sub(/^version=/,""); print; exit}'
}

releases() {
  local c v parent
  for c in $(git log --format=%H -- Cargo.toml); do
    v=$(version_at "$c")
    [ -n "$v" ] || continue
    parent=$(version_at "$c^" || true)
    [ "$v" != "$parent" ] || continue
    git show "$c:CHANGELOG.md" 2>/dev/null | grep -q "^## \[$v\]" || continue
    echo "$v $c"
  done
}

case "${1:-latest}" in
  latest) releases | sed -n 1p ;;
  list) releases ;;
  current) version_at HEAD ;;
  *) echo "usage: $0 latest|list|current" >&2; exit 2 ;;
esac
