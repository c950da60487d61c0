#!/usr/bin/env bash
# VRRP failover figures of lb-agent beside keepalived in the same run and lab:
# takeover after kill -9 and handover after SIGTERM at 1 s, 50 ms and 10 ms
# adverts (median and worst of LB_BENCH_RUNS runs, default 10), and CPU use at
# 10 ms. See integration-tests/tests/vrrp_bench.rs for the method.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p lb-agent
LB_BIN_DIR="$target/release" cargo test --release -p integration-tests --test vrrp_bench \
  -- --ignored --nocapture --test-threads=1 | grep '^BENCH'
