#!/usr/bin/env bash
# The full-size inference benchmark on a bare GPU node, in one command and well under 8 minutes.
#
# The node has Python 3.12 with a CUDA PyTorch and transformers preinstalled and no network. radtrace is used
# from this checkout (PYTHONPATH, nothing installed over torch); the few pure-Python and small binary packages
# the node lacks (pydantic, pydicom and the pixel decoders, about 10 MiB) come as wheels in .whl/, fetched
# beforehand on a machine that reaches the package registry:
#
#   bench/gpu.sh --fetch-wheels            # here: download the cp312 manylinux wheels into .whl/
#   bench/gpu.sh [ARGS…]                   # on the GPU node: install them under /tmp, run, write the table
#
# ARGS go to `bench/full_size.py` (the same run as `bench/inference.py --full-size`, e.g. --batches 1,8
# --max-new-tokens 64; --tiny-config --device cpu tests this script on a CPU). The table goes to stdout and to
# $OUT (or bench-results/) as full-size.md and .json, rewritten after every row, so a run cut short still leaves
# its rows. RADTRACE_GPU_STATIC_ROW=1 adds a second run at batch 64 with a static, compiled KV cache, bounded by
# RADTRACE_GPU_STATIC_TIMEOUT seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${RADTRACE_WHEELS:-.whl}
# Exactly the versions pyproject.toml pins or the service's venv resolves, for CPython 3.12 on x86-64.
PACKAGES=(pydantic==2.14.4 pydantic_core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4
  typing-inspection==0.4.5 annotated-types==0.8.0 pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-openjpeg==2.6.0
  pylibjpeg-rle==2.2.0 pyjpegls==1.5.1)

if [[ ${1:-} == --fetch-wheels ]]; then
  mkdir -p "$WHEELS"
  platforms=()
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
  done
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$WHEELS" "${PACKAGES[@]}"
  du -sh "$WHEELS"
  exit 0
fi

started=$SECONDS
results=${OUT:-bench-results}
mkdir -p "$results"
site=/tmp/radtrace-site
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$WHEELS"/*.whl
  export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# A KV cache that grows every step reallocates less with expandable segments.
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
"$PYTHON" - <<'EOF'
import torch, transformers
print(f"torch {torch.__version__}, transformers {transformers.__version__}, cuda {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
EOF

cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
# On a GPU, by default: batch 1 (one study), then the largest batches first, so that a device lent for minutes
# measures what matters before its budget runs out; bare generate beside the worker at 1, 256 and 64; batch 64
# once more with cuDNN allowed in SDPA (the per-shape planning cost that the first run's worker rows paid).
# A row that would end past RADTRACE_GPU_BUDGET_S seconds is skipped and said so. ARGS override all of this.
defaults=()
if [[ $cuda == 1 ]]; then
  defaults=(--batches 1,256,64,128,32,8 --peer-batches 1,256,64 --single-studies 1 --cudnn-ab 64
    --budget-s "${RADTRACE_GPU_BUDGET_S:-400}")
fi
"$PYTHON" bench/full_size.py --out "$results/full-size.md" "${defaults[@]}" "$@"
echo "main table: $((SECONDS - started)) s"

if [[ ${RADTRACE_GPU_STATIC_ROW:-0} == 1 ]]; then
  # torch.compile of the decoding step can take minutes; a row that runs out of time is reported as such.
  timeout "${RADTRACE_GPU_STATIC_TIMEOUT:-200}" "$PYTHON" bench/full_size.py --batches 64 \
    --cache static --out "$results/full-size-static.md" "$@" \
    || echo "static-cache row: not finished within ${RADTRACE_GPU_STATIC_TIMEOUT:-200} s (exit $?)"
fi
echo "bench/gpu.sh: $((SECONDS - started)) s in all; tables in $results/"
