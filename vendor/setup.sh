#!/usr/bin/env bash
# One-stop, idempotent setup: Debian packages, vendored llama.cpp, default model.
# Quiet when there is nothing to do; says exactly what failed otherwise.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v curl >/dev/null || need+=(curl)
command -v tmux >/dev/null || need+=(tmux)
# bindgen needs libclang; clang provides its headers.
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
command -v clang >/dev/null || need+=(clang)
if ((${#need[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "setup: missing ${need[*]}; install them with your package manager" >&2
    exit 1
  fi
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs) and run again" >&2; exit 1; }

"$here/fetch-llama.sh"
"$here/fetch-model.sh"
