"""RetinaNet (Lin et al.) on a RedNet-FPN, as mmdet's `RetinaHead`, jit-friendly.

Anchors (3 scales x 3 ratios per level), delta box coding, max-IoU assignment,
focal and L1 losses normalised by the positive anchors, and post-processing to
fixed-size (boxes, scores, classes, valid) with a batched, padded NMS that
never leaves the device. Boxes are (x1, y1, x2, y2) in input pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from involution_jax.models.fpn import rednet_fpn

Dtype = Any
STRIDES = (8, 16, 32, 64, 128)  # P3..P7
RATIOS = (0.5, 1.0, 2.0)
SCALES = tuple(4 * 2 ** (i / 3) for i in range(3))  # octave base 4, 3 scales per octave
BOX_DELTA_CLAMP = math.log(1000 / 16)


# --- anchors and box coding ---------------------------------------------------


def level_anchors(stride: int, size: tuple[int, int], ratios=RATIOS, scales=SCALES) -> np.ndarray:
  """(h * w * A, 4) anchors of one level, ordered (row, column, anchor) like the head.

  Anchor a = (ratio r, scale s), ratio-major; centred on (col * stride, row * stride).
  """
  h_ratios = np.sqrt(np.asarray(ratios))
  w_ratios = 1 / h_ratios
  ws = (stride * w_ratios[:, None] * np.asarray(scales)[None]).reshape(-1)
  hs = (stride * h_ratios[:, None] * np.asarray(scales)[None]).reshape(-1)
  base = np.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], axis=-1)
  ys, xs = np.meshgrid(np.arange(size[0]) * stride, np.arange(size[1]) * stride, indexing="ij")
  shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
  return (shifts + base[None]).reshape(-1, 4).astype(np.float32)


def anchors_for(level_sizes: Sequence[tuple[int, int]], strides=STRIDES) -> np.ndarray:
  return np.concatenate([level_anchors(s, hw) for s, hw in zip(strides, level_sizes)])


def encode_boxes(anchors: jax.Array, boxes: jax.Array) -> jax.Array:
  """Deltas (dx, dy, dw, dh) of `boxes` relative to `anchors` (means 0, stds 1)."""
  aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
  ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
  bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
  bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
  return jnp.stack([(bx - ax) / aw, (by - ay) / ah, jnp.log(bw / aw), jnp.log(bh / ah)], -1)


def decode_boxes(
  anchors: jax.Array, deltas: jax.Array, image_hw: tuple[int, int] | None = None
) -> jax.Array:
  """Inverse of `encode_boxes` (dw, dh clamped), optionally clipped to the image."""
  aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
  ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
  dw = jnp.clip(deltas[..., 2], -BOX_DELTA_CLAMP, BOX_DELTA_CLAMP)
  dh = jnp.clip(deltas[..., 3], -BOX_DELTA_CLAMP, BOX_DELTA_CLAMP)
  cx, cy = ax + deltas[..., 0] * aw, ay + deltas[..., 1] * ah
  w, h = aw * jnp.exp(dw), ah * jnp.exp(dh)
  boxes = jnp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
  if image_hw is not None:
    limit = jnp.array([image_hw[1], image_hw[0], image_hw[1], image_hw[0]], boxes.dtype)
    boxes = jnp.clip(boxes, 0, limit)
  return boxes


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """(N, 4) x (M, 4) -> (N, M) intersection over union."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = jnp.prod(jnp.clip(rb - lt, 0), axis=-1)
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  return inter / jnp.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


# --- training targets and losses ---------------------------------------------------


