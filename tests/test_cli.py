"""The installed console scripts, run from a folder outside the repository, and configs."""

import importlib
import json
import os
import re
import runpy
import subprocess
import sys
from unittest import mock

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


@pytest.fixture(autouse=True)
def _columns(monkeypatch):
  """argparse wraps help to the terminal's width: the same 80 columns here and in children."""
  monkeypatch.setenv("COLUMNS", "80")


def _help(verb: str, capsys, as_module: bool) -> str:
  """`involution-<verb> --help` in this process: the tool's main, or the module run as
  `python -m involution_jax.cli.<verb>` (runpy), which must exit 0 after printing it."""
  with pytest.raises(SystemExit) as done:
    if as_module:
      with mock.patch.object(sys, "argv", [f"involution_jax.cli.{verb}", "--help"]):
        runpy.run_module(f"involution_jax.cli.{verb}", run_name="__main__", alter_sys=True)
    else:
      importlib.import_module(f"involution_jax.cli.{verb}").main(["--help"])
  assert done.value.code == 0
  return capsys.readouterr().out


# runpy warns that the module it runs as __main__ was imported before (by the first call).
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("verb", TOOLS)
def test_every_tool_has_help_with_an_example(verb, capsys):
  text = _help(verb, capsys, as_module=False)
  assert f"usage: involution-{verb}" in text and "examples:\n" in text
  assert _help(verb, capsys, as_module=True) == text


# The deprecated aliases: `python -m involution_jax.<verb>` runs the same tool, and says
# where it lives now; the README's old imports still give the same functions.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("verb", TOOLS)
def test_the_old_module_names_still_run_each_tool_and_say_they_are_deprecated(verb, capsys):
  text = _help(verb, capsys, as_module=False)
  deprecated = f"involution_jax.{verb} is deprecated: use "
  argv = [f"involution_jax.{verb}", "--help"]
  with (
    pytest.warns(DeprecationWarning, match=deprecated),
    pytest.raises(SystemExit) as done,
    mock.patch.object(sys, "argv", argv),
  ):
    runpy.run_module(f"involution_jax.{verb}", run_name="__main__", alter_sys=True)
  assert done.value.code == 0 and capsys.readouterr().out == text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_old_imports_give_the_same_functions():
  from involution_jax import convert, export, paddle, predict, pretrained, visualize
  from involution_jax.inference import export as export_now
  from involution_jax.inference import kernels, predictor
  from involution_jax.weights import convert as convert_now
  from involution_jax.weights import paddle as paddle_now
  from involution_jax.weights import pretrained as pretrained_now

  assert convert.load_weights is convert_now.load_weights and convert.main.__module__ == (
    "involution_jax.cli.convert"
  )
  assert paddle.load_pdparams is paddle_now.load_pdparams and pretrained.load is pretrained_now.load
  assert predict.Predictor is predictor.Predictor and export.export_model is export_now.export_model
  assert visualize.capture is kernels.capture


# The tools that test_installed_tools_work_from_another_folder does not run as scripts.
@pytest.mark.parametrize("verb", ["visualize", "convert", "generate"])
def test_installed_script_prints_the_same_help(outside, verb, capsys):
  result = _run(outside, verb, "--help", timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout == _help(verb, capsys, as_module=False)


# Over 20 s: seven real console-script processes, one of them a training run.
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

  # The run's own config (image size, evaluation batch): the same program, the same
  # accuracy to the bit.
  evaluate = _run(outside, "eval", "run")
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  with open(outside / "run" / "metrics.json") as f:  # the same model on the same split
    assert json.loads(evaluate.stdout)["accuracy"] == pytest.approx(
      json.load(f)["test_accuracy"], abs=1e-6
    )

  # The same command as the first, without its flags: the run's config, finished.
  rerun = _run(outside, "train", "--workdir", "run", "--json")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  with open(outside / "run" / "metrics.json") as f:
    assert json.loads(rerun.stdout) == json.load(f)
  assert "finished its 3 steps before" in rerun.stderr

  curves = _run(outside, "plot", "run", "--out", "curves.png")
  assert curves.returncode == 0, curves.stderr[-3000:]
  assert (outside / "curves.png").stat().st_size > 0 and (outside / "run" / "curves.png").exists()

  summary = _run(outside, "summary", "--depths", "26", "--image-size", "64", "--json")
  assert summary.returncode == 0, summary.stderr[-3000:]
  assert json.loads(summary.stdout)[0]["params"] == 9_233_166


MISTAKES = [
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
  ("eval", ["missing.pdparams"], "weights file not found: missing.pdparams"),
  ("export", ["missing_run", "out.jaxexport"], "no checkpoint found at"),
  ("predict", ["garbage.pdparams", "digit.png"], "garbage.pdparams is not a readable .pdparams"),
  ("convert", ["garbage.pth", "out"], "garbage.pth is not a readable .pth checkpoint"),
]


def _mistake_folder(outside):
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside / "digit.png")
  for name in ("garbage.pdparams", "garbage.pth"):
    (outside / name).write_bytes(b"not weights")


