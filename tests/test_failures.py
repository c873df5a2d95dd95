"""Faults, bad input and long runs (issue: no lost work, no silent nonsense, one clear line).

One test (or one parametrised family) per failure mode; each fails on the code before it.
"""

import dataclasses
import errno
import gc
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import (
  ROOT,
  alive,
  one_device_mesh,
  python_env,
  save_random_checkpoint,
  spawned_processes,
  tiny_digits_config,
  tiny_flags,
  train_command,
  wait_for_checkpoint,
)
from PIL import Image

from involution_jax import cli, configs, involution
from involution_jax.cli import convert as convert_command
from involution_jax.cli import eval as eval_command
from involution_jax.cli import export, predict, train, visualize
from involution_jax.data import classification, imagenet, pipeline
from involution_jax.host import workdir_lock
from involution_jax.host.console import one_line
from involution_jax.host.signals import raise_terminated
from involution_jax.inference.predictor import Predictor
from involution_jax.training import evaluator
from involution_jax.training.trainer import train_and_evaluate
from involution_jax.weights import ModelInfo, checkpoints, convert


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run's workdir with checkpoints at steps 2 and 4 (copy it before changing it)."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  train_and_evaluate(tiny_digits_config(), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
  return workdir


def _copy(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  return workdir


# --- config values: every field checked before anything is built ---------------------------

BAD_FIELDS = [
  ("keep_checkpoints", 0, "keep_checkpoints must be an integer >= 1"),
  ("eval_batch_size", 0, "eval_batch_size must be an integer > 0"),
  ("log_every_steps", 0, "log_every_steps must be an integer >= 1"),
  ("checkpoint_every_steps", 0, "checkpoint_every_steps must be an integer >= 1"),
  ("eval_every_steps", -1, "eval_every_steps must be an integer >= 0"),
  ("image_size", 0, "image_size must be > 0"),
  ("image_size", -8, "image_size must be > 0"),
  ("augment", "bogus", "augment must be one of none, inception, pad_crop_flip, translate"),
  ("eval_crop", 1.5, "eval_crop must be in \\(0, 1\\]"),
  ("momentum", 1.0, "momentum must be in \\[0, 1\\)"),
  ("data_workers", -1, "data_workers must be an integer >= 0"),
  ("prefetch_batches", 0, "prefetch_batches must be an integer >= 1"),
  ("optimizer", "lion", "optimizer must be 'sgd' or 'adamw'"),
  ("learning_rate", float("inf"), "learning_rate must be a finite number > 0"),
  ("warmup_epochs", float("nan"), "warmup_epochs must be a finite number >= 0"),
  ("num_train_steps", True, "num_train_steps must be an integer"),
  ("batch_size", True, "batch_size must be an integer > 0"),
  ("std", (127.5, 0.0, 127.5), "std must be 3 finite numbers > 0 \\(R, G, B\\)"),
  ("mean", (127.5, 127.5), "mean must be 3 finite numbers \\(R, G, B\\)"),
]


@pytest.mark.parametrize(
  "field, value, message", BAD_FIELDS, ids=[f"{f}={v}" for f, v, _ in BAD_FIELDS]
)
def test_a_bad_config_value_names_the_field_and_what_is_allowed(field, value, message):
  config = tiny_digits_config(**{field: value})
  with pytest.raises(
    ValueError, match=f"invalid config: {message}.*, got {re.escape(repr(value))}$"
  ):
    configs.validate(config, devices=8)


def test_a_config_file_may_not_make_a_count_a_float():
  """Overrides keep a field's type; a config file's own fields are checked by validate."""
  fields = dict(tiny_digits_config().to_dict(), batch_size=64.0)
  with pytest.raises(ValueError, match="batch_size must be an integer > 0, got 64.0$"):
    configs.validate(ml_collections.ConfigDict(fields), devices=8)


@pytest.mark.parametrize(
  "text, spec, message",
  [
    ("def get_config(:\n", "{path}", "config file {path}, line 1: invalid syntax"),
    (
      "def get_config():\n  return 3\n",
      "{path}",
      "config '{path}': get_config() must return an ml_collections.ConfigDict (or a dict), "
      "got 'int'",
    ),
    (
      "def get_config():\n  return dict(batch_size=8)\n",
      "{path}:big",
      "config '{path}' takes no argument, got {path}:big; use '{path}'",
    ),
  ],
  ids=["syntax", "not-a-config", "no-argument"],
)
def test_a_config_file_mistake_is_one_line(tmp_path, capsys, text, spec, message):
  path = tmp_path / "mine.py"
  path.write_text(text)
  spec, message = spec.format(path=path), message.format(path=path)
  assert train.main(["--config", spec, "--workdir", str(tmp_path / "run")]) == 1
  assert capsys.readouterr().err.strip() == f"involution-train: error: {message}"
  assert not (tmp_path / "run").exists()


def test_a_config_file_may_return_a_dict(tmp_path):
  path = tmp_path / "mine.py"
  path.write_text("def get_config(size='8'):\n  return dict(batch_size=int(size))\n")
  assert configs.get_config(f"{path}:16").batch_size == 16


# Over 20 s: its first use builds the module's trained workdir.
def test_keep_checkpoints_0_stops_before_training_and_keeps_the_workdir(trained, tmp_path, capsys):
  workdir = _copy(trained, tmp_path)
  kept = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert train.main(["--workdir", str(workdir), *tiny_flags(keep_checkpoints=0)]) == 1
  assert capsys.readouterr().err.strip() == (
    "involution-train: error: invalid config: keep_checkpoints must be an integer >= 1 "
    "(or None: keep all), got 0"
  )
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == kept


# --- the training iterator's read-ahead is bounded -------------------------------------------


class _CountingSource:
  def __init__(self):
    self.reads, self._lock = 0, threading.Lock()

  def __len__(self):
    return 10_000

  def __getitem__(self, i):
    with self._lock:
      self.reads += 1
    return {"image": np.zeros((4, 4, 3), np.uint8), "label": 0}


class _Identity:
  def train(self, record, rng):
    return {"image": np.zeros((4, 4, 3), np.float32), "valid": np.float32(1)}

  def eval(self, record):
    return self.train(record, None)

  def blank(self):
    return self.train(None, None)


@pytest.mark.parametrize("read_ahead", [1, 3])
def test_the_training_iterator_decodes_only_the_batches_it_reads_ahead(read_ahead):
  source = _CountingSource()
  dataset = pipeline.Dataset(source, 10, ())
  iterator = pipeline.train_iterator(
    dataset, _Identity(), global_batch=8, seed=0, read_ahead=read_ahead
  )
  next(iterator)
  for _ in range(50):  # let the reader threads run as far as they may
    threading.Event().wait(0.02)
  assert source.reads <= 8 * (1 + read_ahead)
  iterator.close()


# --- the op on empty input ------------------------------------------------------------------

EMPTY = [  # x shape, kernel shape, padding
  ((0, 8, 8, 16), (0, 8, 8, 2, 3, 3), "SAME"),
  ((2, 0, 8, 16), (2, 0, 8, 2, 3, 3), "SAME"),
  ((2, 0, 16), (2, 0, 2, 3), "CAUSAL"),
  ((2, 0, 16), (2, 0, 2, 3), ((1, 1),)),
]


@pytest.mark.parametrize("method", ["shift", "patches"])
@pytest.mark.parametrize("x_shape, k_shape, padding", EMPTY)
def test_empty_input_gives_the_empty_result_and_gradients(x_shape, k_shape, padding, method):
  x, kernel = jnp.ones(x_shape), jnp.ones(k_shape)
  f = jax.jit(lambda x, k: involution(x, k, padding=padding, method=method))
  assert f(x, kernel).shape == x_shape
  dx, dk = jax.grad(lambda x, k: f(x, k).sum(), argnums=(0, 1))(x, kernel)
  assert dx.shape == x_shape and dk.shape == k_shape


# --- prediction arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--batch-size", "0"], "--top_k and --batch_size must be >= 1, got 5 and 0"),
    (["--batch-size", "-2"], "--top_k and --batch_size must be >= 1, got 5 and -2"),
    (["--top-k", "-3"], "--top_k and --batch_size must be >= 1, got -3 and 32"),
    (["--min-score", "1.5"], "--min_score must be in [0, 1], got 1.5"),
  ],
)
def test_predict_argument_mistakes_are_one_line(tmp_path, capsys, flags, message):
  assert predict.main([str(tmp_path), str(tmp_path), *flags]) == 1
  assert capsys.readouterr().err.strip() == f"involution-predict: error: {message}"


