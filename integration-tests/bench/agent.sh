#!/usr/bin/env bash
# Director agent: idle RSS of `lb-agent director` on seed 000, and one real
# server's weight changed in a topology of AGENT_BENCH_SERVICES services
# (default 1000) applied by SIGHUP, beside `ipvsadm -e` of the same change in
# the same boot, in a Debian-kernel VM when this kernel has no IPVS. Prints the
# `BENCH <name> <value> <unit>` lines of integration-tests/benches/agent.rs.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
exec "$root/integration-tests/vm/run" --bench agent -- "${AGENT_BENCH_SERVICES:-1000}"
