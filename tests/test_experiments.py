"""The experiment scripts run (smoke runs at tiny sizes): they measure, these tests do not."""

import json
import os
import subprocess
import sys

from helpers import ROOT, python_env

TINY = [
  "num_train_steps=3",
  "context=16",
  "batch_size=8",
  "eval_batch_size=64",
  "log_every_steps=1",
  "checkpoint_every_steps=3",
  "model_kwargs.width=16",
  "model_kwargs.depth=1",
  "model_kwargs.kernel_sizes=(3,)",
  "model_kwargs.heads=2",
  "model_kwargs.group_channels=8",
]


def test_compare_mixers_writes_its_table(tmp_path):
  flags = [w for item in TINY for w in ("--set", item)]
  done = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "compare_mixers.py"),
      "--task",
      "charlm",
      "--mixers",
      "conv,involution",
      "--root",
      str(tmp_path),
      *flags,
    ],
    capture_output=True,
    text=True,
    timeout=600,
    env=python_env(),
    cwd=tmp_path,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "| conv |" in done.stdout and "| involution |" in done.stdout
  rows = json.loads((tmp_path / "charlm.json").read_text())
  assert [r["mixer"] for r in rows] == ["conv", "involution"]
  assert all(0 < r["test_bits_per_byte"] < 9 and r["params"] > 0 for r in rows)
  assert (tmp_path / "charlm.md").read_text().startswith("| mixer | params |")


def test_ablation_writes_its_table_and_picture(tmp_path):
  flags = [w for item in TINY if "kernel_sizes" not in item for w in ("--set", item)]
  done = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "experiments", "ablation.py"),
      "--knobs",
      "kernel_size",
      "--values",
      "3,5",
      "--root",
      str(tmp_path),
      *flags,
    ],
    capture_output=True,
    text=True,
    timeout=600,
    env=python_env(),
    cwd=tmp_path,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "| kernel_size | 3 |" in done.stdout and "| kernel_size | 5 |" in done.stdout
  results = json.loads((tmp_path / "ablation.json").read_text())
  assert [r["value"] for r in results["kernel_size"]] == [3, 5]
  assert (tmp_path / "ablation.png").stat().st_size > 0