# --- damaged, other-model and diverged checkpoints --------------------------------------------


def _truncate(pattern):
  """Cuts every data file of an item to 7 bytes (some hold nothing a restore reads)."""

  def damage(step_dir):
    paths = sorted(step_dir.glob(pattern))
    assert paths
    for path in paths:
      path.write_bytes(path.read_bytes()[:7])

  return damage


DAMAGE = {
  "truncated variables": _truncate("variables/ocdbt.process_0/d/*"),
  "truncated train state": _truncate("train/ocdbt.process_0/d/*"),
  "no manifest": lambda step_dir: (step_dir / "train" / "manifest.ocdbt").unlink(),
  "garbage iterator state": lambda step_dir: (step_dir / "data" / "process_0-of-1.json").write_text(
    "garbage"
  ),
}


# Over 20 s: resuming is training: the train step compiles again.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no tracebacks
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_set_aside_and_the_newest_intact_one_resumed(
  trained, tmp_path, capsys, damage
):
  workdir = _copy(trained, tmp_path)
  DAMAGE[damage](workdir / "checkpoints" / "4")
  metrics = train_and_evaluate(tiny_digits_config(num_train_steps=6), str(workdir))
  out = capsys.readouterr().out
  assert re.search(r"checkpoint step 4 is damaged \(\w+: .+\); set aside as .+/4\.damaged", out)
  assert "resuming from step 2, the newest intact checkpoint" in out
  assert metrics["steps"] == 6 and np.isfinite(metrics["train_loss"])
  assert {"4.damaged", "6"} <= set(os.listdir(workdir / "checkpoints"))