def assign(
  anchors: jax.Array,
  gt_boxes: jax.Array,
  gt_valid: jax.Array,
  pos_iou: float = 0.5,
  neg_iou: float = 0.4,
  min_pos_iou: float = 0.0,
  low_quality: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """mmdet's MaxIoUAssigner: with `low_quality`, every gt also keeps its best anchors if
  their IoU >= `min_pos_iou` (RetinaNet 0, the RPN 0.3; the R-CNN stage has none).

  Returns (assigned gt index per anchor, label: 1 positive, 0 negative, -1 ignored).
  """
  iou = jnp.where(gt_valid[None], box_iou(anchors, gt_boxes), -1.0)  # (N, G)
  best = jnp.max(iou, axis=1)
  index = jnp.argmax(iou, axis=1)
  label = jnp.where(best >= pos_iou, 1, jnp.where(best < neg_iou, 0, -1))
  # Low-quality matches: the anchors with a gt's highest IoU are that gt's positives.
  gt_best = jnp.max(iou, axis=0)  # (G,)
  good = (gt_best > 0) & (gt_best >= min_pos_iou) & low_quality
  is_best = (iou == gt_best[None]) & gt_valid[None] & good[None]
  has_best = jnp.any(is_best, axis=1)
  last_best = iou.shape[1] - 1 - jnp.argmax(is_best[:, ::-1], axis=1)  # later gts win, as mmdet
  index = jnp.where(has_best, last_best, index)
  label = jnp.where(has_best, 1, label)
  return index, label


def focal_loss(
  logits: jax.Array, targets: jax.Array, alpha: float = 0.25, gamma: float = 2.0
) -> jax.Array:
  """Element-wise sigmoid focal loss (Lin et al.); targets in {0, 1}."""
  p = jax.nn.sigmoid(logits)
  ce = jax.nn.softplus(logits) - logits * targets
  p_t = p * targets + (1 - p) * (1 - targets)
  alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
  return alpha_t * (1 - p_t) ** gamma * ce


def retinanet_loss(
  cls_logits: jax.Array,
  box_deltas: jax.Array,
  anchors: jax.Array,
  gt_boxes: jax.Array,
  gt_classes: jax.Array,
) -> tuple[jax.Array, dict]:
  """Focal + L1 loss over a batch, both divided by the batch's positive anchors.

  cls_logits (B, N, C), box_deltas (B, N, 4), anchors (N, 4); gt_boxes (B, G, 4),
  gt_classes (B, G) with -1 for padding.
  """
  num_classes = cls_logits.shape[-1]
  index, label = jax.vmap(assign, (None, 0, 0))(anchors, gt_boxes, gt_classes >= 0)
  matched_class = jnp.take_along_axis(gt_classes, index, axis=1)
  matched_box = jnp.take_along_axis(gt_boxes, index[..., None], axis=1)
  positive = label == 1
  targets = jax.nn.one_hot(jnp.where(positive, matched_class, -1), num_classes)
  cls = focal_loss(cls_logits.astype(jnp.float32), targets)
  cls = jnp.sum(cls * (label >= 0)[..., None])
  # Non-positive anchors may match padding (zero-area) boxes: encode the anchor itself there,
  # so no log(0) reaches the (masked) loss or its gradient.
  matched_box = jnp.where(positive[..., None], matched_box, anchors[None])
  deltas = encode_boxes(anchors[None], matched_box)
  box = jnp.sum(jnp.abs(box_deltas.astype(jnp.float32) - deltas) * positive[..., None])
  num_pos = jnp.maximum(jnp.sum(positive), 1)
  return (cls + box) / num_pos, dict(
    cls_loss=cls / num_pos, box_loss=box / num_pos, positives=jnp.sum(positive)
  )


# --- post-processing ------------------------------------------------------------------


def nms(
  boxes: jax.Array, scores: jax.Array, valid: jax.Array, iou_threshold: float, max_outputs: int
) -> tuple[jax.Array, jax.Array]:
  """Greedy NMS with fixed-size output: (indices (max_outputs,), valid (max_outputs,)).

  Highest score first; a box is dropped when it overlaps an already kept one by
  more than `iou_threshold`. Invalid inputs are never kept; unused output slots
  are padded (index 0, valid False).
  """
  order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf))
  sorted_boxes, keep = boxes[order], valid[order]
  iou = box_iou(sorted_boxes, sorted_boxes)
  later = jnp.arange(len(order))[None, :] > jnp.arange(len(order))[:, None]

  def body(i, keep):
    return keep & ~((iou[i] > iou_threshold) & later[i] & keep[i])

  keep = jax.lax.fori_loop(0, len(order), body, keep)
  rank = jnp.cumsum(keep) - 1
  slots = jnp.where(keep & (rank < max_outputs), rank, max_outputs)
  indices = jnp.zeros(max_outputs + 1, jnp.int32).at[slots].set(order.astype(jnp.int32))
  kept = jnp.zeros(max_outputs + 1, bool).at[slots].set(True)
  return indices[:max_outputs], kept[:max_outputs]


def batched_nms(boxes, scores, classes, valid, iou_threshold, max_outputs):
  """NMS within each class: boxes of different classes are moved apart so they never overlap."""
  offset = (jnp.max(jnp.where(valid[:, None], boxes, 0)) + 1) * classes.astype(boxes.dtype)
  return nms(boxes + offset[:, None], scores, valid, iou_threshold, max_outputs)


def nms_detections(boxes, scores, classes, valid, iou_threshold, max_detections) -> dict:
  """Per-class NMS of candidates (N, 4), (N,), (N,), (N,) -> {"boxes" (D, 4), "scores" (D,),
  "classes" (D,), "valid" (D,)}, best first, D = `max_detections`; padding: zero boxes and
  scores, class -1."""
  keep, kept = batched_nms(boxes, scores, classes, valid, iou_threshold, max_detections)
  return dict(
    boxes=jnp.where(kept[:, None], boxes[keep], 0),
    scores=jnp.where(kept, scores[keep], 0),
    classes=jnp.where(kept, classes[keep], -1),
    valid=kept,
  )


