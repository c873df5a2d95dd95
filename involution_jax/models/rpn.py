"""The region proposal network of Faster / Mask R-CNN (mmdet's `RPNHead`), jit-friendly.

One head shared over P2-P6: a 3x3 conv (or an involution, K=7, the paper's inv/inv
variant) + ReLU, then 1x1 convs to objectness logits and box deltas for 3 anchors
per position (ratios 0.5 / 1 / 2, one scale of 8 strides). Training: max-IoU
assignment (0.7 / 0.3, low-quality matches from 0.3) and a random sample of 256
anchors, at most half positive. Proposals: per-level top-k, decoding, clipping,
NMS 0.7 within each level, the best `max_proposals` of the image, all at fixed
shapes on the device. Boxes are (x1, y1, x2, y2) in input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from involution_jax.models import detection
from involution_jax.models.involution import Involution

Dtype = Any
STRIDES = (4, 8, 16, 32, 64)  # P2..P6
SCALES = (8.0,)


def anchors(level_sizes: Sequence[tuple[int, int]], strides: Sequence[int] = STRIDES):
  """(N, 4) anchors of every level, ordered (level, row, column, ratio) like `RPNHead`."""
  return np.concatenate(
    [detection.level_anchors(s, hw, scales=SCALES) for s, hw in zip(strides, level_sizes)]
  )


class RPNHead(nn.Module):
  """features: P2..P6 maps (B, h_l, w_l, C) -> (objectness logits (B, N), deltas (B, N, 4)).

  `head`: "conv" (3x3 conv with bias) or "involution" (the RedNet layer, no norm
  after it); ReLU after either. N = sum over levels of h_l * w_l * `num_anchors`.
  """

  head: str = "conv"
  channels: int = 256
  num_anchors: int = len(detection.RATIOS) * len(SCALES)
  kernel_size: int = 7
  group_channels: int = 16
  reduction_ratio: int = 4
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool) -> tuple[jax.Array, jax.Array]:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    init = dict(kernel_init=nn.initializers.normal(0.01), **common)
    if self.head == "conv":
      mix = nn.Conv(self.channels, (3, 3), padding=1, name="rpn_conv", **init)
      shared = lambda x: mix(x)  # noqa: E731
    elif self.head == "involution":
      inv = Involution(
        self.kernel_size, 1, self.group_channels, self.reduction_ratio, name="rpn_conv", **common
      )
      shared = lambda x: inv(x, train)  # noqa: E731
    else:
      raise ValueError(f"unknown RPN head {self.head!r}; expected 'conv' or 'involution'")
    cls = nn.Conv(self.num_anchors, (1, 1), name="rpn_cls", **init)
    reg = nn.Conv(self.num_anchors * 4, (1, 1), name="rpn_reg", **init)
    logits, deltas = [], []
    for f in features:
      x = nn.relu(shared(f))
      logits.append(cls(x).reshape(f.shape[0], -1))
      deltas.append(reg(x).reshape(f.shape[0], -1, 4))
    out = jnp.promote_types(self.param_dtype, jnp.float32)
    return jnp.concatenate(logits, 1).astype(out), jnp.concatenate(deltas, 1).astype(out)


def propose(
  logits: jax.Array,
  deltas: jax.Array,
  anchors: jax.Array,
  level_counts: Sequence[int],
  image_hw: tuple[int, int],
  *,
  pre_nms: int = 1000,
  iou_threshold: float = 0.7,
  max_proposals: int = 1000,
  min_size: float = 0.0,
) -> dict:
  """One image's proposals: {"boxes" (P, 4), "scores" (P,), "valid" (P,)}, P = max_proposals.

  logits (N,), deltas (N, 4), anchors (N, 4), N = sum(level_counts). Per level:
  the `pre_nms` best logits, decoded and clipped to the image; boxes no wider or
  taller than `min_size` dropped; NMS at `iou_threshold` within the level. The
  best `max_proposals` of all levels by score (sigmoid), best first; padding
  slots are invalid with zero boxes. mmdet trains with pre_nms 2000 and tests with 1000.
  """
  boxes, scores, valid = [], [], []
  start = 0
  for count in level_counts:
    level = slice(start, start + count)
    start += count
    top, index = jax.lax.top_k(logits[level], min(pre_nms, count))
    decoded = detection.decode_boxes(anchors[level][index], deltas[level][index], image_hw)
    wide = decoded[:, 2] - decoded[:, 0] > min_size
    tall = decoded[:, 3] - decoded[:, 1] > min_size
    keep, kept = detection.nms(
      decoded, top, wide & tall, iou_threshold, min(max_proposals, top.shape[0])
    )
    boxes.append(decoded[keep])
    scores.append(jax.nn.sigmoid(top[keep]))
    valid.append(kept)
  boxes, scores, valid = (jnp.concatenate(v) for v in (boxes, scores, valid))
  ranked = jnp.where(valid, scores, -1.0)
  if ranked.shape[0] < max_proposals:  # fewer candidates than slots: pad
    pad = max_proposals - ranked.shape[0]
    boxes = jnp.concatenate([boxes, jnp.zeros((pad, 4), boxes.dtype)])
    scores = jnp.concatenate([scores, jnp.zeros(pad, scores.dtype)])
    ranked = jnp.concatenate([ranked, jnp.full(pad, -1.0, ranked.dtype)])
  _, best = jax.lax.top_k(ranked, max_proposals)
  chosen = ranked[best] >= 0
  return dict(
    boxes=jnp.where(chosen[:, None], boxes[best], 0.0),
    scores=jnp.where(chosen, scores[best], 0.0),
    valid=chosen,
  )


def sample(
  label: jax.Array, rng: jax.Array, num: int = 256, positive_fraction: float = 0.5
) -> tuple[jax.Array, jax.Array]:
  """mmdet's RandomSampler at fixed shapes: (positives, negatives) masks, (N,) each.

  label: (N,) 1 positive, 0 negative, -1 ignored. At most `num * positive_fraction`
  positives, chosen uniformly at random; negatives fill the rest up to `num`.
  """
  noise = jax.random.uniform(rng, label.shape)

  def first(mask, count):
    rank = jnp.argsort(jnp.argsort(jnp.where(mask, noise, 2.0)))
    return mask & (rank < count)

  positive = first(label == 1, int(num * positive_fraction))
  negative = first(label == 0, num - jnp.sum(positive))
  return positive, negative


def rpn_loss(
  logits: jax.Array,
  deltas: jax.Array,
  anchors: jax.Array,
  gt_boxes: jax.Array,
  gt_valid: jax.Array,
  rng: jax.Array,
  num_samples: int = 256,
) -> tuple[jax.Array, dict]:
  """Sigmoid cross-entropy on the sampled anchors + L1 on the positives' deltas, both
  over the batch's sampled anchors (mmdet's avg_factor).

  logits (B, N), deltas (B, N, 4), anchors (N, 4), gt_boxes (B, G, 4), gt_valid (B, G).
  """
  index, label = jax.vmap(
    lambda b, v: detection.assign(anchors, b, v, pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3)
  )(gt_boxes, gt_valid)
  rngs = jax.random.split(rng, logits.shape[0])
  positive, negative = jax.vmap(lambda lab, r: sample(lab, r, num_samples))(label, rngs)
  logits = logits.astype(jnp.float32)
  target = positive.astype(jnp.float32)
  bce = jax.nn.softplus(logits) - logits * target  # (max(l, 0) + ... has no gradient at 0)
  sampled = positive | negative
  matched = jnp.take_along_axis(gt_boxes, index[..., None], axis=1)
  matched = jnp.where(positive[..., None], matched, anchors[None])  # no log(0) off positives
  box_targets = detection.encode_boxes(anchors[None], matched)
  l1 = jnp.abs(deltas.astype(jnp.float32) - box_targets) * positive[..., None]
  count = jnp.maximum(jnp.sum(sampled), 1)
  cls_loss, box_loss = jnp.sum(bce * sampled) / count, jnp.sum(l1) / count
  return cls_loss + box_loss, dict(
    rpn_cls_loss=cls_loss, rpn_box_loss=box_loss, rpn_positives=jnp.sum(positive)
  )
