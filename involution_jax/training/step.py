"""The pure training step and what it needs: model from config, schedule, optimiser, state.

The step is a plain function of (state, batch, learning rate) around a task's loss
(see `tasks.py`); `trainer.py` jits it with shardings on a device mesh. The
learning rate is an input, not a constant of the program, so one compiled step
serves every schedule and run length (and XLA's compilation cache shares it). BatchNorm
statistics are computed over the whole (global) batch under jit, i.e.
synchronised across devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from involution_jax.models import create_model


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


def learning_rate_schedule(
  config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
  """Linear warm-up from `warmup_init_factor * lr` to `lr`, then `config.schedule`:

  "cosine" (default) to 0; "poly": (1 - t)^0.9 down to `min_learning_rate`
  (mmseg); "step": x0.1 at each epoch in `lr_step_epochs` (mmdet's 1x: 8, 11).
  """
  warmup = min(round(config.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))
  lr, start = config.learning_rate, config.learning_rate * config.get("warmup_init_factor", 0.0)
  kind = config.get("schedule", "cosine")
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=start,
      peak_value=lr,
      warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=0.0,
    )
  if kind == "poly":
    decay = optax.polynomial_schedule(
      lr, config.get("min_learning_rate", 0.0), 0.9, max(total_steps - warmup, 1)
    )
  elif kind == "step":
    boundaries = {
      round(e * steps_per_epoch) - warmup: 0.1 for e in config.get("lr_step_epochs", ())
    }
    decay = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    raise ValueError(f"unknown schedule {kind!r}; expected 'cosine', 'poly' or 'step'")
  return optax.join_schedules([optax.linear_schedule(start, lr, warmup), decay], [warmup])


def learning_rates(schedule: optax.Schedule, total_steps: int) -> np.ndarray:
  """(total_steps,) float32: entry i is the learning rate of step i + 1 (the schedule at i)."""
  return np.asarray(jax.jit(jax.vmap(schedule))(jnp.arange(total_steps)), np.float32)


def _unit_rate(count: jax.Array) -> float:
  """The optimiser's own step size: 1, the learning rate multiplies the update in the step.
  A schedule (not a constant) so the optimiser state keeps its step count, as before."""
  return 1.0


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD (Nesterov) with PyTorch-style L2 weight decay on all parameters, or AdamW;
  gradients clipped to `grad_clip_norm` (global norm) when that is > 0. Its step size
  is 1: `train_step` multiplies the update by the learning rate (in both optimisers
  the rate scales the update last, so this is the same update)."""
  name = config.get("optimizer", "sgd")
  if name == "sgd":
    tx = optax.chain(
      optax.add_decayed_weights(config.weight_decay),
      optax.sgd(_unit_rate, momentum=config.momentum, nesterov=config.get("nesterov", True)),
    )
  elif name == "adamw":
    tx = optax.adamw(_unit_rate, weight_decay=config.weight_decay)
  else:
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")
  clip = config.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), tx) if clip > 0 else tx


def init_state(
  model: nn.Module,
  tx: optax.GradientTransformation,
  rng: jax.Array,
  input_shape: tuple[int, ...],
  input_dtype=jnp.float32,
) -> TrainState:
  """Initial parameters (from an input of `input_shape`: an image's, or a window of
  `input_dtype` int tokens) and optimiser state."""
  variables = model.init(rng, jnp.zeros((1, *input_shape), input_dtype), train=False)
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
  )


def _split_micro_batches(batch: dict, n: int) -> dict:
  """(B, ...) -> (n, B / n, ...), micro-batch i = rows i, i + n, ... (stays evenly sharded)."""
  return jax.tree.map(
    lambda a: jnp.swapaxes(a.reshape(a.shape[0] // n, n, *a.shape[1:]), 0, 1), batch
  )


def train_step(
  state: TrainState,
  batch: dict,
  learning_rate: jax.Array,
  *,
  loss_fn,
  tx: optax.GradientTransformation,
  accumulation_steps: int = 1,
  seed: int = 0,
) -> tuple[TrainState, dict]:
  """One optimiser update on `batch` (a dict with at least "valid") at `learning_rate`
  (a float32 scalar; `tx` from `optimizer`, whose own step size is 1).

  `loss_fn(variables, batch, rng) -> (loss, (new batch_stats, metrics))` is the
  task's train-mode loss; `rng` (dropout) is derived from `seed` and the step,
  so a resumed run draws the same numbers. With `accumulation_steps` > 1 the
  batch is processed in that many micro-batches (gradients and metrics
  averaged, BatchNorm statistics updated in turn). A non-finite loss or
  gradient leaves the state unchanged and reports `finite` = False.
  """
  rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)

  def objective(params, batch_stats, micro, rng):
    return loss_fn({"params": params, "batch_stats": batch_stats}, micro, rng)

  grad_fn = jax.value_and_grad(objective, has_aux=True)
  if accumulation_steps == 1:
    (loss, (batch_stats, metrics)), grads = grad_fn(state.params, state.batch_stats, batch, rng)
  else:

    def body(carry, inputs):
      batch_stats, grads_sum, loss_sum = carry
      micro, i = inputs
      (loss, (batch_stats, metrics)), grads = grad_fn(
        state.params, batch_stats, micro, jax.random.fold_in(rng, i)
      )
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (batch_stats, grads_sum, loss_sum + loss), metrics

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (batch_stats, grads, loss), metrics = jax.lax.scan(
      body,
      (state.batch_stats, zeros, jnp.zeros(())),
      (_split_micro_batches(batch, accumulation_steps), jnp.arange(accumulation_steps)),
    )
    grads = jax.tree.map(lambda g: g / accumulation_steps, grads)
    loss = loss / accumulation_steps
    metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u: (learning_rate * u).astype(u.dtype), updates)
  new_state = TrainState(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
  )
  finite = jnp.isfinite(loss) & jnp.all(
    jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
  )
  new_state = jax.tree.map(
    lambda new, old: jnp.where(finite, new, old), new_state, state.replace(step=state.step + 1)
  )
  return new_state, dict(
    metrics,
    loss=loss,
    learning_rate=learning_rate,
    finite=finite,
    valid=jnp.sum(batch["valid"]),
  )


def bind_train_step(loss_fn, tx, config) -> Callable:
  """`train_step` with the task's loss, the optimiser and the config's settings bound:
  (state, batch, learning_rate) -> (state, metrics)."""
  return functools.partial(
    train_step,
    loss_fn=loss_fn,
    tx=tx,
    accumulation_steps=config.get("grad_accum_steps", 1),
    seed=config.seed,
  )
