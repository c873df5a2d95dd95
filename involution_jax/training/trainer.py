"""The training loop, `train_and_evaluate`: data-parallel training from one CPU to a pod.

`jax.jit` with explicit shardings on a 1-D device mesh (axis "data"): the
batch is split over every device of every process, the train state is
replicated, BatchNorm statistics are global-batch statistics. Orbax
checkpoints (with the grain iterator state) resume exactly; a non-finite loss
stops the run naming the step, leaving the last checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import threading
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter
from tqdm import tqdm

from involution_jax import configs
from involution_jax.data import pipeline
from involution_jax.data.pipeline import train_iterator
from involution_jax.host import workdir_lock
from involution_jax.host.console import stderr_is_terminal
from involution_jax.host.signals import Terminated, sigterm_as_a_request
from involution_jax.tasks import get_task
from involution_jax.training import curves, resume, sharding
from involution_jax.training import step as train_step
from involution_jax.training.evaluator import evaluate, make_eval_step
from involution_jax.weights import checkpoints


@dataclasses.dataclass(frozen=True)
class Programs:
  """What a run compiles: the model and its jitted functions, sharded on a mesh."""

  model: nn.Module
  init: Callable  # rng -> TrainState, replicated
  train_step: Callable  # (state, batch, learning_rate) -> (state, metrics); state donated
  eval_step: Callable  # (variables, batch) -> the task's per-batch outputs
  abstract_state: train_step.TrainState  # jax.ShapeDtypeStruct leaves, with shardings
  schedule: Callable  # step (from 0) -> the learning rate of the step after it


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  """`num_train_steps` if set (> 0), else `num_epochs` worth of steps."""
  if config.num_train_steps > 0:
    return config.num_train_steps
  return math.ceil(config.num_epochs * steps_per_epoch)


def build_programs(
  config: ml_collections.ConfigDict,
  task,
  num_classes: int,
  total_steps: int,
  steps_per_epoch: int,
  mesh: jax.sharding.Mesh,
) -> Programs:
  """The configured model, optimiser and schedule, and the functions a run jits:
  state replicated, batches split over the mesh's "data" axis, the learning rate an
  input (so the train step does not depend on the schedule or the run's length)."""
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  model = train_step.model_from_config(config, num_classes)
  schedule = train_step.learning_rate_schedule(config, total_steps, steps_per_epoch)
  tx = train_step.optimizer(config)
  shape = task.input_shape(config)
  init = jax.jit(
    lambda rng: train_step.init_state(model, tx, rng, shape, task.input_dtype),
    out_shardings=replicated,
  )
  abstract = jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
    jax.eval_shape(init, jax.random.PRNGKey(0)),
  )
  step = jax.jit(
    train_step.bind_train_step(task.loss_fn(model, config), tx, config),
    in_shardings=(replicated, batch_sharding, replicated),
    out_shardings=(replicated, replicated),
    donate_argnums=0,
  )
  eval_step = make_eval_step(task, model, replicated, batch_sharding)
  return Programs(model, init, step, eval_step, abstract, schedule)


