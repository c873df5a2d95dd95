"""Evaluation: top-1 / top-5 of a model on a dataset, sharded like training.

`evaluate_weights` scores a training checkpoint, a converted checkpoint, or
official weights (`.pth` / `.pdparams`, converted on the fly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from involution_jax import data
from involution_jax.models import create_model


def make_eval_step(task, model, replicated: NamedSharding, batch_sharding: NamedSharding):
  """The task's evaluation of one batch, jitted; outputs replicated (every process sees all)."""
  inner = task.eval_fn(model)
  step = lambda variables, batch: dict(inner(variables, batch),
                                       examples=jnp.sum(batch["valid"]))
  return jax.jit(step, in_shardings=(replicated, batch_sharding), out_shardings=replicated)


def evaluate(task, eval_fn, variables: dict, dataset: data.Dataset, preprocess,
             global_batch: int, batch_sharding: NamedSharding) -> dict:
  """The task's metrics over every example once, plus how many could not be read."""
  batches = data.eval_batches(dataset, preprocess, global_batch=global_batch,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  outputs = []
  for local in batches:
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
             for k, v in local.items()}
    outputs.append(jax.device_get(eval_fn(variables, batch)))
  results = task.summarize(outputs, dataset)
  results["unreadable"] = len(dataset.source) - int(sum(o["examples"] for o in outputs))
  return results


def load_weights(path: str) -> tuple[dict, dict]:
  """(variables, model info) from a checkpoint folder or an official `.pth` / `.pdparams`."""
  from involution_jax import checkpoints, convert
  if path.endswith(convert.OFFICIAL_SUFFIXES):
    variables, config = convert.load_official(path)
    return variables, checkpoints.official_model_info(config)
  return checkpoints.load_for_inference(path)


def model_from_info(info: dict, dtype=None):
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in info.get("model_kwargs", {}).items()}
  if dtype is not None:
    kwargs["dtype"] = dtype
  return create_model(info["model"], num_classes=info["num_classes"], **kwargs)


def evaluate_weights(config: ml_collections.ConfigDict, weights: str) -> dict:
  """Scores `weights` on `config.dataset` / `config.eval_split` with the config's input."""
  from involution_jax.tasks import get_task
  from involution_jax.train import data_mesh
  from jax.sharding import PartitionSpec as P
  task = get_task(config)
  variables, info = load_weights(weights)
  dataset = task.dataset(config, config.eval_split)
  if info["num_classes"] != dataset.num_classes:
    raise ValueError(f"{weights} has {info['num_classes']} classes but {config.dataset} "
                     f"has {dataset.num_classes}")
  if config.eval_batch_size % jax.device_count():
    raise ValueError(f"eval_batch_size={config.eval_batch_size} must be divisible by the "
                     f"{jax.device_count()} device(s)")
  mesh = data_mesh()
  replicated = NamedSharding(mesh, P())
  model = model_from_info(info)
  variables = jax.device_put(variables, replicated)
  batch_sharding = NamedSharding(mesh, P("data"))
  return evaluate(task, make_eval_step(task, model, replicated, batch_sharding), variables,
                  dataset, task.preprocess(config), config.eval_batch_size, batch_sharding)
