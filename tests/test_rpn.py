"""The RPN: head sizes and layout, proposals against NumPy, assignment and sampling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from involution_jax.models import detection, rpn
from involution_jax.models.rednet import count_params


def _decode_np(anchor, delta, image_hw):
  w, h = anchor[2] - anchor[0], anchor[3] - anchor[1]
  cx, cy = anchor[0] + w / 2 + delta[0] * w, anchor[1] + h / 2 + delta[1] * h
  clamp = np.log(1000 / 16)
  w, h = w * np.exp(np.clip(delta[2], -clamp, clamp)), h * np.exp(np.clip(delta[3], -clamp, clamp))
  box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
  return np.clip(box, 0, [image_hw[1], image_hw[0], image_hw[1], image_hw[0]])


def _iou_np(a, b):
  w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
  return w * h / max(area(a) + area(b) - w * h, 1e-9)


def _propose_np(logits, deltas, anchors, counts, image_hw, pre_nms, iou, max_proposals):
  """mmdet's RPN post-processing, one loop at a time."""
  found = []
  start = 0
  for count in counts:
    order = start + np.argsort(-logits[start : start + count], kind="stable")[:pre_nms]
    start += count
    kept = []
    for i in order:
      box = _decode_np(anchors[i], deltas[i], image_hw)
      if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        continue
      if all(_iou_np(box, other) <= iou for other, _ in kept):
        kept.append((box, 1 / (1 + np.exp(-logits[i]))))
    found += kept
  found.sort(key=lambda item: -item[1])
  return found[:max_proposals]


def test_head_sizes_and_output_layout():
  sizes = [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]
  features = [jnp.ones((2, h, w, 256)) for h, w in sizes]
  counts = {}
  for head in ("conv", "involution"):
    model = rpn.RPNHead(head)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), features, train=False))
    counts[head] = count_params(variables["params"])
    logits, deltas = jax.eval_shape(lambda v: model.apply(v, features, train=False), variables)
    n = sum(h * w * 3 for h, w in sizes)
    chex.assert_shape([logits, deltas], [(2, n), (2, n, 4)])
    assert rpn.anchors(sizes).shape == (n, 4)
  # 3x3 conv 256 -> 256 with bias, 1x1 to 3 logits and to 12 deltas.
  assert counts["conv"] == 256 * 256 * 9 + 256 + 256 * 3 + 3 + 256 * 12 + 12
  # Involution: reduce 256 -> 64 (no bias) + BN, span 64 -> 49 taps x 16 groups.
  assert counts["involution"] == 256 * 64 + 2 * 64 + 64 * 49 * 16 + 49 * 16 + 256 * 15 + 15
  with pytest.raises(ValueError, match="unknown RPN head 'mlp'"):
    rpn.RPNHead("mlp").init(jax.random.PRNGKey(0), features, train=False)


def test_anchors_are_one_scale_of_eight_strides_in_three_ratios():
  a = rpn.anchors([(2, 3)], strides=(4,))
  np.testing.assert_allclose((a[:3, 2] - a[:3, 0]) * (a[:3, 3] - a[:3, 1]), 32.0**2, rtol=1e-5)
  np.testing.assert_allclose((a[:3, 3] - a[:3, 1]) / (a[:3, 2] - a[:3, 0]), [0.5, 1, 2], rtol=1e-5)
  np.testing.assert_allclose((a[3:6, :2] + a[3:6, 2:]) / 2, [[4.0, 0.0]] * 3)  # next column


