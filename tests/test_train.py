"""The main job: training, evaluation, checkpoints and resume, devices, configs."""

import json
import os
import random
import re
import signal
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
  ROOT,
  checkpoint_on_eval_split,
  python_env,
  run,
  tiny_digits_config,
  tiny_flags,
  train_command,
  wait_for_checkpoint,
)
from PIL import Image

from involution_jax import configs, tasks
from involution_jax.cli import train
from involution_jax.data import pipeline
from involution_jax.training import curves, sharding
from involution_jax.training import step as train_step
from involution_jax.training.evaluator import evaluate_weights
from involution_jax.training.trainer import build_programs, train_and_evaluate
from involution_jax.weights import checkpoints

METRIC_KEYS = {
  "train_loss",
  "test_accuracy",
  "test_top5_accuracy",
  "steps",
  "examples_per_second",
  "wall_time_s",
}


def _params(workdir, step=None):
  variables, _ = checkpoints.load_for_inference(str(workdir), step)
  return variables


def _reference_accuracy(workdir: str, config, tie: float = 1e-4) -> tuple[float, ...]:
  """(top-1, top-5) accuracy of the workdir's model on `config`'s evaluation split,
  computed here: one forward pass (in the config's compute dtype) over the whole split,
  NumPy's ranking against the labels; then the fraction of examples whose top-1 or top-5
  is a near tie (logits within `tie`), which another compilation (the trainer's is sharded
  over 8 devices) may order otherwise."""
  dtype = jnp.bfloat16 if config.get("half_precision") else None
  model, variables, _, examples = checkpoint_on_eval_split(workdir, config, dtype)
  x = np.stack([e["image"] for e in examples])
  logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
  ranked = np.argsort(-logits, axis=1, kind="stable")
  ordered = np.take_along_axis(logits, ranked, 1)
  labels = np.asarray([e["label"] for e in examples])
  top5 = (ranked[:, :5] == labels[:, None]).any(1)
  near1, near5 = (np.mean(ordered[:, k] - ordered[:, k + 1] < tie) for k in (0, 4))
  return float(np.mean(ranked[:, 0] == labels)), float(np.mean(top5)), near1, near5


# Over 20 s: a training run, its reruns, a re-evaluation and a reference forward pass.
def test_end_to_end_digits_writes_metrics_checkpoints_and_logs(tmp_path):
  metrics = train_and_evaluate(tiny_digits_config(), str(tmp_path))
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert set(saved) >= METRIC_KEYS
  assert saved["steps"] == 4 and saved["devices"] == 8
  accuracy, top5, near1, near5 = _reference_accuracy(str(tmp_path), tiny_digits_config())
  assert saved["test_accuracy"] == pytest.approx(accuracy, abs=1e-6 + near1)
  assert saved["test_top5_accuracy"] == pytest.approx(top5, abs=1e-6 + near5)
  assert saved["examples_per_second"] > 0 and np.isfinite(saved["train_loss"])
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tensorboard"))
  variables, info = checkpoints.load_for_inference(str(tmp_path))
  assert info.num_classes == 10 and info.class_names[3] == "3"
  assert info.model_kwargs["kernel_size"] == 3
  records = curves.read(str(tmp_path))  # every log step (2, 4) and the final evaluation
  assert [(r["step"], sorted(r)) for r in records] == [
    (2, ["step", "train"]),
    (4, ["step", "train"]),
    (4, ["eval", "step"]),
  ]
  assert records[1]["train"]["loss"] == pytest.approx(saved["train_loss"])
  assert records[2]["eval"]["accuracy"] == saved["test_accuracy"]
  assert records[0]["train"]["learning_rate"] > 0
  with Image.open(tmp_path / "curves.png") as picture:
    assert picture.format == "PNG" and picture.width > 1000
  # The run's config is kept in the workdir as a config file.
  saved_config = configs.get_config(str(tmp_path / configs.RUN_CONFIG))
  assert saved_config.to_dict() == tiny_digits_config().to_dict()
  # The same command again: nothing to train, and the records stay as they were.
  records_before = {f: (tmp_path / f).read_bytes() for f in ("metrics.json", "history.jsonl")}
  again = train_and_evaluate(tiny_digits_config(), str(tmp_path))
  assert again == saved
  assert {f: (tmp_path / f).read_bytes() for f in records_before} == records_before
  # A shorter run than the workdir holds is refused, and rewrites nothing.
  with pytest.raises(ValueError, match="holds step 4, past the 2 steps this config trains"):
    train_and_evaluate(tiny_digits_config(num_train_steps=2), str(tmp_path))
  assert {f: (tmp_path / f).read_bytes() for f in records_before} == records_before
  # Killed after the last checkpoint, before metrics.json: evaluated again, with the
  # training figures it recorded, and no second evaluation record.
  (tmp_path / "metrics.json").unlink()
  again = train_and_evaluate(tiny_digits_config(), str(tmp_path))
  assert again["test_accuracy"] == metrics["test_accuracy"]
  assert again["train_loss"] == metrics["train_loss"]
  assert again["examples_per_second"] == records[1]["train"]["examples_per_second"]
  assert curves.read(str(tmp_path)) == records
  assert (
    evaluate_weights(tiny_digits_config(), str(tmp_path))["accuracy"] == metrics["test_accuracy"]
  )


