#!/usr/bin/env bash
# One GPU check, under 8 minutes on one H200-class GPU: the CUDA tests, then the paper's scale
# (50,000 probe images, 10,000 features, ResNet-50 forward pass) on the GPU, printed as a table.
#
#   bash benchmarks/gpu_check.sh                # from the repository root; builds .venv if needed
#   GPU_CHECK_IMAGES=20000 bash benchmarks/gpu_check.sh
#
# Writes test-artifacts/gpu_check.json (the numbers) and prints everything it measures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then
  make install >/dev/null
fi
mkdir -p test-artifacts
"$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device:",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
EOF
echo "== CUDA tests (CPU vs GPU on the same inputs)"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_nnls.py -k "cuda" || echo "CUDA TESTS FAILED"
echo "== bench_scale --device cuda"
timeout 420 "$PY" benchmarks/bench_scale.py --device cuda --probe-images "${GPU_CHECK_IMAGES:-50000}" \
  --forward-images 2000 --forward-batch 256 --json test-artifacts/gpu_check.json
