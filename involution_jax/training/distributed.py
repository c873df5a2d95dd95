"""Several processes (hosts) as one run: start-up, and a dead peer stopping the others."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax


def run_collective(fn: Callable, *args):
  """`fn(*args)`; in a multi-process run, a failed collective (a dead peer) stops this
  process at once with `peer_failed`."""
  try:
    return fn(*args)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    peer_failed(e)


def cluster_processes() -> int:
  """Processes a SLURM job step or a TPU pod slice runs (1 elsewhere)."""
  env = os.environ
  if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
    return int(env["SLURM_NTASKS"])
  if env.get("TPU_WORKER_HOSTNAMES"):
    return len(env["TPU_WORKER_HOSTNAMES"].split(","))
  return 1


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  initialization_timeout: int = 300,
  heartbeat_timeout: int = 100,
) -> bool:
  """`jax.distributed.initialize` when arguments, JAX_* variables or a cluster ask for it.

  Explicit settings come from the arguments or JAX_COORDINATOR_ADDRESS /
  JAX_NUM_PROCESSES / JAX_PROCESS_ID; TPU pods and SLURM jobs are detected
  without them. Returns whether it initialised.
  """
  env = os.environ
  coordinator = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  if not coordinator and cluster_processes() == 1:
    return False
  if coordinator:  # explicit: every value from arguments or JAX_* variables
    num_processes = num_processes or int(env.get("JAX_NUM_PROCESSES", 0)) or None
    if process_id is None and "JAX_PROCESS_ID" in env:
      process_id = int(env["JAX_PROCESS_ID"])
  # JAX's preemption service would take SIGTERM over (it only sets a flag that nothing
  # here reads); without it, SIGTERM unwinds each process as in a one-process run.
  jax.config.update("jax_enable_preemption_service", False)
  jax.distributed.initialize(
    coordinator_address=coordinator,
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=initialization_timeout,
    heartbeat_timeout_seconds=heartbeat_timeout,
  )
  return True


def peer_failed(error: Exception) -> None:
  """A collective failed in a multi-process run: almost always a dead peer. Stop now.

  Exits at once (os._exit): the normal shutdown would wait on the dead peer at the
  distributed runtime's shutdown barrier and then abort with a long trace.
  """
  sys.stderr.write(
    f"\nerror: process {jax.process_index()} of {jax.process_count()}: a collective "
    f"operation failed ({str(error).splitlines()[0][:300]}).\nAnother process has most "
    "likely died or lost its connection; see its log. This process stops now. Restart "
    "all processes with the same command to resume from the last checkpoint.\n"
  )
  sys.stderr.flush()
  os._exit(1)
