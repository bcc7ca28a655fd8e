#!/usr/bin/env bash
# The test command (README): unit, property and namespace-lab tests.
# Run as root: the data-plane and lab tests build network namespaces, TAP
# devices and bridges (each with a unique prefix, removed on exit).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The book (docs/, mdBook): every relative link of README.md and the pages
# must point to a file that exists, and an #anchor to a heading of it; and
# the book must build: a SUMMARY entry without its page fails
# (create-missing = false). It is built under target/, never into docs/.
broken=0
for page in README.md docs/*.md; do
  while IFS= read -r link; do
    file=${link%%#*} anchor=
    [ "$file" = "$link" ] || anchor=${link#*#}
    case $file in http://*|https://*|mailto:*) continue ;; esac
    target=$(dirname "$page")/$file
    [ -n "$file" ] || target=$page
    if [ ! -e "$target" ]; then
      echo "$page: broken link ($link)"; broken=1
    elif [ -n "$anchor" ] && [ "${target%.md}" != "$target" ] &&
      ! sed -n 's/^#\{1,6\} //p' "$target" | tr 'A-Z' 'a-z' |
        sed 's/[^a-z0-9 _-]//g; s/ /-/g' | grep -qx -- "$anchor"; then
      echo "$page: no heading for #$anchor in $target"; broken=1
    fi
  done < <(grep -o '](\([^)]*\))' "$page" | sed 's/^](\(.*\))$/\1/')
done
[ "$broken" = 0 ] || { echo "broken links in the docs"; exit 1; }
mdbook build docs -d "$PWD/target/book"
# The lab tests run the meshd and meshctl binaries: build them first.
cargo build --workspace --bins
cargo test --workspace -- --test-threads 2
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
