"""Checkpoints (Orbax): one layout for training, converted weights and inference.

A checkpoint directory is an Orbax `CheckpointManager` root with numbered
steps; each step holds the items

* `variables`: {"params", "batch_stats"} -- all that inference needs;
* `model`: JSON {"model", "model_kwargs", "num_classes", "class_names",
  "image_size", "mean", "std", "eval_crop"} -- how to rebuild model and input;
* `train` (training only): {"step", "opt_state"};
* `data` (training only): the grain iterator state, one file per process;
* `metrics` (training only): JSON {"train_loss"} at that step, and what a step means
  (`resume.STEP_MEANING`: batch size, seed, dataset, split, training examples).

A step that cannot be used (damaged, or superseded by resuming from an earlier
one) is renamed `<step>.<reason>` beside the others, never deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from involution_jax.weights.info import ModelInfo, UnreadableInfo

CHECKPOINT_SUBDIR = "checkpoints"


def manager(
  directory: str, keep: int | None = None, *, read_only: bool = False, async_save: bool = True
) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=not read_only,
    read_only=read_only,
    enable_async_checkpointing=async_save,
  )
  return ocp.CheckpointManager(
    os.path.abspath(directory),
    options=options,
    item_handlers={
      "variables": ocp.StandardCheckpointHandler(),
      "train": ocp.StandardCheckpointHandler(),
      "model": ocp.JsonCheckpointHandler(),
      "data": grain.checkpoint.CheckpointHandler(),
      "metrics": ocp.JsonCheckpointHandler(filename="metrics"),
    },
  )


def save(
  mngr: ocp.CheckpointManager,
  step: int,
  *,
  variables: dict,
  model_info: ModelInfo | dict,
  train: dict | None = None,
  data_iterator: Any = None,
  metrics: dict | None = None,
  force: bool = True,
) -> None:
  """Saves a step (asynchronously where the manager allows; `wait` before exiting)."""
  items = dict(
    variables=ocp.args.StandardSave(variables),
    model=ocp.args.JsonSave(ModelInfo.of(model_info).to_json()),
  )
  if train is not None:
    items["train"] = ocp.args.StandardSave(train)
  if metrics is not None:
    items["metrics"] = ocp.args.JsonSave(metrics)
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore_training(
  mngr: ocp.CheckpointManager, step: int, *, variables: Any, train: Any, data_iterator: Any
) -> tuple[dict, dict]:
  """Restores a training step into the given abstract (sharded) trees and iterator."""
  restored = mngr.restore(
    step,
    args=ocp.args.Composite(
      variables=ocp.args.StandardRestore(variables),
      train=ocp.args.StandardRestore(train),
      data=grain.checkpoint.CheckpointRestore(data_iterator),
    ),
  )
  return restored["variables"], restored["train"]


def find_checkpoint_root(path: str) -> str:
  """`path` may be a training workdir, a checkpoint root or one of its step folders."""
  path = os.path.abspath(path)
  candidates = [os.path.join(path, CHECKPOINT_SUBDIR), path]
  for candidate in candidates:
    if os.path.isdir(candidate) and any(name.isdigit() for name in os.listdir(candidate)):
      return candidate
  raise FileNotFoundError(
    f"no checkpoint found at {path}: expected a training workdir (with {CHECKPOINT_SUBDIR}/), "
    "a checkpoint folder with numbered steps (e.g. from `involution-convert`), "
    "or one step folder"
  )


def _item(root: str, step: int, name: str) -> epath.Path:
  """The folder of item `name` of step `step` under checkpoint root `root`."""
  return epath.Path(os.path.abspath(root)) / str(step) / name


def saved_info(root: str, step: int) -> ModelInfo:
  """The `model` item of a step: how to rebuild the model and its input."""
  record = ocp.JsonCheckpointHandler().restore(_item(root, step, "model"))
  return ModelInfo.from_json(record, os.path.join(root, str(step)))


def saved_metrics(root: str, step: int) -> dict:
  """The `metrics` item of a training step ({} where absent or unreadable)."""
  item = _item(root, step, "metrics")
  try:
    return dict(ocp.JsonCheckpointHandler(filename="metrics").restore(item))
  except Exception:  # older checkpoints have none; a damaged one is reported elsewhere
    return {}


def saved_shapes(root: str, step: int) -> dict[str, tuple[int, ...]]:
  """{"params/.../kernel": shape} of a step's variables, from its metadata."""
  metadata = ocp.StandardCheckpointHandler().metadata(_item(root, step, "variables"))
  flat = traverse_util.flatten_dict(dict(metadata), sep="/")
  return {k: tuple(v.shape) for k, v in flat.items()}


def check_complete(root: str, step: int, items: tuple[str, ...] = ("variables", "train")) -> None:
  """Raises FileNotFoundError naming a file the step's array items cannot be read without
  (checked before Orbax reads them: its errors on a missing manifest come from worker
  threads, pages of them)."""
  for item in items:
    folder = os.path.join(os.path.abspath(root), str(step), item)
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"{folder} is missing")
    for name in ("_METADATA", "manifest.ocdbt"):
      if not os.path.isfile(os.path.join(folder, name)):
        raise FileNotFoundError(f"{os.path.join(folder, name)} is missing")


