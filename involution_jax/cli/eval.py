"""`involution-eval`: a task's metrics (top-1 / top-5, mIoU, AP) of weights on a dataset.

    involution-eval --config rednet50_imagenet --weights RedNet50_pretrained.pdparams \\
        --config.dataset=folder --config.data_dir=/data/imagenet
    involution-eval --weights runs/digits                          # the default digits test set
"""

from __future__ import annotations

import json
import sys

import jax

from involution_jax import cli, configs
from involution_jax.training.distributed import run_collective
from involution_jax.training.evaluator import evaluate_weights

PROG = "involution-eval"


@cli.command(PROG)
def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: the command line), evaluates, prints the metrics as JSON."""
  parser = cli.parser(
    PROG,
    "Evaluate a checkpoint or official weights on a config's evaluation split.",
    [
      "involution-eval --weights runs/digits",
      "involution-eval --config rednet50_imagenet --weights "
      "RedNet50_pretrained.pdparams --config.dataset=folder "
      "--config.data_dir=/data/imagenet",
    ],
  )
  cli.add_config_arguments(parser, default="default")
  parser.add_argument(
    "--weights",
    required=True,
    help=cli.WEIGHTS_HELP,
  )
  parser.add_argument(
    "--preprocessing",
    choices=("weights", "config"),
    default="weights",
    help="the input preprocessing (image size, mean, std, crop): the one the weights record "
    "(default; differences from the config are printed) or the config's, e.g. to evaluate "
    "at another resolution on purpose",
  )
  cli.add_quiet_argument(parser)
  args, overrides = cli.parse_with_config_overrides(parser, argv)
  config = configs.get_config(args.config, overrides)
  cli.start(args)
  results = run_collective(
    lambda: evaluate_weights(config, args.weights, args.quiet, preprocessing=args.preprocessing)
  )
  if jax.process_index() == 0:
    print(json.dumps(results, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
