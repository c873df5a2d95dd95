#!/usr/bin/env bash
# All GPU checks in one run (for a machine with an NVIDIA GPU and `pip install -U "jax[cuda12]"`):
# the op tests on the GPU backend (the Pallas kernels compiled by Triton, not interpreted),
# then the op table with the Pallas kernels and the RedNet-50 step in float32 and bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax; print(jax.devices()); assert jax.default_backend() == 'gpu', 'no GPU'"
python -m pytest -q tests/test_ops.py tests/test_layers.py
python benchmarks/op_bench.py --dims 2 --methods shift,pallas,patches --no-torch
python benchmarks/op_bench.py --dims 1,3 --methods shift,patches --no-torch
python benchmarks/net_bench.py --bf16 --no-torch --batch 64
