"""Training targets and losses of the R-CNN heads (mmdet 2.x), one image at a time, fixed shapes.

`sample_rois`: the ground truth joins the proposals, max-IoU assignment at 0.5
and a random sample of 512 RoIs, at most 25% positive, positives first.
`box_loss`: softmax cross-entropy over the K classes and background, L1 on the
positives' class-specific deltas (stds 0.1 / 0.1 / 0.2 / 0.2), both over the
sampled RoIs. `mask_targets` / `mask_loss`: each positive's ground-truth mask
cut out by RoIAlign at 28 x 28 and thresholded at 0.5, per-pixel sigmoid
cross-entropy on that class's mask. Boxes are (x1, y1, x2, y2) in input pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from involution_jax.models import detection, rpn
from involution_jax.models.roi import roi_align

BOX_STDS = (0.1, 0.1, 0.2, 0.2)


def sample_rois(
  proposals: jax.Array,
  proposal_valid: jax.Array,
  gt_boxes: jax.Array,
  gt_valid: jax.Array,
  rng: jax.Array,
  num: int = 512,
  positive_fraction: float = 0.25,
  iou_threshold: float = 0.5,
) -> dict:
  """{"boxes" (num, 4), "gt_index" (num,), "positive" (num,), "sampled" (num,)}.

  proposals (P, 4) with proposal_valid (P,); gt_boxes (G, 4) with gt_valid (G,).
  The ground-truth boxes are candidates too (first, as in mmdet). Slots beyond
  the candidates sampled are padding (sampled False).
  """
  boxes = jnp.concatenate([gt_boxes, proposals])
  valid = jnp.concatenate([gt_valid, proposal_valid])
  index, label = detection.assign(
    boxes, gt_boxes, gt_valid, iou_threshold, iou_threshold, low_quality=False
  )
  label = jnp.where(valid, label, -1)
  positive, negative = rpn.sample(label, rng, num, positive_fraction)
  # Positives first, then negatives, then the rest: the first `num` are the sample.
  rank = jnp.where(positive, 0, jnp.where(negative, 1, 2))
  order = jnp.argsort(rank, stable=True)[:num]
  if order.shape[0] < num:  # fewer candidates than slots
    order = jnp.concatenate([order, jnp.zeros(num - order.shape[0], order.dtype)])
    filled = jnp.arange(num) < boxes.shape[0]
  else:
    filled = jnp.ones(num, bool)
  sampled = (positive | negative)[order] & filled
  return dict(
    boxes=jnp.where(sampled[:, None], boxes[order], 0.0),
    gt_index=index[order],
    positive=positive[order] & filled,
    sampled=sampled,
  )


def box_loss(
  logits: jax.Array, deltas: jax.Array, samples: dict, gt_boxes: jax.Array, gt_classes: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(classification, regression) losses of one image's sampled RoIs.

  logits (S, K + 1), deltas (S, K, 4); samples from `sample_rois`; gt_boxes
  (G, 4), gt_classes (G,). Both are sums over the sampled RoIs: divide by the
  batch's sampled count.
  """
  num_classes = deltas.shape[-2]
  positive, sampled = samples["positive"], samples["sampled"]
  labels = jnp.where(positive, gt_classes[samples["gt_index"]], num_classes)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  # Off the positives, encode a unit box against itself: no log(0) reaches the gradient.
  rois = jnp.where(positive[:, None], samples["boxes"], jnp.array([0.0, 0.0, 1.0, 1.0]))
  matched = jnp.where(positive[:, None], gt_boxes[samples["gt_index"]], rois)
  targets = detection.encode_boxes(rois, matched) / jnp.asarray(BOX_STDS)
  chosen = jnp.take_along_axis(deltas, jnp.minimum(labels, num_classes - 1)[:, None, None], 1)
  l1 = jnp.sum(jnp.abs(chosen[:, 0].astype(jnp.float32) - targets), -1)
  return jnp.sum(ce * sampled), jnp.sum(l1 * positive)


def mask_targets(gt_masks: jax.Array, rois: jax.Array, gt_index: jax.Array, size: int = 28):
  """(R, size, size) binary targets: ground-truth mask `gt_index` of each RoI, cut out.

  gt_masks (G, H, W) in input pixels, rois (R, 4), gt_index (R,).
  """
  planes = jnp.moveaxis(gt_masks.astype(jnp.float32), 0, -1)[None]  # (1, H, W, G)
  crops = roi_align([planes], rois[None], (1,), size)[0]  # (R, size, size, G)
  picked = jnp.take_along_axis(crops, gt_index[:, None, None, None], axis=-1)[..., 0]
  return (picked >= 0.5).astype(jnp.float32)


def mask_loss(
  logits: jax.Array, targets: jax.Array, classes: jax.Array, positive: jax.Array
) -> jax.Array:
  """Sum over positives of the mean per-pixel sigmoid cross-entropy of their class's mask.

  logits (R, 28, 28, K), targets (R, 28, 28), classes (R,), positive (R,).
  """
  chosen = jnp.take_along_axis(logits, jnp.maximum(classes, 0)[:, None, None, None], -1)[..., 0]
  chosen = chosen.astype(jnp.float32)
  bce = jnp.mean(jax.nn.softplus(chosen) - chosen * targets, axis=(1, 2))
  return jnp.sum(bce * positive)