def set_aside(root: str, step: int, reason: str) -> str:
  """Renames step folder `root/step` to `root/step.reason` (or `.reason-2`, ...), where
  neither training nor inference looks; returns the new path. Nothing is deleted."""
  source, target, n = os.path.join(root, str(step)), os.path.join(root, f"{step}.{reason}"), 1
  while os.path.exists(target):
    n += 1
    target = os.path.join(root, f"{step}.{reason}-{n}")
  os.rename(source, target)
  return target


def _is_abandoned_read(unraisable) -> bool:
  """Noise of a failed Orbax restore: its other reads finish after its event loop closed."""
  error, where = unraisable.exc_value, repr(unraisable.object)
  closed_loop = isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
  return closed_loop or "_read_array_index_and_device_put" in where


def quiet_abandoned_reads() -> None:
  """After a restore failed (a damaged step), drop the pages of "Event loop is closed"
  tracebacks its abandoned reads print from tensorstore's threads; everything else still
  reaches the previous `sys.unraisablehook`. Idempotent."""
  previous = sys.unraisablehook
  if getattr(previous, "quiet_abandoned_reads", False):
    return

  def hook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  hook.quiet_abandoned_reads = True
  sys.unraisablehook = hook


def describe_error(error: BaseException) -> str:
  """An Orbax / tensorstore error (often pages long) as its first line, with its type."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def _restore_variables(root: str, step: int) -> dict:
  # Onto this machine's first device, whatever topology saved the arrays.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item = _item(root, step, "variables")
  handler = ocp.StandardCheckpointHandler()
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), handler.metadata(item)
  )
  variables = handler.restore(item, args=ocp.args.StandardRestore(target))
  return jax.tree.map(np.asarray, dict(variables))


def load_for_inference(path: str, step: int | None = None) -> tuple[dict, ModelInfo]:
  """(variables, model_info) of the latest (or given) step under `path`, on the host.

  Without a step, a damaged latest step is reported (a warning naming it and
  what failed) and the newest intact one used.
  """
  path = os.path.abspath(path)
  if os.path.basename(path).isdigit() and step is None:
    path, step = os.path.dirname(path), int(os.path.basename(path))
  root = find_checkpoint_root(path)
  # Unfinished saves and set-aside steps live in non-numeric folders.
  steps = (
    [step]
    if step is not None
    else sorted((int(e.name) for e in os.scandir(root) if e.name.isdigit()), reverse=True)
  )
  problems = []
  for candidate in steps:
    try:
      check_complete(root, candidate, ("variables",))
      variables, info = _restore_variables(root, candidate), saved_info(root, candidate)
    except UnreadableInfo:  # intact, from a newer version: said, never passed over
      raise
    except Exception as e:  # Orbax and tensorstore raise many types for damaged files
      quiet_abandoned_reads()
      why = describe_error(e)
      problems.append(why if step is not None else f"step {candidate}: {why}")
      if step is None:
        logging.warning("checkpoint %s is damaged (%s)", os.path.join(root, str(candidate)), why)
      continue
    if problems:
      logging.warning("using step %d of %s instead", candidate, root)
    return variables, info
  if step is not None:
    raise ValueError(f"checkpoint {os.path.join(root, str(step))} cannot be read: {problems[0]}")
  raise ValueError(f"no intact checkpoint in {root}: {'; '.join(problems)}")


@dataclasses.dataclass(frozen=True)
class Graft:
  """What `graft` did, by "collection/module/.../name" paths."""

  loaded: list[str]  # the model's arrays taken from the pretrained weights
  kept: list[str]  # the model's arrays left as initialised
  unused: list[str]  # pretrained arrays that fit nothing in the model
  mismatched: dict[str, str]  # model path -> why its pretrained array did not fit


def graft(variables: dict, pretrained: dict, into: str | None = None) -> tuple[dict, Graft]:
  """`variables` with every pretrained array whose path (under `into`) and shape match.

  For fine-tuning: a classifier's head of another size, or a stem of another
  kernel size, is left as initialised; the returned `Graft` says what loaded.
  Raises ValueError when nothing matches (the wrong weights for this model).
  """
  target = traverse_util.flatten_dict(variables)
  loaded, unused, mismatched = [], [], {}
  for key, value in traverse_util.flatten_dict(pretrained).items():
    path = (key[0], into, *key[1:]) if into else key
    if path in target and tuple(target[path].shape) == tuple(np.shape(value)):
      target[path] = np.asarray(value, target[path].dtype)
      loaded.append("/".join(path))
    else:
      unused.append("/".join(key))
      if path in target:
        mismatched["/".join(path)] = (
          f"shape {tuple(target[path].shape)}, pretrained {tuple(np.shape(value))}"
        )
  if not loaded:
    raise ValueError(
      "no pretrained array matches this model's parameters (by path and shape"
      + (f" under {into!r}" if into else "")
      + ")"
    )
  done = set(loaded)
  kept = ["/".join(k) for k in target if "/".join(k) not in done]
  return traverse_util.unflatten_dict(target), Graft(loaded, kept, unused, mismatched)
