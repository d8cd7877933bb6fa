#!/usr/bin/env bash
# Run llama.rs's cargo-fuzz targets (README.md in this directory).
#
#   run.sh [SECONDS] [TARGET...]   fuzz each target for SECONDS (default 60);
#                                  all targets when none are named
#   run.sh cmin TARGET...          merge target/work/<target> into corpus/<target>,
#                                  keeping the fewest inputs with the same coverage
#
# New inputs go to target/work/<target>/ (not committed); the committed
# corpus (corpus/<target>/) and the inputs of fixed findings
# (regressions/<target>/) are read as seeds. Crashes land in
# artifacts/<target>/ and stop that target's run (the script goes on and
# exits non-zero at the end).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PURE="gguf_validate gguf_adapter json_schema chat_template gbnf_parse"
MODEL="tokenize_special state_restore server_request hub_inputs server_flags tool_calls tool_grammar"

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP
# lets the stable toolchain accept them. The model targets link llama.cpp:
# reuse the workspace's CMake build instead of building it again.
export RUSTC_BOOTSTRAP=1
export LLAMA_CPP_BUILD_CACHE="${LLAMA_CPP_BUILD_CACHE:-$repo/target/llama.cpp-build}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

options() {
    case "$1" in
        gguf_validate) echo "-max_len=${GGUF_MAX_LEN:-131072} -timeout=5" ;;
        gguf_adapter) echo "-max_len=16384 -timeout=5" ;;
        json_schema | gbnf_parse) echo "-max_len=4096 -timeout=5" ;;
        chat_template) echo "-max_len=4096 -timeout=10" ;;
        tokenize_special) echo "-max_len=4096 -timeout=10" ;;
        state_restore) echo "-max_len=65536 -timeout=10" ;;
        # The server keeps the model, an engine thread and tokio workers; LSan
        # would report what they hold at exit.
        server_request) echo "-max_len=4096 -timeout=60 -detect_leaks=0" ;;
        hub_inputs | server_flags | tool_calls | tool_grammar) echo "-max_len=4096 -timeout=10" ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
    if [ -f "$here/dict/$1.dict" ]; then echo "-dict=$here/dict/$1.dict"; fi
}

fuzz_dir() {
    case " $MODEL " in *" $1 "*) echo "$here/model" ;; *) echo "$here" ;; esac
}

if [ "${1:-}" = cmin ]; then
    shift
    for t in "$@"; do
        # The smallest set of inputs of the committed corpus and the last
        # runs' new ones (target/work/<target>) that keeps their coverage.
        merged="$here/target/cmin/$t"
        rm -rf "$merged" && mkdir -p "$merged" "$here/target/work/$t"
        (cd "$(fuzz_dir "$t")" && cargo fuzz run --fuzz-dir . "$t" "$merged" "$here/corpus/$t" "$here/target/work/$t" -- \
            -merge=1 $(options "$t") -rss_limit_mb=4096)
        rm -rf "$here/corpus/$t" && mv "$merged" "$here/corpus/$t"
        echo "$t: $(ls "$here/corpus/$t" | wc -l) inputs, $(du -sh "$here/corpus/$t" | cut -f1)"
    done
    exit 0
fi

seconds=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then seconds=$1; shift; fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($PURE $MODEL)
    # gbnf_parse exists once llama-core has its GBNF parser.
    [ -f "$here/fuzz_targets/gbnf_parse.rs" ] || targets=("${targets[@]/gbnf_parse}")
fi

failed=()
for t in "${targets[@]}"; do
    [ -n "$t" ] || continue
    mkdir -p "$here/target/work/$t" "$here/corpus/$t" "$here/artifacts/$t"
    seeds=("$here/corpus/$t")
    [ -d "$here/regressions/$t" ] && seeds+=("$here/regressions/$t")
    echo "== $t: ${seconds}s"
    if ! (cd "$(fuzz_dir "$t")" && cargo fuzz run --fuzz-dir . "$t" "$here/target/work/$t" "${seeds[@]}" -- \
        $(options "$t") -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$here/artifacts/$t/" 2>&1 | tee "$here/target/work/$t.log" | grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::|SUMMARY|Done )'); then
        :
    fi
    if grep -q -E '^SUMMARY: |^==[0-9]+==ERROR' "$here/target/work/$t.log"; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings in: ${failed[*]} (see artifacts/ and target/work/<target>.log)" >&2
    exit 1
fi
