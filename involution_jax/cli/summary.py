"""`involution-summary`: parameters and FLOPs of each RedNet depth, beside the published
numbers (measured by `weights.summary`).

    involution-summary [--json] [--depths 26,50] [--image_size 224]
"""

from __future__ import annotations

import sys

from involution_jax import cli
from involution_jax.weights import zoo

DEPTHS = tuple(published.depth for published in zoo.REGISTRY.values())  # with published figures


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
    default=",".join(map(str, DEPTHS)),
    help="comma-separated RedNet depths (default: all)",
  )
  parser.add_argument(
    "--image_size", type=int, default=224, help="square input size (default: %(default)s)"
  )
  cli.output_arguments(parser, "the rows instead of a table")
  args = parser.parse_args(argv)
  try:
    depths = [int(d) for d in args.depths.split(",")]
  except ValueError:
    raise ValueError(f"--depths: expected comma-separated integers, got {args.depths!r}") from None
  unknown = [d for d in depths if d not in DEPTHS]
  if unknown:
    raise ValueError(f"unknown depth(s) {unknown}; choose from {list(DEPTHS)}")
  if args.image_size < 1:
    raise ValueError(f"--image_size must be >= 1, got {args.image_size}")
  from involution_jax.weights.summary import summarize

  rows = summarize(depths, args.image_size, quiet=args.quiet)
  cli.print_result(args, rows, format_table(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
