#!/bin/sh
# The linker of `make build`: cc with rustup's lld, the functions of scripts/hot-functions.order
# first. That file names functions as the demangler prints them without crate hashes
# ("std::io::stdio::stdout", generics included: the build mangles with v0), because the hashes
# follow the build's features and profile; this script finds the symbols of this link's objects
# that carry those names (nm, c++filt), hands lld the list in the file's order
# (--symbol-ordering-file) and runs `cc "$@"`. A name the objects do not hold is skipped: a
# stale list costs locality, never a link.
# Environment (the Makefile sets them): TWILL_HOT_FUNCTIONS (the list), TWILL_GCC_LD (rustup's
# gcc-ld directory, holding its ld.lld); TWILL_LINK_ORDER_KEEP=DIR keeps each link's list there.
set -eu
work=$(mktemp -d /tmp/twill-link.XXXXXX)
trap 'rm -rf "$work"' EXIT
objects=
for arg in "$@"; do
  case $arg in
    *.o | *.rlib) [ -f "$arg" ] && objects="$objects $arg" ;;
  esac
done
# shellcheck disable=SC2086 # one word per object path (cargo's paths hold no blanks)
[ -n "$objects" ] && nm -p -j --defined-only $objects > "$work/mangled" 2>/dev/null || true
touch "$work/mangled"
c++filt < "$work/mangled" | sed 's/\[[0-9a-f]*\]//g' > "$work/names"
paste "$work/names" "$work/mangled" | awk -F '\t' -v list="$TWILL_HOT_FUNCTIONS" '
  !(($2) in seen) { seen[$2] = 1; full[$1] = full[$1] "\t" $2 }
  END {
    while ((getline name < list) > 0) {
      if (name in full) { n = split(full[name], symbols, "\t"); for (i = 2; i <= n; i++) print symbols[i] }
      else print name
    }
  }
' > "$work/order"
if [ -n "${TWILL_LINK_ORDER_KEEP:-}" ]; then cp "$work/order" "$TWILL_LINK_ORDER_KEEP/order.$$"; fi
cc -fuse-ld=lld -B"$TWILL_GCC_LD" -Wl,--symbol-ordering-file="$work/order" \
  -Wl,--no-warn-symbol-ordering "$@"
