"""The experiment scripts run (smoke runs at tiny sizes): they measure, these tests do not.
Their `main(argv)` runs in this process; each script also runs once as a real one, to a
refusal of its arguments (what only a real process shows is that the script starts)."""

import importlib
import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, python_env

EXPERIMENTS = os.path.join(ROOT, "experiments")

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


@pytest.fixture
def experiment(monkeypatch, tmp_path, capsys):
  """`experiment(name, args)`: experiments/NAME.py's main(args) here, in tmp_path; its
  standard output."""
  monkeypatch.syspath_prepend(EXPERIMENTS)
  monkeypatch.chdir(tmp_path)

  def run(name: str, args: list[str]) -> str:
    importlib.import_module(name).main(args)
    return capsys.readouterr().out

  return run


def _real_process(script: str, args: list[str], cwd) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, os.path.join(EXPERIMENTS, script), *args],
    capture_output=True,
    text=True,
    timeout=600,
    env=python_env(),
    cwd=cwd,
  )


# Over 20 s: three tiny language models train.
def test_compare_mixers_writes_its_table_and_resumes(tmp_path, experiment):
  flags = [w for item in TINY for w in ("--set", item)]
  base = ["--task", "charlm", "--root", str(tmp_path), *flags]
  out = experiment("compare_mixers", [*base, "--mixers", "conv,involution"])
  assert "| conv |" in out and "| involution |" in out
  rows = json.loads((tmp_path / "charlm.json").read_text())
  assert [r["mixer"] for r in rows] == ["conv", "involution"]
  assert all(0 < r["test_bits_per_byte"] < 9 and r["params"] > 0 for r in rows)
  assert (tmp_path / "charlm.md").read_text().startswith("| mixer | params |")

  # A second call keeps the rows it has and runs only the missing (mixer, seed) pairs.
  again = experiment("compare_mixers", [*base, "--mixers", "conv", "--seeds", "0,1"])
  rows_again = json.loads((tmp_path / "charlm.json").read_text())
  assert rows_again[:2] == rows
  assert [(r["mixer"], r["seed"]) for r in rows_again[2:]] == [("conv", 1)]
  assert "2 seed(s) (0, 1)" in again

  # Rows made under other overrides are never mixed into one table (as a real script).
  other = _real_process("compare_mixers.py", [*base, "--set", "learning_rate=0.1"], tmp_path)
  assert other.returncode == 2 and "other --set overrides" in other.stderr


def test_ablation_runs_as_a_script_and_refuses_values_for_two_knobs(tmp_path):
  done = _real_process("ablation.py", ["--knobs", "kernel_size,depth", "--values", "3,5"], tmp_path)
  assert done.returncode == 2
  assert "--knobs: some of " in done.stderr and "--values goes with one knob" in done.stderr
  assert not os.listdir(tmp_path)  # nothing trained, nothing written


# Over 20 s: two tiny language models train.
def test_ablation_trains_a_knob_at_its_default_value_once(tmp_path, experiment):
  """group_channels=8 is TINY's own value: the same run as the defaults, trained once
  under <root>/default and reused for every knob that hits it."""
  flags = [w for item in TINY for w in ("--set", item)]
  out = experiment(
    "ablation", ["--knobs", "group_channels", "--values", "8,4", "--root", str(tmp_path), *flags]
  )
  assert (tmp_path / "default").is_dir() and (tmp_path / "group_channels_4").is_dir()
  assert not (tmp_path / "group_channels_8").exists()
  rows = json.loads((tmp_path / "ablation.json").read_text())["group_channels"]
  assert [r["value"] for r in rows] == [8, 4]
  assert rows[0]["validation_bits_per_byte"] != rows[1]["validation_bits_per_byte"]
  # The table (printed and written) and the picture.
  assert "| group_channels | 8 |" in out and "| group_channels | 4 |" in out
  assert (tmp_path / "ablation.md").read_text().splitlines()[2].startswith("| group_channels | 8 |")
  assert (tmp_path / "ablation.png").stat().st_size > 0


# Over 20 s: a detector's and a segmentation model's forward passes compile.
def test_digit_scenes_figure_draws_both_models(tmp_path, experiment):
  from helpers import load_config, save_random_checkpoint
  from PIL import Image

  for name in ("det", "seg"):
    config = load_config(f"digitscenes_{name}", num_train_scenes=4)
    save_random_checkpoint(str(tmp_path / name), config=config)
  args = [str(tmp_path / "det"), str(tmp_path / "seg"), "--scenes", "2", "--min_score", "0"]
  out = experiment("digit_scenes_figure", [*args, "--out", "figure.png"])
  assert out.strip() == "wrote figure.png"
  with Image.open(tmp_path / "figure.png") as figure:  # two rows of 48 x 4 = 192 pixels
    assert figure.height >= 2 * 192 + 4 and figure.width > 2 * 192 + 4
