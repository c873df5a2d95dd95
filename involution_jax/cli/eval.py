"""`involution-eval WEIGHTS`: a task's metrics (top-1 / top-5, mIoU, AP) of weights on a
dataset; a training workdir is evaluated with the config it was trained with.

    involution-eval runs/digits                                   # its own config.py
    involution-eval RedNet50_pretrained.pdparams --config rednet50_imagenet \\
        --config.dataset=folder --config.data_dir=/data/imagenet
"""

from __future__ import annotations

import sys

from involution_jax import cli

PROG = "involution-eval"


@cli.command(PROG)
def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: the command line), evaluates, prints the metrics as JSON."""
  parser = cli.parser(
    PROG,
    "Evaluate a checkpoint or official weights on a config's evaluation split (a "
    "training workdir: on the config it was trained with, unless --config is given).",
    [
      "involution-eval runs/digits",
      "involution-eval runs/digits --config.eval_split=train",
      "involution-eval RedNet50_pretrained.pdparams --config rednet50_imagenet "
      "--config.dataset=folder --config.data_dir=/data/imagenet",
    ],
  )
  cli.weights_argument(parser, old_option=True)
  cli.add_config_arguments(parser, "the config.py of the training run WEIGHTS comes from")
  parser.add_argument(
    "--preprocessing",
    choices=("weights", "config"),
    default="weights",
    help="the input preprocessing (image size, mean, std, crop): the one the weights record "
    "(default; differences from the config are printed) or the config's, e.g. to evaluate "
    "at another resolution on purpose",
  )
  cli.output_arguments(parser, "the metrics (the default output is JSON too)")
  args, overrides = cli.parse_with_config_overrides(parser, argv)
  weights = cli.given_weights(parser, args)
  args.json = True  # the metrics are printed as JSON either way: stdout holds them alone
  import jax

  from involution_jax import configs
  from involution_jax.training.distributed import run_collective
  from involution_jax.training.evaluator import evaluate_weights

  spec = args.config or configs.run_config_of(weights) or "default"
  config = configs.get_config(spec, overrides)
  cli.start(args)
  if spec != (args.config or "default") and jax.process_index() == 0:
    cli.say(args, f"config: {spec} (the run's own)")
  with cli.work_output(args):
    results = run_collective(
      lambda: evaluate_weights(config, weights, args.quiet, preprocessing=args.preprocessing)
    )
  if jax.process_index() == 0:
    cli.print_result(args, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
