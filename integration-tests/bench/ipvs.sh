#!/usr/bin/env bash
# IPVS: lb's netlink client against ipvsadm on 10,000 services x 10
# destinations (IPVS_BENCH_SERVICES / IPVS_BENCH_DESTS to change), in one
# boot of a Debian-kernel VM when this kernel has no IPVS. Prints the
# `BENCH <name> <value> <unit>` lines of integration-tests/examples/ipvs_bench.rs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
services="${IPVS_BENCH_SERVICES:-10000}"
dests="${IPVS_BENCH_DESTS:-10}"
cd "$root"
cargo build --quiet --release -p integration-tests --example ipvs_bench
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$target/release/examples/ipvs_bench" "$work/ipvs_bench"

if modprobe ip_vs 2>/dev/null && [[ -e /proc/net/ip_vs ]]; then
  "$work/ipvs_bench" "$services" "$dests"
  exit
fi

kernel=""
for k in /boot/vmlinuz-*; do
  v="${k#/boot/vmlinuz-}"
  if [[ -d "/lib/modules/$v/kernel/net/netfilter/ipvs" ]]; then kernel="$k"; fi
done
if [[ -z "$kernel" ]]; then
  echo "bench ipvs: no kernel with IPVS modules in /boot (apt-get install linux-image-amd64)" >&2
  exit 1
fi
mkdir "$work/out"
cat > "$work/guest.sh" <<GUEST
#!/bin/sh
modprobe ip_vs && modprobe ip_vs_wrr
"$work/ipvs_bench" "$services" "$dests" > "$work/out/bench.log" 2>&1
echo \$? > "$work/out/rc"
GUEST
chmod +x "$work/guest.sh"
timeout 1800 vng --run "$kernel" --disable-kvm --memory 2G --rwdir "$work/out" \
  --exec "$work/guest.sh" > "$work/vng.log" 2>&1 || true
if [[ ! -s "$work/out/rc" ]]; then
  echo "bench ipvs: the VM did not finish; its log:" >&2
  tail -30 "$work/vng.log" >&2
  exit 1
fi
cat "$work/out/bench.log"
exit "$(cat "$work/out/rc")"
