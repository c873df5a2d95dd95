"""Checkpoints (Orbax): one layout for training, converted weights and inference.

A checkpoint directory is an Orbax `CheckpointManager` root with numbered
steps; each step holds the items

* `variables`: {"params", "batch_stats"} -- all that inference needs;
* `model`: JSON {"model", "model_kwargs", "num_classes", "class_names",
  "image_size", "mean", "std", "eval_crop"} -- how to rebuild model and input;
* `train` (training only): {"step", "opt_state"};
* `data` (training only): the grain iterator state, one file per process.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

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
    },
  )


def save(
  mngr: ocp.CheckpointManager,
  step: int,
  *,
  variables: dict,
  model_info: dict,
  train: dict | None = None,
  data_iterator: Any = None,
  force: bool = True,
) -> None:
  """Saves a step (asynchronously where the manager allows; `wait` before exiting)."""
  items = dict(variables=ocp.args.StandardSave(variables), model=ocp.args.JsonSave(model_info))
  if train is not None:
    items["train"] = ocp.args.StandardSave(train)
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
    if os.path.isdir(candidate) and any(e.name.isdigit() for e in os.scandir(candidate)):
      return candidate
  raise FileNotFoundError(
    f"no checkpoint found at {path}: expected a training workdir (with {CHECKPOINT_SUBDIR}/), "
    "a checkpoint folder with numbered steps (e.g. from `python -m involution_jax.convert`), "
    "or one step folder"
  )


def load_for_inference(path: str, step: int | None = None) -> tuple[dict, dict]:
  """(variables, model_info) of the latest (or given) step under `path`, on the host."""
  path = os.path.abspath(path)
  if os.path.basename(path).isdigit() and step is None:
    path, step = os.path.dirname(path), int(os.path.basename(path))
  root = find_checkpoint_root(path)
  if step is None:  # unfinished saves live in non-numeric temporary folders
    step = max(int(e.name) for e in os.scandir(root) if e.name.isdigit())
  step_dir = os.path.join(root, str(step))
  # Restore onto this machine's first device, whatever topology saved the arrays.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  item = epath.Path(step_dir) / "variables"
  handler = ocp.StandardCheckpointHandler()
  target = jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), handler.metadata(item)
  )
  variables = handler.restore(item, args=ocp.args.StandardRestore(target))
  info = ocp.JsonCheckpointHandler().restore(epath.Path(step_dir) / "model")
  return jax.tree.map(np.asarray, dict(variables)), dict(info)


def graft(variables: dict, pretrained: dict, into: str | None = None) -> tuple[dict, list[str]]:
  """`variables` with every pretrained array whose path (under `into`) and shape match.

  For fine-tuning: a classifier's head of another size, or a stem of another
  kernel size, is left as initialised and listed in the returned `skipped`.
  Raises ValueError when nothing matches (the wrong weights for this model).
  """
  target = traverse_util.flatten_dict(variables)
  skipped, loaded = [], 0
  for key, value in traverse_util.flatten_dict(pretrained).items():
    path = (key[0], into, *key[1:]) if into else key
    if path in target and tuple(target[path].shape) == tuple(np.shape(value)):
      target[path] = np.asarray(value, target[path].dtype)
      loaded += 1
    else:
      skipped.append("/".join(key))
  if not loaded:
    raise ValueError(
      "no pretrained array matches this model's parameters (by path and shape"
      + (f" under {into!r}" if into else "")
      + ")"
    )
  return traverse_util.unflatten_dict(target), skipped
