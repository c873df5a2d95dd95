"""Where a run starts: the newest intact checkpoint of its workdir (of the same model),
a chosen one, or fresh weights with pretrained ones grafted in (`initialise_from`); and
what a finished run left (`finished_run`, `write_metrics`).

Before restoring, a step's saved parameter shapes are compared with the model
being trained: another model is an error that says what differs, never a page
of Orbax shape errors. A step that fails to restore (a truncated file, a
missing manifest, a corrupt iterator state) is set aside (renamed
`<step>.damaged`, see `checkpoints.set_aside`), reported, and the next older
one tried. `resume_step` resumes from an earlier step; the later ones are set
aside as `<step>.superseded`, so the run can save those steps again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from involution_jax.weights import ModelInfo, checkpoints, load_weights, model_from_info
from involution_jax.weights.info import UnreadableInfo


class DifferentModel(ValueError):
  """The workdir's checkpoint holds another model than the one configured."""


class DifferentSteps(ValueError):
  """The workdir's checkpoint counts steps (or data positions) unlike this run."""


# What a step and the data position saved with it mean: a step takes `batch_size`
# examples of `train_examples` in the order `seed` draws. Each training checkpoint
# records them (`checkpoints.save`'s metrics); any other field may change on resuming.
STEP_MEANING = ("dataset", "train_split", "train_examples", "batch_size", "seed")


METRICS = "metrics.json"  # in a workdir: the final metrics of its run


def write_metrics(workdir: str, metrics: dict) -> None:
  """`workdir/METRICS`, replaced whole (a killed write leaves the old one)."""
  path = os.path.join(workdir, METRICS)
  with open(f"{path}.tmp-{os.getpid()}", "w") as f:
    json.dump(metrics, f, indent=2)
  os.replace(f.name, path)


def refuse_shorter(workdir: str, step: int, total_steps: int, config) -> None:
  """A ValueError when the workdir holds `step`, past `total_steps`: a shorter run than
  the one it holds, which would rewrite its records with steps it did not take."""
  if step > total_steps:
    length = (
      f"num_train_steps={config.num_train_steps}"
      if config.num_train_steps > 0
      else f"num_epochs={config.num_epochs}"
    )
    raise ValueError(
      f"workdir {workdir} holds step {step}, past the {total_steps} steps this config "
      f"trains ({length}); nothing was trained or rewritten. Evaluate that step with "
      f"involution-eval {workdir}, or train the shorter run in another workdir"
    )


def finished_run(workdir: str, step: int, total_steps: int, config) -> dict | None:
  """What a run resumed at `step` of `total_steps` has left to do.

  Returns the metrics the run wrote when it finished (None when it has steps to go, or
  finished without writing them: then evaluate again), process 0's on every process.
  Raises ValueError past `total_steps` (`refuse_shorter`).
  """
  refuse_shorter(workdir, step, total_steps, config)
  metrics = None
  if step == total_steps and jax.process_index() == 0:
    try:
      with open(os.path.join(workdir, METRICS)) as f:
        metrics = json.load(f)
    except (OSError, ValueError):  # none, or torn by a kill: evaluate again
      metrics = None
    if not isinstance(metrics, dict) or metrics.get("steps") != total_steps:
      metrics = None
  return _from_process_0(metrics)


def _from_process_0(value: dict | None) -> dict | None:
  """Process 0's `value` (JSON-serialisable) on every process."""
  if jax.process_count() == 1:
    return value
  text = json.dumps(value).encode() if jax.process_index() == 0 else b""
  size = int(multihost_utils.broadcast_one_to_all(np.int64(len(text))))
  data = np.frombuffer(text.ljust(size, b" "), np.uint8)
  return json.loads(bytes(multihost_utils.broadcast_one_to_all(data)).decode())


def step_meaning(config, train_set) -> dict:
  """This run's `STEP_MEANING` values."""
  return dict(
    dataset=config.dataset,
    train_split=config.get("train_split", "train"),
    train_examples=len(train_set.source),
    batch_size=config.batch_size,
    seed=config.seed,
  )


