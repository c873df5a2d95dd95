"""`involution-convert IN OUT [--format orbax|torch|safetensors]`: RedNet weights from one
form to another (`weights.convert`)."""

from __future__ import annotations

import os
import sys

from involution_jax import cli


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
  cli.weights_argument(parser)
  parser.add_argument(
    "out", help="output: a checkpoint folder (orbax), or a .pth / .safetensors file"
  )
  parser.add_argument(
    "--format",
    default=None,
    help="one of orbax, torch, safetensors (default: from OUT's suffix: .pth / .pt torch, "
    ".safetensors safetensors, anything else an orbax checkpoint folder); torch and "
    "safetensors hold the official mmcls names and layouts",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
  cli.output_arguments(parser, "what was written: model, classes, source, out, format")
  args = parser.parse_args(argv)
  weights = cli.given_weights(parser, args)
  from involution_jax.host.paths import refuse_over_inputs
  from involution_jax.weights.convert import format_of, load_weights, paths_read, write_weights

  fmt = format_of(args.out, args.format)
  refuse_over_inputs(args.out, paths_read(weights))
  variables, info = load_weights(weights, quiet=args.quiet)
  write_weights(variables, info, args.out, fmt, args.overwrite)
  out = os.path.abspath(args.out)
  result = dict(model=info.model, num_classes=info.num_classes, source=weights, out=out, format=fmt)
  cli.print_result(
    args, result, f"{info.model} ({info.num_classes} classes) from {weights} -> {out} ({fmt})"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