@pytest.fixture
def collected_at_its_end():
  """A failed tensorstore read leaves its coroutine in a reference cycle: its error would
  reach whatever runs when the collector next does (a later test's command, whose stderr
  is checked line by line), so the test that made it collects it at its end."""
  yield
  gc.collect()


# The unraisable error of the failed read (see `collected_at_its_end`) is expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_prediction_on_a_damaged_workdir_uses_the_newest_intact_step(
  trained, tmp_path, caplog, collected_at_its_end
):
  workdir = _copy(trained, tmp_path)
  DAMAGE["truncated variables"](workdir / "checkpoints" / "4")
  variables, info = checkpoints.load_for_inference(str(workdir))
  intact, _ = checkpoints.load_for_inference(str(trained), step=2)
  jax.tree.map(np.testing.assert_array_equal, variables, intact)
  assert f"checkpoint {workdir}/checkpoints/4 is damaged" in caplog.text
  with pytest.raises(ValueError, match=r"checkpoint .+/4 cannot be read: \w+"):
    checkpoints.load_for_inference(str(workdir), step=4)


@pytest.mark.parametrize(
  "override, difference",
  [
    ("model_kwargs.base_width=32", "base_width 16, asked 32"),
    ("model_kwargs.kernel_size=5", "kernel_size 3, asked 5"),
    ("model_kwargs.stage_sizes=(2,1,1)", "stage_sizes (1, 1, 1), asked (2, 1, 1)"),
  ],
)
def test_another_model_in_the_workdir_is_one_line_and_touches_nothing(
  trained, tmp_path, capsys, override, difference
):
  workdir = _copy(trained, tmp_path)
  assert train.main(["--workdir", str(workdir), *tiny_flags(), f"--config.{override}"]) == 1
  assert capsys.readouterr().err.strip() == (
    f"involution-train: error: workdir {workdir} holds a checkpoint of a different model "
    f"({difference}): use a new workdir, or --config.init_from={workdir} to start from its "
    "weights"
  )
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]


def test_a_model_description_that_does_not_fit_its_weights_is_one_line(tmp_path, capsys):
  """An edited (or swapped) model info: Flax's shape error, said in one line by each tool
  that runs weights (each fails as its program is traced, before anything is written)."""
  weights = tmp_path / "run"
  _, _, info = save_random_checkpoint(str(weights))
  info_file = weights / "1" / "model" / "metadata"
  widths = {"base_width": 2 * info.model_kwargs["base_width"]}
  edited = dataclasses.replace(info, model_kwargs={**info.model_kwargs, **widths})
  info_file.write_text(json.dumps(edited.to_json()))
  image = str(tmp_path / "x.png")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
  out, named = tmp_path / "out", ["--weights", str(weights)]
  runs = {
    "predict": lambda: predict.main([str(weights), image]),
    "export": lambda: export.main([str(weights), str(out)]),
    "eval": lambda: eval_command.main([*named, *tiny_flags()]),
    "visualize": lambda: visualize.main([*named, "--image", image, "--out", str(out)]),
  }
  shapes = r"expected to generate shape \(\d+, 32\), but .* has shape \(\d+, 16\)\.$"
  for prog, run in runs.items():
    assert run() == 1, prog
    assert re.fullmatch(
      f"involution-{prog}: error: the weights do not fit the model their description "
      f'builds: For parameter "kernel" in "/layer1_0/conv1", the given initializer is ' + shapes,
      capsys.readouterr().err.strip(),
    ), prog
  assert not os.path.exists(out) and not os.path.exists(f"{out}.png")


@pytest.mark.parametrize(
  "override, changed",
  [("batch_size=8", "batch_size=16 (now 8)"), ("seed=3", "seed=0 (now 3)")],
)
def test_resuming_with_other_steps_is_one_line_and_touches_nothing(
  trained, tmp_path, capsys, override, changed
):
  """A step of another batch size or data order cannot continue: its count and saved data
  position would mean something else."""
  workdir = _copy(trained, tmp_path)
  assert train.main(["--workdir", str(workdir), *tiny_flags(), f"--config.{override}"]) == 1
  assert capsys.readouterr().err.strip() == (
    f"involution-train: error: workdir {workdir}: step 4 was trained with {changed}; "
    "resuming would change what its steps and its saved data position mean: train with "
    f"the same values, or in a new workdir (--config.init_from={workdir} to start from its "
    "weights)"
  )
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]


