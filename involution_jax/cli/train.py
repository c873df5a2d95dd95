"""`involution-train`: train and evaluate a config in a workdir, resuming where it stopped.

    involution-train --workdir runs/digits                       # the embedded default
    involution-train --config rednet50_imagenet --workdir runs/r50 --config.data_dir=/data/tfds
    involution-train --config my_config.py:arg --workdir runs/x --config.batch_size=128
    involution-train --config rednet50_imagenet --dry_run --target_platform tpu

Several hosts: the same command on every host (see docs/multihost.md).
"""

from __future__ import annotations

import functools
import os
import sys

from involution_jax import cli

PROG = "involution-train"


def _mib(n: int) -> str:
  return f"{n / 2**20:,.1f} MiB"


def format_report(report: dict) -> str:
  """A dry run's report (`preflight.dry_run`) as lines for the terminal."""
  lines = [
    f"model {report['model']}: {report['parameters']:,} parameters",
    f"mesh: {report['devices']} device(s) in {report['processes']} process(es)",
    f"batch: {report['global_batch']} global, {report['per_device_batch']} per device"
    + (f", {report['grad_accum_steps']} micro-batches" if report["grad_accum_steps"] > 1 else ""),
    f"data: {report['data']}",
    f"init_from: {report['init_from']}",
  ]
  for name in ("train_step", "eval_step"):
    memory = report[name]
    if memory == "lowered":
      lines.append(
        f"{name}: lowered for {', '.join(report['platforms'])}; nothing there it cannot run"
      )
    elif memory is None:
      lines.append(
        f"{name}: compiled for {report['platforms'][0]} (XLA reports no memory figures here)"
      )
    else:
      peak = memory["arguments"] + memory["outputs"] + memory["temporaries"] - memory["aliased"]
      lines.append(
        f"{name}: compiled for {report['platforms'][0]}; per device: "
        f"arguments {_mib(memory['arguments'])}, outputs "
        f"{_mib(memory['outputs'])}"
        + (
          f" ({_mib(memory['aliased'])} of them in donated arguments)" if memory["aliased"] else ""
        )
        + f", temporaries {_mib(memory['temporaries'])}; about {_mib(peak)} at the peak"
      )
  return "\n".join(lines)


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
      "involution-train --config rednet50_imagenet --config.batch_size=2048 --dry_run",
      "involution-train --config rednet50_imagenet --dry_run --target_platform tpu",
    ],
  )
  cli.add_config_arguments(parser, "the workdir's config.py (the run's own)")
  parser.add_argument(
    "--workdir",
    default=os.path.join("runs", "default"),
    help="checkpoints, TensorBoard logs, metrics.json and the run's config.py go here "
    "(default: runs/default)",
  )
  parser.add_argument(
    "--dry_run",
    action="store_true",
    help="build the model, data and mesh, lower and compile one training and one evaluation "
    "step, print the per-device memory XLA reports and exit without training",
  )
  parser.add_argument(
    "--target_platform",
    default="",
    help="with --dry_run: lower for these platforms instead of this machine's, comma-"
    "separated, some of cpu,cuda,rocm,tpu (no compile, no memory figures), "
    "checking for what they cannot run",
  )
  cli.output_arguments(parser, "the final metrics (or the dry run's report)")
  args, overrides = cli.parse_with_config_overrides(parser, argv)
  import jax

  from involution_jax import configs, portability
  from involution_jax.host.paths import output_folder
  from involution_jax.training.distributed import run_collective
  from involution_jax.training.preflight import dry_run
  from involution_jax.training.trainer import train_and_evaluate

  if args.target_platform and not args.dry_run:
    raise ValueError("--target_platform goes with --dry_run (training runs on this machine)")
  targets = (
    portability.check_platforms(args.target_platform.split(",")) if args.target_platform else ()
  )
  spec = args.config or configs.run_config_of(args.workdir) or "default"
  config = configs.get_config(spec, overrides)
  cli.start(args)
  if args.dry_run:
    report = run_collective(lambda: dry_run(config, target_platforms=targets))
    if jax.process_index() == 0:
      cli.print_result(args, report, format_report(report))
    return 0
  output_folder(args.workdir, "workdir")
  if jax.process_index() == 0:
    cli.say(
      args,
      f"training {config.model} on {config.dataset} with {jax.device_count()} "
      f"{jax.devices()[0].platform} device(s); workdir {os.path.abspath(args.workdir)}"
      + ("" if args.config else f" (config: {spec})"),
    )
  try:
    with cli.work_output(args):
      metrics = run_collective(lambda: train_and_evaluate(config, args.workdir, quiet=args.quiet))
  except FloatingPointError as e:  # diverged: the message says what to do
    print(f"{PROG}: error: {e}", file=sys.stderr)
    return 1
  if jax.process_index() == 0:
    cli.print_result(args, metrics, _final_text(metrics, args.workdir))
  return 0


def _final_text(metrics: dict, workdir: str) -> str:
  """The final metrics, then where the run's files are (TensorBoard's command only where
  it is installed)."""
  import importlib.util
  import json

  from involution_jax import configs
  from involution_jax.training import curves, resume
  from involution_jax.weights import checkpoints

  where = functools.partial(os.path.join, os.path.abspath(workdir))
  logs = where("tensorboard")
  board = (
    f"tensorboard --logdir {logs}"
    if importlib.util.find_spec("tensorboard")
    else f"{logs} (to view: pip install tensorboard, then tensorboard --logdir {logs})"
  )
  return (
    json.dumps({k: v for k, v in metrics.items() if not k.endswith("_dir")}, indent=2)
    + f"\ncheckpoints: {where(checkpoints.CHECKPOINT_SUBDIR)}\nTensorBoard: {board}\n"
    f"metrics: {where(resume.METRICS)}\ncurves: {where(curves.CURVES)}\n"
    f"config: {where(configs.RUN_CONFIG)}"
  )


if __name__ == "__main__":
  sys.exit(main())
