"""Evaluation: top-1 / top-5 of a model on a dataset, sharded like training.

`evaluate_weights` scores a training checkpoint, a converted checkpoint, or
official weights (`.pth` / `.pdparams`, converted on the fly).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from involution_jax import data, training
from involution_jax.rednet import create_model


def make_eval_step(model, replicated: NamedSharding, batch_sharding: NamedSharding):
  step = lambda variables, batch: training.eval_step(variables, batch, model=model)
  return jax.jit(step, in_shardings=(replicated, batch_sharding), out_shardings=replicated)


def evaluate(eval_fn, variables: dict, dataset: data.Dataset, preprocess: data.Preprocess,
             global_batch: int, batch_sharding: NamedSharding) -> dict:
  """Loss, accuracy (and top5_accuracy for > 5 classes) over every example once."""
  batches = data.eval_batches(dataset, preprocess, global_batch=global_batch,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  totals = None
  for local in batches:
    batch = {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(v))
             for k, v in local.items()}
    sums = eval_fn(variables, batch)
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
  totals = {k: float(v) for k, v in jax.device_get(totals).items()}
  count = max(totals["count"], 1.0)
  results = dict(loss=totals["loss"] / count, accuracy=totals["top1"] / count,
                 count=int(totals["count"]),
                 unreadable=len(dataset.source) - int(totals["count"]))
  if dataset.num_classes > 5:
    results["top5_accuracy"] = totals["top5"] / count
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
  from involution_jax.train import data_mesh, preprocess_from_config
  from jax.sharding import PartitionSpec as P
  variables, info = load_weights(weights)
  dataset = data.load_dataset(config.dataset, config.eval_split, image_size=config.image_size,
                              data_dir=config.data_dir)
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
  return evaluate(make_eval_step(model, replicated, NamedSharding(mesh, P("data"))), variables,
                  dataset, preprocess_from_config(config), config.eval_batch_size,
                  NamedSharding(mesh, P("data")))