# Over 20 s: two training runs, on one device and on eight.
def test_one_and_eight_devices_train_the_same(tmp_path):
  config = tiny_digits_config(num_train_steps=3, checkpoint_every_steps=3)
  train_and_evaluate(config, str(tmp_path / "one"), mesh=sharding.data_mesh(jax.devices()[:1]))
  train_and_evaluate(config, str(tmp_path / "eight"))
  a, b = _params(tmp_path / "one"), _params(tmp_path / "eight")
  initial = train_step.init_state(
    train_step.model_from_config(config, 10), optax.identity(), jax.random.PRNGKey(0), (8, 8, 3)
  )
  moved = jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a["params"], initial.params)
  assert max(jax.tree.leaves(moved)) > 1e-3  # training did change the parameters
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5), a, b)


KILL_SEED = 0


# Over 20 s, end to end: a kill -9 is only a kill in another process. Three training
# processes of 24 steps, a checkpoint every 3; the kill step comes from a fixed seed
# (KILL_SEED) and is named on failure.
def test_resume_after_sigkill_is_bit_identical(tmp_path):
  steps = 24
  flags = tiny_flags(
    num_train_steps=steps, checkpoint_every_steps=3, log_every_steps=3, keep_checkpoints=100
  )
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  result = run(train_command(straight, *flags), devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  kill_at = random.Random(KILL_SEED).randrange(3, steps // 2)  # well before the end
  context = f"(seed {KILL_SEED}: killed at the first checkpoint >= step {kill_at})"
  process = subprocess.Popen(
    train_command(killed, *flags),
    env=python_env(2),
    cwd=ROOT,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  wait_for_checkpoint(process, killed, kill_at)  # then killed at once
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, context
  interrupted_at = max(
    int(s) for s in os.listdir(os.path.join(killed, "checkpoints")) if s.isdigit()
  )
  assert interrupted_at < steps, f"the run was not interrupted {context}"
  result = run(train_command(killed, *flags), devices=2)
  assert result.returncode == 0, f"{context}\n{result.stderr[-3000:]}"
  assert "resuming from" in result.stdout, context
  # The killed run could not release the workdir's lock: the rerun says so and takes it.
  assert f"the run that held it (pid {process.pid} on " in result.stdout, context
  assert "ended without releasing it; taken over" in result.stdout, context
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(a, b, err_msg=context),
    _params(straight),
    _params(killed),
  )
  with open(os.path.join(killed, "metrics.json")) as f:
    assert json.load(f)["steps"] == steps, context
  # The history of the resumed run is the uninterrupted one's: no step lost or repeated.
  train_curve = lambda workdir: [
    (r["step"], r["train"]["loss"], r["train"]["learning_rate"])
    for r in curves.read(workdir)
    if "train" in r
  ]
  assert train_curve(killed) == train_curve(straight), context
  assert [r["step"] for r in curves.read(killed) if "train" in r] == list(range(3, steps + 1, 3))


# Over 20 s: a training run through the command's main (of the wider model that
# tests/test_failures.py also trains, so the two share its compiled steps).
def test_command_line_overrides(tmp_path, capsys):
  flags = [*tiny_flags(num_train_steps=2, log_every_steps=1), "--config.model_kwargs.base_width=32"]
  assert train.main(["--config", "default", "--workdir", str(tmp_path), "--quiet", *flags]) == 0
  assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2
  _, info = checkpoints.load_for_inference(str(tmp_path))
  assert info.model_kwargs["base_width"] == 32 != tiny_digits_config().model_kwargs.base_width
  out = capsys.readouterr().out
  assert "test_accuracy" in out and str(tmp_path / "checkpoints") in out
  assert "step 1/2" not in out and "training rednet" not in out  # --quiet: no progress
  # Rerun without --config: the workdir's config, finished (an override is not applied,
  # and said so); --json: stdout is the metrics alone.
  assert train.main(["--workdir", str(tmp_path), "--json", "--config.learning_rate=0.5"]) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out) == json.loads((tmp_path / "metrics.json").read_text())
  assert "finished its 2 steps before" in captured.err
  assert "not applied: learning_rate: 0.1 -> 0.5" in captured.err
  assert train.main(["--workdir", str(tmp_path / "bad"), "--config.no_such_field=1"]) == 1
  assert "no_such_field" in capsys.readouterr().err


@pytest.mark.parametrize(
  "overrides,message",
  [
    (dict(learning_rate=-0.1), "learning_rate must be a finite number > 0, got -0.1"),
    (dict(batch_size=12), "batch_size=12 must be divisible by the 8 device"),
    (dict(eval_batch_size=20), "eval_batch_size=20 must be divisible by the 8 device"),
    (dict(label_smoothing=1.5), r"label_smoothing must be in \[0, 1\)"),
    (dict(num_train_steps=-1, num_epochs=0), "set num_epochs > 0 or num_train_steps > 0"),
    (dict(batch_size=16, grad_accum_steps=3), "grad_accum_steps=3"),
    (dict(batch_size=24, grad_accum_steps=2), r"x grad_accum_steps=2 \(try 16\)$"),
    (dict(model="resnet50"), "unknown model 'resnet50'"),
    (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
    (dict(optimizer="lamb"), "optimizer must be 'sgd' or 'adamw', got 'lamb'"),
    (dict(batch_size=2048), "batch_size=2048 exceeds the 1437 training examples"),
  ],
)
def test_bad_config_values_raise_clear_errors(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    train_and_evaluate(tiny_digits_config(**overrides), str(tmp_path))


# Over 20 s: trains until the loss is non-finite, a checkpoint every step.
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
  config = tiny_digits_config(
    learning_rate=1e8,
    num_train_steps=30,
    checkpoint_every_steps=1,
    log_every_steps=1,
    keep_checkpoints=3,
  )
  with pytest.raises(FloatingPointError, match=r"non-finite .* at step (\d+)") as info:
    train_and_evaluate(config, str(tmp_path))
  bad_step = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  assert f"step {bad_step - 1}" in str(info.value)
  steps = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
  assert max(steps) == bad_step - 1
  variables = _params(tmp_path)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(variables))


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_gradient_accumulation_equals_the_full_batch():
  model = _Linear()
  config = tiny_digits_config(label_smoothing=0.1)
  tx = train_step.optimizer(config)
  state = train_step.init_state(model, tx, jax.random.PRNGKey(0), (4, 4, 3))
  rng = np.random.default_rng(0)
  batch = dict(
    image=jnp.asarray(rng.normal(size=(8, 4, 4, 3)), jnp.float32),
    label=jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
    valid=jnp.ones(8),
  )
  loss_fn = tasks.Classification().loss_fn(model, config)
  step = lambda n: jax.jit(
    lambda s, b: train_step.train_step(s, b, 0.1, loss_fn=loss_fn, tx=tx, accumulation_steps=n)
  )(state, batch)
  (full, m1), (accumulated, m4) = step(1), step(4)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    full.params,
    accumulated.params,
  )


# Over 20 s: a training run through TFDS's mock data.
def test_tfds_dataset_trains_through_mock_data(tmp_path, tfds):
  config = tiny_digits_config(dataset="tfds:mnist", num_train_steps=2, eval_batch_size=16)
  with tfds.testing.mock_data(num_examples=32):
    metrics = train_and_evaluate(config, str(tmp_path))
    accuracy, top5, near1, near5 = _reference_accuracy(str(tmp_path), config)
  assert metrics["steps"] == 2
  assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6 + near1)
  assert metrics["test_top5_accuracy"] == pytest.approx(top5, abs=1e-6 + near5)