def test_a_second_run_in_a_held_workdir_is_one_line_and_writes_nothing(tmp_path, capsys):
  workdir = tmp_path / "run"
  with workdir_lock.hold(str(workdir)):
    assert train.main(["--workdir", str(workdir), *tiny_flags()]) == 1
  err = capsys.readouterr().err.strip()
  holder = re.escape(f"pid {os.getpid()} on {socket.gethostname()} since ")
  assert re.fullmatch(
    f"involution-train: error: workdir {re.escape(str(workdir))} is in use by another "
    f"training run \\({holder}[-0-9: ]+ \\(.+\\)\\); wait for it to end \\(or stop it\\), "
    "or use another workdir",
    err,
  ), err
  assert os.listdir(workdir) == []  # released: its lock file gone, and nothing written


_HOLD_AND_WAIT = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("workdir_lock", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
held = module.hold(sys.argv[2])  # kept: a collected generator would release it
held.__enter__()
print("held", flush=True)
time.sleep(120)
"""


def test_the_lock_of_a_killed_run_is_recognised_and_taken_over(tmp_path):
  """flock: the kernel releases a SIGKILLed holder's lock; its record says who it was."""
  holder = subprocess.Popen(
    [sys.executable, "-c", _HOLD_AND_WAIT, workdir_lock.__file__, str(tmp_path)],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == "held"
    busy = pytest.raises(workdir_lock.WorkdirInUseError, match=f"\\(pid {holder.pid} on ")
    with busy, workdir_lock.hold(str(tmp_path)):
      pass
  finally:
    holder.kill()
    holder.wait()
  said = []
  with workdir_lock.hold(str(tmp_path), log=said.append):
    record = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
    assert record["pid"] == os.getpid()
  assert len(said) == 1 and said[0].startswith(
    f"workdir {tmp_path}: the run that held it (pid {holder.pid} on {socket.gethostname()} "
  ), said
  assert said[0].endswith("ended without releasing it; taken over"), said
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_every_process_stops_when_process_0_cannot_take_the_workdir(tmp_path, monkeypatch):
  """In a multi-process run, process 0 holds the lock and tells the others (simulated:
  this process as process 1 of 2, told by process 0 that the workdir is in use)."""
  from involution_jax.training import trainer

  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  told = []
  monkeypatch.setattr(
    workdir_lock.multihost_utils, "broadcast_one_to_all", lambda x: told.append(int(x)) or 1
  )
  with pytest.raises(workdir_lock.WorkdirInUseError, match=r"is in use \(see process 0\)$"):
    trainer.train_and_evaluate(tiny_digits_config(), str(tmp_path / "run"))
  assert told == [0]  # this process did not fail, and took no lock
  assert not (tmp_path / "run").exists()


def test_process_0_tells_the_others_when_it_cannot_take_the_workdir(tmp_path, monkeypatch):
  """Process 0 (this one, simulated as 0 of 2) fails on the lock: it tells the others
  before it raises, whatever the error, so none waits for it."""
  from involution_jax.training import trainer

  monkeypatch.setattr(jax, "process_count", lambda: 2)
  told = []
  monkeypatch.setattr(
    workdir_lock.multihost_utils, "broadcast_one_to_all", lambda x: told.append(int(x)) or int(x)
  )
  workdir = str(tmp_path / "run")
  with workdir_lock.hold(workdir), pytest.raises(workdir_lock.WorkdirInUseError, match="pid "):
    trainer.train_and_evaluate(tiny_digits_config(), workdir)

  def refused(*args):
    raise PermissionError(errno.EACCES, "Permission denied", workdir)

  monkeypatch.setattr(workdir_lock, "hold", refused)
  with pytest.raises(PermissionError):
    trainer.train_and_evaluate(tiny_digits_config(), workdir)
  assert told == [1, 1]


def test_a_file_system_that_cannot_lock_is_said_and_the_run_goes_on(tmp_path, monkeypatch):
  def no_locks(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(workdir_lock.fcntl, "flock", no_locks)
  said = []
  with workdir_lock.hold(str(tmp_path), log=said.append):
    pass
  assert said == [
    f"workdir {tmp_path}: this file system cannot lock {tmp_path / workdir_lock.LOCK_FILE}; "
    "training without the check that no other run uses the workdir"
  ]


# Over 20 s: the partial load is checked by training a step.
def test_init_from_weights_of_another_model_fails_unless_partial_on_purpose(trained, tmp_path):
  config = tiny_digits_config(init_from=str(trained))
  config.model_kwargs.base_width = 32
  with pytest.raises(ValueError, match=r"fits only \d+ of the model's 101 arrays; not loaded: "):
    train_and_evaluate(config, str(tmp_path / "a"))
  config.init_partial = True
  config.num_train_steps = 1
  assert np.isfinite(train_and_evaluate(config, str(tmp_path / "b"))["train_loss"])


# Over 20 s: trains until the loss diverges, then resumes.
def test_divergence_names_the_kept_steps_with_their_losses_and_resume_step_works(
  trained, tmp_path, capsys
):
  workdir = _copy(trained, tmp_path)
  diverging = tiny_digits_config(num_train_steps=60, learning_rate=30.0, log_every_steps=1)
  with pytest.raises(FloatingPointError) as error:
    train_and_evaluate(diverging, str(workdir))
  message = str(error.value)
  kept = re.findall(r"step (\d+) \(train loss ([^)]+)\)", message)
  assert len(kept) == 2 and all(float(loss) > 0 for _, loss in kept), message
  best = min(kept, key=lambda k: float(k[1]))[0]
  assert f"e.g. --config.resume_step={best}" in message
  # Back to the suggested step with a tiny rate: the later kept steps are set aside.
  capsys.readouterr()
  resumed = tiny_digits_config(num_train_steps=int(best) + 2, resume_step=int(best))
  resumed.learning_rate = 1e-9
  metrics = train_and_evaluate(resumed, str(workdir))
  out = capsys.readouterr().out
  later = [step for step, _ in kept if int(step) > int(best)]
  assert later  # the loss grew: the suggested step is not the newest
  for step in later:
    assert f"step {step} set aside as {workdir}/checkpoints/{step}.superseded" in out
  assert f"at step {best} of {int(best) + 2}" in out and metrics["steps"] == int(best) + 2
  # resume_step was for that run only: the workdir's config.py leaves it unset, so the
  # same run again (its config.py) is finished, and goes back nowhere.
  saved = configs.get_config(str(workdir / configs.RUN_CONFIG))
  assert saved.resume_step is None and saved.learning_rate == 1e-9
  before = (workdir / "metrics.json").read_bytes()
  again = train_and_evaluate(saved, str(workdir))
  assert json.dumps(again) == json.dumps(metrics)  # (NaN, the diverged test loss, included)
  assert "set aside" not in capsys.readouterr().out
  assert (workdir / "metrics.json").read_bytes() == before


# --- official weights files that cannot be used ---------------------------------------------


@pytest.fixture(scope="module")
def official_state(torch):
  from torch_rednet import Classifier

  return {k: v.clone() for k, v in Classifier(26).state_dict().items()}


STEM = "backbone.stem.0.conv.weight"


def _bad_pth(torch, state, kind, path):
  if kind == "list":
    torch.save([1, 2, 3], path)
  elif kind == "string":
    torch.save(dict(state, **{STEM: "weights"}), path)
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind == "truncated":
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[:1000])
  elif kind == "nan":
    nan = state[STEM].clone()
    nan[0, 0, 0, 0] = float("nan")
    torch.save(dict(state, **{STEM: nan}), path)
  elif kind == "integer":
    torch.save(dict(state, **{STEM: state[STEM].to(torch.int64)}), path)


BAD_PTH = {
  "list": "holds a list, expected a dict of tensors",
  "string": f"unusable arrays \\(1\\):\n  {STEM}: a str, expected an array",
  "empty": "is not a readable .pth checkpoint: ",
  "truncated": "is not a readable .pth checkpoint: ",
  "nan": f"unusable arrays \\(1\\):\n  {STEM}: 1 non-finite values",
  "integer": f"unusable arrays \\(1\\):\n  {STEM}: dtype int64, expected floating point",
}


@pytest.mark.parametrize("kind", BAD_PTH)
def test_unusable_pth_files_name_the_file_and_what_is_wrong(
  torch, official_state, tmp_path, capsys, kind
):
  path = tmp_path / f"{kind}.pth"
  _bad_pth(torch, official_state, kind, path)
  with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:? .*{BAD_PTH[kind]}"):
    convert.load_official(str(path))
  assert predict.main([str(path), os.path.join(ROOT, "docs", "digit7.png")]) == 1
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 1 and err.startswith(f"involution-predict: error: {path}")


def test_nan_pdparams_are_refused_with_the_paddle_key(official_state, tmp_path):
  state = {
    k.removeprefix("backbone.")
    .replace("running_mean", "_mean")
    .replace("running_var", "_variance"): v.numpy().copy()
    for k, v in official_state.items()
    if not k.endswith("num_batches_tracked") and not k.startswith("head.")
  }
  state["stem.0.conv.weight"][0, 0, 0, 0] = np.inf
  path = tmp_path / "nan.pdparams"
  path.write_bytes(pickle.dumps(state))
  with pytest.raises(ValueError, match="stem.0.conv.weight: 1 non-finite values"):
    convert.load_official(str(path))


# --- unreadable and high-bit-depth images -------------------------------------------------------


def _folder(root, bad_train: int, good_train: int = 8):
  """root/{train,val}/{a,b}/*.png, with `bad_train` garbage files per training class."""
  for split, n in (("train", good_train), ("val", 4)):
    for c in ("a", "b"):
      (root / split / c).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(np.full((9, 9, 3), 20 * i + (c == "b") * 100, np.uint8)).save(
          root / split / c / f"{i}.png"
        )
      for i in range(bad_train if split == "train" else 0):
        (root / split / c / f"bad{i}.png").write_bytes(b"\x89PNG garbage")
  return root


def _folder_config(root, **overrides):
  return tiny_digits_config(
    dataset="folder",
    data_dir=str(root),
    eval_split="val",
    batch_size=8,
    eval_batch_size=8,
    **overrides,
  )


def test_evaluation_on_other_classes_is_refused_naming_both_lists(tmp_path, capsys):
  """A model of {a, b} scored on {b, c} would compare its class 0 (a) with b: refused."""
  weights = str(tmp_path / "ab")
  save_random_checkpoint(weights, config=_folder_config(_folder(tmp_path / "ab_data", 0)))
  other = _folder(tmp_path / "bc_data", 0)
  for split in ("train", "val"):
    (other / split / "a").rename(other / split / "c")
  flags = ["--config.dataset=folder", f"--config.data_dir={other}", "--config.eval_split=val"]
  flags += ["--config.image_size=8", "--config.eval_batch_size=8"]
  assert eval_command.main(["--weights", weights, *flags]) == 1
  assert capsys.readouterr().err.strip() == (
    f"involution-eval: error: {weights} was trained on other classes than folder (val) has "
    "(class 0: 'a' vs 'b'): the weights' [a, b] (2), the data's [b, c] (2); its outputs "
    "would be scored against other labels"
  )


def test_official_imagenet_names_match_wordnet_ids_in_the_official_order():
  """Official weights name ImageNet's classes; TFDS and folders use WordNet ids, whose
  sorted order is the official class order."""
  info = ModelInfo("rednet50", 1000, class_names=imagenet.class_names())
  ids = [f"n{1440764 + i:08d}" for i in range(1000)]
  evaluator.check_same_classes("w", info, pipeline.Dataset(None, 1000, tuple(ids)), "d")
  numbers = ModelInfo("rednet26", 2, class_names=["0", "1"])  # converted weights: no names
  evaluator.check_same_classes("w", numbers, pipeline.Dataset(None, 2, ("cat", "dog")), "d")
  shuffled = ids[1:] + ids[:1]
  with pytest.raises(ValueError, match=r"class 0: 'tench' vs 'n01440765'"):
    evaluator.check_same_classes("w", info, pipeline.Dataset(None, 1000, tuple(shuffled)), "d")


def test_evaluation_uses_the_recorded_preprocessing_and_batches_no_more_than_the_data(
  tmp_path, capsys, monkeypatch
):
  """Weights trained on 8 x 8 digits are scored on 8 x 8 digits whatever the config says
  (and it is said); an evaluation batch larger than the data is cut to the data."""
  weights = str(tmp_path / "w")
  save_random_checkpoint(weights, image_size=8)
  batches = []
  make_batches = evaluator.eval_batches

  def recorded_batches(dataset, preprocess, *, global_batch, **kwargs):
    batches.append((global_batch, preprocess.image_size))
    return make_batches(dataset, preprocess, global_batch=global_batch, **kwargs)

  monkeypatch.setattr(evaluator, "eval_batches", recorded_batches)
  mesh = one_device_mesh()
  asked = tiny_digits_config(image_size=16, mean=(0.0,) * 3)
  other = evaluator.evaluate_weights(asked, weights, quiet=True, mesh=mesh)
  assert capsys.readouterr().err.strip() == (
    "evaluating with the weights' preprocessing: image_size 8 (the config has 16), mean "
    "[127.5, 127.5, 127.5] (the config has [0.0, 0.0, 0.0])"
  )
  huge = tiny_digits_config(eval_batch_size=100_000)
  same = evaluator.evaluate_weights(huge, weights, quiet=True, mesh=mesh)
  assert capsys.readouterr().err == ""
  assert other["accuracy"] == same["accuracy"] and other["loss"] == pytest.approx(same["loss"])
  on_purpose = evaluator.evaluate_weights(asked, weights, True, mesh=mesh, preprocessing="config")
  assert capsys.readouterr().err == "" and on_purpose["loss"] != pytest.approx(same["loss"])
  # the 360 test digits in one batch, not 100,000; 16 x 16 when the config's is asked for
  assert batches == [(64, 8), (360, 8), (64, 16)]


# Over 20 s: the trainer compiles its step before it reads the first batch.
def test_all_unreadable_training_data_stops_with_an_error_and_no_checkpoint(tmp_path, capsys):
  root = _folder(tmp_path / "data", bad_train=8, good_train=0)
  (root / "val" / "a" / "0.png").unlink()  # evaluation data may be fine; training data is not
  workdir = tmp_path / "run"
  folder = ["--config.dataset=folder", f"--config.data_dir={root}", "--config.eval_split=val"]
  flags = tiny_flags(batch_size=8, eval_batch_size=8) + folder
  assert train.main(["--workdir", str(workdir), *flags]) == 1
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("involution-train: error: step 1: none of the 8 examples of the batch")
  assert not any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir())


# Over 20 s: the trainer compiles its step before the bad batches arrive.
def test_too_many_unreadable_examples_stop_training(tmp_path):
  root = _folder(tmp_path / "data", bad_train=3)  # 6 of 22 files
  with pytest.raises(
    ValueError, match=r"could not be read \(more than max_unreadable_fraction=0.1"
  ):
    train_and_evaluate(_folder_config(root, num_train_steps=8), str(tmp_path / "run"))


# Over 20 s: trains long enough (5 steps) to draw the bad file more than once.
def test_an_unreadable_file_is_warned_about_once_and_counted_once(tmp_path, caplog):
  root = _folder(tmp_path / "data", bad_train=0)
  (root / "train" / "a" / "bad.png").write_bytes(b"\x89PNG garbage")  # 1 of 17
  config = _folder_config(root, num_train_steps=5, max_unreadable_fraction=0.2)
  metrics = train_and_evaluate(config, str(tmp_path / "run"))  # 40 draws: 2-3 of the bad file
  assert metrics["unreadable_train_images"] == 1
  assert caplog.text.count(f"skipping unreadable example {root}/train/a/bad.png") == 1


def test_sixteen_bit_images_are_scaled_not_saturated(trained, tmp_path):
  eight = np.asarray(Image.open(os.path.join(ROOT, "docs", "digit7.png")).convert("L"))
  Image.fromarray(eight).save(tmp_path / "8bit.png")
  Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "16bit.png")
  assert Image.open(tmp_path / "16bit.png").mode == "I;16"
  predictor = Predictor.load(str(trained), batch_size=2)
  low, high = predictor.predict([str(tmp_path / "8bit.png"), str(tmp_path / "16bit.png")], 3)
  assert low["top"] == high["top"]
  preprocess = classification.Preprocess(16, (127.5,) * 3, (127.5,) * 3)
  np.testing.assert_array_equal(
    preprocess.eval({"path": str(tmp_path / "8bit.png"), "label": 0})["image"],
    preprocess.eval({"path": str(tmp_path / "16bit.png"), "label": 0})["image"],
  )


