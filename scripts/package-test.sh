#!/usr/bin/env bash
# CI: builds the Debian package (scripts/package.sh), installs it with
# `dpkg -i`, checks what it installed (binaries run, man pages, completions,
# CNI plugin, config, unit with `systemd-analyze verify` where available),
# then purges it and checks that nothing is left. Never starts or enables
# meshd. Skips (with the reason) where it cannot run or where mesh is
# installed already: it does not touch a real installation.
# Environment: MESH_PACKAGE_PROFILE as for scripts/package.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
skip() { echo "package test: skipped: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i)"
command -v dpkg >/dev/null 2>&1 || skip "no dpkg"
if dpkg -s mesh >/dev/null 2>&1 || [ -e /usr/bin/meshd ] || [ -e /etc/mesh ] || [ -e /var/lib/mesh ] ||
   [ -e /usr/lib/systemd/system/meshd.service ]; then
  skip "mesh is installed here already (or /etc/mesh, /var/lib/mesh, meshd exist)"
fi
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0 ||
  skip "cargo-deb is not installed and cannot be installed"

fail() { echo "package test: FAILED: $*" >&2; exit 1; }
t0=$(date +%s)
bash scripts/package.sh
t1=$(date +%s)
deb=$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/mesh_*.deb | head -1)
# Named after the workspace version, which is a release's when HEAD is one
# (scripts/release.sh); its changelog travels with it.
version=$(bash scripts/release.sh current)
[ "$(basename "$deb")" = "mesh_${version}-1_$(dpkg --print-architecture).deb" ] ||
  fail "$(basename "$deb") is not named after version $version"
[ "$(dpkg-deb -f "$deb" Version)" = "${version}-1" ] || fail "package version is not ${version}-1"
files=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | grep -v '/$')
installed=
cleanup() { [ -z "$installed" ] || dpkg --purge mesh >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
installed=1
meshd --version | grep -q '^meshd ' || fail "meshd --version"
meshctl --help | grep -q 'Usage: meshctl' || fail "meshctl --help"
meshctl --version | grep -qx "meshctl $version" || fail "meshctl --version is not $version"
grep -q "^## \[$version\]" /usr/share/doc/mesh/CHANGELOG.md || fail "the changelog lacks $version"
for m in meshd meshctl; do
  f=/usr/share/man/man8/$m.8.gz
  [ -s "$f" ] || fail "no man page $f"
  zcat "$f" | grep -q "^\.TH $m" || fail "$f is not $m's man page"
  if command -v man >/dev/null 2>&1; then
    [ "$(man -w "$m" 2>/dev/null)" = "$f" ] || fail "man -w $m does not find $f"
  fi
  bash -n "/usr/share/bash-completion/completions/$m" || fail "bash completion of $m"
  grep -q "^#compdef $m" "/usr/share/zsh/vendor-completions/_$m" || fail "zsh completion of $m"
  grep -q "complete -c $m" "/usr/share/fish/vendor_completions.d/$m.fish" || fail "fish completion of $m"
done
grep -q -- '--docker-plugin' /usr/share/bash-completion/completions/meshd || fail "meshd completion lacks its flags"
for cni in /usr/lib/cni/mesh /opt/cni/bin/mesh; do
  CNI_COMMAND=VERSION "$cni" </dev/null | grep -q cniVersion || fail "$cni answers no CNI VERSION"
done
dpkg-query -W -f='${Conffiles}\n' mesh | grep -q /etc/mesh/meshd.toml || fail "meshd.toml is not a conffile"
unit=/usr/lib/systemd/system/meshd.service
[ -s "$unit" ] || fail "no $unit"
# `systemctl reload meshd` sends SIGHUP: meshd re-reads meshd.toml.
grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$unit" || fail "$unit has no ExecReload sending SIGHUP"
if command -v systemd-analyze >/dev/null 2>&1; then
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
  ! echo "$out" | grep -i 'meshd.service' || fail "systemd-analyze verify complains: $out"
  echo "systemd-analyze verify: ok"
else
  echo "no systemd-analyze: unit not verified"
fi
# Installed, not enabled, not running.
[ ! -e /etc/systemd/system/multi-user.target.wants/meshd.service ] || fail "the unit was enabled"
for p in /proc/[0-9]*; do
  [ "$(readlink "$p/exe" 2>/dev/null)" != /usr/bin/meshd ] || fail "the package started meshd (pid ${p#/proc/})"
done

dpkg --purge mesh >/dev/null
installed=
t2=$(date +%s)
! dpkg -s mesh >/dev/null 2>&1 || fail "mesh is still installed"
for f in $files /etc/mesh /var/lib/mesh /etc/systemd/system/meshd.service; do
  [ ! -e "$f" ] && [ ! -L "$f" ] || fail "purge left $f"
done
echo "package test: ok ($(basename "$deb"), $(du -k "$deb" | cut -f1) KiB; build $((t1 - t0)) s, install/check/purge $((t2 - t1)) s)"
