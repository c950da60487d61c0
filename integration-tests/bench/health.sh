#!/usr/bin/env bash
# Health-check benchmark: 10,000 TCP checks at 1 s against 10,000 listeners on
# one lab host, and HTTP checks per second, the runner on one thread.
# Prints `BENCH <name> <value> <unit>` lines (libtest may print a test's
# progress mark in front of its first line: only the BENCH part is kept).
# Needs root (network namespaces), nginx and ethtool.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --release -q -p integration-tests --test health_bench -- --ignored --nocapture --test-threads 1 \
  | grep -o 'BENCH .*'
