"""The NNX bridge's cost: RedNet through `involution_jax.nnx` (flax.nnx.bridge.ToNNX) against
the linen module it wraps, in one process.

Rows: inference (eval mode) and a training step (forward, backward, SGD update,
BatchNorm statistics) with `jax.jit` on linen variables and with `nnx.jit` on
the NNX module, plus `nnx.split` / `nnx.merge` around `jax.jit` (NNX's fast
path for small steps). Compiled programs are compared too: the bridge should
add Python-side graph handling per call, not device work.

    python benchmarks/nnx_bench.py [--quick]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from common import best_time_s, print_table
from flax import nnx

from involution_jax import models
from involution_jax import nnx as inv_nnx


def _loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a tiny RedNet (smoke run)")
  args = parser.parse_args(argv)
  fields = (
    dict(stage_sizes=(1, 1), stem_width=32, base_width=16, stem_pool=False, num_classes=10)
    if args.quick
    else dict(depth=26, num_classes=1000)
  )
  batch, size = (4, 16) if args.quick else (8, 112)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, 3))
  labels = jnp.arange(batch) % fields["num_classes"]
  model = inv_nnx.RedNet(rngs=nnx.Rngs(0), **fields)
  linen = models.RedNet(**fields)
  variables = inv_nnx.linen_variables(model)
  tx = optax.sgd(0.01, momentum=0.9)

  linen_eval = jax.jit(lambda v, x: linen.apply(v, x, train=False))

  @jax.jit
  def linen_step(v, opt_state, x, labels):
    def loss_fn(params):
      logits, updates = linen.apply(
        {"params": params, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"]
      )
      return _loss(logits, labels), updates

    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(v["params"])
    steps, opt_state = tx.update(grads, opt_state, v["params"])
    return dict(params=optax.apply_updates(v["params"], steps), **updates), opt_state, loss

  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  def train_step(model, optimizer, x, labels):
    loss, grads = nnx.value_and_grad(lambda m: _loss(m(x), labels))(model)
    optimizer.update(model, grads)
    return loss

  nnx_step = nnx.jit(train_step)

  graphdef, state = nnx.split((model, optimizer))

  @jax.jit
  def split_step(state, x, labels):
    model, optimizer = nnx.merge(graphdef, state)
    loss = train_step(model, optimizer, x, labels)
    return nnx.state((model, optimizer)), loss

  eval_model = inv_nnx.RedNet(rngs=nnx.Rngs(0), **fields)
  inv_nnx.set_variables(eval_model, variables)
  eval_model.eval()
  nnx_eval = nnx.jit(lambda m, x: m(x))

  opt_state = tx.init(variables["params"])
  carry = {"v": variables, "opt": opt_state, "state": state}

  def run_linen_step():
    carry["v"], carry["opt"], loss = linen_step(carry["v"], carry["opt"], x, labels)
    return loss

  def run_split_step():
    carry["state"], loss = split_step(carry["state"], x, labels)
    return loss

  timings = {
    ("inference", "linen jax.jit"): best_time_s(lambda: linen_eval(variables, x)),
    ("inference", "nnx.jit (bridge)"): best_time_s(lambda: nnx_eval(eval_model, x)),
    ("train step", "linen jax.jit"): best_time_s(run_linen_step),
    ("train step", "nnx.jit (bridge)"): best_time_s(lambda: nnx_step(model, optimizer, x, labels)),
    ("train step", "nnx split/merge + jax.jit"): best_time_s(run_split_step),
  }
  rows = []
  for (what, how), seconds in timings.items():
    base = timings[(what, "linen jax.jit")]
    rows.append([what, how, f"{seconds * 1e3:.2f}", f"{seconds / base:.2f}x"])
  name = "tiny RedNet" if args.quick else "RedNet-26"
  print(f"{name}, batch {batch} at {size} x {size}, {jax.devices()[0].platform}")
  print_table(["", "API", "ms", "vs linen"], rows)


if __name__ == "__main__":
  main()
