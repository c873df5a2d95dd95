"""The benchmark scripts run (smoke runs at tiny sizes): they measure, these tests do not."""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.mark.parametrize(
  "script, flags, rows",
  [
    ("op_bench.py", [], ["2-D", "1-D", "3-D", "shift", "patches", "causal", "K=3x3x3"]),
    ("net_bench.py", [], ["RedNet-50 (ours, JAX)", "ResNet-50 (JAX, same style)"]),
    ("pipeline_bench.py", [], ["records decoded", "bound (1 + read_ahead)"]),
    ("nnx_bench.py", [], ["nnx.jit (bridge)", "nnx split/merge + jax.jit", "vs linen"]),
    (
      "seq_bench.py",
      ["--plot", "seq.png"],
      ["dynamic (unfold)", "dynamic (unfold, PyTorch)", "vs attention", "us / token"],
    ),
  ],
)
def test_benchmark_quick_run_prints_its_table(script, flags, rows, tmp_path):
  flags = [os.path.join(tmp_path, f) if f.endswith(".png") else f for f in flags]
  done = subprocess.run(
    [sys.executable, os.path.join(BENCHMARKS, script), "--quick", *flags],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=BENCHMARKS,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  for row in rows:
    assert row in done.stdout
  assert "failed:" not in done.stdout  # a variant that failed records it and stops its row
  for picture in (f for f in flags if f.endswith(".png")):
    assert os.path.getsize(picture) > 0


def test_gpu_script_names_files_and_flags_that_exist():
  """benchmarks/gpu.sh (run only on a GPU machine) still fits the tree: every test file
  and script it runs exists, and every flag it passes is one the script takes."""
  root = os.path.dirname(BENCHMARKS)
  with open(os.path.join(BENCHMARKS, "gpu.sh")) as f:
    commands = [
      line.split() for line in f if line.startswith("python ") and "-c" not in line.split()
    ]
  assert len(commands) >= 3
  for words in commands:
    paths = [w for w in words if w.endswith(".py")]
    assert paths and all(os.path.exists(os.path.join(root, p)) for p in paths), words
    if words[1] == "-m":
      continue  # pytest: the files are what can go stale
    usage = subprocess.run(
      [sys.executable, os.path.join(root, words[1]), "--help"],
      capture_output=True,
      text=True,
      timeout=120,
    ).stdout
    for flag in (w for w in words[2:] if w.startswith("--")):
      assert flag in usage, (words[1], flag)
