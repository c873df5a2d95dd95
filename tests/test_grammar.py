"""One command grammar: the weights first, --quiet and --json on every command, help on
every option, --help without JAX; the listings; what the commands print about a run."""

import importlib
import json
import subprocess
import sys
from unittest import mock

import pytest
from helpers import python_env
from test_cli import TOOLS

from involution_jax import cli, configs

COMMANDS = (*TOOLS, "listing")  # the tools, and those that never had an old module name


def _parser_of(verb: str):
  """The argument parser `involution-<verb>` builds (caught as it answers --help)."""
  made = []

  def keep(*args, **kwargs):
    made.append(cli_parser(*args, **kwargs))
    return made[-1]

  cli_parser = cli.parser
  with mock.patch.object(cli, "parser", keep), pytest.raises(SystemExit):
    importlib.import_module(f"involution_jax.cli.{verb}").main(["--help"])
  return made[0]


# One grammar: the weights first (positional), --quiet and --json everywhere, every option
# explained.
@pytest.mark.parametrize("verb", COMMANDS)
def test_every_command_has_quiet_json_and_help_on_every_option(verb, capsys):
  parser = _parser_of(verb)
  options = {o for a in parser._actions for o in a.option_strings}
  assert {"--quiet", "--json"} <= options
  hidden = {"--weights", "--image"}  # the older spellings, still accepted
  for action in parser._actions:
    if not set(action.option_strings) & hidden:
      assert action.help and action.help.strip(), (verb, action.dest)
  positional = [a.dest for a in parser._actions if not a.option_strings]
  if "weights" in positional:
    assert positional[0] == "weights", positional


def test_help_answers_without_importing_jax():
  """Every command's --help (and its bad arguments) come before JAX and Flax are
  imported: they answer in a fraction of a second."""
  code = (
    "import importlib, sys\n"
    f"for verb in {COMMANDS!r}:\n"
    "  try:\n"
    "    importlib.import_module(f'involution_jax.cli.{verb}').main(['--help'])\n"
    "  except SystemExit:\n"
    "    pass\n"
    "print(sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules))\n"
  )
  done = subprocess.run(
    [sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, timeout=60
  )
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == "[]"


def test_weights_come_first_and_once(capsys):
  from involution_jax.cli import convert, visualize
  from involution_jax.cli import eval as eval_command

  with pytest.raises(SystemExit) as done:
    eval_command.main([])
  assert done.value.code == 2 and "required: WEIGHTS" in capsys.readouterr().err
  with pytest.raises(SystemExit) as done:
    visualize.main(["run_a", "x.png", "--weights", "run_b"])
  assert "WEIGHTS given twice: run_a and --weights run_b" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # the first positional is WEIGHTS; OUT is what is missing
    convert.main(["run_a"])
  err = capsys.readouterr().err
  assert "usage: involution-convert [-h]" in err and "WEIGHTS out" in err
  assert "required: out" in err


def test_help_names_what_the_code_allows():
  """Lists in help texts, written out so that --help needs no import, are the code's."""
  from involution_jax import portability
  from involution_jax.weights import convert, zoo

  options = {o: a for a in _parser_of("convert")._actions for o in a.option_strings}
  assert all(f in options["--format"].help for f in convert.FORMATS)
  options = {o: a for a in _parser_of("train")._actions for o in a.option_strings}
  assert ",".join(portability.PLATFORMS) in options["--target_platform"].help
  assert all(name in cli.WEIGHTS_HELP for name in zoo.REGISTRY)


def test_listings_name_what_the_library_has(capsys):
  import involution_jax
  from involution_jax.cli import listing as list_command
  from involution_jax.models import MODELS
  from involution_jax.weights import zoo

  assert list_command.main(["--json"]) == 0
  found = json.loads(capsys.readouterr().out)
  assert [r["name"] for r in found["models"]] == involution_jax.list_models() == sorted(MODELS)
  assert [r["name"] for r in found["configs"]] == involution_jax.list_configs()
  assert involution_jax.list_configs() == configs.names()
  assert [r["name"] for r in found["pretrained"]] == involution_jax.list_pretrained()
  assert involution_jax.list_pretrained() == list(zoo.REGISTRY)
  assert all(r["description"] for rows in found.values() for r in rows)
  assert involution_jax.list_models("rednet1*") == ["rednet101", "rednet152"]
  assert involution_jax.list_configs("*seg*") == ["digitscenes_seg"]
  assert list_command.main(["pretrained", "--pattern", "rednet5*"]) == 0
  text = capsys.readouterr().out
  assert text.startswith("pretrained:\n") and "rednet50 " in text and "rednet26" not in text
  with pytest.raises(SystemExit) as done:
    list_command.main(["modles"])
  assert done.value.code == 2 and "'modles' is not one of models" in capsys.readouterr().err


def test_the_tensorboard_command_is_printed_only_where_tensorboard_is_installed():
  import importlib.util

  from involution_jax.cli import train

  metrics = {"steps": 3, "checkpoint_dir": "/w/checkpoints", "tensorboard_dir": "/w/tensorboard"}
  for installed in (True, False):
    with mock.patch.object(importlib.util, "find_spec", lambda name: installed or None):
      text = train._final_text(metrics, "/w")
    line = next(line for line in text.splitlines() if line.startswith("TensorBoard: "))
    if installed:
      assert line == "TensorBoard: tensorboard --logdir /w/tensorboard"
    else:
      assert line.startswith("TensorBoard: /w/tensorboard (to view: pip install tensorboard")


def test_a_closed_output_pipe_stops_a_command_quietly():
  """`involution-... | head -c 10`: no error line, SIGPIPE's status. The command writes
  more than a pipe holds, so the reader's going away always reaches it."""
  env = python_env()
  env.pop("PYTHONUNBUFFERED", None)  # a short output waits in the buffer until the end
  for size, read in ((1_000_000, 10), (100, 0)):  # more than a pipe holds; a line
    script = (
      "import sys, time\n"
      "from involution_jax import cli\n"
      "@cli.command('probe')\n"
      "def main(argv=None):\n"
      "  time.sleep(0.5)\n"
      f"  print('x' * {size})\n"
      "  return 0\n"
      "sys.exit(main())\n"
    )
    with subprocess.Popen(
      [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
      process.stdout.read(read)
      process.stdout.close()  # the reader goes away before the output is written
      err = process.stderr.read().decode()
    assert process.returncode == 141 and err == "", (size, process.returncode, err)
  # Another broken pipe (not standard output's) is an error like any other.
  from involution_jax import cli as commands

  @commands.command("probe")
  def probe(argv):
    raise BrokenPipeError(32, "Broken pipe")

  assert probe([]) == 1
