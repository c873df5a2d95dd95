"""`involution-train`: train and evaluate a config in a workdir, resuming where it stopped.

    involution-train --workdir runs/digits                       # the embedded default
    involution-train --config rednet50_imagenet --workdir runs/r50 --config.data_dir=/data/tfds
    involution-train --config my_config.py:arg --workdir runs/x --config.batch_size=128

Several hosts: the same command on every host (see docs/multihost.md).
"""

from __future__ import annotations

import json
import os
import sys

import jax

from involution_jax import cli, configs
from involution_jax.trainer import train_and_evaluate

PROG = "involution-train"


@cli.command(PROG)
def main(argv: list[str] | None = None) -> int:
  """Parses `argv` (default: the command line), trains, prints the final metrics."""
  parser = cli.parser(
    PROG,
    "Train and evaluate a model; rerun the same command to resume "
    "from the workdir's last checkpoint.",
    [
      "involution-train --workdir runs/digits",
      "involution-train --workdir runs/k5 --config.model_kwargs.kernel_size=5",
      "involution-train --config rednet50_imagenet --workdir runs/r50 --config.data_dir=/data/tfds",
      "involution-train --config digitscenes_seg:involution --workdir runs/seg",
    ],
  )
  cli.add_config_arguments(parser, default="default")
  parser.add_argument(
    "--workdir",
    default=os.path.join("runs", "default"),
    help="checkpoints, TensorBoard logs and metrics.json go here (default: runs/default)",
  )
  args, overrides = cli.parse_with_config_overrides(parser, argv)
  config = configs.get_config(args.config, overrides)
  cli.start(args)
  if jax.process_index() == 0:
    print(
      f"training {config.model} on {config.dataset} with {jax.device_count()} "
      f"{jax.devices()[0].platform} device(s); workdir {os.path.abspath(args.workdir)}"
    )
  try:
    metrics = cli.run_collective(train_and_evaluate, config, args.workdir)
  except FloatingPointError as e:  # diverged: the message says what to do
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("_dir")}, indent=2))
    print(
      f"checkpoints: {metrics['checkpoint_dir']}\nTensorBoard: "
      f"tensorboard --logdir {metrics['tensorboard_dir']}\n"
      f"metrics: {os.path.join(os.path.abspath(args.workdir), 'metrics.json')}"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
