"""Evaluation: a task's metrics of a model on a dataset, sharded like training.

`evaluate_weights` scores a training checkpoint, a converted checkpoint, or
official weights (`.pth` / `.pdparams`, converted on the fly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding

from involution_jax import cli, sharding
from involution_jax.data.pipeline import Dataset, Preprocessor, eval_batches, num_eval_batches
from involution_jax.tasks import get_task
from involution_jax.weights import load_weights, model_from_info


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

  A progress bar shows on process 0's terminal unless `quiet`.
  """
  batches = eval_batches(
    dataset,
    preprocess,
    global_batch=global_batch,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  bar = cli.progress(
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


def evaluate_weights(
  config: ml_collections.ConfigDict,
  weights: str,
  quiet: bool = False,
  *,
  mesh: jax.sharding.Mesh | None = None,
) -> dict:
  """Scores `weights` on `config.dataset` / `config.eval_split` with the config's input;
  `quiet`: no progress bars. `mesh`: a 1-D mesh with axis "data" (default: every device
  of every process)."""
  task = get_task(config)
  variables, info = load_weights(weights, quiet=quiet or jax.process_index() != 0)
  dataset = task.dataset(config, config.eval_split)
  if info["num_classes"] != dataset.num_classes:
    raise ValueError(
      f"{weights} has {info['num_classes']} classes but {config.dataset} has {dataset.num_classes}"
    )
  vocabulary = getattr(dataset.source, "vocabulary_sha256", None)
  if info.get("vocabulary_sha256", vocabulary) != vocabulary:
    raise ValueError(
      f"{weights} was trained with another vocabulary than {config.dataset}'s "
      f"({len(info.get('vocabulary', []))} words, SHA-256 {info['vocabulary_sha256'][:12]}... "
      f"vs {vocabulary[:12]}...): its word ids would mean other words"
    )
  mesh = mesh or sharding.data_mesh()
  if config.eval_batch_size % mesh.size:
    raise ValueError(
      f"eval_batch_size={config.eval_batch_size} must be divisible by the {mesh.size} device(s)"
    )
  replicated = sharding.replicated(mesh)
  batch_sharding = sharding.batch_sharded(mesh)
  model = model_from_info(info)
  variables = jax.device_put(variables, replicated)
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