def _check_one_line(verb, returncode, stderr, message, outside):
  assert returncode == 1
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"involution-{verb}: error: "), stderr
  assert message in lines[0]
  assert not (outside / "never").exists()


def _mistake_args(verb, args):
  return [*args, "--workdir", "never"] if verb == "train" else list(args)


@pytest.mark.parametrize("verb, args, message", MISTAKES)
def test_user_mistakes_give_one_line_and_a_failing_exit(
  outside, verb, args, message, capfd, monkeypatch
):
  """In this process; capfd reads file descriptor 2, so C++ and absl logs count too."""
  _mistake_folder(outside)
  monkeypatch.chdir(outside)
  main = importlib.import_module(f"involution_jax.cli.{verb}").main
  returncode = main(_mistake_args(verb, args))
  _check_one_line(verb, returncode, capfd.readouterr().err, message, outside)


# The same as real processes, for what only they show: nothing else reaches the terminal
# (a library's warning or log line on stderr), the exit status is the process's.
@pytest.mark.parametrize("case", [0, 8, 9], ids=["train", "predict", "convert"])
def test_user_mistakes_in_a_real_process_print_only_that_line(outside, case):
  verb, args, message = MISTAKES[case]
  _mistake_folder(outside)
  result = _run(outside, verb, *_mistake_args(verb, args))
  _check_one_line(verb, result.returncode, result.stderr, message, outside)


# One spelling, underscores, as the config's fields (--config.batch_size); dashes still work.
@pytest.mark.parametrize("verb", TOOLS)
def test_every_option_is_spelled_with_underscores_and_accepted_with_dashes(verb, capsys):
  text = _help(verb, capsys, as_module=False)
  options = set(re.findall(r"(?<![\w.-])--[a-z][a-z0-9_-]*", text))
  assert options and not [o for o in options if "-" in o[2:]], options


def test_the_dashed_spelling_is_the_same_option(capsys):
  parser = cli.parser("probe", "A probe.", ["probe x"])
  parser.add_argument("--top_k", type=int, default=5)
  parser.add_argument("--out_dir")
  dashed = parser.parse_args(["--top-k", "3", "--out-dir=d"])
  assert vars(dashed) == vars(parser.parse_args(["--top_k", "3", "--out_dir=d"]))
  assert (dashed.top_k, dashed.out_dir) == (3, "d")
  with pytest.raises(SystemExit):  # a name that is no option, in either spelling
    parser.parse_args(["--top-n", "3"])
  assert parser.parse_args(["--out-d", "e"]).out_dir == "e"  # an abbreviation, dashed
  parser.add_argument("words", nargs="*")
  assert parser.parse_args(["--", "--out-dir"]).words == ["--out-dir"]  # values after --
  # A real command: the dashed option is the same one (here refused, before any work).
  from involution_jax.cli import train

  capsys.readouterr()
  assert train.main(["--target-platform", "tpu"]) == 1
  assert capsys.readouterr().err.strip() == (
    "involution-train: error: --target_platform goes with --dry_run (training runs on this machine)"
  )


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
