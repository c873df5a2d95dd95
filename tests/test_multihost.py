"""Several processes on 127.0.0.1 (jax.distributed, gloo): same training, clean failure."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from helpers import ROOT, python_env, tiny_digits_config, tiny_flags, train_command

from involution_jax.training import sharding
from involution_jax.training.trainer import train_and_evaluate
from involution_jax.weights import checkpoints

STEPS = dict(num_train_steps=6, checkpoint_every_steps=3, log_every_steps=3)
FLAGS = tiny_flags(**STEPS)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _Process:
  """A training process whose output goes to files (a pipe left unread can block it)."""

  def __init__(self, cmd, devices, log_prefix):
    self.out, self.err = f"{log_prefix}.out", f"{log_prefix}.err"
    with open(self.out, "w") as out, open(self.err, "w") as err:
      self.popen = subprocess.Popen(cmd, env=python_env(devices), cwd=ROOT, stdout=out, stderr=err)

  def wait(self, timeout):
    self.popen.wait(timeout=timeout)
    return open(self.out).read(), open(self.err).read()


def _launch(workdir, *extra, processes=2, devices=2, heartbeat=100):
  port = _free_port()
  return [
    _Process(
      train_command(
        workdir,
        *extra,
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={processes}",
        f"--process_id={i}",
        f"--heartbeat_timeout={heartbeat}",
      ),
      devices,
      f"{workdir}-process{i}",
    )
    for i in range(processes)
  ]


# Over 20 s: two training processes together (twice), and one run here on as many devices.
def test_two_processes_train_like_one_process_with_the_same_devices(tmp_path):
  single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
  procs = _launch(multi, *FLAGS)
  four = sharding.data_mesh(jax.devices()[:4])
  train_and_evaluate(tiny_digits_config(**STEPS), single, mesh=four)
  outputs = [p.wait(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.popen.returncode == 0, err[-3000:]
  assert "2 processes, 4 devices (2 per process)" in outputs[0][0]
  assert "test_accuracy" in outputs[0][0] and "test_accuracy" not in outputs[1][0]
  with open(os.path.join(multi, "metrics.json")) as f:
    metrics = json.load(f)
  assert (metrics["processes"], metrics["devices"], metrics["steps"]) == (2, 4, 6)
  assert sorted(os.listdir(os.path.join(multi, "checkpoints", "6", "data"))) == [
    "commit_success.txt",
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
  a, _ = checkpoints.load_for_inference(single)
  b, _ = checkpoints.load_for_inference(multi)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)
  # The same command again: finished, on both processes, and nothing rewritten.
  records = [pathlib.Path(multi, f) for f in ("metrics.json", "config.py")]
  before = [f.read_bytes() for f in records]
  again = _launch(multi, *FLAGS)
  outputs = [p.wait(timeout=300) for p in again]
  assert [p.popen.returncode for p in again] == [0, 0], outputs
  assert "finished its 6 steps before" in outputs[0][0]
  assert [f.read_bytes() for f in records] == before


# Over 20 s: two processes must start and train before one is killed.
def test_a_dead_process_stops_the_other_with_a_clear_error(tmp_path):
  workdir = str(tmp_path / "run")
  procs = _launch(
    workdir,
    *tiny_flags(num_train_steps=100000, checkpoint_every_steps=5, log_every_steps=5),
    heartbeat=10,
  )
  ckpt = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while not (os.path.isdir(ckpt) and any(s.isdigit() for s in os.listdir(ckpt))):
    assert time.time() < deadline and all(p.popen.poll() is None for p in procs), (
      "training did not start"
    )
    time.sleep(0.2)
  procs[1].popen.send_signal(signal.SIGKILL)
  killed_at = time.time()
  _, err = procs[0].wait(timeout=10 + 60)  # bounded: heartbeat timeout + slack
  assert procs[0].popen.returncode != 0
  assert time.time() - killed_at < 10 + 60
  assert (
    "Another process has most likely died" in err
    or "JAX distributed service detected fatal errors" in err
  ), err[-3000:]


_SIGTERM_AFTER_JOINING = """
import os, signal, sys, time
from involution_jax import cli
from involution_jax.training.distributed import initialize_distributed

@cli.command("probe")
def main(argv):
  initialize_distributed(sys.argv[1], num_processes=1, process_id=0)
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(60)
  return 0

sys.exit(main([]))
"""


def test_sigterm_unwinds_a_process_that_joined_others():
  """jax.distributed's preemption service would swallow SIGTERM (it sets a flag nothing
  reads): a process of a multi-process run must stop as a lone one does."""
  done = subprocess.run(
    [sys.executable, "-c", _SIGTERM_AFTER_JOINING, f"127.0.0.1:{_free_port()}"],
    env=python_env(),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
  assert done.stderr.strip().splitlines()[-1] == "probe: stopped by SIGTERM"
