"""Helpers shared by the tests: configs, subprocess runs."""

import importlib
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str = "default", *args, **overrides):
  """The shipped config `name` (involution_jax/configs/<name>.py) with fields overridden."""
  config = importlib.import_module(f"involution_jax.configs.{name}").get_config(*args)
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


# The default digits run, shrunk to a few steps of seconds.
TINY = dict(
  image_size=8,
  batch_size=16,
  eval_batch_size=64,
  num_train_steps=4,
  log_every_steps=2,
  checkpoint_every_steps=2,
  warmup_epochs=0.0,
)


def tiny_digits_config(**overrides):
  return load_config("default", **{**TINY, **overrides})


def tiny_flags(**overrides) -> list[str]:
  """Command-line overrides giving the run of `tiny_digits_config`."""
  return [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]


def python_env(devices: int = 1) -> dict:
  """Environment for a child Python: this checkout importable, N CPU devices."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  env["JAX_NUM_CPU_DEVICES"] = str(devices)
  env["JAX_PLATFORMS"] = "cpu"
  return env


def train_command(workdir: str, *flags: str) -> list[str]:
  return [
    sys.executable,
    "-m",
    "involution_jax.cli.train",
    "--config",
    "default",
    "--workdir",
    workdir,
    *flags,
  ]


def run(cmd: list[str], devices: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run(
    cmd, env=python_env(devices), capture_output=True, text=True, timeout=timeout, cwd=ROOT
  )


def wait_for_checkpoint(process, workdir: str, min_step: int, timeout: float = 240) -> None:
  """Returns as soon as `process` (a training run in `workdir`) has committed a checkpoint
  of step >= `min_step` (Orbax renames a step's folder into place when it is whole);
  fails the test if the process ends or `timeout` seconds pass first."""
  import time

  import pytest

  deadline = time.time() + timeout
  ckpt = os.path.join(workdir, "checkpoints")
  while time.time() < deadline and process.poll() is None:
    steps = [int(s) for s in os.listdir(ckpt) if s.isdigit()] if os.path.isdir(ckpt) else []
    if any(s >= min_step for s in steps):
      return
    time.sleep(0.005)
  pytest.fail(f"no checkpoint of step >= {min_step} before the run ended (rc={process.poll()})")


def _state_and_parent(pid) -> tuple[str, int] | None:
  """(state letter, parent pid) of a process from /proc (Linux); None: no such process."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()  # after "(command name)"
  except (OSError, IndexError):
    return None
  return fields[0], int(fields[1])


def alive(pids) -> set[int]:
  """Those of `pids` that still run (a zombie has ended)."""
  return {p for p in pids if (status := _state_and_parent(p)) and status[0] != "Z"}


def child_processes(pid: int) -> set[int]:
  """The live processes whose parent is `pid` (Linux: read from /proc)."""
  return {
    int(p)
    for p in os.listdir("/proc")
    if p.isdigit() and (s := _state_and_parent(p)) and s[0] != "Z" and s[1] == pid
  }


def spawned_processes(pid: int) -> set[int]:
  """The live children of `pid` that multiprocessing spawned (grain's readers), not its
  resource tracker (which lives as long as `pid` does)."""
  spawned = set()
  for child in child_processes(pid):
    try:
      with open(f"/proc/{child}/cmdline", "rb") as f:
        if b"spawn_main" in f.read():
          spawned.add(child)
    except OSError:
      continue
  return spawned


def shared_memory_of(pids) -> set[str]:
  """The /dev/shm files that the processes `pids` have mapped."""
  files = set()
  for pid in pids:
    try:
      with open(f"/proc/{pid}/maps") as f:
        files |= {line.split()[5] for line in f if " /dev/shm/" in line}
    except OSError:
      continue
  return files


def save_random_checkpoint(
  path: str, image_size: int = 8, seed: int = 0, config=None, edit=None
) -> tuple:
  """A model with random weights, saved as a checkpoint with its task's model info.

  Default: the digits-style RedNet of `tiny_digits_config`. `edit(variables)`, if
  given, changes the variables in place before they are saved. Returns (model,
  variables, model_info).
  """
  import jax
  import jax.numpy as jnp

  from involution_jax.tasks import get_task
  from involution_jax.weights import checkpoints, model_from_info

  config = config or tiny_digits_config(image_size=image_size)
  task = get_task(config)
  info = task.model_info(config, task.dataset(config, "train"))
  model = model_from_info(info)
  variables = jax.jit(model.init, static_argnames="train")(
    jax.random.PRNGKey(seed), jnp.zeros((1, *task.input_shape(config))), train=False
  )
  # Non-trivial BatchNorm statistics and last-BN scales, so every layer matters.
  variables = jax.tree.map(
    lambda a: a + 0.1 * jnp.cos(jnp.arange(a.size).reshape(a.shape)), variables
  )
  if edit is not None:
    variables = jax.tree.map(np.array, variables)  # writable host copies
    edit(variables)
  mngr = checkpoints.manager(path, async_save=False)
  checkpoints.save(mngr, 1, variables=variables, model_info=info)
  mngr.close()
  return model, variables, info


def paddle_state(state) -> dict:
  """An mmcls state dict (torch tensors or numpy arrays) renamed to PaddleClas's layout,
  as numpy arrays, with Paddle's extra name table, as a `.pdparams` file holds it."""
  out = {"StructuredToParameterName@@": {"conv.w_0": "stem.0.conv.weight"}}
  for key, value in state.items():
    if key.endswith("num_batches_tracked"):
      continue
    value = np.asarray(value)
    if key.startswith("head."):
      key, value = key[len("head.") :], (value.T if key.endswith("weight") else value)
    else:
      key = (
        key[len("backbone.") :].replace("running_mean", "_mean").replace("running_var", "_variance")
      )
    out[key] = value
  return out


def one_device_mesh():
  """The trainer's mesh on this process's first device alone, for runs whose subject is not
  sharding: their programs compile ~20% and run ~35% faster than on the 8 simulated
  devices. Sharded programs compute the same by construction (jit with NamedShardings,
  the evaluator's outputs replicated, nothing per task); test_train.py (one device against
  eight) and test_multihost.py (processes) test that."""
  import jax

  from involution_jax.training import sharding

  return sharding.data_mesh(jax.devices()[:1])


def metrics_on_one_batch(config, steps: int, global_batch: int) -> list[dict]:
  """The metrics of `steps` training steps of `config`'s task, the trainer's own programs
  at its constant learning rate on `one_device_mesh`, all on its first training batch of
  `global_batch` examples. A trainer run of the same config and batch size on that mesh
  compiles the same step."""
  import jax

  from involution_jax import tasks
  from involution_jax.data import pipeline
  from involution_jax.training import sharding
  from involution_jax.training.trainer import build_programs

  task = tasks.get_task(config)
  dataset = task.dataset(config, "train")
  mesh = one_device_mesh()
  programs = build_programs(config, task, dataset.num_classes, steps, steps, mesh)
  state = programs.init(jax.random.PRNGKey(config.seed))
  local = next(
    pipeline.train_iterator(dataset, task.preprocess(config), global_batch=global_batch, seed=0)
  )
  local.pop("index")
  batch = sharding.global_batch(local, sharding.batch_sharded(mesh))
  history = []
  for _ in range(steps):
    state, metrics = programs.train_step(state, batch, np.float32(config.learning_rate))
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return history


def checkpoint_on_eval_split(workdir: str, config, dtype=None) -> tuple:
  """The checkpoint in `workdir` with `config`'s evaluation split, for references computed
  apart from the evaluator: (model (computing in `dtype`), variables, every record of the
  split, each record's evaluation example by the config's preprocessing)."""
  from involution_jax import tasks, weights
  from involution_jax.weights import checkpoints

  task = tasks.get_task(config)
  variables, info = checkpoints.load_for_inference(workdir)
  source = task.dataset(config, config.eval_split).source
  records = [source[i] for i in range(len(source))]
  preprocess = task.preprocess(config)
  examples = [preprocess.eval(r) for r in records]
  return weights.model_from_info(info, dtype=dtype), variables, records, examples


def coco_ap_of_checkpoint(workdir: str, config) -> dict:
  """COCO AP of the checkpoint in `workdir` on `config`'s evaluation scenes, apart from
  the trainer's evaluator: one jitted forward pass over every scene at once (unsharded,
  unbatched), ground truth and detections (in the scene's pixels, masks pasted) built
  here, and pycocotools' COCOeval called directly. Returns {"ap", "ap50", "detections"},
  with {"mask_ap", "mask_ap50"} for a model with masks (AP 0 where nothing is found)."""
  import jax
  from pycocotools import mask as mask_util
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  from involution_jax.models import detection, rcnn

  model, variables, records, examples = checkpoint_on_eval_split(workdir, config)
  x = np.stack([e["image"] for e in examples])

  def forward(variables, x):
    out = model.apply(variables, x, train=False)
    if isinstance(out, dict):  # two-stage: detections already
      return out
    anchors = jax.numpy.asarray(model.anchors(x.shape[1:3]))  # RetinaNet: per-anchor outputs
    return jax.vmap(lambda c, r: detection.postprocess(c, r, anchors, x.shape[1:3]))(*out)

  out = jax.tree.map(np.asarray, jax.jit(forward)(variables, x))
  rle = lambda plane: mask_util.encode(np.asfortranarray(plane, dtype=np.uint8))
  images, truth, found = [], [], []
  for i, (record, example) in enumerate(zip(records, examples)):
    h, w = record["image"].shape[:2]
    images.append(dict(id=i, height=h, width=w))
    for k in np.flatnonzero(record["classes"] >= 0):
      x1, y1, x2, y2 = (float(v) for v in record["boxes"][k])
      box = dict(bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1))
      if "masks" in out:
        box.update(segmentation=rle(record["instance_masks"][k] > 0))
        box.update(area=float(np.sum(record["instance_masks"][k] > 0)))
      category = int(record["classes"][k])
      truth.append(dict(box, id=len(truth) + 1, image_id=i, category_id=category, iscrowd=0))
    keep = np.flatnonzero(out["valid"][i])
    boxes = out["boxes"][i][keep] / float(example["scale"])
    if "masks" in out and len(keep):
      planes = np.asarray(rcnn.paste_masks(out["masks"][i][keep], boxes, (h, w))) >= 0.5
    for j, k in enumerate(keep):
      x1, y1, x2, y2 = (float(v) for v in boxes[j])
      category, score = int(out["classes"][i][k]), float(out["scores"][i][k])
      found.append(dict(image_id=i, category_id=category, bbox=[x1, y1, x2 - x1, y2 - y1]))
      found[-1].update(score=score, **({"segmentation": rle(planes[j])} if "masks" in out else {}))
  ground = COCO()
  categories = [dict(id=k, name=str(k)) for k in range(model.num_classes)]
  ground.dataset = dict(images=images, annotations=truth, categories=categories)
  ground.createIndex()
  results = dict(detections=len(found))
  for iou_type, prefix in [("bbox", ""), ("segm", "mask_")][: 1 + ("masks" in out)]:
    if not found:  # no detection: nothing found, AP 0 (COCOeval cannot load an empty list)
      results.update({f"{prefix}ap": 0.0, f"{prefix}ap50": 0.0})
      continue
    evaluator = COCOeval(ground, ground.loadRes(found), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    results.update({f"{prefix}ap": evaluator.stats[0], f"{prefix}ap50": evaluator.stats[1]})
  return results


def random_rednet_variables(depth: int, seed: int = 0) -> dict:
  """A RedNet's Flax variables with random values in [0.5, 1.5] (positive variances),
  NumPy arrays."""
  import jax

  from involution_jax.models.rednet import RedNet
  from involution_jax.weights import mmcls

  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda s: rng.uniform(0.5, 1.5, s.shape).astype(s.dtype),
    mmcls.variable_shapes(RedNet(depth=depth)),
  )