def check_same_steps(root: str, step: int, run: dict, workdir: str) -> None:
  """Raises DifferentSteps when step `step` recorded another value of a `STEP_MEANING`
  field than `run` has (older checkpoints record none: nothing to compare)."""
  saved = checkpoints.saved_metrics(root, step)
  changed = [
    f"{k}={saved[k]!r} (now {run[k]!r})"
    for k in STEP_MEANING
    if k in saved and k in run and saved[k] != run[k]
  ]
  if changed:
    raise DifferentSteps(
      f"workdir {workdir}: step {step} was trained with {', '.join(changed)}; resuming "
      "would change what its steps and its saved data position mean: train with the "
      f"same values, or in a new workdir (--config.init_from={workdir} to start from "
      "its weights)"
    )


def kept_losses(root: str, mngr: ocp.CheckpointManager) -> dict[int, float | None]:
  """{step: its recorded training loss (None: not recorded)} of the kept steps, in order."""
  return {s: checkpoints.saved_metrics(root, s).get("train_loss") for s in sorted(mngr.all_steps())}


def describe_losses(losses: dict[int, float | None]) -> str:
  """ "step 40 (train loss 2.31), step 50 (train loss 4.1e+19)" for `kept_losses`."""
  parts = [
    f"step {step}" + (f" (train loss {loss:.4g})" if loss is not None else "")
    for step, loss in losses.items()
  ]
  return ", ".join(parts) or "none"


def lowest_loss_step(losses: dict[int, float | None]) -> int | None:
  """The step with the lowest finite recorded training loss (None: none recorded)."""
  finite = {s: v for s, v in losses.items() if v is not None and math.isfinite(v)}
  return min(finite, key=finite.get) if finite else None


def _model_fields(info: ModelInfo) -> dict:
  """The model's dataclass fields (defaults filled in) that `info` describes."""
  model = model_from_info(info)
  return {
    f.name: getattr(model, f.name)
    for f in dataclasses.fields(model)
    if f.name not in ("parent", "name")
  }


def _model_difference(saved: ModelInfo, asked: ModelInfo) -> str:
  """What differs between two models' infos, e.g. "base_width 16, asked 32"."""
  if saved.model != asked.model:
    return f"model {saved.model!r}, asked {asked.model!r}"
  try:
    old, new = _model_fields(saved), _model_fields(asked)
  except Exception:  # a saved model this version cannot build
    return f"model_kwargs {saved.model_kwargs}, asked {asked.model_kwargs}"
  changed = [f"{k} {old[k]}, asked {new[k]}" for k in new if k in old and old[k] != new[k]]
  return "; ".join(changed) or "its parameter shapes differ"


def check_same_model(root: str, step: int, abstract_variables: Any, info: ModelInfo, workdir: str):
  """Raises DifferentModel when step `step` holds parameters of another shape than
  the model's; lets reading errors (a damaged step) through."""
  saved = checkpoints.saved_shapes(root, step)
  wanted = {
    k: tuple(v.shape)
    for k, v in traverse_util.flatten_dict(dict(abstract_variables), sep="/").items()
  }
  if saved != wanted:
    difference = _model_difference(checkpoints.saved_info(root, step), info)
    raise DifferentModel(
      f"workdir {workdir} holds a checkpoint of a different model ({difference}): use a "
      f"new workdir, or --config.init_from={workdir} to start from its weights"
    )


def _set_aside(root: str, mngr: ocp.CheckpointManager, step: int, reason: str) -> str:
  """Process 0 renames the step (a file system all processes share); all wait, reload."""
  path = f"{root}/{step}.{reason}"
  if jax.process_index() == 0:
    path = checkpoints.set_aside(root, step, reason)
  multihost_utils.sync_global_devices(f"set aside {step}")
  mngr.reload()
  return path


