#!/usr/bin/env bash
# IPVS: lb's netlink client against ipvsadm (-R, -Sn) on 10,000 services x 10
# destinations (IPVS_BENCH_SERVICES, IPVS_BENCH_DESTS to change), in one boot
# of a Debian-kernel VM when this kernel has no IPVS. Prints the
# `BENCH <name> <value> <unit>` lines of integration-tests/benches/ipvs.rs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
exec "$root/integration-tests/vm/run" --bench ipvs -- \
  "${IPVS_BENCH_SERVICES:-10000}" "${IPVS_BENCH_DESTS:-10}"