# Over 20 s: a training run on a folder dataset.
def test_folder_dataset_with_a_corrupt_image_trains_and_reports_it(tmp_path):
  root = tmp_path / "data"
  for split, n in (("train", 8), ("val", 4)):
    for c in ("a", "b"):
      (root / split / c).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(np.full((9, 9, 3), 20 * i + (c == "b") * 100, np.uint8)).save(
          root / split / c / f"{i}.jpg"
        )
  (root / "train" / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
  config = tiny_digits_config(
    dataset="folder",
    data_dir=str(root),
    eval_split="val",
    batch_size=8,
    eval_batch_size=8,
    num_train_steps=4,
  )
  metrics = train_and_evaluate(config, str(tmp_path / "run"))
  assert metrics["unreadable_train_images"] == 1  # distinct files, however often drawn
  assert metrics["unreadable_test_images"] == 0
  _, info = checkpoints.load_for_inference(str(tmp_path / "run"))
  assert info.class_names == ("a", "b")


# Over 20 s: two training runs: the pretrained one and the fine-tuned one.
def test_fine_tuning_grafts_pretrained_weights(tmp_path, capsys):
  pretrained = str(tmp_path / "pretrained")
  train_and_evaluate(tiny_digits_config(num_train_steps=2), pretrained)
  source, _ = checkpoints.load_for_inference(pretrained)
  odd_head = jax.tree.map(lambda a: a, source)
  odd_head["params"]["fc"]["kernel"] = np.ones((3, 3), np.float32)
  grafted, done = checkpoints.graft(jax.tree.map(np.zeros_like, source), odd_head)
  assert done.kept == done.unused == ["params/fc/kernel"]
  assert done.mismatched == {"params/fc/kernel": "shape (256, 10), pretrained (3, 3)"}
  assert len(done.loaded) == len(jax.tree.leaves(source)) - 1
  assert not grafted["params"]["fc"]["kernel"].any()  # left as it was
  np.testing.assert_array_equal(
    grafted["params"]["stem_0"]["conv"]["kernel"], source["params"]["stem_0"]["conv"]["kernel"]
  )
  with pytest.raises(ValueError, match="no pretrained array matches"):
    checkpoints.graft(source, {"params": {"other": np.ones(2)}})
  # A 2-class run from the 10-class weights: everything but the head is taken over.
  root = tmp_path / "two_classes"
  for split in ("train", "val"):
    for c in ("a", "b"):
      (root / split / c).mkdir(parents=True)
      for i in range(8):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(root / split / c / f"{i}.png")
  config = tiny_digits_config(
    num_train_steps=1,
    init_from=pretrained,
    learning_rate=1e-9,
    dataset="folder",
    data_dir=str(root),
    eval_split="val",
    batch_size=8,
    eval_batch_size=8,
  )
  train_and_evaluate(config, str(tmp_path / "tuned"))
  assert (
    "loaded 99 of the model's 101 arrays; kept as initialised: params/fc/bias, params/fc/kernel"
    in capsys.readouterr().out
  )
  tuned, _ = checkpoints.load_for_inference(str(tmp_path / "tuned"))
  np.testing.assert_allclose(
    tuned["params"]["layer1_0"]["conv1"]["kernel"],
    source["params"]["layer1_0"]["conv1"]["kernel"],
    atol=1e-6,
  )


def _train_step_hlo(config) -> str:
  """The trainer's train step for `config`, lowered (StableHLO text)."""
  task = tasks.get_task(config)
  dataset = task.dataset(config, "train")
  programs = build_programs(config, task, dataset.num_classes, 4, 10, sharding.data_mesh())
  batch = next(pipeline.train_iterator(dataset, task.preprocess(config), global_batch=16, seed=0))
  batch.pop("index")
  return programs.train_step.lower(programs.abstract_state, batch, np.float32(0.1)).as_text()


# Over 20 s: a training run in bfloat16, then both train steps lowered.
def test_half_precision_trains_with_float32_parameters(tmp_path):
  config = tiny_digits_config(half_precision=True, num_train_steps=2)
  metrics = train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics["train_loss"])
  # bfloat16 logits: another compilation may round them apart by a step or two of bfloat16
  # (2.4e-4 at the size of these logits), so near ties are counted at 5e-4.
  accuracy, _, near1, _ = _reference_accuracy(str(tmp_path), config, tie=5e-4)
  assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6 + near1)
  variables, _ = checkpoints.load_for_inference(str(tmp_path))
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(variables))
  # The step computes in bfloat16 (its convolutions), only where half_precision asks.
  bf16_convolutions = lambda text: len(re.findall(r"stablehlo.convolution.*xbf16>", text))
  assert bf16_convolutions(_train_step_hlo(tiny_digits_config(half_precision=True))) > 0
  assert bf16_convolutions(_train_step_hlo(tiny_digits_config())) == 0
