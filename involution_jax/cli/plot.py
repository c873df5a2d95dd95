"""`involution-plot WORKDIR [WORKDIR ...]`: training curves of one or several runs.

Draws each run's train loss, evaluation metrics and learning rate against the
step on one figure (a colour per run), from the runs' `history.jsonl`; training
writes the same figure for its own run as `workdir/curves.png`.
"""

from __future__ import annotations

import os
import sys

from involution_jax import cli


@cli.command("involution-plot")
def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: the command line), draws the runs, prints where."""
  parser = cli.parser(
    "involution-plot",
    "Draw the training curves of one or several runs on one figure (ablations).",
    [
      "involution-plot runs/default",
      "involution-plot runs/k3 runs/k5 runs/k7 --out kernel_sizes.png",
    ],
  )
  parser.add_argument("workdirs", nargs="+", help="training workdirs")
  parser.add_argument(
    "--out",
    default="curves.png",
    help="output PNG (default: %(default)s; .png added to a name without a suffix)",
  )
  parser.add_argument("--title", default=None, help="the figure's title (default: none)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  cli.output_arguments(parser, '{"out", "runs"}')
  args = parser.parse_args(argv)
  from involution_jax.host.paths import output_file
  from involution_jax.training import curves

  runs = {}
  for workdir in args.workdirs:
    label = os.path.basename(os.path.abspath(workdir))
    if label in runs:
      label = workdir  # same folder names in different places: the paths tell them apart
    runs[label] = curves.read(workdir)
  histories = [curves.history_path(w) for w in args.workdirs]
  out = output_file(args.out, args.overwrite, inputs=histories, default_suffix=".png")
  out = curves.draw(runs, out, title=args.title)
  out = os.path.abspath(out)
  cli.print_result(
    args,
    dict(out=out, runs=list(runs)),
    f"wrote {out} ({len(runs)} run{'s' if len(runs) > 1 else ''})",
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
