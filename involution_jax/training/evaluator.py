"""Evaluation: a task's metrics of a model on a dataset, sharded like training.

`evaluate_weights` scores a training checkpoint, a converted checkpoint, or
official weights (`.pth` / `.pdparams`, converted on the fly).
"""

from __future__ import annotations

import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding

from involution_jax.data import imagenet
from involution_jax.data.pipeline import Dataset, Preprocessor, eval_batches, num_eval_batches
from involution_jax.host.console import progress
from involution_jax.tasks import get_task
from involution_jax.training import sharding
from involution_jax.weights import (
  PREPROCESSING,
  ModelInfo,
  fitting_their_description,
  load_weights,
  model_from_info,
)


def make_eval_step(task, model, replicated: NamedSharding, batch_sharding: NamedSharding):
  """The task's evaluation of one batch, jitted; outputs replicated (every process sees all)."""
  inner = task.eval_fn(model)
  step = lambda variables, batch: dict(inner(variables, batch), examples=jnp.sum(batch["valid"]))
  return jax.jit(step, in_shardings=(replicated, batch_sharding), out_shardings=replicated)


def evaluate(
  task,
  eval_fn,
  variables: dict,
  dataset: Dataset,
  preprocess: Preprocessor,
  global_batch: int,
  batch_sharding: NamedSharding,
  quiet: bool = False,
) -> dict:
  """The task's metrics over every example once, plus how many could not be read.

  `global_batch` is an upper bound: a smaller dataset is one batch of its size (rounded
  up to a multiple of the devices), so memory follows the examples, not the setting.
  A progress bar shows on process 0's terminal unless `quiet`.
  """
  devices = batch_sharding.mesh.size
  global_batch = min(global_batch, max(1, -(-len(dataset.source) // devices)) * devices)
  batches = eval_batches(
    dataset,
    preprocess,
    global_batch=global_batch,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  bar = progress(
    batches,
    total=num_eval_batches(dataset, global_batch),
    desc="eval",
    unit="batch",
    leave=False,
    quiet=quiet or jax.process_index() != 0,
  )
  outputs = [
    jax.device_get(eval_fn(variables, sharding.global_batch(local, batch_sharding)))
    for local in bar
  ]
  results = task.summarize(outputs, dataset)
  results["unreadable"] = len(dataset.source) - int(sum(o["examples"] for o in outputs))
  return results


def _names(names, most: int = 8) -> str:
  shown = ", ".join(map(str, names[:most])) + (", ..." if len(names) > most else "")
  return f"[{shown}] ({len(names)})"


def _imagenet_by_wordnet_ids(trained, names) -> bool:
  """ImageNet's names against its WordNet ids (TFDS' and the folders' class names), both
  in the official class order (the ids sorted)."""
  return (
    tuple(trained) == imagenet.class_names()
    and len(names) == 1000
    and all(re.fullmatch(r"n\d{8}", n) for n in names)
    and list(names) == sorted(names)
  )


def check_same_classes(weights: str, info: ModelInfo, dataset: Dataset, data: str) -> None:
  """A ValueError unless `dataset`'s classes are the ones `weights` was trained on, in
  the same order (by name where the weights record names, else by number)."""
  trained, names = list(info.class_names or []), list(dataset.class_names or [])
  if trained == [str(i) for i in range(len(trained))]:  # numbers, not names (converted
    trained = []  # weights of another size than ImageNet's): compared by count only
  if trained and names and trained != names and not _imagenet_by_wordnet_ids(trained, names):
    i = next(
      (i for i, (a, b) in enumerate(zip(trained, names)) if a != b), min(map(len, (trained, names)))
    )
    first = (
      f"class {i}: {trained[i]!r} vs {names[i]!r}"
      if i < min(len(trained), len(names))
      else "one list is longer"
    )
    raise ValueError(
      f"{weights} was trained on other classes than {data} has ({first}): the weights' "
      f"{_names(trained)}, the data's {_names(names)}; its outputs would be scored against "
      "other labels"
    )
  if info.num_classes != dataset.num_classes:
    raise ValueError(
      f"{weights} has {info.num_classes} classes but {data} has {dataset.num_classes}"
    )


def with_recorded_preprocessing(config, task, info: ModelInfo, dataset: Dataset, log=print):
  """`config` with the input preprocessing `info` records (image size, mean, std, crop)
  where the config differs, each change logged: the weights were trained on that input."""
  asked = task.model_info(config, dataset)
  recorded = {k: getattr(info, k) for k in PREPROCESSING}
  changed = {
    k: v
    for k, v in recorded.items()
    if v is not None and getattr(asked, k) is not None and v != getattr(asked, k)
  }
  if not changed:
    return config
  log(
    "evaluating with the weights' preprocessing: "
    + ", ".join(
      f"{k} {_listed(v)} (the config has {_listed(getattr(asked, k))})" for k, v in changed.items()
    )
  )
  fields = config.to_dict()
  for k, v in changed.items():  # a square size as the config's int
    fields[k] = v[0] if k == "image_size" and isinstance(v, tuple) and v[0] == v[-1] else v
  return ml_collections.ConfigDict(fields)


def _listed(value):
  """A recorded value as the JSON shows it (and as this message always has): lists."""
  return list(value) if isinstance(value, tuple) else value


def evaluate_weights(
  config: ml_collections.ConfigDict,
  weights: str,
  quiet: bool = False,
  *,
  mesh: jax.sharding.Mesh | None = None,
  preprocessing: str = "weights",
) -> dict:
  """Scores `weights` on `config.dataset` / `config.eval_split`; `quiet`: no progress
  bars. `mesh`: a 1-D mesh with axis "data" (default: every device of every process).
  `preprocessing`: "weights" (the input preprocessing the weights record, where they
  do) or "config" (the config's, e.g. another resolution on purpose).

  Raises:
    ValueError: the data's classes (or vocabulary) are not the weights'.
  """
  if preprocessing not in ("weights", "config"):
    raise ValueError(f"preprocessing must be 'weights' or 'config', got {preprocessing!r}")
  task = get_task(config)
  variables, info = load_weights(weights, quiet=quiet or jax.process_index() != 0)
  dataset = task.dataset(config, config.eval_split)
  check_same_classes(weights, info, dataset, f"{config.dataset} ({config.eval_split})")
  vocabulary = getattr(dataset.source, "vocabulary_sha256", None)
  if info.vocabulary_sha256 not in (None, vocabulary):
    raise ValueError(
      f"{weights} was trained with another vocabulary than {config.dataset}'s "
      f"({len(info.vocabulary or ())} words, SHA-256 {info.vocabulary_sha256[:12]}... "
      f"vs {vocabulary[:12]}...): its word ids would mean other words"
    )
  main_process = jax.process_index() == 0
  log = (lambda line: print(line, file=sys.stderr)) if main_process else (lambda _: None)
  recorded = config
  if preprocessing == "weights":
    recorded = with_recorded_preprocessing(config, task, info, dataset, log)
  if recorded is not config:  # the images are read at the recorded size
    config, dataset = recorded, task.dataset(recorded, recorded.eval_split)
  mesh = mesh or sharding.data_mesh()
  if config.eval_batch_size % mesh.size:
    raise ValueError(
      f"eval_batch_size={config.eval_batch_size} must be divisible by the {mesh.size} device(s)"
    )
  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  model = model_from_info(info)
  variables = jax.device_put(variables, replicated)
  with fitting_their_description():
    return evaluate(
      task,
      make_eval_step(task, model, replicated, batch_sharding),
      variables,
      dataset,
      task.preprocess(config),
      config.eval_batch_size,
      batch_sharding,
      quiet=quiet,
    )