def _write_scalars(writer, workdir: str, kind: str, results: dict, step: int) -> None:
  """TensorBoard scalars and a line of the run's history (`curves`)."""
  for name, value in results.items():
    if isinstance(value, (int, float)):
      writer.add_scalar(f"{kind}/{name}", value, step)
  curves.append(workdir, step, kind, results)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  quiet: bool = False,
) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and evaluates.

  `mesh`: a 1-D mesh with axis "data" (default: every device of every process).
  `quiet`: no progress (a bar on a terminal, else a line per logging interval).
  The config is saved as `workdir/config.py` (`configs.save_run_config`). Returns the
  final metrics, also written to `workdir/metrics.json` (process 0); a run that had
  finished returns those it wrote then, and changes nothing.

  Raises:
    workdir_lock.WorkdirInUseError: another run trains in `workdir`.
    OSError: the disk is full (one message, whatever the library said).
  """
  with workdir_lock.hold_on_process_0(workdir), sigterm_as_a_request() as stop:
    try:
      return _train_and_evaluate(config, workdir, mesh, stop, quiet)
    except Exception as e:  # Orbax and tensorstore say it in many ways
      if getattr(e, "errno", None) != errno.ENOSPC and "No space left on device" not in str(e):
        raise
      raise OSError(
        f"no space left on the device of workdir {workdir}: the checkpoint being saved was "
        "not kept (the complete ones are); free space, or keep fewer checkpoints "
        "(keep_checkpoints), and rerun to resume"
      ) from e


def _train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  mesh: jax.sharding.Mesh | None,
  stop: threading.Event,
  quiet: bool,
) -> dict:
  mesh = mesh or sharding.data_mesh()
  configs.validate(config, mesh.size)
  configs.to_python(config)  # a field no config file can hold: said now, on every process
  start_time = time.time()
  main_process = jax.process_index() == 0
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  task = get_task(config)
  train_set = task.dataset(config, config.get("train_split", "train"))
  configs.check_num_classes(config, train_set)
  eval_set = task.dataset(config, config.eval_split)
  steps_per_epoch = len(train_set.source) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(
      f"invalid config: batch_size={config.batch_size} exceeds the "
      f"{len(train_set.source)} training examples"
    )
  total_steps = total_train_steps(config, steps_per_epoch)
  programs = build_programs(config, task, train_set.num_classes, total_steps, steps_per_epoch, mesh)
  preprocess = task.preprocess(config)
  ckpt_dir = os.path.abspath(os.path.join(workdir, checkpoints.CHECKPOINT_SUBDIR))
  mngr, bar = checkpoints.manager(ckpt_dir, keep=config.keep_checkpoints), None
  iterator = train_iterator(
    train_set,
    preprocess,
    global_batch=config.batch_size,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    workers=config.data_workers,
    read_ahead=config.get("prefetch_batches", 2),
  )
  try:
    info = task.model_info(config, train_set)
    step_meaning = resume.step_meaning(config, train_set)
    kept, asked = mngr.all_steps(), config.get("resume_step")
    if asked is None or asked in kept:  # (a resume_step not kept: restoring says so)
      newest = asked if asked is not None else max(kept, default=0)
      resume.refuse_shorter(workdir, newest, total_steps, config)  # before any renaming
    restored = resume.restore_newest_intact(
      mngr,
      ckpt_dir,
      abstract_state=programs.abstract_state,
      data_iterator=iterator,
      info=info,
      run=step_meaning,
      workdir=workdir,
      resume_step=config.get("resume_step"),
      log=print if main_process else lambda _: None,
    )
    if restored is not None:
      variables, train = restored
      state = train_step.TrainState(step=train["step"], opt_state=train["opt_state"], **variables)
    else:
      state = programs.init(jax.random.PRNGKey(config.seed))
      if config.get("init_from"):
        state = resume.initialise_from(state, config, task, replicated, main_process, quiet)
    start_step = int(state.step)
    changed = configs.differences(config, workdir) if main_process else []
    finished = resume.finished_run(workdir, start_step, total_steps, config)
    if finished is not None:
      if main_process:
        print(
          f"workdir {workdir} finished its {total_steps} steps before: nothing to train, "
          "metrics.json kept as it was (involution-eval evaluates it again)"
          + (f"; not applied: {'; '.join(changed)}" if changed else "")
        )
      return finished
    if main_process:
      if restored is not None:
        print(f"resuming from {ckpt_dir} at step {start_step} of {total_steps}")
      if changed:
        print(f"config changed since this workdir's last run: {'; '.join(changed)}")
      configs.save_run_config(config, workdir)

    step_fn, eval_fn = programs.train_step, programs.eval_step
    rates = train_step.learning_rates(programs.schedule, total_steps)
    writer = None
    if main_process:
      writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
      curves.keep_until(workdir, start_step)

    def save(step: int, loss: float) -> None:
      checkpoints.save(
        mngr,
        step,
        variables=state.variables(),
        model_info=info,
        train=dict(step=state.step, opt_state=state.opt_state),
        data_iterator=iterator,
        metrics={"train_loss": loss, **step_meaning},
      )

    def evaluate_state() -> dict:  # the current state's metrics on the evaluation split
      args = (state.variables(), eval_set, preprocess, config.eval_batch_size, batch_sharding)
      return evaluate(task, eval_fn, *args, quiet)

    last_loss = None  # of the newest step checked, recorded with each checkpoint

    def check_finite(step: int, metrics: dict) -> dict:
      nonlocal last_loss
      host = jax.device_get(metrics)
      last_loss = float(host["loss"])
      if host["valid"] == 0:
        mngr.wait_until_finished()
        bar.close()
        raise ValueError(
          f"step {step}: none of the {config.batch_size} examples of the batch could be read "
          "(the warnings above name the files); training stopped before the update was used"
        )
      if not host["finite"]:
        mngr.wait_until_finished()
        losses = resume.kept_losses(ckpt_dir, mngr)
        best = resume.lowest_loss_step(losses)
        bar.close()  # the message on a line of its own
        raise FloatingPointError(
          f"non-finite loss or gradients at step {step} (loss={float(host['loss'])}); the "
          f"update was not applied and training stopped. Kept checkpoints in {ckpt_dir}: "
          f"{resume.describe_losses(losses)}. A run diverges before its loss does: lower "
          "learning_rate (or warm up longer) and resume from a step whose loss is sane"
          + (f", e.g. --config.resume_step={best}" if best is not None else "")
          + " (later steps are set aside, not deleted)."
        )
      return host

    history, pending, unreadable_draws, unreadable_files = [], None, 0, set()
    most_unreadable = config.get("max_unreadable_fraction", 0.1)
    # A run that finished without writing its metrics: train figures as recorded then.
    recorded = curves.recorded(workdir, "train", start_step) if main_process else None
    recorded = recorded if start_step == total_steps and recorded else {}
    last_summary = {k: recorded.get(k) for k in ("loss",) + task.train_metrics}
    timed_steps, timed_seconds, tick = 0, 0.0, None
    # A bar on a terminal; elsewhere (a log file, a scheduler's capture) a plain line per
    # logging interval.
    on_terminal = main_process and not quiet and stderr_is_terminal()
    bar = tqdm(
      total=total_steps,
      initial=start_step,
      disable=not on_terminal,
      unit="step",
      desc="train",
      dynamic_ncols=True,
      mininterval=0.5,
    )
    for step in range(start_step + 1, total_steps + 1):
      if stop.is_set():  # SIGTERM: between two steps, never inside a save or a read
        raise Terminated
      local = next(iterator)
      index = local.pop("index")
      unreadable_files.update(index[local["valid"] == 0].tolist())
      batch = sharding.global_batch(local, batch_sharding)
      state, metrics = step_fn(state, batch, rates[step - 1])
      if pending is not None:  # one step behind: keeps the device busy while we check
        history.append(check_finite(step - 1, pending))
      pending = metrics
      bar.update(1)
      if step == start_step + 1:
        tick = time.time()  # exclude compilation from throughput
      if step % config.log_every_steps == 0 or step == total_steps:
        history.append(check_finite(step, pending))
        pending = None
        now = time.time()
        if step > start_step + 1:
          timed_steps, timed_seconds = step - start_step - 1, now - tick
        examples_per_second = timed_steps * config.batch_size / max(timed_seconds, 1e-9)
        summary = {
          k: float(np.mean([h[k] for h in history])) for k in ("loss",) + task.train_metrics
        }
        unreadable_draws += sum(int(config.batch_size - h["valid"]) for h in history)
        drawn = (step - start_step) * config.batch_size
        if unreadable_draws > most_unreadable * drawn:
          mngr.wait_until_finished()
          bar.close()
          raise ValueError(
            f"{unreadable_draws} of the {drawn} training examples drawn so far could not be "
            f"read (more than max_unreadable_fraction={most_unreadable}); the warnings above "
            "name the files. Fix or remove them (or raise the fraction) and rerun"
          )
        bar.set_postfix(
          **{k: f"{v:.4f}" for k, v in summary.items()}, ex_s=f"{examples_per_second:.0f}"
        )
        if main_process and not on_terminal and not quiet:
          print(
            f"step {step}/{total_steps}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
            + f", {examples_per_second:.0f} examples/s",
            flush=True,
          )
        if writer:
          scalars = dict(
            summary,
            learning_rate=float(history[-1]["learning_rate"]),
            examples_per_second=examples_per_second,
          )
          _write_scalars(writer, workdir, "train", scalars, step)
        last_summary, history = summary, []
      if step % config.checkpoint_every_steps == 0 or step == total_steps:
        if pending is not None:
          history.append(check_finite(step, pending))
          pending = None
        save(step, last_loss)
      if config.eval_every_steps > 0 and step % config.eval_every_steps == 0 and step < total_steps:
        results = evaluate_state()
        if writer:
          _write_scalars(writer, workdir, "eval", results, step)
    bar.close()
    mngr.wait_until_finished()
    if stop.is_set():
      raise Terminated
    results = evaluate_state()
    final = {f"train_{k}": v for k, v in last_summary.items()}
    final.update({f"test_{k}": v for k, v in results.items() if k not in ("unreadable", "count")})
    final.update(
      steps=total_steps,
      examples_per_second=(
        timed_steps * config.batch_size / timed_seconds
        if timed_seconds
        else recorded.get("examples_per_second")
      ),
      wall_time_s=time.time() - start_time,
      unreadable_train_images=int(
        np.sum(multihost_utils.process_allgather(np.int64(len(unreadable_files))))
      ),
      unreadable_test_images=results["unreadable"],
      devices=jax.device_count(),
      processes=jax.process_count(),
      checkpoint_dir=ckpt_dir,
      tensorboard_dir=os.path.join(workdir, "tensorboard"),
    )
    if info.corpus is not None:  # text: which text, exactly (it differs between Pythons)
      final["corpus"] = info.corpus
    if writer:
      if not (recorded and curves.recorded(workdir, "eval", total_steps)):  # said once
        _write_scalars(writer, workdir, "eval", results, total_steps)
      writer.close()
      run = os.path.basename(os.path.abspath(workdir))
      curves.draw({run: curves.read(workdir)}, os.path.join(workdir, curves.CURVES), title=run)
    if main_process:
      resume.write_metrics(workdir, final)
    mngr.close()
    return final
  finally:
    if bar is not None:  # a message that stops the run starts on a line of its own
      bar.close()
    try:
      mngr.wait_until_finished()  # a step being saved is whole before the workdir is let go
    finally:
      pipeline.close(iterator)
