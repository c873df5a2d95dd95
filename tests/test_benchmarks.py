"""The benchmark scripts run (smoke runs at tiny sizes): they measure, these tests do not."""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


# Over 20 s: each script runs whole in its own process (net_bench compiles RedNet-50 and ResNet-50).
@pytest.mark.parametrize(
  "script, flags, rows",
  [
    ("op_bench.py", [], ["2-D", "1-D", "3-D", "shift", "patches", "causal", "K=3x3x3"]),
    ("net_bench.py", [], ["RedNet-50 (ours, JAX)", "ResNet-50 (JAX, same style)"]),
    ("rows_bench.py", [], ["K=31", "kernel gradient", "speed-up"]),
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


def test_seq_bench_compiles_but_does_not_run_a_step_that_does_not_fit(monkeypatch):
  """With no memory free, every JAX step is recorded with its compiled memory and what
  it needs, never timed (running it would wake the OOM killer), at every length."""
  monkeypatch.syspath_prepend(BENCHMARKS)
  import seq_bench

  monkeypatch.setattr(seq_bench, "available_bytes", lambda: 0)
  runs = seq_bench.training_runs("mixer", (16, 32), 32, 16, 1, 1, ["involution"])
  entries = runs["involution"]
  assert [r["length"] for r in entries] == [16, 32]
  assert all("seconds" not in r and r["needs"] > 0 and r["needs"] >= r["bytes"] for r in entries)
  assert all("out of memory (needs" in row[3] for row in seq_bench.training_rows(runs))


def test_seq_bench_rejects_an_unknown_part():
  done = subprocess.run(
    [sys.executable, os.path.join(BENCHMARKS, "seq_bench.py"), "--parts", "model,speed"],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=BENCHMARKS,
  )
  assert done.returncode == 2
  assert "--parts: some of model, mixer, decode, got 'model,speed'" in done.stderr


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
