"""UPerNet: the published size, PyTorch's adaptive pooling, outputs, the auxiliary loss."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_config, metrics_on_one_batch

from involution_jax import tasks
from involution_jax.data import pipeline
from involution_jax.models import create_model, segmentation
from involution_jax.models.rednet import count_params
from involution_jax.models.upernet import adaptive_avg_pool
from involution_jax.training import step as train_step

SMALL_BACKBONE = dict(stage_sizes=(1, 1, 1, 1), stem_width=16, base_width=8, group_channels=8)


def test_published_parameter_count():
  model = create_model("upernet", num_classes=19)
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3)), train=False)
  )
  # mmseg counts every parameter, the auxiliary head's included: 56.4M published.
  assert abs(count_params(shapes["params"]) - 56.4e6) < 0.1e6
  assert set(shapes["params"]) == {"backbone", "decode_head", "auxiliary_head"}


@pytest.mark.parametrize("size,bins", [((12, 12), 6), ((7, 10), 3), ((5, 4), 6), ((9, 1), 2)])
def test_adaptive_pool_matches_pytorch(torch, size, bins):
  x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
  want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), bins)
  np.testing.assert_allclose(
    adaptive_avg_pool(jnp.asarray(x), bins), want.permute(0, 2, 3, 1).numpy(), atol=1e-6
  )


@pytest.mark.parametrize("hw", [(64, 64), (72, 104)])
def test_outputs_in_train_and_eval_mode(hw):
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  train = dict(mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)})
  for aux_stage in (2, None):
    model = create_model(
      "upernet", num_classes=5, backbone=SMALL_BACKBONE, channels=16, auxiliary_stage=aux_stage
    )
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    assert ("auxiliary_head" in variables["params"]) == (aux_stage is not None)
    logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    chex.assert_shape(logits, (2, hw[0] // 4, hw[1] // 4, 5))
    assert logits.dtype == jnp.float32
    out, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, **train), variables, x)
    if aux_stage is None:
      chex.assert_shape(out, (2, hw[0] // 4, hw[1] // 4, 5))
    else:  # stage 3 is at 1/16
      chex.assert_shape(
        out, [(2, hw[0] // 4, hw[1] // 4, 5), (2, -(-hw[0] // 16), -(-hw[1] // 16), 5)]
      )


def test_bad_auxiliary_stage_is_named():
  model = create_model("upernet", num_classes=3, backbone=SMALL_BACKBONE, auxiliary_stage=4)
  with pytest.raises(ValueError, match=r"auxiliary_stage=4: the backbone has 4 stages \(0-3\)"):
    jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )


def _loss_setup(**overrides):
  config = load_config("digitscenes_upernet", num_train_scenes=32, num_eval_scenes=8, **overrides)
  task = tasks.get_task(config)
  dataset = task.dataset(config, "train")
  model = train_step.model_from_config(config, dataset.num_classes)
  batch = next(pipeline.train_iterator(dataset, task.preprocess(config), global_batch=8, seed=0))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(batch["image"])
  return config, task, model, variables, batch


# Over 20 s: UPerNet's init and its train-mode forward and losses compile (one program).
def test_the_auxiliary_loss_is_weighed_in():
  config, task, model, variables, batch = _loss_setup()
  rng = jax.random.PRNGKey(3)
  # Two weights fix the line: 0 (the main loss alone) and 1.5 (not the default 0.4).
  weights = (0.0, 1.5)
  loss_fns = []
  for weight in weights:
    weighted = config.copy_and_resolve_references()
    weighted.auxiliary_loss_weight = weight
    loss_fns.append(task.loss_fn(model, weighted))

  def outputs(v, batch):
    (logits, aux), _ = model.apply(
      v, batch["image"], train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
    return logits, aux, [loss_fn(v, batch, rng)[0] for loss_fn in loss_fns]

  logits, aux, values = jax.jit(outputs)(variables, batch)
  labels = jnp.where(batch["valid"][:, None, None] > 0, batch["mask"], segmentation.IGNORE_LABEL)
  main, auxiliary = (segmentation.segmentation_loss(o, labels) for o in (logits, aux))
  for weight, value in zip(weights, values):
    np.testing.assert_allclose(value, main + weight * auxiliary, rtol=1e-5, err_msg=str(weight))


# Over 20 s: UPerNet's train step compiles, then 8 steps so that the loss must fall.
def test_training_steps_lower_the_loss():
  config = load_config("digitscenes_upernet", num_train_scenes=32, num_eval_scenes=8)
  losses = [m["loss"] for m in metrics_on_one_batch(config, steps=8, global_batch=8)]
  assert all(np.isfinite(losses)) and losses[-1] < 0.9 * min(losses[:3]), losses
