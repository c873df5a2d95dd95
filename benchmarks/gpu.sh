#!/usr/bin/env bash
# All GPU checks in one run, from a fresh clone on a machine with an NVIDIA GPU:
#   pip install -e ".[dev]" && pip install -U "jax[cuda12]" && bash benchmarks/gpu.sh
# the op and layer tests on the GPU backend (the Pallas kernels compiled by Triton, not
# interpreted), then the op tables (2-D with the Pallas kernels; 1-D and 3-D) and the
# RedNet-50 training step and inference in float32 and bfloat16. What each figure means:
# benchmarks/README.md, "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax; print(jax.devices()); assert jax.default_backend() == 'gpu', 'no GPU'"
python -m pytest -q tests/test_ops.py tests/test_layers.py
python benchmarks/op_bench.py --dims 2 --methods shift,pallas,patches --no-torch
python benchmarks/op_bench.py --dims 1,3 --methods shift,patches --no-torch
python benchmarks/net_bench.py --bf16 --no-torch --batch 64
