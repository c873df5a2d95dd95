"""The installed console scripts, run from a folder outside the repository, and configs."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from helpers import ROOT, TINY, python_env
from PIL import Image

from involution_jax import cli, configs

BIN = os.path.dirname(sys.executable)
TOOLS = (
  "train",
  "eval",
  "predict",
  "export",
  "visualize",
  "convert",
  "summary",
  "plot",
  "generate",
)


def _script(verb: str) -> str:
  path = os.path.join(BIN, f"involution-{verb}")
  assert os.path.exists(path), f"{path} is not installed: pip install -e . (or make install)"
  return path


def _installed_env() -> dict:
  env = python_env()
  env.pop("PYTHONPATH")  # the installed package, not this checkout's folder on the path
  return env


def _run(cwd, verb: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run(
    [_script(verb), *args],
    cwd=cwd,
    env=_installed_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
  """A working folder outside the repository."""
  path = tmp_path_factory.mktemp("elsewhere")
  assert not str(path).startswith(ROOT)
  return path


@pytest.mark.parametrize("verb", TOOLS)
def test_every_tool_has_help_with_an_example(outside, verb):
  result = _run(outside, verb, "--help", timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"usage: involution-{verb}" in result.stdout and "examples:\n" in result.stdout
  module = subprocess.run(
    [sys.executable, "-m", f"involution_jax.{verb}", "--help"],
    cwd=outside,
    env=_installed_env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert module.returncode == 0 and module.stdout == result.stdout, module.stderr[-2000:]


def test_installed_tools_work_from_another_folder(outside):
  flags = [f"--config.{k}={v}" for k, v in {**TINY, "num_train_steps": 3}.items()]
  train = _run(outside, "train", "--workdir", "run", *flags)
  assert train.returncode == 0, train.stderr[-3000:]
  with open(outside / "run" / "metrics.json") as f:
    assert json.load(f)["steps"] == 3

  digit = np.zeros((8, 8, 3), np.uint8)
  digit[2:6, 3:5] = 255
  Image.fromarray(digit).save(outside / "digit.png")
  predict = _run(outside, "predict", "run", "digit.png", "--json", "--top-k", "3")
  assert predict.returncode == 0, predict.stderr[-3000:]
  (result,) = json.loads(predict.stdout)
  assert len(result["top"]) == 3

  export = _run(outside, "export", "run", "model.jaxexport")
  assert export.returncode == 0, export.stderr[-3000:]
  assert (outside / "model.jaxexport").stat().st_size > 0
  assert (outside / "model.jaxexport.json").exists()

  evaluate = _run(outside, "eval", "--weights", "run", "--config.image_size=8")
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  assert 0 <= json.loads(evaluate.stdout)["accuracy"] <= 1

  curves = _run(outside, "plot", "run", "--out", "curves.png")
  assert curves.returncode == 0, curves.stderr[-3000:]
  assert (outside / "curves.png").stat().st_size > 0 and (outside / "run" / "curves.png").exists()

  summary = _run(outside, "summary", "--depths", "26", "--image-size", "64", "--json")
  assert summary.returncode == 0, summary.stderr[-3000:]
  assert json.loads(summary.stdout)[0]["params"] == 9_233_166


@pytest.mark.parametrize(
  "verb, args, message",
  [
    (
      "train",
      ["--config.learnin_rate=0.1"],
      "unknown config field 'learnin_rate' (did you mean 'learning_rate'?)",
    ),
    (
      "train",
      ["--config", "rednet50_imagnet"],
      "unknown config 'rednet50_imagnet' (did you mean 'rednet50_imagenet'?)",
    ),
    ("train", ["--config", "missing/config.py"], "config file not found: missing/config.py"),
    (
      "train",
      ["--config.batch_size=big"],
      "bad value for config field 'batch_size': 'big' (expected int)",
    ),
    ("predict", ["missing.pdparams", "x.png"], "no such image or folder: x.png"),
    ("predict", ["missing_run", "digit.png"], "no checkpoint found at"),
    ("eval", ["--weights", "missing.pdparams"], "weights file not found: missing.pdparams"),
    ("export", ["missing_run", "out.jaxexport"], "no checkpoint found at"),
    ("predict", ["garbage.pdparams", "digit.png"], "garbage.pdparams is not a readable .pdparams"),
    ("convert", ["garbage.pth", "out"], "garbage.pth is not a readable .pth checkpoint"),
  ],
)
def test_user_mistakes_give_one_line_and_a_failing_exit(outside, verb, args, message):
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside / "digit.png")
  for name in ("garbage.pdparams", "garbage.pth"):
    (outside / name).write_bytes(b"not weights")
  result = (
    _run(outside, verb, *args, "--workdir", "never")
    if verb == "train"
    else _run(outside, verb, *args)
  )
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"involution-{verb}: error: "), result.stderr
  assert message in lines[0]
  assert not (outside / "never").exists()


def test_configs_by_name_with_an_argument_and_by_path(tmp_path):
  assert configs.get_config("imagenet:rednet101").model == "rednet101"
  assert configs.get_config("digitscenes_seg:conv").model_kwargs.neck == "conv"
  path = tmp_path / "mine.py"
  path.write_text(
    "from involution_jax.configs import default\n\n"
    "def get_config(width='24'):\n"
    "  config = default.get_config()\n"
    "  config.model_kwargs.base_width = int(width)\n"
    "  return config\n"
  )
  assert configs.get_config(str(path)).model_kwargs.base_width == 24
  assert configs.get_config(f"{path}:32").model_kwargs.base_width == 32
  assert set(configs.names()) >= {"default", "imagenet", "rednet50_imagenet", "cifar"}


def test_overrides_parse_by_the_fields_type():
  config = configs.get_config(
    "default",
    [
      "learning_rate=0.05",
      "model_kwargs.stage_sizes=(2, 1)",
      "half_precision=true",
      "init_from=/some/path",
      "dataset=folder",
      "batch_size=32",
    ],
  )
  assert config.learning_rate == 0.05 and config.batch_size == 32
  assert config.model_kwargs.stage_sizes == (2, 1) and config.half_precision is True
  assert config.init_from == "/some/path" and config.dataset == "folder"
  with pytest.raises(ValueError, match="unknown config field 'model_kwargs.kernel_sise'"):
    configs.get_config("default", ["model_kwargs.kernel_sise=5"])
  with pytest.raises(ValueError, match="expected a bool|expected bool"):
    configs.get_config("default", ["half_precision=maybe"])
  with pytest.raises(ValueError, match="is not FIELD=VALUE"):
    configs.get_config("default", ["learning_rate"])
  assert isinstance(configs.get_config(), ml_collections.ConfigDict)


def test_config_overrides_are_split_from_the_other_arguments():
  rest, overrides = cli.split_config_overrides(
    ["--workdir", "w", "--config.a=1", "--config", "x", "--config.b.c", "2"]
  )
  assert rest == ["--workdir", "w", "--config", "x"] and overrides == ["a=1", "b.c=2"]
  with pytest.raises(ValueError, match="expected --config.a=VALUE"):
    cli.split_config_overrides(["--config.a", "--workdir", "w"])
