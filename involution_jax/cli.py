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
import os
import sys

import jax
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
flags.DEFINE_integer("heartbeat_timeout", 100,
                     "Multi-process: seconds without a heartbeat after which a process is "
                     "declared dead and every other process stops with an error.")


def _cluster_processes() -> int:
  """Processes a SLURM job step or a TPU pod slice runs (1 elsewhere)."""
  env = os.environ
  if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
    return int(env["SLURM_NTASKS"])
  if env.get("TPU_WORKER_HOSTNAMES"):
    return len(env["TPU_WORKER_HOSTNAMES"].split(","))
  return 1


def _maybe_initialize_distributed() -> None:
  """`jax.distributed.initialize` when flags, env vars or a cluster ask for it."""
  env = os.environ
  coordinator = FLAGS.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  if not coordinator and _cluster_processes() == 1:
    return
  num_processes = FLAGS.num_processes
  process_id = FLAGS.process_id
  if coordinator:  # explicit: every value from flags or JAX_* variables
    num_processes = num_processes or int(env.get("JAX_NUM_PROCESSES", 0)) or None
    if process_id is None and "JAX_PROCESS_ID" in env:
      process_id = int(env["JAX_PROCESS_ID"])
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id,
                             initialization_timeout=FLAGS.initialization_timeout,
                             heartbeat_timeout_seconds=FLAGS.heartbeat_timeout)
  if jax.process_index() == 0:
    print(f"{jax.process_count()} processes, {jax.device_count()} devices "
          f"({jax.local_device_count()} per process)")


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


def _peer_failed(error: Exception) -> None:
  """A collective failed in a multi-process run: almost always a dead peer. Stop now.

  Exits at once (os._exit): the normal shutdown would wait on the dead peer at the
  distributed runtime's shutdown barrier and then abort with a long trace.
  """
  sys.stderr.write(
      f"\nerror: process {jax.process_index()} of {jax.process_count()}: a collective "
      f"operation failed ({str(error).splitlines()[0][:300]}).\nAnother process has most "
      "likely died or lost its connection; see its log. This process stops now. Restart "
      "all processes with the same command to resume from the last checkpoint.\n")
  sys.stderr.flush()
  os._exit(1)


def train_main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _quiet_libraries()
  _maybe_initialize_distributed()
  from involution_jax.train import train_and_evaluate
  config = _config()
  if jax.process_index() == 0:
    print(f"training {config.model} on {config.dataset} with {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s); workdir {os.path.abspath(FLAGS.workdir)}")
  try:
    metrics = train_and_evaluate(config, FLAGS.workdir)
  except FloatingPointError as e:  # diverged: the message says what to do
    sys.exit(f"error: {e}")
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    _peer_failed(e)
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
