"""A RedNet's parameters and FLOPs, measured, beside the published numbers (`zoo`).

FLOPs come from XLA's cost analysis of the compiled forward pass (batch 1,
eval mode) and are reported as multiply-adds (XLA flops / 2), the unit of the
paper's "FLOPs" column; XLA also counts element-wise work (BatchNorm, ReLU,
residual adds, pooling). `involution-summary` prints them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from involution_jax.host.console import progress
from involution_jax.models import create_model
from involution_jax.models.rednet import STAGE_SIZES, count_params
from involution_jax.weights import zoo


def params_and_gmacs(model, image_size: int = 224) -> tuple[int, float]:
  """A model's parameter count and the multiply-adds (G) of one image's eval forward
  pass, from XLA's cost analysis; the input is (1, image_size, image_size, 3)."""
  x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape), train=False)
  )
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return count_params(variables["params"]), cost["flops"] / 2e9


def summarize(depths=tuple(STAGE_SIZES), image_size: int = 224, quiet: bool = False) -> list[dict]:
  """One row per depth: our params and GMACs beside the published ones."""
  rows = []
  for depth in progress(depths, desc="compile", unit="model", leave=False, quiet=quiet):
    params, gmacs = params_and_gmacs(create_model(f"rednet{depth}"), image_size)
    published = zoo.REGISTRY[f"rednet{depth}"]
    rows.append(
      dict(
        model=f"RedNet-{depth}",
        params=params,
        published_params=published.params,
        gmacs=round(gmacs, 3),
        published_gmacs=published.gmacs,
        gmacs_diff_pct=round(100 * (gmacs / published.gmacs - 1), 2),
        published_top1=published.top1_paper,
        pretrained_top1=published.top1_paddle,
      )
    )
  return rows