@pytest.mark.parametrize("pre_nms,max_proposals", [(40, 50), (10, 12), (200, 300)])
def test_proposals_match_numpy(pre_nms, max_proposals):
  rng = np.random.default_rng(pre_nms)
  sizes, strides, image_hw = [(10, 8), (5, 4), (3, 2)], (8, 16, 32), (80, 64)
  anchors = np.concatenate(
    [detection.level_anchors(s, hw, scales=rpn.SCALES) for s, hw in zip(strides, sizes)]
  )
  counts = [h * w * 3 for h, w in sizes]
  logits = rng.normal(size=len(anchors)).astype(np.float32)
  deltas = rng.normal(scale=0.5, size=(len(anchors), 4)).astype(np.float32)
  deltas[:5, 2] = -20.0  # collapses to a sliver: dropped if zero-width after clipping
  got = jax.jit(
    lambda lo, d: rpn.propose(
      lo, d, jnp.asarray(anchors), counts, image_hw, pre_nms=pre_nms, max_proposals=max_proposals
    )
  )(logits, deltas)
  want = _propose_np(logits, deltas, anchors, counts, image_hw, pre_nms, 0.7, max_proposals)
  chex.assert_shape(
    [got["boxes"], got["scores"], got["valid"]],
    [(max_proposals, 4), (max_proposals,), (max_proposals,)],
  )
  n = len(want)
  assert int(np.sum(got["valid"])) == n and bool(np.all(got["valid"][:n]))
  np.testing.assert_allclose(got["boxes"][:n], np.stack([b for b, _ in want]), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(got["scores"][:n], [s for _, s in want], rtol=1e-5)
  assert not np.any(got["boxes"][n:]) and not np.any(got["scores"][n:])


def test_assignment_keeps_low_quality_matches_only_above_min_pos_iou():
  anchors = jnp.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 4.0, 4.0]])
  gts = jnp.array([[0.0, 0.0, 10.0, 24.0], [0.0, 0.0, 2.0, 2.0]])  # best IoUs 100/240, 4/16
  valid = jnp.array([True, True])
  _, label = detection.assign(anchors, gts, valid, pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3)
  assert label.tolist() == [1, 0, 0]  # 0.417 >= 0.3 kept; 0.25 < 0.3 not
  _, label = detection.assign(anchors, gts, valid, pos_iou=0.7, neg_iou=0.3)
  assert label.tolist() == [1, 0, 1]  # min_pos_iou 0: every gt keeps its best anchor


@pytest.mark.parametrize("positives,negatives", [(300, 1000), (20, 1000), (20, 100)])
def test_sampler_keeps_the_stated_counts(positives, negatives):
  label = np.full(2000, -1)
  label[:positives] = 1
  label[positives : positives + negatives] = 0
  label = jnp.asarray(np.random.default_rng(0).permutation(label))
  pos, neg = rpn.sample(label, jax.random.PRNGKey(0), num=256, positive_fraction=0.5)
  assert int(pos.sum()) == min(positives, 128)
  assert int(neg.sum()) == min(negatives, 256 - int(pos.sum()))
  assert bool(jnp.all(label[pos] == 1)) and bool(jnp.all(label[neg] == 0))
  again = rpn.sample(label, jax.random.PRNGKey(0), num=256)
  other = rpn.sample(label, jax.random.PRNGKey(1), num=256)
  assert bool(jnp.all(again[0] == pos)) and bool(jnp.all(again[1] == neg))  # per seed
  if positives > 128:
    assert not bool(jnp.all(other[0] == pos))


def test_rpn_loss_is_finite_with_padding_and_learns_a_box():
  sizes = [(8, 8), (4, 4)]
  anchors = jnp.asarray(rpn.anchors(sizes, strides=(4, 8)))
  gt = jnp.array([[[4.0, 4.0, 36.0, 36.0], [0.0, 0.0, 0.0, 0.0]]])
  valid = jnp.array([[True, False]])
  logits = jnp.zeros((1, anchors.shape[0]))
  deltas = jnp.zeros((1, anchors.shape[0], 4))

  def loss(params):
    return rpn.rpn_loss(params[0], params[1], anchors, gt, valid, jax.random.PRNGKey(0))[0]

  value, grads = jax.value_and_grad(loss)((logits, deltas))
  assert np.isfinite(float(value)) and all(np.all(np.isfinite(g)) for g in grads)
  params = (logits, deltas)
  for _ in range(30):  # the loss averages over ~240 sampled anchors: a large step
    params = jax.tree.map(lambda p, g: p - 300.0 * g, params, jax.grad(loss)(params))
  assert float(loss(params)) < 0.5 * float(value)
  _, parts = rpn.rpn_loss(*params, anchors, gt, valid, jax.random.PRNGKey(0))
  assert int(parts["rpn_positives"]) >= 1
