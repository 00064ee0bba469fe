#!/usr/bin/env bash
# The GPU checks of issue #20 in one run of under 5 minutes on one GPU, one table out:
# extraction vs backbone forward (--workers at the core count), autocast vs fp32 tokens, a streamed
# STEP epoch, a 20-head stacked sweep vs 20 runs, DDP with nccl in one process. See bench/device.py.
#
#     bash bench/device.sh [--clips-per-class 8] [--heads 20]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
OUT=${OUT:-$(mktemp -d /tmp/device-bench.XXXXXX)}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 290 "$PY" bench/device.py --device cuda --out "$OUT" "$@"
