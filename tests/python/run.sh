#!/usr/bin/env bash
# Run the OpenAI-client tests (test_openai.py) against a freshly started
# llama-server: creates target/py-venv if missing, installs
# requirements.txt into it (only when the file changed), starts the built
# server binary on a free loopback port, runs pytest, and stops the server.
#
#   LLAMA_SERVER_BIN    server binary (default: target/debug/llama-server)
#   LLAMA_SERVER_MODEL  model file (default: models/SmolLM2-135M-Instruct.Q4_1.gguf)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${LLAMA_SERVER_BIN:-$ROOT/target/debug/llama-server}"
MODEL="${LLAMA_SERVER_MODEL:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
VENV="$ROOT/target/py-venv"
REQ="$ROOT/tests/python/requirements.txt"

if [ ! -x "$BIN" ]; then
    echo "run.sh: no server binary at $BIN; run: cargo build -p llama-server" >&2
    exit 1
fi
if [ ! -f "$MODEL" ]; then
    echo "run.sh: no model at $MODEL" >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want" > "$stamp"
fi

port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="$(mktemp)"
"$BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" -c 4096 -np 2 -t 2 -tb 2 \
    --alias smollm2 --api-key sk-test --embeddings >"$log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -f "$log"
}
trap cleanup EXIT

export LLAMA_SERVER_URL="http://127.0.0.1:$port"
export LLAMA_SERVER_KEY="sk-test"
if ! "$VENV/bin/python" - <<'PY'
import os, time, urllib.request, urllib.error
url = os.environ["LLAMA_SERVER_URL"] + "/health"
deadline = time.time() + 120
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                raise SystemExit(0)
    except (urllib.error.URLError, ConnectionError, OSError):
        pass
    time.sleep(0.1)
raise SystemExit(1)
PY
then
    echo "run.sh: the server did not become healthy; its log:" >&2
    cat "$log" >&2
    exit 1
fi

status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/tests/python/test_openai.py" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- server log ---" >&2
    tail -n 50 "$log" >&2
fi
exit "$status"
