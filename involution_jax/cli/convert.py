"""`involution-convert IN OUT [--format orbax|torch|safetensors]`: RedNet weights from one
form to another (`weights.convert`)."""

from __future__ import annotations

import os
import sys

from involution_jax import cli
from involution_jax.host.paths import refuse_over_inputs
from involution_jax.weights.convert import (
  FORMATS,
  format_of,
  load_weights,
  paths_read,
  write_weights,
)


@cli.command("involution-convert")
def main(argv: list[str] | None = None) -> int:
  """`involution-convert IN OUT [--format orbax|torch|safetensors]`."""
  parser = cli.parser(
    "involution-convert",
    "Convert RedNet weights between official files (.pth / .pdparams / .safetensors), "
    "pretrained names and Flax (orbax) checkpoints, which training (config.init_from), "
    "evaluation and prediction load.",
    [
      "involution-convert RedNet50_pretrained.pdparams checkpoints/rednet50",
      "involution-convert rednet50 checkpoints/rednet50",
      "involution-convert runs/r50 rednet50.pth",
      "involution-convert runs/r50 rednet50.safetensors --format safetensors",
    ],
  )
  parser.add_argument("weights", help=cli.WEIGHTS_HELP)
  parser.add_argument(
    "out", help="output: a checkpoint folder (orbax), or a .pth / .safetensors file"
  )
  parser.add_argument(
    "--format",
    default=None,
    help=f"one of {', '.join(FORMATS)} (default: from OUT's suffix: .pth / .pt torch, "
    ".safetensors safetensors, anything else an orbax checkpoint folder); torch and "
    "safetensors hold the official mmcls names and layouts",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
  cli.add_quiet_argument(parser)
  args = parser.parse_args(argv)
  fmt = format_of(args.out, args.format)
  refuse_over_inputs(args.out, paths_read(args.weights))
  variables, info = load_weights(args.weights, quiet=args.quiet)
  write_weights(variables, info, args.out, fmt, args.overwrite)
  print(
    f"{info.model} ({info.num_classes} classes) from {args.weights} -> "
    f"{os.path.abspath(args.out)} ({fmt})"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
