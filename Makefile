# The two commands a new user runs: `make run` and `make test`.
CARGO ?= cargo

.PHONY: run chaos test deps build release soak

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
