"""Command lines for training and evaluation (absl + ml_collections configs).

    involution-train --config experiments/configs/default.py --workdir runs/digits \
        [--config.batch_size=128 ...]
    involution-eval --config experiments/configs/rednet50_imagenet.py \
        --weights rednet50.pdparams --config.data_dir=/data/imagenet

Several hosts: pass --coordinator_address/--num_processes/--process_id (or set
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID); TPU pods and
SLURM jobs are detected without them.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join("experiments", "configs", "default.py")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Path to a config file "
                                "(path.py[:arg]); fields overridable as --config.field=value.",
                                lock_config=True)
flags.DEFINE_string("workdir", os.path.join("runs", "default"),
                    "Training: checkpoints, TensorBoard logs and metrics.json go here.")
flags.DEFINE_string("weights", None, "Evaluation: a checkpoint folder, or official .pth / "
                    ".pdparams weights.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.DEFINE_integer("initialization_timeout", 300,
                     "Multi-process: seconds to wait for all processes to connect.")


def _maybe_initialize_distributed() -> None:
  """`jax.distributed.initialize` when flags, env vars or a cluster ask for it."""
  import jax
  explicit = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  cluster = any(v in os.environ for v in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
                                          "MEGASCALE_COORDINATOR_ADDRESS"))
  if not (explicit or cluster):
    return
  jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                             num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                             initialization_timeout=FLAGS.initialization_timeout)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def _config():
  if FLAGS.config is None:
    raise app.UsageError(f"no config: pass --config path/to/config.py "
                         f"(no {DEFAULT_CONFIG} in {os.getcwd()})")
  return FLAGS.config


def _quiet_libraries() -> None:
  """Orbax and grain log every checkpoint step at INFO; keep the terminal readable."""
  from absl import logging as absl_logging
  if not FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)


def train_main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _quiet_libraries()
  _maybe_initialize_distributed()
  import jax
  from involution_jax.train import train_and_evaluate
  config = _config()
  if jax.process_index() == 0:
    print(f"training {config.model} on {config.dataset} with {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s); workdir {os.path.abspath(FLAGS.workdir)}")
  try:
    metrics = train_and_evaluate(config, FLAGS.workdir)
  except FloatingPointError as e:  # diverged: the message says what to do
    sys.exit(f"error: {e}")
  if jax.process_index() == 0:
    print(json.dumps({k: v for k, v in metrics.items() if not k.endswith("_dir")}, indent=2))
    print(f"checkpoints: {metrics['checkpoint_dir']}\nTensorBoard: "
          f"tensorboard --logdir {metrics['tensorboard_dir']}\n"
          f"metrics: {os.path.join(os.path.abspath(FLAGS.workdir), 'metrics.json')}")


def eval_main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.weights:
    raise app.UsageError("pass --weights (a checkpoint folder or a .pth / .pdparams file)")
  _quiet_libraries()
  _maybe_initialize_distributed()
  import jax
  from involution_jax.evaluate import evaluate_weights
  results = evaluate_weights(_config(), FLAGS.weights)
  if jax.process_index() == 0:
    print(json.dumps(results, indent=2))


def run_train() -> None:
  """Console script `involution-train`."""
  app.run(train_main, argv=sys.argv)


def run_eval() -> None:
  """Console script `involution-eval`."""
  app.run(eval_main, argv=sys.argv)
