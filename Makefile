# lb: `make demo` shows it working, `make test` runs every check and test.
# Both install what they need on a Debian machine first (.ci/install-deps).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
# `make bench BENCH=ipvs` runs one area: ipvs, vrrp, health, agent, controller.
BENCH ?= all
# `make fuzz FUZZ=ipvs_attrs` runs one decoder's fuzz target (or vrrp_packet).
FUZZ ?= vrrp_packet
FUZZ_SECONDS ?= 60

.PHONY: all test deps fmt-check clippy test-host test-kernel demo bench build fuzz

all: build

build:
	$(CARGO) build --workspace --bins

deps:
	@.ci/install-deps

fmt-check:
	$(CARGO) fmt --all -- --check

# The kernel suite has `test = false`, which --all-targets leaves out: lint it too.
clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p integration-tests --test kernel -- -D warnings

# Unit, in-process and network-namespace tests on the host (needs root).
test-host:
	$(CARGO) test --workspace

# Tests that need IPVS or IP tunnels: on this kernel if it has them, else in a
# Debian-kernel VM (one boot for the whole suite). A VM that cannot start fails.
test-kernel:
	integration-tests/vm/run

test: deps
	@start=$$(date +%s); \
	for step in fmt-check clippy test-host test-kernel; do \
	  t0=$$(date +%s); \
	  echo "==> make $$step"; \
	  $(MAKE) --no-print-directory $$step; \
	  echo "==> $$step took $$(( $$(date +%s) - t0 ))s"; \
	done; \
	echo "==> make test passed in $$(( $$(date +%s) - start ))s"

# Every seed's topology validated by lbctl; then seed 000 (DNS over LVS-DR) in
# the real-kernel lab, run by lb alone: two `lb-agent director`s (VRRP, IPVS,
# DNS health checks), two real servers with `lb-agent realserver` and dnsmasq,
# a client asking the VIP with dig. It prints each step: answers from both
# real servers, a real server stopped and the traffic moving, the master
# killed and the backup answering. The demo test is #[ignore]d so that the
# kernel suite of `make test`, where director_dns_dr checks the same steps,
# does not run it again.
demo: deps build
	@echo "==> lbctl validate: one topology per seed setup"
	@for f in examples/*.yaml; do "$${CARGO_TARGET_DIR:-target}/debug/lbctl" validate "$$f"; done
	@echo "==> real-kernel lab: seed 000 run by lb-agent director and lb-agent realserver"
	integration-tests/vm/run demo_seed000 -- --nocapture --test-threads=1 --include-ignored

bench: deps
	integration-tests/bench/run $(BENCH)

# Coverage-guided fuzzing of a decoder with cargo-fuzz (libFuzzer). The stable
# toolchain builds it with RUSTC_BOOTSTRAP for the sanitizer flags.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd agent/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ) -- -max_total_time=$(FUZZ_SECONDS)
