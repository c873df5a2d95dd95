"""The benchmark scripts run (smoke runs at tiny sizes): they measure, these tests do not."""

import importlib
import json
import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
SCRIPTS = ["op_bench", "net_bench", "rows_bench", "pipeline_bench", "nnx_bench", "seq_bench"]


# Over 20 s: op_bench compiles 18 variants of the op; the others a few models each. They run
# in this process (`main(argv)`); each also runs as a real script in the test below.
@pytest.mark.parametrize(
  "script, flags, rows",
  [
    ("op_bench", [], ["2-D", "1-D", "3-D", "shift", "patches", "causal", "K=3x3x3"]),
    ("net_bench", [], ["RedNet-14 (ours, JAX)", "RedNet-14 (official, PyTorch)", "ResNet-14"]),
    ("rows_bench", [], ["K=31", "kernel gradient", "speed-up"]),
    ("pipeline_bench", [], ["records decoded", "bound (1 + read_ahead)"]),
    ("nnx_bench", [], ["nnx.jit (bridge)", "nnx split/merge + jax.jit", "vs linen"]),
    (
      "seq_bench",
      ["--plot", "seq.png"],
      ["dynamic (unfold)", "dynamic (unfold, PyTorch)", "vs attention", "us / token"],
    ),
  ],
)
def test_benchmark_quick_run_prints_its_table(script, flags, rows, tmp_path, monkeypatch, capsys):
  monkeypatch.syspath_prepend(BENCHMARKS)
  monkeypatch.chdir(tmp_path)
  importlib.import_module(script).main(["--quick", *flags])
  out = capsys.readouterr().out
  for row in rows:
    assert row in out
  assert "failed:" not in out  # a variant that failed records it and stops its row
  for picture in (f for f in flags if f.endswith(".png")):
    assert os.path.getsize(tmp_path / picture) > 0


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


def _gpu_commands() -> list[list[str]]:
  """The words of each `python ...` line of benchmarks/gpu.sh, but `python -c`."""
  with open(os.path.join(BENCHMARKS, "gpu.sh")) as f:
    return [line.split() for line in f if line.startswith("python ") and "-c" not in line.split()]


# Each script's `--help` as `python benchmarks/NAME.py --help` would run it: `__main__`, its
# folder first on sys.path (in place of `-c`'s working folder). One process runs them in turn,
# so jax, flax and torch are imported once, not six times (~20 s of the suite). The helps go
# to a JSON file, apart from anything a script writes to stdout itself.
_HELP_OF_EACH = """
import contextlib, io, json, os, runpy, sys
folder, record, names, out = sys.argv[1], sys.argv[2], sys.argv[3:], {}
sys.path[0] = folder
for name in names:
  path = os.path.join(folder, name + ".py")
  sys.argv, stdout = [path, "--help"], io.StringIO()
  try:
    with contextlib.redirect_stdout(stdout):
      runpy.run_path(path, run_name="__main__")
    code = "returned without exiting"
  except SystemExit as done:
    code = done.code or 0
  out[name] = [code, stdout.getvalue()]
with open(record, "w") as f:
  json.dump(out, f)
"""


def test_each_script_runs_as_a_script_and_takes_the_flags_gpu_sh_passes(tmp_path):
  """Run as a script, each one's help offers --quick, and every flag benchmarks/gpu.sh
  passes it is one it takes."""
  record = tmp_path / "helps.json"
  done = subprocess.run(
    [sys.executable, "-c", _HELP_OF_EACH, BENCHMARKS, str(record), *SCRIPTS],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  helps = json.loads(record.read_text())
  for script in SCRIPTS:
    code, usage = helps[script]
    assert code == 0 and f"usage: {script}.py" in usage, (script, code, done.stderr[-3000:])
    assert "--quick" in usage, script
    for words in (w for w in _gpu_commands() if w[1] == f"benchmarks/{script}.py"):
      for flag in (w for w in words[2:] if w.startswith("--")):
        assert flag in usage, (words, flag)


def test_gpu_script_names_files_that_exist():
  """benchmarks/gpu.sh (run only on a GPU machine) still fits the tree: every test file
  and script it runs exists, and each script is one whose flags the test above checks."""
  root = os.path.dirname(BENCHMARKS)
  commands = _gpu_commands()
  assert len(commands) >= 3
  for words in commands:
    paths = [w for w in words if w.endswith(".py")]
    assert paths and all(os.path.exists(os.path.join(root, p)) for p in paths), words
    if words[1] != "-m":  # pytest: the files are what can go stale
      assert words[1] in [f"benchmarks/{s}.py" for s in SCRIPTS], words
