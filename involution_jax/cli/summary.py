"""Parameters and FLOPs of each RedNet depth, beside the published numbers.

FLOPs come from XLA's cost analysis of the compiled forward pass (batch 1,
eval mode) and are reported as multiply-adds (XLA flops / 2), the unit of the
paper's "FLOPs" column; XLA also counts element-wise work (BatchNorm, ReLU,
residual adds, pooling). The published figures and the pretrained weights'
top-1 come from `zoo.REGISTRY`.

    involution-summary [--json] [--depths 26,50] [--image_size 224]
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp

from involution_jax import cli
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


def format_table(rows: list[dict]) -> str:
  lines = [
    "| model | params | published | GMACs (XLA) | published | diff | top-1 (paper) "
    "| top-1 (pretrained) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    lines.append(
      f"| {r['model']} | {r['params']:,} | {r['published_params']:,} | "
      f"{r['gmacs']:.2f} | {r['published_gmacs']:.2f} | "
      f"{r['gmacs_diff_pct']:+.1f}% | {r['published_top1']:.2f} | {r['pretrained_top1']:.2f} |"
    )
  return "\n".join(lines)


@cli.command("involution-summary")
def main(argv: list[str] | None = None) -> int:
  """`involution-summary`: RedNet parameters and FLOPs beside the published ones."""
  parser = cli.parser(
    "involution-summary",
    "RedNet parameters and FLOPs (XLA's cost analysis) beside the published numbers.",
    ["involution-summary", "involution-summary --depths 26,50 --json"],
  )
  parser.add_argument(
    "--depths",
    default=",".join(map(str, STAGE_SIZES)),
    help="comma-separated RedNet depths (default: all)",
  )
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  cli.add_quiet_argument(parser)
  args = parser.parse_args(argv)
  try:
    depths = [int(d) for d in args.depths.split(",")]
  except ValueError:
    raise ValueError(f"--depths: expected comma-separated integers, got {args.depths!r}") from None
  unknown = [d for d in depths if d not in STAGE_SIZES]
  if unknown:
    raise ValueError(f"unknown depth(s) {unknown}; choose from {sorted(STAGE_SIZES)}")
  if args.image_size < 1:
    raise ValueError(f"--image_size must be >= 1, got {args.image_size}")
  rows = summarize(depths, args.image_size, quiet=args.quiet)
  print(json.dumps(rows, indent=2) if args.json else format_table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
