"""`involution-export WEIGHTS OUT`: one `jax.export` artifact with the weights inside
(`inference.export`)."""

from __future__ import annotations

import sys

from involution_jax import cli


@cli.command("involution-export")
def main(argv: list[str] | None = None) -> int:
  """`involution-export WEIGHTS OUT`: one jax.export artifact with the weights inside."""
  parser = cli.parser(
    "involution-export",
    "Export a model of any task with its weights to one jax.export artifact "
    "(symbolic batch) and a .json describing its input and outputs.",
    [
      "involution-export runs/default model.jaxexport",
      "involution-export RedNet50_pretrained.pdparams rednet50.jaxexport --platforms cpu,cuda",
    ],
  )
  cli.weights_argument(parser)
  parser.add_argument("out", help="output file, e.g. model.jaxexport")
  parser.add_argument(
    "--platforms",
    default=None,
    help="comma-separated, some of cpu,cuda,rocm,tpu: one artifact that runs on each "
    "(default: this machine's)",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
  cli.output_arguments(parser, "the artifact's description (its .json)")
  args = parser.parse_args(argv)
  weights = cli.given_weights(parser, args)
  from involution_jax import portability
  from involution_jax.host.paths import output_file
  from involution_jax.inference.export import METADATA_SUFFIX, export_model, save
  from involution_jax.weights import load_weights, paths_read

  inputs = paths_read(weights)
  output_file(args.out, args.overwrite, inputs)
  output_file(args.out + METADATA_SUFFIX, args.overwrite, inputs)
  platforms = portability.check_platforms(args.platforms.split(",")) if args.platforms else None
  variables, info = load_weights(weights, quiet=args.quiet)
  exported = export_model(variables, info, platforms)
  metadata = save(exported, info, args.out)
  given = metadata["input"]
  shape = " x ".join(map(str, given["shape"]))
  cli.print_result(
    args,
    metadata,
    f"exported {info.model} ({info.task}; {given['name']} {shape} {given['dtype']}) for "
    f"{', '.join(exported.platforms)} to {args.out} (+ {args.out}{METADATA_SUFFIX})",
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
