#!/usr/bin/env bash
# The book (docs/, mdBook): every relative link of README.md and the pages
# must point to a file that exists, and an #anchor to a heading of it; and
# the book must build: a SUMMARY entry without its page fails
# (create-missing = false). It is built under target/, never into docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
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
