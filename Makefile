# The two commands a newcomer needs:
#   make run    set everything up, build, and generate text with the default model
#   make test   set everything up, then fmt + clippy + the whole test suite (what CI runs)

PROMPT ?= Write a short poem about the sea.
CARGO  ?= cargo

.PHONY: setup run build test lint fmt bench bench-smoke serve valgrind miri fuzz reliability reliability-long clean-llama

setup:
	@vendor/setup.sh

build: setup
	$(CARGO) build --release -p llama-cli -p llama-server

run: build
	./target/release/llama generate --chat -n 256 "$(PROMPT)"

serve: build
	./target/release/llama-server

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	$(CARGO) test --workspace --no-fail-fast

# Benchmarks (docs/BENCHMARKS.md): llama-core, engine, server and cold start
# against the C baseline; rewrites docs/benchmarks.{json,png} and docs/BENCHMARKS.md.
bench: setup
	$(CARGO) build --release -p llama-cli -p llama-server -p llama-e2e --bins
	./target/release/bench-suite

# The same suite at tiny sizes (seconds): checks it runs, measures nothing.
bench-smoke: setup
	$(CARGO) build -p llama-cli -p llama-server -p llama-e2e --bins
	./target/debug/bench-suite --smoke --out target/bench-smoke

# llama-core's real-model tests under valgrind memcheck. valgrind cannot decode
# AVX-512, so this builds a separate AVX2 llama.cpp (LLAMA_SYS_NATIVE=0) in target/valgrind.
VALGRIND_TESTS ?= bad_inputs state_save model_metadata grammar_constrains sequences_are_isolated special_token_text cjk_and_emoji
valgrind: setup
	CARGO_TARGET_DIR=target/valgrind LLAMA_SYS_NATIVE=0 $(CARGO) test -p llama-core --test real_model --no-run
	valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
	  $$(ls -t target/valgrind/debug/deps/real_model-* | grep -v '\.d$$' | head -n1) --test-threads=1 $(VALGRIND_TESTS)

# Miri (the interpreter that detects undefined behaviour) over the pure-Rust
# parts, which run without llama.cpp (llama-sys's build script still runs and
# reuses the CMake cache): llama-core's unit tests of the chat templates, the
# JSON-schema converter, the GBNF parser, state framing (HMAC) and the
# special-token cutter, TokenDecoder's tests, llama-runtime's stop-string
# matcher and the scheduler property test over the fake engine, and a sample
# of the fuzz corpora through the fuzz targets (llama-core/fuzz). Miri is
# about a thousand times slower than a native run: few proptest cases, and the
# tests that build grammars of hundreds of KiB are skipped. Installs nightly's
# miri component if missing. About 25 minutes on the 2-core machine.
MIRI_PROPTEST_CASES ?= 2
MIRI_FUZZ_SAMPLE ?= 8
MIRI_ENV = LLAMA_CPP_BUILD_CACHE=$(CURDIR)/target/llama.cpp-build MIRIFLAGS=-Zmiri-disable-isolation \
	RUST_BACKTRACE=0 PROPTEST_CASES=$(MIRI_PROPTEST_CASES)
MIRI_CORE_TESTS = chat:: context_params:: json_schema:: gbnf:: state:: special_cuts:: \
	--skip arbitrary_strings_never_panic --skip random_text_never_panics \
	--skip reference_chains --skip repetition_limits --skip comment_trick --skip size_and_nul
miri: setup
	rustup toolchain install nightly --profile minimal --component miri --component rust-src
	$(CARGO) +nightly miri setup
	$(MIRI_ENV) $(CARGO) +nightly miri test -p llama-core --lib -- $(MIRI_CORE_TESTS)
	$(MIRI_ENV) $(CARGO) +nightly miri test -p llama-core --test token_decoder
	$(MIRI_ENV) $(CARGO) +nightly miri test -p llama-runtime --lib -- stop:: props::
	cd llama-core/fuzz && $(MIRI_ENV) FUZZ_REPLAY_SAMPLE=$(MIRI_FUZZ_SAMPLE) \
	  $(CARGO) +nightly miri test --lib corpus_replay

# Fuzzing (llama-core/fuzz/README.md): every cargo-fuzz target for FUZZ_TIME
# seconds, seeded from the committed corpora; findings stop with a non-zero
# exit. Installs cargo-fuzz if missing; runs on stable (RUSTC_BOOTSTRAP).
FUZZ_TIME ?= 60
fuzz: setup
	llama-core/fuzz/run.sh $(FUZZ_TIME)

# Reliability suites (docs/RELIABILITY.md): hostile input, flags, network safety, load,
# faults, determinism, memory, tokenizer. `reliability` runs the CI sizes (also part of
# `make test`); `reliability-long` the long sizes, in release (RELIABILITY_* knobs override).
reliability: setup
	$(CARGO) test -p llama-e2e --test 'reliability_*'

reliability-long: setup
	RELIABILITY_SCALE=long $(CARGO) test --release -p llama-e2e --test 'reliability_*' -- --nocapture --test-threads=1

# Force a rebuild of llama.cpp (normally built once per source tree and cached in target/llama.cpp-build).
clean-llama:
	rm -rf target/llama.cpp-build
