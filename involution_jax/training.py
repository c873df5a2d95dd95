"""Pure pieces of training: model from config, optimiser, train state, steps.

The steps are plain functions of (state, batch); `train.py` jits them with
shardings on a device mesh. The model's BatchNorm statistics are computed over
the whole (global) batch under jit, i.e. synchronised across devices.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from involution_jax.rednet import create_model


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  def variables(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}


def model_from_config(config: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The configured model (`config.model` + `config.model_kwargs`), compute dtype set."""
  kwargs = dict(config.get("model_kwargs", {}))
  if config.get("half_precision", False):
    kwargs["dtype"] = jnp.bfloat16
  return create_model(config.model, num_classes=num_classes, **kwargs)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int) -> optax.Schedule:
  """Linear warm-up from `warmup_init_factor * lr` to `lr`, then cosine to 0."""
  warmup = round(config.warmup_epochs * steps_per_epoch)
  warmup = min(warmup, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=config.learning_rate * config.get("warmup_init_factor", 0.0),
      peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def optimizer(config: ml_collections.ConfigDict,
              schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (Nesterov) with PyTorch-style L2 weight decay on all parameters, or AdamW."""
  name = config.get("optimizer", "sgd")
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(schedule, momentum=config.momentum,
                                 nesterov=config.get("nesterov", True)))
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=config.weight_decay)
  raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_shape: tuple[int, ...]) -> TrainState:
  variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy over examples with weight 1 (0 = padding / unreadable)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  losses = optax.softmax_cross_entropy(logits, targets)
  return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _split_micro_batches(batch: dict, n: int) -> dict:
  """(B, ...) -> (n, B / n, ...), micro-batch i = rows i, i + n, ... (stays evenly sharded)."""
  return jax.tree.map(lambda a: jnp.swapaxes(a.reshape(a.shape[0] // n, n, *a.shape[1:]), 0, 1),
                      batch)


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               label_smoothing: float, accumulation_steps: int = 1) -> tuple[TrainState, dict]:
  """One optimiser update on `batch` {"image", "label", "valid"}.

  With `accumulation_steps` > 1 the batch is processed in that many
  micro-batches (gradients averaged, BatchNorm statistics updated in turn).
  A non-finite loss or gradient leaves the state unchanged and reports
  `finite` = False.
  """
  def loss_fn(params, batch_stats, micro):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, micro["image"],
                                  train=True, mutable=["batch_stats"])
    loss = cross_entropy(logits, micro["label"], micro["valid"], label_smoothing)
    correct = jnp.sum((jnp.argmax(logits, -1) == micro["label"]) * micro["valid"])
    return loss, (updates["batch_stats"], correct)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accumulation_steps == 1:
    (loss, (batch_stats, correct)), grads = grad_fn(state.params, state.batch_stats, batch)
  else:
    def body(carry, micro):
      batch_stats, grads_sum, loss_sum, correct_sum = carry
      (loss, (batch_stats, correct)), grads = grad_fn(state.params, batch_stats, micro)
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (batch_stats, grads_sum, loss_sum + loss, correct_sum + correct), None
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (batch_stats, grads, loss, correct), _ = jax.lax.scan(
        body, (state.batch_stats, zeros, 0.0, 0.0),
        _split_micro_batches(batch, accumulation_steps))
    grads = jax.tree.map(lambda g: g / accumulation_steps, grads)
    loss = loss / accumulation_steps
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state)
  finite = jnp.isfinite(loss) & jnp.all(jnp.array(
      [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state,
                           state.replace(step=state.step + 1))
  metrics = dict(loss=loss, accuracy=correct / jnp.maximum(jnp.sum(batch["valid"]), 1.0),
                 learning_rate=schedule(state.step), finite=finite,
                 valid=jnp.sum(batch["valid"]))
  return new_state, metrics


def eval_step(variables: dict, batch: dict, *, model: nn.Module) -> dict:
  """Sums over the batch: loss, top-1 / top-5 hits, counted examples."""
  logits = model.apply(variables, batch["image"], train=False)
  labels, valid = batch["label"], batch["valid"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  return dict(loss=jnp.sum(losses * valid),
              top1=jnp.sum((top5[:, 0] == labels) * valid),
              top5=jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * valid),
              count=jnp.sum(valid))


def bind_train_step(model, tx, schedule, config) -> Callable:
  return functools.partial(train_step, model=model, tx=tx, schedule=schedule,
                           label_smoothing=config.label_smoothing,
                           accumulation_steps=config.get("grad_accum_steps", 1))
