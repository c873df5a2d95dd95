"""The benchmark scripts run (smoke runs at tiny sizes): they measure, these tests do not."""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.mark.parametrize(
  "script, rows",
  [
    ("op_bench.py", ["2-D", "1-D", "3-D", "shift", "patches", "causal", "K=3x3x3"]),
    ("net_bench.py", ["RedNet-50 (ours, JAX)", "ResNet-50 (JAX, same style)"]),
  ],
)
def test_benchmark_quick_run_prints_its_table(script, rows):
  done = subprocess.run(
    [sys.executable, os.path.join(BENCHMARKS, script), "--quick"],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=BENCHMARKS,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  for row in rows:
    assert row in done.stdout
