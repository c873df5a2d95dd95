"""A dry run: everything a training run builds and compiles, without training.

What to run before paying for a pod slice: the model, mesh and data are built,
the training and evaluation steps are lowered (for this machine, or for a
named target platform that this machine does not have) and checked for
constructs the target cannot run (`portability.py`); for this machine they are
also compiled, and XLA's per-device memory figures reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from involution_jax import configs, portability
from involution_jax.tasks import get_task
from involution_jax.training import sharding
from involution_jax.training.trainer import build_programs, total_train_steps
from involution_jax.weights import checkpoints, zoo
from involution_jax.weights.convert import OFFICIAL_SUFFIXES

_MEMORY_FIELDS = {
  "arguments": "argument_size_in_bytes",
  "outputs": "output_size_in_bytes",
  "temporaries": "temp_size_in_bytes",
  "aliased": "alias_size_in_bytes",
  "code": "generated_code_size_in_bytes",
}


def _abstract_batch(example: dict, batch: int, batch_sharding) -> dict:
  """{name: (batch, ...) ShapeDtypeStruct} for examples shaped like `example`."""
  return {
    k: jax.ShapeDtypeStruct((batch, *np.shape(v)), np.asarray(v).dtype, sharding=batch_sharding)
    for k, v in example.items()
  }


def _check_data(config, task, preprocess) -> tuple[int | None, int | None, str]:
  """(number of classes, training examples, a line about the data); None, None when
  the data cannot be loaded, and then the line says why."""
  try:
    train_set = task.dataset(config, config.get("train_split", "train"))
  except (FileNotFoundError, ImportError) as e:
    return None, None, f"NOT CHECKED: {str(e).splitlines()[0]}"
  configs.check_num_classes(config, train_set)
  example = preprocess.train(train_set.source[0], np.random.default_rng(0))
  blank = preprocess.blank()
  for name, value in blank.items():
    got = np.asarray(example[name])
    if got.shape != np.shape(value) or got.dtype != np.asarray(value).dtype:
      raise ValueError(
        f"the pipeline makes {name} {got.shape} {got.dtype}, but padding examples "
        f"are {np.shape(value)} {np.asarray(value).dtype}"
      )
  line = (
    f"{len(train_set.source)} training examples, {train_set.num_classes} classes; "
    f"example 0 preprocessed: "
    + ", ".join(f"{k} {np.shape(v)} {np.asarray(v).dtype}" for k, v in example.items())
  )
  return train_set.num_classes, len(train_set.source), line


def memory_per_device(compiled: jax.stages.Compiled) -> dict[str, int] | None:
  """XLA's memory figures (bytes) for one device's program; None where not reported."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return {name: int(getattr(analysis, field)) for name, field in _MEMORY_FIELDS.items()}


def _check_init_from(weights: str | None) -> str:
  """A line about `config.init_from`; FileNotFoundError where there is nothing to load."""
  if not weights:
    return "none (initialised at random)"
  if zoo.is_name(weights) and not os.path.exists(weights):
    cached = os.path.exists(zoo.cached_path(weights))
    return f"pretrained {weights} ({'cached' if cached else 'downloaded when training starts'})"
  if not os.path.exists(weights):
    raise FileNotFoundError(
      f"init_from={weights}: no such file or folder, nor a pretrained name "
      f"({', '.join(zoo.REGISTRY)})"
    )
  if not weights.endswith(OFFICIAL_SUFFIXES):
    checkpoints.find_checkpoint_root(weights)  # names the folder where none is found
  return weights


def dry_run(
  config: ml_collections.ConfigDict,
  *,
  mesh: jax.sharding.Mesh | None = None,
  target_platforms: Sequence[str] = (),
) -> dict:
  """Builds and lowers what `train_and_evaluate(config, ...)` would run.

  `target_platforms`: some of "cpu", "cuda", "rocm", "tpu" to lower only, for
  each; none to lower and compile for this machine and report the memory.
  Data that cannot be loaded (not prepared here) is reported, not fatal, when
  `config.num_classes` says how many classes the model has.

  Returns a report: model, parameters, devices, batch sizes, platform, data,
  and per program ("train_step", "eval_step") "lowered" (for every target) or
  XLA's memory per device in bytes (arguments, outputs, temporaries, aliased, code).

  Raises:
    ValueError: an invalid config, data that contradicts it, or no class count.
    FileNotFoundError: `init_from` names nothing to load.
    portability.PortabilityError: a step that does not lower or cannot run on the target.
  """
  mesh = mesh or sharding.data_mesh()
  configs.validate(config, mesh.size)
  init_from = _check_init_from(config.get("init_from"))
  task = get_task(config)
  preprocess = task.preprocess(config)
  num_classes, examples, data_line = _check_data(config, task, preprocess)
  if num_classes is None:
    num_classes = config.get("num_classes")
    if num_classes is None:
      raise ValueError(f"dry run: the data {data_line[len('NOT CHECKED: ') :]}")
  steps_per_epoch = max(1, (examples or config.batch_size) // config.batch_size)
  programs = build_programs(
    config, task, num_classes, total_train_steps(config, steps_per_epoch), steps_per_epoch, mesh
  )
  batch_sharding = sharding.batch_sharded(mesh)
  blank = preprocess.blank()
  train_batch = _abstract_batch(blank, config.batch_size, batch_sharding)
  eval_batch = _abstract_batch(blank, config.eval_batch_size, batch_sharding)
  state = programs.abstract_state
  targets = portability.check_platforms(target_platforms) if target_platforms else ()
  report = dict(
    model=config.model,
    parameters=sum(math.prod(p.shape) for p in jax.tree.leaves(state.params)),
    devices=mesh.size,
    processes=jax.process_count(),
    global_batch=config.batch_size,
    per_device_batch=config.batch_size // mesh.size,
    grad_accum_steps=config.get("grad_accum_steps", 1),
    platforms=targets or (portability.local_platform(),),
    data=data_line,
    init_from=init_from,
  )
  for name, fn, args in (
    ("train_step", programs.train_step, (state, train_batch, jax.ShapeDtypeStruct((), np.float32))),
    ("eval_step", programs.eval_step, (state.variables(), eval_batch)),
  ):
    traced = fn.trace(*args)
    if targets:
      for platform in targets:
        portability.lower_traced(traced, platform)
      report[name] = "lowered"
    else:
      report[name] = memory_per_device(portability.lower_traced(traced).compile())
  return report