def restore_newest_intact(
  mngr: ocp.CheckpointManager,
  root: str,
  *,
  abstract_state: Any,
  data_iterator: Any,
  info: ModelInfo,
  run: dict,
  workdir: str,
  resume_step: int | None = None,
  log: Callable[[str], None] = print,
) -> tuple[dict, dict] | None:
  """(variables, train items) of the newest intact step (or of `resume_step`), with
  `data_iterator` set to its position; None when the workdir holds no checkpoint.
  `run`: this run's `STEP_MEANING` values.

  Raises:
    ValueError: a different model or step meaning, an unknown `resume_step`, or no
      intact step.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  superseded = []
  if resume_step is not None:
    if resume_step not in steps:
      raise ValueError(
        f"resume_step={resume_step}: no such checkpoint in {root}; kept: "
        f"{describe_losses(kept_losses(root, mngr))}"
      )
    superseded = [s for s in steps if s > resume_step]
    steps = [resume_step]
  damaged = []
  for step in steps:
    try:
      checkpoints.check_complete(root, step)
      check_same_model(root, step, abstract_state.variables(), info, workdir)
      check_same_steps(root, step, run, workdir)
      restored = checkpoints.restore_training(
        mngr,
        step,
        variables=abstract_state.variables(),
        train=dict(step=abstract_state.step, opt_state=abstract_state.opt_state),
        data_iterator=data_iterator,
      )
    except (DifferentModel, DifferentSteps, UnreadableInfo):
      raise
    except Exception as e:  # Orbax, tensorstore and grain raise many types for bad files
      checkpoints.quiet_abandoned_reads()
      damaged.append((step, e))
      continue
    for later in superseded:  # only once the chosen step has restored
      where = _set_aside(root, mngr, later, "superseded")
      log(f"resuming from step {step}: step {later} set aside as {where}")
    for bad, error in damaged:  # only once an intact one is found: a rerun sees the same
      where = _set_aside(root, mngr, bad, "damaged")
      why = checkpoints.describe_error(error)
      log(f"checkpoint step {bad} is damaged ({why}); set aside as {where}")
    if damaged:
      log(f"resuming from step {step}, the newest intact checkpoint")
    return restored
  if damaged:
    raise ValueError(
      f"no intact checkpoint in {root}: "
      + "; ".join(f"step {s}: {checkpoints.describe_error(e)}" for s, e in damaged)
    )
  return None


def _listed(paths: list[str], most: int = 8) -> str:
  return ", ".join(paths[:most]) + (f" (and {len(paths) - most} more)" if len(paths) > most else "")


def initialise_from(state, config, task, target: NamedSharding, verbose: bool, quiet: bool = False):
  """`state` (fresh) with pretrained weights (checkpoint, .pth or .pdparams) grafted in;
  dense models take them into their backbone. Unless `config.init_partial`, every
  backbone array (all but a classifier's head `fc`) must load."""
  weights = config.init_from
  pretrained, _ = load_weights(weights, quiet=quiet or not verbose)
  into = task.pretrained_into
  variables, done = checkpoints.graft(jax.device_get(state.variables()), pretrained, into)
  backbone_kept = [
    p for p in done.kept if (p.split("/")[1] == into if into else p.split("/")[1] != "fc")
  ]
  if backbone_kept and not config.get("init_partial", False):
    reasons = [f"{p} ({done.mismatched.get(p, 'not in the weights')})" for p in backbone_kept]
    raise ValueError(
      f"init_from={weights} fits only {len(done.loaded)} of the model's "
      f"{len(done.loaded) + len(done.kept)} arrays; not loaded: {_listed(reasons, 3)}. "
      "Other weights than this model's? Set --config.init_partial=True to load a part on purpose"
    )
  if verbose:
    print(
      f"initialised from {weights}: loaded {len(done.loaded)} of the model's "
      f"{len(done.loaded) + len(done.kept)} arrays"
      + (f"; kept as initialised: {_listed(done.kept)}" if done.kept else "")
      + (f"; not used from the weights: {_listed(done.unused)}" if done.unused else "")
    )
  variables = jax.device_put(variables, target)
  return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