def postprocess(
  cls_logits: jax.Array,
  box_deltas: jax.Array,
  anchors: jax.Array,
  image_hw: tuple[int, int],
  *,
  pre_nms: int = 1000,
  score_threshold: float = 0.05,
  iou_threshold: float = 0.5,
  max_detections: int = 100,
) -> dict:
  """One image's outputs -> {"boxes" (D, 4), "scores" (D,), "classes" (D,), "valid" (D,)}.

  The `pre_nms` best (anchor, class) scores above `score_threshold` are decoded
  and go through per-class NMS; D = `max_detections`, padded (valid False).
  """
  num_classes = cls_logits.shape[-1]
  scores = jax.nn.sigmoid(cls_logits.astype(jnp.float32)).reshape(-1)
  top_scores, flat = jax.lax.top_k(scores, min(pre_nms, scores.shape[0]))
  anchor_index, classes = flat // num_classes, flat % num_classes
  boxes = decode_boxes(
    anchors[anchor_index], box_deltas[anchor_index].astype(jnp.float32), image_hw
  )
  valid = top_scores > score_threshold
  return nms_detections(boxes, top_scores, classes, valid, iou_threshold, max_detections)


# --- the model -------------------------------------------------------------------------


class RetinaNetHead(nn.Module):
  """Class and box towers (stacked 3x3 conv + ReLU) shared across levels.

  Returns (cls_logits (B, N, C), box_deltas (B, N, 4)), N = sum over levels of h*w*A.
  """

  num_classes: int
  num_anchors: int = len(RATIOS) * len(SCALES)
  feat_channels: int = 256
  stacked_convs: int = 4
  prior_prob: float = 0.01
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    init = dict(
      kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, param_dtype=self.param_dtype
    )

    def tower(name, out, bias_init):
      layers = [
        nn.Conv(self.feat_channels, (3, 3), padding=1, name=f"{name}_convs_{i}", **init)
        for i in range(self.stacked_convs)
      ]
      last = nn.Conv(out, (3, 3), padding=1, name=f"retina_{name}", bias_init=bias_init, **init)

      def apply(x):
        for layer in layers:
          x = nn.relu(layer(x))
        return last(x)

      return apply

    prior = -math.log((1 - self.prior_prob) / self.prior_prob)
    cls_tower = tower("cls", self.num_anchors * self.num_classes, nn.initializers.constant(prior))
    reg_tower = tower("reg", self.num_anchors * 4, nn.initializers.zeros)
    cls = [cls_tower(f).reshape(f.shape[0], -1, self.num_classes) for f in features]
    reg = [reg_tower(f).reshape(f.shape[0], -1, 4) for f in features]
    return jnp.concatenate(cls, 1), jnp.concatenate(reg, 1)


class RetinaNet(nn.Module):
  """RedNet backbone + FPN (P3-P7, extra convs on C5) + RetinaNet head.

  x: (B, H, W, 3) -> (cls_logits (B, N, C), box_deltas (B, N, 4)); `anchors`
  gives the matching (N, 4) anchors for an input size.
  """

  num_classes: int
  backbone: dict | None = None
  neck: str = "conv"
  neck_channels: int = 256
  head_channels: int = 256
  stacked_convs: int = 4
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = rednet_fpn(
      x,
      train,
      backbone=self.backbone,
      neck=self.neck,
      neck_channels=self.neck_channels,
      start_level=1,
      num_outs=5,
      **common,
    )
    cls, reg = RetinaNetHead(
      self.num_classes,
      feat_channels=self.head_channels,
      stacked_convs=self.stacked_convs,
      name="bbox_head",
      **common,
    )(features)
    out = jnp.promote_types(self.param_dtype, jnp.float32)
    return cls.astype(out), reg.astype(out)

  def anchors(self, image_hw: tuple[int, int]) -> np.ndarray:
    """(N, 4) anchors matching the outputs for an input of `image_hw`.

    P3..P7 have strides 8..128 (4..64 without the stem's max-pool); anchors
    scale with the stride.
    """
    stem_pool = (self.backbone or {}).get("stem_pool", True)
    strides = STRIDES if stem_pool else tuple(s // 2 for s in STRIDES)
    return anchors_for(level_sizes(image_hw, stem_pool), strides)


def level_sizes(image_hw: tuple[int, int], stem_pool: bool = True) -> list[tuple[int, int]]:
  """Sizes of P3..P7 for a 4-stage RedNet: every stride-2 step gives ceil(size / 2)."""

  def halve(hw):
    return (-(-hw[0] // 2), -(-hw[1] // 2))

  hw = halve(image_hw)  # stem conv
  if stem_pool:
    hw = halve(hw)
  sizes = []
  for _ in range(3 + 2):  # stages 2, 3, 4 (C3..C5), then P6, P7
    hw = halve(hw)
    sizes.append(hw)
  return sizes
