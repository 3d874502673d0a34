#!/usr/bin/env bash
# Runs the softmax-KL kernel tests against an AddressSanitizer + UBSan build
# of tfkd._C.
#
#   tests/ops/sanitize.sh [extra pytest args]
#
# 1. Builds the extension with TFKD_SANITIZE=1 (setup.py passes
#    -DTFKD_SANITIZE=ON to CMake: -fsanitize=address,undefined) into
#    $TFKD_SANITIZE_DIR (default /tmp/tfkd_sanitize); the in-tree tfkd/_C*.so
#    is left alone.
# 2. Copies the tfkd package next to it, with the sanitized _C*.so in place of
#    the normal one, and puts that copy first on PYTHONPATH.
# 3. Preloads libasan (Python itself is not instrumented) and runs the
#    NumPy-entry kernel tests (tests/ops/test_softmax_kl_values.py), the slow
#    4096 x 512 property test included. Any ASan or UBSan report aborts the run
#    with a non-zero exit status (halt_on_error).
#
# TFKD_SANITIZE_REUSE=1 skips step 1 when a sanitized build is already there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${TFKD_SANITIZE_DIR:-/tmp/tfkd_sanitize}
PY=${PYTHON:-$ROOT/.venv/bin/python}

cd "$ROOT"
if [[ "${TFKD_SANITIZE_REUSE:-}" != 1 || ! -d "$WORK/lib/tfkd" ]]; then
  rm -rf "$WORK"
  TFKD_SANITIZE=1 "$PY" setup.py -q build_ext --build-temp "$WORK/build" --build-lib "$WORK/lib"
fi
rm -rf "$WORK/pkg"
mkdir -p "$WORK/pkg"

cp -r "$ROOT/tfkd" "$WORK/pkg/"
rm -f "$WORK"/pkg/tfkd/_C*.so
cp "$WORK"/lib/tfkd/_C*.so "$WORK/pkg/tfkd/"
if ! ldd "$WORK"/pkg/tfkd/_C*.so | grep libasan >/dev/null; then
  echo "$WORK/pkg/tfkd/_C*.so is not an ASan build" >&2
  exit 1
fi

# libstdc++ too: python3 does not link it, and ASan's __cxa_throw interceptor
# aborts (CHECK failed: real___cxa_throw) on the first C++ exception otherwise.
export LD_PRELOAD
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$WORK/pkg${PYTHONPATH:+:$PYTHONPATH}"
export TFKD_EXPECT_EXTENSION="$WORK/pkg/tfkd"   # checked below: the sanitized module runs

cd "$WORK"  # not the repository root: its tfkd/ would shadow the copy
"$PY" - <<'PY'
import os, numpy as np
from tfkd import _C
assert os.path.dirname(_C.__file__) == os.environ["TFKD_EXPECT_EXTENSION"], _C.__file__
print("sanitized extension:", _C.__file__, _C.simd_level())
PY
"$PY" -m pytest -c "$ROOT/pyproject.toml" --rootdir "$ROOT" -p no:cacheprovider -q -m "" \
  "$ROOT/tests/ops/test_softmax_kl_values.py" "$@"