# --- where outputs go ---------------------------------------------------------------------------


def test_a_file_or_unwritable_workdir_is_one_line(tmp_path, capsys, monkeypatch):
  afile = tmp_path / "afile"
  afile.write_text("not a folder")
  assert train.main(["--workdir", str(afile), *tiny_flags()]) == 1
  assert capsys.readouterr().err.strip() == (
    f"involution-train: error: workdir {afile} is a file, expected a folder"
  )
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only folder
  assert train.main(["--workdir", str(tmp_path / "ro"), *tiny_flags()]) == 1
  assert capsys.readouterr().err.strip() == (
    f"involution-train: error: workdir {tmp_path / 'ro'} is not writable"
  )


def test_export_makes_missing_folders_and_never_overwrites_without_asking(
  trained, tmp_path, capsys
):
  out = tmp_path / "new" / "folder" / "model.jaxexport"
  assert export.main([str(trained), str(out)]) == 0 and out.exists()
  before = out.read_bytes()
  assert export.main([str(trained), str(out)]) == 1
  assert (
    capsys.readouterr()
    .err.strip()
    .endswith(f"error: output {out} exists; pass --overwrite to replace it")
  )
  assert out.read_bytes() == before
  assert export.main([str(trained), str(out), "--overwrite"]) == 0


