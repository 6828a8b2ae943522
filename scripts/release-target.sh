#!/bin/sh
# Prints the Rust target triple the release binaries are built for.
#
# A plugin is a process that lives about a millisecond, so start-up is a large share of its cost.
# musl's static start-up is ~0.1 ms; glibc's, even linked statically, spends ~0.5 ms here probing
# the CPU (cpuid traps to the hypervisor on a VM). So: the host's musl triple when its standard
# library is installed or can be added with rustup, else the host triple (linked statically).
host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) musl="${host%-gnu}-musl" ;;
  *) echo "$host"; exit 0 ;;
esac
installed() { rustup target list --installed 2>/dev/null | grep -qx "$musl"; }
if command -v rustup >/dev/null 2>&1; then
  installed || timeout 300 rustup target add "$musl" >/dev/null 2>&1 || true
  if installed; then echo "$musl"; exit 0; fi
fi
echo "$host"
