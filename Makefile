# The two commands a new user runs: `make run` and `make test`.
CARGO ?= cargo

.PHONY: run chaos test deps build release soak report plots

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

release: deps
	$(CARGO) build --workspace --release

# The live demo: release build, then `slotpool run examples/demo.toml` with the `auto`
# backend (the sound card if one opens, else the null clock, said in one line).
# `make chaos` runs the same patch with a filter that crashes every ~8 s.
# slotpool-worker is found next to slotpool; PATH also gets it for chaos.toml's `command`.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
RELEASE_BIN = $(TARGET_DIR)/release

run: release
	PATH="$(abspath $(RELEASE_BIN)):$$PATH" $(RELEASE_BIN)/slotpool run examples/demo.toml

chaos: release
	PATH="$(abspath $(RELEASE_BIN)):$$PATH" $(RELEASE_BIN)/slotpool run examples/chaos.toml

# Debug build (allocation guard on) for the whole workspace, then the ring's hostile-peer
# property tests again in release, where the optimiser could expose what debug hides.
test: deps
	$(CARGO) test --workspace
	$(CARGO) test --release -p slotpool-ring

# The long reliability run (docs/RELIABILITY.md): chaos tests in their long version
# (SLOTPOOL_SOAK=1), supervisord side by side, fuzz targets FUZZ_SECS (600) each.
soak: deps
	scripts/soak.sh

# The plots in docs/img (docs/PERFORMANCE-engine.md, docs/RELIABILITY.md). `report`
# measures: the cycle bench (release; SLOTPOOL_BENCH_OUT: raw per-cycle times) and the
# CI-length chaos tests (debug; SLOTPOOL_CHAOS_OUT: raw restart times), about 5 min and
# CPU-heavy, then draws. `plots` only redraws from the raw files in REPORT_DIR.
# Not run by CI. REPORT_NOTE goes into every plot's caption.
REPORT_DIR ?= $(TARGET_DIR)/report
REPORT_NOTE ?= ; $(shell nproc) cores

report: deps
	rm -rf $(REPORT_DIR)/bench $(REPORT_DIR)/chaos
	SLOTPOOL_BENCH_OUT=$(abspath $(REPORT_DIR))/bench $(CARGO) bench -p slotpool-host --bench cycle
	$(CARGO) build --workspace
	SLOTPOOL_CHAOS_OUT=$(abspath $(REPORT_DIR))/chaos $(CARGO) test -p slotpool-host \
		--test chaos_engine --test chaos_supervisor -- --nocapture --test-threads=1
	$(MAKE) plots

plots:
	$(CARGO) run -p slotpool-report -- --bench $(REPORT_DIR)/bench \
		--chaos $(REPORT_DIR)/chaos --out docs/img --note "$(REPORT_NOTE)"
