# The two commands a newcomer needs:
#   make run    set everything up, build, and generate text with the default model
#   make test   set everything up, then fmt + clippy + the whole test suite (what CI runs)

PROMPT ?= Write a short poem about the sea.
CARGO  ?= cargo

.PHONY: setup run build test lint fmt bench serve clean-llama

setup:
	@vendor/setup.sh

build: setup
	$(CARGO) build --release -p llama-cli -p llama-server

run: build
	./target/release/llama generate --chat "$(PROMPT)"

serve: build
	./target/release/llama-server

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	$(CARGO) test --workspace

# Benchmarks (docs/BENCHMARKS.md): llama-core, engine, server and cold start
# against the C baseline; rewrites docs/benchmarks.{json,png} and docs/BENCHMARKS.md.
bench: setup
	$(CARGO) build --release -p llama-cli -p llama-server -p llama-e2e --bins
	./target/release/bench-suite

# The same suite at tiny sizes (seconds): checks it runs, measures nothing.
bench-smoke: setup
	$(CARGO) build -p llama-cli -p llama-server -p llama-e2e --bins
	./target/debug/bench-suite --smoke --out target/bench-smoke

# Force a rebuild of llama.cpp (normally built once per source tree and cached in target/llama.cpp-build).
clean-llama:
	rm -rf target/llama.cpp-build
