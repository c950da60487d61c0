#!/usr/bin/env bash
# Controller benchmarks: push latency to 100 agents and applies per second,
# against a real etcd on tmpfs (started by the benchmark itself).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p lb-controller --bench controller
