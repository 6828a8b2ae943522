#!/bin/sh
# /init of the VM test (busybox sh, PID 1): mounts, loads the modules of /modules.load, runs
# every entry of /tests.tsv (name TAB seconds TAB shell command) bounded in time, and prints
# one machine-readable line per entry and a verdict on the serial console, then powers off:
#   TWILL-VM-TEST <name> pass|fail
#   TWILL-VM-VERDICT pass=<n> fail=<n>
# A test binary that ran no test fails its entry (a filter that matches nothing proves
# nothing). Everything happens in this throwaway VM; the tests still make their own namespaces.
# busybox's shell prefers its own applets, whose `ip` lacks netns and tunnels: iproute2's is
# called as /usr/sbin/ip (programs exec'd by the tests find it first in PATH).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /run/netns /var/lib/cni
ln -s /run /var/run
echo "TWILL-VM-BOOTED $(uname -r)"
while read -r m; do
  insmod "$m" 2>/tmp/insmod.err || echo "TWILL-VM-MODULE-FAILED $m: $(cat /tmp/insmod.err)"
done < /modules.load
/usr/sbin/ip link set lo up
export TWILL_BIN_DIR=/twill/bin RUST_BACKTRACE=1 HOME=/tmp
pass=0
fail=0
tab=$(printf '\t')
while IFS="$tab" read -r name limit cmd; do
  case $name in ''|'#'*) continue ;; esac
  echo "TWILL-VM-BEGIN $name"
  if timeout "$limit" sh -c "$cmd" </dev/null >/tmp/out 2>&1 &&
    ! grep -q "^test result: ok\. 0 passed" /tmp/out; then
    result=pass; pass=$((pass + 1))
  else
    result=fail; fail=$((fail + 1))
  fi
  sed "s/^/[$name] /" /tmp/out
  echo "TWILL-VM-TEST $name $result"
done < /tests.tsv
echo "TWILL-VM-VERDICT pass=$pass fail=$fail"
sync
poweroff -f
