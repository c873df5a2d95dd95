"""What every task shares: the loss signature, train-mode forward, sums, cross-entropy."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from involution_jax.weights.info import ModelInfo

LossFn = Callable[[dict, dict, jax.Array], tuple[jax.Array, tuple[dict, dict]]]


def apply_train(model: nn.Module, variables: dict, images: jax.Array, rng: jax.Array):
  """Train-mode forward: (outputs, updated batch_stats)."""
  outputs, updates = model.apply(
    variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
  )
  return outputs, updates["batch_stats"]


def sum_tree(outputs: Iterable[dict]) -> dict:
  totals = None
  for out in outputs:
    totals = out if totals is None else jax.tree.map(np.add, totals, out)
  return totals


def cross_entropy(
  logits: jax.Array, labels: jax.Array, weights: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
  """Mean softmax cross-entropy over examples with weight 1 (0 = padding / unreadable)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def plain(value):
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value or {})


def model_info(task: str, config, dataset, **fields) -> ModelInfo:
  """What every checkpoint records about its model (task, model, fields, classes), and
  the task's own `fields`."""
  return ModelInfo(
    task=task,
    model=config.model,
    model_kwargs=plain(config.get("model_kwargs", {})),
    num_classes=dataset.num_classes,
    **fields,
  )


def top_classes(probabilities, class_names, top_k: int) -> dict:
  """{"top": [{"class", "index", "probability"}, ...]}: the `top_k` likeliest, first first."""
  best = np.argsort(-probabilities)[: min(top_k, len(class_names))]
  return {
    "top": [
      {"class": class_names[j], "index": int(j), "probability": float(probabilities[j])}
      for j in best
    ]
  }
