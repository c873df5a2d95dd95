"""RetinaNet pieces: NMS, box coding, focal loss, anchors, assignment, COCO AP, sizes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from involution_jax.models import detection
from involution_jax.models.rednet import count_params


def _random_boxes(rng, n, size=100.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(2, size / 3, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


def _numpy_iou(a, b):
  lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
  inter = np.prod(np.clip(rb - lt, 0, None))
  union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
  return inter / union


def _numpy_greedy_nms(boxes, scores, threshold):
  keep = []
  for i in np.argsort(-scores, kind="stable"):
    if all(_numpy_iou(boxes[i], boxes[j]) <= threshold for j in keep):
      keep.append(i)
  return keep


@pytest.mark.parametrize("seed", range(4))
def test_nms_matches_plain_greedy_nms(seed):
  rng = np.random.default_rng(seed)
  boxes, scores = _random_boxes(rng, 60), rng.uniform(size=60).astype(np.float32)
  valid = rng.uniform(size=60) > 0.2
  expected = _numpy_greedy_nms(boxes[valid], scores[valid], 0.5)
  expected = list(np.flatnonzero(valid)[expected])
  indices, kept = jax.jit(detection.nms, static_argnums=(3, 4))(boxes, scores, valid, 0.5, 80)
  assert list(np.asarray(indices)[np.asarray(kept)]) == expected
  assert not np.asarray(kept)[len(expected) :].any()
  top, kept = detection.nms(boxes, scores, valid, 0.5, 5)  # truncated to the 5 best
  assert list(np.asarray(top)) == expected[:5] and np.asarray(kept).all()


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], np.float32)
  scores = np.array([0.9, 0.8, 0.7], np.float32)
  indices, kept = detection.batched_nms(
    boxes, scores, np.array([0, 0, 1]), np.ones(3, bool), 0.5, 3
  )
  assert list(np.asarray(indices)[np.asarray(kept)]) == [0, 2]


def test_box_coding_round_trip():
  rng = np.random.default_rng(0)
  anchors, boxes = _random_boxes(rng, 50), _random_boxes(rng, 50)
  deltas = detection.encode_boxes(anchors, boxes)
  np.testing.assert_allclose(detection.decode_boxes(anchors, deltas), boxes, rtol=1e-5, atol=1e-3)
  clipped = detection.decode_boxes(anchors, deltas, image_hw=(40, 30))
  assert float(clipped[:, 0::2].max()) <= 30 and float(clipped[:, 1::2].max()) <= 40


def test_focal_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=3, size=(20, 7)).astype(np.float32)
  targets = (rng.uniform(size=(20, 7)) > 0.8).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  ce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  p_t = np.where(targets == 1, p, 1 - p)
  alpha_t = np.where(targets == 1, 0.25, 0.75)
  np.testing.assert_allclose(
    detection.focal_loss(logits, targets), alpha_t * (1 - p_t) ** 2 * ce, rtol=1e-5, atol=1e-7
  )


def test_anchors_follow_the_head_outputs_and_mmdet_layout():
  anchors = detection.level_anchors(8, (2, 3))
  chex.assert_shape(anchors, (2 * 3 * 9, 4))
  # First location (0, 0): ratio 0.5 then 1 then 2, scales 32, 40.3, 50.8 each.
  widths = anchors[:9, 2] - anchors[:9, 0]
  heights = anchors[:9, 3] - anchors[:9, 1]
  np.testing.assert_allclose(
    widths * heights, np.tile(np.array([32.0, 40.32, 50.80]) ** 2, 3), rtol=1e-3
  )
  np.testing.assert_allclose(heights[3:6] / widths[3:6], 1.0)
  np.testing.assert_allclose(anchors[9, [0, 2]].mean(), 8.0)  # next location: x + stride
  model = detection.RetinaNet(
    3,
    backbone=dict(
      stage_sizes=(1, 1, 1, 1), base_width=8, stem_width=16, group_channels=8, kernel_size=3
    ),
    neck_channels=32,
    head_channels=32,
    stacked_convs=1,
  )
  for size in ((64, 64), (97, 131)):
    x = jnp.zeros((1, *size, 3))
    (cls, reg), _ = jax.eval_shape(
      lambda: model.init_with_output(jax.random.PRNGKey(0), x, train=False)
    )
    assert cls.shape == (1, len(model.anchors(size)), 3) and reg.shape[1] == cls.shape[1]


def test_assignment_thresholds_and_low_quality_matches():
  anchors = jnp.array([[0, 0, 10, 10], [0, 0, 10, 12], [20, 20, 30, 30], [50, 50, 60, 60.0]])
  gts = jnp.array([[0, 0, 10, 11], [21, 21, 35, 35], [0, 0, 0, 0.0]])
  index, label = detection.assign(anchors, gts, jnp.array([True, True, False]))
  # anchor 0: IoU 10/11 > 0.5 -> gt 0; anchor 1: 11/12 -> gt 0; anchor 2: best of gt 1
  # (IoU 81/215 < 0.4, kept as that gt's best anchor); anchor 3: nothing -> negative.
  assert list(np.asarray(label)) == [1, 1, 1, 0]
  assert list(np.asarray(index)[:3]) == [0, 0, 1]


def test_loss_is_finite_without_objects_and_positive_with():
  anchors = jnp.asarray(detection.level_anchors(8, (4, 4)))
  cls = jnp.zeros((2, len(anchors), 3))
  reg = jnp.zeros((2, len(anchors), 4))
  boxes = jnp.array([[[4, 4, 20, 20], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], jnp.float32)
  classes = jnp.array([[2, -1], [-1, -1]])
  loss, parts = detection.retinanet_loss(cls, reg, anchors, boxes, classes)
  assert np.isfinite(float(loss)) and int(parts["positives"]) >= 1
  grads = jax.grad(
    lambda c, r: detection.retinanet_loss(c, r, anchors, boxes, classes)[0], argnums=(0, 1)
  )(cls, reg)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_postprocess_returns_fixed_size_detections():
  anchors = jnp.asarray(detection.level_anchors(8, (4, 4)))
  cls = jnp.full((len(anchors), 3), -10.0).at[5, 1].set(5.0).at[6, 1].set(4.0)
  reg = jnp.zeros((len(anchors), 4))
  out = jax.jit(lambda c, r: detection.postprocess(c, r, anchors, (32, 32), max_detections=7))(
    cls, reg
  )
  chex.assert_shape(
    [out["boxes"], out["scores"], out["classes"], out["valid"]], [(7, 4), (7,), (7,), (7,)]
  )
  assert int(out["valid"].sum()) >= 1 and int(out["classes"][0]) == 1
  assert float(out["scores"][0]) == pytest.approx(float(jax.nn.sigmoid(5.0)))


def test_published_parameter_counts():
  def params(neck):
    model = detection.RetinaNet(80, neck=neck)
    shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 128, 128, 3)), train=False)
    )["params"]
    frozen = {k: v for k, v in shapes["backbone"].items() if k.startswith(("stem", "layer1_"))}
    return count_params(shapes), count_params(shapes) - count_params(frozen)

  # Published (mmdet counts trainable parameters; RetinaNet freezes stem and stage 1):
  # 27.8M with the conv neck, 26.3M with the involution neck.
  total, trainable = params("conv")
  assert total == 27_953_186 and abs(trainable - 27.8e6) < 0.1e6
  total, trainable = params("involution")
  assert total == 26_385_362 and abs(trainable - 26.3e6) < 0.1e6
