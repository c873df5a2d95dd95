"""Faster / Mask R-CNN: published sizes of the six variants, heads, inference outputs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from involution_jax.models import create_model, detection, rcnn
from involution_jax.models import rcnn_targets as targets
from involution_jax.models.rednet import count_params

SMALL = dict(
  backbone=dict(
    stage_sizes=(1, 1, 1, 1), stem_width=16, base_width=8, group_channels=8, kernel_size=3
  ),
  neck_channels=32,
  fc_channels=64,
  test_proposals=50,
  max_detections=10,
)
# RoIs sampled in training, as digit scenes' config (the published 1000 / 512 make a step
# ~12x slower here, in RoIAlign's gradient, and test nothing more).
SMALL_TRAINING = dict(train_proposals=256, roi_samples=128, mask_rois=8)

# Published (the paper's detection table, mmdet counting trainable parameters: the
# stem and the first stage are frozen).
PUBLISHED = {
  ("faster_rcnn", "conv", "conv"): 31.6e6,
  ("faster_rcnn", "involution", "conv"): 29.5e6,
  ("faster_rcnn", "involution", "involution"): 29.0e6,
  ("mask_rcnn", "conv", "conv"): 34.2e6,
  ("mask_rcnn", "involution", "conv"): 32.2e6,
  ("mask_rcnn", "involution", "involution"): 29.5e6,
}


@pytest.mark.parametrize("name,neck,head", list(PUBLISHED))
def test_published_parameter_counts(name, neck, head):
  model = create_model(name, num_classes=80, neck=neck, head=head)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))
  params = shapes["params"]
  frozen = {k: v for k, v in params["backbone"].items() if k.startswith(("stem", "layer1_"))}
  assert count_params(frozen) == 139_086
  trainable = count_params(params) - count_params(frozen)
  assert abs(trainable - PUBLISHED[name, neck, head]) < 0.1e6, trainable
  assert ("mask_head" in params) == (name == "mask_rcnn")


def test_head_sizes():
  box = rcnn.BoxHead(80)
  shapes = jax.eval_shape(lambda: box.init(jax.random.PRNGKey(0), jnp.zeros((2, 5, 7, 7, 256))))
  # two FC 1024 on the flattened 7 x 7 x 256 RoI; 81 logits; 80 x 4 deltas.
  want = 12544 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 81 + 81 + 1024 * 320 + 320
  assert count_params(shapes["params"]) == want
  logits, deltas = jax.eval_shape(lambda v: box.apply(v, jnp.zeros((2, 5, 7, 7, 256))), shapes)
  chex.assert_shape([logits, deltas], [(2, 5, 81), (2, 5, 80, 4)])
  mask = rcnn.MaskHead(80)
  rois = jnp.zeros((2, 5, 14, 14, 256))
  shapes = jax.eval_shape(lambda: mask.init(jax.random.PRNGKey(0), rois, train=False))
  conv = 256 * 256 * 9 + 256
  assert count_params(shapes["params"]) == 4 * conv + 256 * 256 * 4 + 256 + 256 * 80 + 80
  out = jax.eval_shape(lambda v: mask.apply(v, rois, train=False), shapes)
  chex.assert_shape(out, (2, 5, 28, 28, 80))
  with pytest.raises(ValueError, match="unknown head 'mlp'"):
    rcnn.MaskHead(3, head="mlp").init(jax.random.PRNGKey(0), rois[:1, :1, :, :, :8], train=False)
  with pytest.raises(ValueError, match="kernel_normalization='softmax' needs head='involution'"):
    rcnn.MaskHead(3, kernel_normalization="softmax").init(
      jax.random.PRNGKey(0), rois[:1, :1, :, :, :8], train=False
    )


def test_softmax_mask_head_averages_each_neighbourhood():
  rois = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 14, 14, 32))
  outputs = {}
  for normalization in (None, "softmax"):
    head = rcnn.MaskHead(5, head="involution", channels=32, kernel_normalization=normalization)
    variables = head.init(jax.random.PRNGKey(0), rois, train=False)
    _, state = head.apply(variables, rois, train=True, mutable=["batch_stats", "intermediates"])
    kernels = [v["kernel"][0] for v in state["intermediates"].values()]
    assert len(kernels) == 4 and kernels[0].shape == (6, 14, 14, 2, 7, 7)
    outputs[normalization] = kernels
  for kernel in outputs["softmax"]:
    np.testing.assert_allclose(np.sum(kernel, axis=(-2, -1)), 1.0, rtol=1e-5)
    assert float(jnp.min(kernel)) > 0
  assert not np.allclose(np.sum(outputs[None][0], axis=(-2, -1)), 1.0, atol=0.1)
  faster = create_model("faster_rcnn", num_classes=3, mask_kernel_normalization="softmax")
  with pytest.raises(ValueError, match="mask_kernel_normalization='softmax' needs a mask head"):
    jax.eval_shape(lambda: faster.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))


def test_softmax_mask_head_gradients_match_finite_differences(x64):
  # The softmax head trains only in digit scenes' config (mask_inv_softmax), not in this
  # suite (the paper's head does: test_training_steps_lower_every_loss_term): what it adds
  # is the gradient through the normalised kernels, so the parameters that make them (each
  # involution's conv2) are differentiated, the rest held.
  rois = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 14, 14, 16), jnp.float64)
  head = rcnn.MaskHead(2, head="involution", channels=16, kernel_normalization="softmax")
  variables = head.init(jax.random.PRNGKey(0), rois, train=False)
  # All in float64 (BatchNorm keeps its statistics in float32 whatever param_dtype says).
  variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
  params = variables["params"]
  makers = {name: layer["conv2"] for name, layer in params.items() if name.startswith("convs_")}
  assert len(makers) == 4

  def loss(makers):
    mixed = {k: dict(v, conv2=makers[k]) if k in makers else v for k, v in params.items()}
    return jnp.sum(jnp.sin(head.apply({**variables, "params": mixed}, rois, train=False)))

  # A small step: at check_grads' default (1e-4), and at 1e-5, the random direction moves
  # some ReLU input of the head across 0, and the difference quotient is off by 1e-4.
  check_grads(loss, (makers,), order=1, modes=["rev"], eps=1e-6)


# Over 20 s: an R-CNN's init and inference compile.
@pytest.mark.parametrize("name,head", [("faster_rcnn", "conv"), ("mask_rcnn", "involution")])
def test_inference_outputs_are_fixed_size_and_consistent(name, head):
  model = create_model(name, num_classes=4, neck=head, head=head, score_threshold=0.0, **SMALL)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 48, 3))
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x))(x)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
  chex.assert_shape(
    [out["boxes"], out["scores"], out["classes"], out["valid"]],
    [(2, 10, 4), (2, 10), (2, 10), (2, 10)],
  )
  valid = np.asarray(out["valid"])
  assert valid.any()  # score threshold 0: an untrained model still detects
  boxes, classes = np.asarray(out["boxes"]), np.asarray(out["classes"])
  assert np.all((classes >= 0) == valid) and np.all(classes < 4)
  assert np.all(boxes[..., 0] >= 0) and np.all(boxes[..., 2] <= 48)
  assert np.all(boxes[..., 1] >= 0) and np.all(boxes[..., 3] <= 64)
  assert np.all(np.diff(np.where(valid, out["scores"], -1), axis=1) <= 1e-6)  # best first
  if name == "mask_rcnn":
    chex.assert_shape(out["masks"], (2, 10, 28, 28))
    assert np.all((out["masks"] >= 0) & (out["masks"] <= 1))
  else:
    assert "masks" not in out


def test_roi_sampling_adds_the_ground_truth_and_keeps_the_counts():
  rng = np.random.default_rng(0)
  gt = jnp.array([[10.0, 10.0, 50.0, 60.0], [70.0, 20.0, 90.0, 40.0], [0.0, 0.0, 0.0, 0.0]])
  gt_valid = jnp.array([True, True, False])
  centre = rng.uniform(0, 100, size=(900, 2))
  side = rng.uniform(8, 60, size=(900, 2))
  proposals = jnp.asarray(np.concatenate([centre - side / 2, centre + side / 2], 1), jnp.float32)
  proposals = proposals.at[:300].set(gt[0] + jnp.asarray(rng.normal(0, 2, (300, 4)), jnp.float32))
  valid = jnp.arange(900) < 850  # 50 padding slots
  out = targets.sample_rois(proposals, valid, gt, gt_valid, jax.random.PRNGKey(0))
  chex.assert_shape([out["boxes"], out["gt_index"]], [(512, 4), (512,)])
  positive, sampled = np.asarray(out["positive"]), np.asarray(out["sampled"])
  assert positive.sum() == 128 and sampled.sum() == 512  # 25% of 512: many near-gt proposals
  assert np.all(np.flatnonzero(positive) == np.arange(128))  # positives first
  iou = np.asarray(detection.box_iou(out["boxes"], gt[:2]))
  assert np.all(iou[positive].max(1) >= 0.5) and np.all(iou[sampled & ~positive].max(1) < 0.5)
  # Without proposals, the ground truth alone is sampled, as positives.
  alone = targets.sample_rois(proposals, jnp.zeros(900, bool), gt, gt_valid, jax.random.PRNGKey(0))
  assert int(alone["positive"].sum()) == 2 and int(alone["sampled"].sum()) == 2
  np.testing.assert_allclose(alone["boxes"][:2], gt[:2])


def test_box_loss_on_a_hand_worked_example():
  gt, classes = jnp.array([[10.0, 10.0, 30.0, 50.0]]), jnp.array([2])
  samples = dict(
    boxes=jnp.array([[10.0, 10.0, 30.0, 50.0], [12.0, 10.0, 32.0, 50.0], [60.0, 60.0, 70.0, 70.0]]),
    gt_index=jnp.array([0, 0, 0]),
    positive=jnp.array([True, True, False]),
    sampled=jnp.array([True, True, True]),
  )
  logits = jnp.zeros((3, 4))  # 3 classes + background
  deltas = jnp.zeros((3, 3, 4))
  ce, l1 = targets.box_loss(logits, deltas, samples, gt, classes)
  assert float(ce) == pytest.approx(3 * np.log(4), rel=1e-6)
  # The second RoI is 2 px right of the box of width 20: dx = -0.1, over std 0.1.
  assert float(l1) == pytest.approx(1.0, rel=1e-5)


def test_mask_targets_on_a_hand_made_instance():
  mask = np.zeros((1, 32, 32), np.float32)
  mask[0, 8:24, 16:32] = 1.0  # rows 8-23, columns 16-31
  rois = jnp.array([[16.0, 8.0, 32.0, 24.0], [0.0, 8.0, 32.0, 24.0]])
  out = np.asarray(targets.mask_targets(jnp.asarray(mask), rois, jnp.array([0, 0]), size=8))
  np.testing.assert_array_equal(out[0], np.ones((8, 8)))  # the box is the instance
  np.testing.assert_array_equal(out[1], np.repeat([[0, 0, 0, 0, 1, 1, 1, 1]], 8, 0))


def _scene_batch():
  """Two 64 x 64 images with bright rectangles: boxes, classes, masks."""
  images = np.zeros((2, 64, 64, 3), np.float32)
  boxes = np.zeros((2, 3, 4), np.float32)
  classes = np.full((2, 3), -1, np.int32)
  masks = np.zeros((2, 3, 64, 64), np.float32)
  for b, objects in enumerate([[(4, 6, 30, 28, 0), (36, 30, 60, 62, 1)], [(10, 10, 50, 40, 2)]]):
    for k, (x1, y1, x2, y2, c) in enumerate(objects):
      images[b, y1:y2, x1:x2, c] = 1.0
      boxes[b, k], classes[b, k] = (x1, y1, x2, y2), c
      masks[b, k, y1:y2, x1:x2] = 1.0
  return jnp.asarray(images), dict(
    boxes=jnp.asarray(boxes), classes=jnp.asarray(classes), masks=jnp.asarray(masks)
  )


# The conv box head lags its RPN (its RoIs only become good once the RPN has learned), so it
# gets more steps: its box loss had fallen by 26% at 30 steps, 49% at 40 and 63% at 60.
# Over 20 s: every loss term must fall: 40-60 steps after an R-CNN train step compiles.
@pytest.mark.parametrize(
  "name,part,steps", [("faster_rcnn", "conv", 60), ("mask_rcnn", "involution", 40)]
)
def test_training_steps_lower_every_loss_term(name, part, steps):
  model = create_model(name, num_classes=3, neck=part, head=part, **SMALL, **SMALL_TRAINING)
  images, gt = _scene_batch()
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x))(images)
  params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  tx = optax.adam(2e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, state, opt, rng):
    def loss(p):
      out, updates = model.apply(
        {"params": p, **state},
        images,
        train=True,
        targets=gt,
        mutable=["batch_stats"],
        rngs={"sample": rng},
      )
      return out["loss"], (out, updates)

    grads, (out, updates) = jax.grad(loss, has_aux=True)(params)
    change, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, change), updates, opt, out

  history = []
  for i in range(steps):
    params, state, opt, out = step(params, state, opt, jax.random.PRNGKey(i % 4))
    history.append({k: float(v) for k, v in out.items()})
  terms = ["rpn_cls_loss", "rpn_box_loss", "cls_loss", "box_loss"]
  terms += ["mask_loss"] if name == "mask_rcnn" else []
  assert set(terms) | {"loss"} <= set(history[0])
  for term in terms + ["loss"]:
    first = np.mean([h[term] for h in history[:4]])
    last = np.mean([h[term] for h in history[-4:]])
    assert np.isfinite(last) and last < 0.8 * first, (term, first, last)
