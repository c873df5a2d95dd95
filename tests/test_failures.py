"""Faults, bad input and long runs (issue: no lost work, no silent nonsense, one clear line).

One test (or one parametrised family) per failure mode; each fails on the code before it.
"""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_digits_config, tiny_flags

from involution_jax import involution, predict, train
from involution_jax.data import pipeline
from involution_jax.trainer import validate_config

# --- config values: every field checked before anything is built ---------------------------

BAD_FIELDS = [
  ("keep_checkpoints", 0, "keep_checkpoints must be >= 1"),
  ("eval_batch_size", 0, "eval_batch_size must be > 0"),
  ("log_every_steps", 0, "log_every_steps must be >= 1"),
  ("checkpoint_every_steps", 0, "checkpoint_every_steps must be >= 1"),
  ("eval_every_steps", -1, "eval_every_steps must be >= 0"),
  ("image_size", 0, "image_size must be > 0"),
  ("image_size", -8, "image_size must be > 0"),
  ("augment", "bogus", "augment must be one of none, inception, pad_crop_flip, translate"),
  ("eval_crop", 1.5, "eval_crop must be in \\(0, 1\\]"),
  ("momentum", 1.0, "momentum must be in \\[0, 1\\)"),
  ("data_workers", -1, "data_workers must be >= 0"),
  ("prefetch_batches", 0, "prefetch_batches must be >= 1"),
  ("optimizer", "lion", "optimizer must be 'sgd' or 'adamw'"),
]


@pytest.mark.parametrize(
  "field, value, message", BAD_FIELDS, ids=[f"{f}={v}" for f, v, _ in BAD_FIELDS]
)
def test_a_bad_config_value_names_the_field_and_what_is_allowed(field, value, message):
  config = tiny_digits_config(**{field: value})
  with pytest.raises(ValueError, match=f"invalid config: {message}.*, got {value!r}$"):
    validate_config(config, devices=8)


def test_keep_checkpoints_0_stops_before_training_and_keeps_the_workdir(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert train.main(["--workdir", str(workdir), *tiny_flags()]) == 0
  kept = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  capsys.readouterr()
  assert train.main(["--workdir", str(workdir), *tiny_flags(keep_checkpoints=0)]) == 1
  assert capsys.readouterr().err.strip() == (
    "involution-train: error: invalid config: keep_checkpoints must be >= 1 "
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
    (["--batch-size", "0"], "--top-k and --batch-size must be >= 1, got 5 and 0"),
    (["--batch-size", "-2"], "--top-k and --batch-size must be >= 1, got 5 and -2"),
    (["--top-k", "-3"], "--top-k and --batch-size must be >= 1, got -3 and 32"),
    (["--min-score", "1.5"], "--min-score must be in [0, 1], got 1.5"),
  ],
)
def test_predict_argument_mistakes_are_one_line(tmp_path, capsys, flags, message):
  assert predict.main([str(tmp_path), str(tmp_path), *flags]) == 1
  assert capsys.readouterr().err.strip() == f"involution-predict: error: {message}"