def test_convert_never_replaces_a_folder_without_asking_nor_one_of_other_files(
  torch, official_state, tmp_path, capsys
):
  weights = tmp_path / "rednet26.pth"
  torch.save(official_state, weights)
  out = tmp_path / "ckpt"
  assert convert_command.main([str(weights), str(out)]) == 0
  assert convert_command.main([str(weights), str(out)]) == 1
  assert (
    capsys.readouterr()
    .err.strip()
    .endswith(f"error: {out} exists and is not empty; pass --overwrite to replace it")
  )
  assert convert_command.main([str(weights), str(out), "--overwrite"]) == 0
  checkpoints.load_for_inference(str(out))
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("keep me")
  assert convert_command.main([str(weights), str(tmp_path / "mine"), "--overwrite"]) == 1
  assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# Over 20 s, end to end: SIGTERM and leaked shared memory (reported by multiprocessing at
# the process's exit) show only in a process of their own; it starts two reader processes.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_training_with_its_readers_and_leaves_nothing_behind(tmp_path):
  """SIGTERM (a scheduler stopping or preempting the job) unwinds the run: its reader
  processes stop, their shared memory is freed, the workdir is released with its
  checkpoints kept."""
  workdir = tmp_path / "run"
  flags = tiny_flags(data_workers=2, num_train_steps=100_000)  # stopped long before
  out, err = tmp_path / "out.txt", tmp_path / "err.txt"
  with open(out, "w") as stdout, open(err, "w") as stderr:
    process = subprocess.Popen(
      train_command(str(workdir), *flags), env=python_env(), cwd=ROOT, stdout=stdout, stderr=stderr
    )
  try:
    wait_for_checkpoint(process, str(workdir), 2)
    readers = spawned_processes(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, err.read_text()[-2000:]
  finally:
    process.kill()
  assert err.read_text().splitlines()[-1] == "involution-train: stopped by SIGTERM"
  assert "leaked shared_memory" not in err.read_text()
  # Not a terminal: no bar, a plain line per logging interval (log_every_steps=2).
  assert "\r" not in err.read_text()
  step_line = r"^step 2/100000: loss \d\.\d{4}, accuracy \d\.\d{4}, \d+ examples/s$"
  assert re.search(step_line, out.read_text(), re.M)
  assert len(readers) == 2 and not alive(readers), readers
  assert "2" in os.listdir(workdir / "checkpoints")
  assert not (workdir / workdir_lock.LOCK_FILE).exists()


def test_a_command_sets_the_sigterm_handler_while_it_runs_only():
  found = signal.getsignal(signal.SIGTERM)
  seen = []

  @cli.command("probe")
  def probe(argv):
    seen.append(signal.getsignal(signal.SIGTERM))
    return 0

  assert probe([]) == 0
  assert seen == [raise_terminated] and signal.getsignal(signal.SIGTERM) == found


def test_a_full_disk_is_one_line_and_so_is_each_library_error_before_it(
  tmp_path, capsys, monkeypatch
):
  """A full disk fails every write of a checkpoint, each logged from its thread with its
  traceback, and then ~100 of tensorstore's callbacks on a closed event loop (393 lines of
  stderr for the tiny model on a 256 KiB tmpfs, ~10 now): the command says it once, after
  one line per library error and per distinct callback error (simulated: the saving logs
  as Orbax and asyncio do, callbacks fail, then it raises tensorstore's error)."""
  from involution_jax.training import trainer

  class Callback:
    def __del__(self):
      raise RuntimeError("Event loop is closed")

  def full_disk(*args, **kwargs):
    try:
      raise ValueError("in a writer thread")
    except ValueError:
      logging.getLogger("absl").exception("Save Finalize thread failed.\nsecond line")
    logging.getLogger("asyncio").error("Task exception was never retrieved\nfuture: <Task>")
    for _ in range(3):
      Callback()  # dropped at once: its error goes to sys.unraisablehook
    raise ValueError("RESOURCE_EXHAUSTED: Error writing: No space left on device [28]")

  monkeypatch.setattr(trainer.checkpoints, "save", full_disk)
  handler = logging.StreamHandler(sys.stderr)  # the handler a library set up, on stderr
  handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
  monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
  monkeypatch.setattr(logging, "lastResort", None)
  workdir = tmp_path / "run"
  hook = sys.unraisablehook
  assert train.main(["--workdir", str(workdir), *tiny_flags()]) == 1
  assert sys.unraisablehook is hook  # in-process, the command leaves it as it found it
  assert capsys.readouterr().err.splitlines() == [
    "ERROR:absl:Save Finalize thread failed.",
    f"exception ignored in {Callback.__del__!r}: RuntimeError: Event loop is closed",
    f"involution-train: error: no space left on the device of workdir {workdir}: the "
    "checkpoint being saved was not kept (the complete ones are); free space, or keep "
    "fewer checkpoints (keep_checkpoints), and rerun to resume",
  ]


def test_a_titled_list_reads_as_one_line():
  error = ValueError("unusable arrays (2):\n  fc.weight: NaN\n  fc.bias: int64\nin w.pth")
  assert one_line(error) == "unusable arrays (2): fc.weight: NaN; fc.bias: int64; in w.pth"


def test_verbose_shows_the_traceback_of_a_user_error(capsys):
  assert train.main(["--config.batch_size=0"]) == 1  # one line without it
  with pytest.raises(ValueError, match="batch_size must be an integer > 0"):
    train.main(["--config.batch_size=0", "--verbose"])
