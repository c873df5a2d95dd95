"""Faster R-CNN and Mask R-CNN (mmdet 2.x) on a RedNet-FPN, with conv or involution parts.

`TwoStageDetector` = RedNet-50 (`backbone`) -> FPN P2-P6 (`neck`: conv or
involution outputs; P6 by subsampling P5) -> `RPNHead` (`rpn_head`: conv or
involution) -> proposals -> multi-level RoIAlign -> `BoxHead` (`bbox_head`, two
shared FC layers) and, with `with_mask`, `MaskHead` (`mask_head`: four 3x3 convs
or involutions, a 2x deconvolution, per-class 28 x 28 masks). The three published
variants: neck/head = conv/conv, involution/conv, involution/involution.

`__call__` is inference at fixed shapes: {"boxes" (B, D, 4), "scores" (B, D),
"classes" (B, D), "valid" (B, D)} and, with masks, "masks" (B, D, 28, 28)
probabilities of each detection's class (`paste_masks` puts them into the image).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from involution_jax.models import detection, rpn
from involution_jax.models import rcnn_targets as targets_lib
from involution_jax.models.fpn import rednet_fpn
from involution_jax.models.involution import Involution
from involution_jax.models.roi import roi_align

Dtype = Any
ROI_STRIDES = (4, 8, 16, 32)  # RoIs read P2-P5


def _mixer(kind: str, channels: int, name: str, kernel_normalization: str | None, **common):
  """A 3x3 conv (bias) or an involution (K=7, 16 channels per group, r=4), then ReLU."""
  if kind == "conv":
    layer = nn.Conv(channels, (3, 3), padding=1, name=name, **common)
    return lambda x, train: nn.relu(layer(x))
  if kind == "involution":
    layer = Involution(7, 1, 16, 4, kernel_normalization=kernel_normalization, name=name, **common)
    return lambda x, train: nn.relu(layer(x, train))
  raise ValueError(f"unknown head {kind!r}; expected 'conv' or 'involution'")


class BoxHead(nn.Module):
  """mmdet's Shared2FCBBoxHead. rois: (..., 7, 7, C) -> (class logits (..., K + 1),
  class-specific deltas (..., K, 4)); the last logit is the background."""

  num_classes: int
  fc_channels: int = 1024
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, rois: jax.Array) -> tuple[jax.Array, jax.Array]:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = rois.reshape(*rois.shape[:-3], -1)
    for i in range(2):
      x = nn.relu(nn.Dense(self.fc_channels, name=f"shared_fcs_{i}", **common)(x))
    init = nn.initializers.normal
    logits = nn.Dense(self.num_classes + 1, kernel_init=init(0.01), name="fc_cls", **common)(x)
    deltas = nn.Dense(self.num_classes * 4, kernel_init=init(0.001), name="fc_reg", **common)(x)
    return logits, deltas.reshape(*deltas.shape[:-1], self.num_classes, 4)


class MaskHead(nn.Module):
  """mmdet's FCNMaskHead. rois: (..., 14, 14, C) -> mask logits (..., 28, 28, K).

  `kernel_normalization`: None (the paper) or "softmax" over each involution
  kernel's taps (`head="involution"` only): every layer then averages its
  neighbourhood, so four of them without a norm can neither blow up nor vanish.
  """

  num_classes: int
  head: str = "conv"
  channels: int = 256
  num_convs: int = 4
  kernel_normalization: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, rois: jax.Array, train: bool) -> jax.Array:
    if self.kernel_normalization is not None and self.head != "involution":
      raise ValueError(
        f"MaskHead: kernel_normalization={self.kernel_normalization!r} needs "
        f"head='involution', got head={self.head!r}"
      )
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    lead = rois.shape[:-3]
    x = rois.reshape(-1, *rois.shape[-3:])
    for i in range(self.num_convs):
      mixer = _mixer(self.head, self.channels, f"convs_{i}", self.kernel_normalization, **common)
      x = mixer(x, train)
    x = nn.ConvTranspose(self.channels, (2, 2), (2, 2), name="upsample", **common)(x)
    x = nn.Conv(self.num_classes, (1, 1), name="conv_logits", **common)(nn.relu(x))
    return x.reshape(*lead, *x.shape[1:])


def decode_detections(
  logits: jax.Array,
  deltas: jax.Array,
  proposals: jax.Array,
  proposal_valid: jax.Array,
  image_hw: tuple[int, int],
  *,
  score_threshold: float = 0.05,
  iou_threshold: float = 0.5,
  max_detections: int = 100,
  pre_nms: int = 1000,
) -> dict:
  """One image's box-head outputs -> fixed-size detections (mmdet's multiclass NMS).

  logits (P, K + 1), deltas (P, K, 4), proposals (P, 4), proposal_valid (P,).
  Every (proposal, class) pair with softmax score > `score_threshold` is a
  candidate; the `pre_nms` best go through NMS within each class.
  """
  num_classes = deltas.shape[-2]
  scores = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[:, :num_classes]
  scores = jnp.where(proposal_valid[:, None], scores, 0.0).reshape(-1)
  top, flat = jax.lax.top_k(scores, min(pre_nms, scores.shape[0]))
  roi, classes = flat // num_classes, flat % num_classes
  stds = jnp.asarray(targets_lib.BOX_STDS, jnp.float32)
  boxes = detection.decode_boxes(
    proposals[roi], deltas[roi, classes].astype(jnp.float32) * stds, image_hw
  )
  return detection.nms_detections(
    boxes, top, classes, top > score_threshold, iou_threshold, max_detections
  )


def paste_masks(masks: jax.Array, boxes: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
  """Mask probabilities (D, M, M) of boxes (D, 4) -> (D, H, W) probabilities in the image.

  As mmdet's `_do_paste_mask` (grid_sample, align_corners=False, zeros outside):
  pixel centre (y + 0.5, x + 0.5) reads the mask bilinearly at
  ((y + 0.5 - y1) / (y2 - y1)) M - 0.5; bilinear weights are separable, so
  pasting is two small matmuls per mask. Threshold at 0.5 for the binary mask.
  """
  size = masks.shape[-1]

  def weights(low, high, length):  # (D, length, M) tent weights of the mask's cells
    centres = (jnp.arange(length) + 0.5)[None, :] - low[:, None]
    pos = centres / jnp.maximum(high - low, 1e-6)[:, None] * size - 0.5
    return jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - jnp.arange(size)))

  boxes = boxes.astype(jnp.float32)
  rows = weights(boxes[:, 1], boxes[:, 3], image_hw[0])
  cols = weights(boxes[:, 0], boxes[:, 2], image_hw[1])
  return jnp.einsum("dhm,dmn,dwn->dhw", rows, masks.astype(jnp.float32), cols)


class TwoStageDetector(nn.Module):
  """Faster R-CNN (`with_mask=False`) or Mask R-CNN on RedNet + FPN P2-P6.

  `neck` and `head` are "conv" or "involution" (`head` is the RPN's 3x3 conv and
  the mask head's four convs; the box head is fully connected either way).
  `mask_kernel_normalization`: "softmax" normalises the mask head's involution
  kernels (see `MaskHead`; not in the paper).
  x: (B, H, W, 3) -> detections (see the module docstring).
  """

  num_classes: int
  backbone: dict | None = None
  neck: str = "conv"
  head: str = "conv"
  with_mask: bool = False
  neck_channels: int = 256
  fc_channels: int = 1024
  train_proposals: int = 1000
  roi_samples: int = 512  # RoIs per image for the box head in training, 25% positive at most
  mask_rois: int | None = None  # positive slots for the mask head (None: all, roi_samples / 4)
  mask_kernel_normalization: str | None = None
  test_proposals: int = 1000
  max_detections: int = 100
  score_threshold: float = 0.05
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _strides(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(RPN strides of P2-P6, RoI strides of P2-P5); halved without the stem's max-pool."""
    halve = not (self.backbone or {}).get("stem_pool", True)
    return tuple(s >> halve for s in rpn.STRIDES), tuple(s >> halve for s in ROI_STRIDES)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, targets: dict | None = None) -> dict:
    """Detections of x (B, H, W, 3); with `targets`, the training losses instead.

    targets: {"boxes" (B, G, 4), "classes" (B, G) (-1 for padding) and, for Mask
    R-CNN, "masks" (B, G, H, W)}. The losses ({"loss", "rpn_cls_loss",
    "rpn_box_loss", "cls_loss", "box_loss", "mask_loss"}) draw the anchor and RoI
    samples from the "sample" random stream.
    """
    if self.mask_kernel_normalization is not None and not self.with_mask:
      raise ValueError(
        f"mask_kernel_normalization={self.mask_kernel_normalization!r} needs a mask head "
        "(mask_rcnn); Faster R-CNN has none"
      )
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    image_hw = x.shape[1:3]
    levels = rednet_fpn(
      x, train, backbone=self.backbone, neck=self.neck, neck_channels=self.neck_channels, **common
    )
    levels = (*levels, levels[-1][:, ::2, ::2])  # P6: mmdet's max-pool of size 1, stride 2
    rpn_strides, roi_strides = self._strides()
    logits, deltas = rpn.RPNHead(self.head, self.neck_channels, name="rpn_head", **common)(
      levels, train
    )
    anchors = jnp.asarray(rpn.anchors([lv.shape[1:3] for lv in levels], rpn_strides))
    counts = [lv.shape[1] * lv.shape[2] * 3 for lv in levels]
    bbox_head = BoxHead(self.num_classes, self.fc_channels, name="bbox_head", **common)
    mask_head = None
    if self.with_mask:
      mask_head = MaskHead(
        self.num_classes,
        self.head,
        self.neck_channels,
        kernel_normalization=self.mask_kernel_normalization,
        name="mask_head",
        **common,
      )
    pyramid = dict(levels=levels[:4], strides=roi_strides)
    if targets is not None:
      proposals = jax.vmap(
        lambda lo, d: rpn.propose(
          lo, d, anchors, counts, image_hw, pre_nms=2000, max_proposals=self.train_proposals
        )
      )(jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas))
      rpn_total, losses = rpn.rpn_loss(
        logits, deltas, anchors, targets["boxes"], targets["classes"] >= 0, self.make_rng("sample")
      )
      sample = functools.partial(targets_lib.sample_rois, num=self.roi_samples)
      mask_rois = self.mask_rois or self.roi_samples // 4
      losses.update(
        _roi_losses(
          pyramid,
          proposals,
          targets,
          sample,
          bbox_head,
          mask_head,
          mask_rois,
          self.make_rng("sample"),
        )
      )
      heads = sum(losses[k] for k in ("cls_loss", "box_loss", "mask_loss") if k in losses)
      return dict(losses, loss=rpn_total + heads)

    proposals = jax.vmap(
      lambda lo, d: rpn.propose(lo, d, anchors, counts, image_hw, max_proposals=self.test_proposals)
    )(logits, deltas)
    boxes = jax.lax.stop_gradient(proposals["boxes"])
    cls, reg = bbox_head(roi_align(levels[:4], boxes, roi_strides, 7))
    out = jax.vmap(
      lambda c, r, p, v: decode_detections(
        c,
        r,
        p,
        v,
        image_hw,
        score_threshold=self.score_threshold,
        max_detections=self.max_detections,
      )
    )(cls, reg, boxes, proposals["valid"])
    if mask_head is not None:
      mask_logits = mask_head(roi_align(levels[:4], out["boxes"], roi_strides, 14), train)
      chosen = jnp.maximum(out["classes"], 0)[:, :, None, None, None]
      picked = jnp.take_along_axis(mask_logits, chosen, axis=-1)[..., 0]
      out["masks"] = jax.nn.sigmoid(picked.astype(jnp.float32))
    return out


def _roi_losses(pyramid, proposals, targets, sample, bbox_head, mask_head, mask_rois, rng) -> dict:
  """The box head's (and mask head's) losses on RoIs sampled from proposals + ground truth;
  the mask head sees the first `mask_rois` sampled RoIs, positives first."""
  gt_boxes = targets["boxes"].astype(jnp.float32)
  gt_classes = targets["classes"]
  samples = jax.vmap(sample)(
    jax.lax.stop_gradient(proposals["boxes"]),
    proposals["valid"],
    gt_boxes,
    gt_classes >= 0,
    jax.random.split(rng, gt_boxes.shape[0]),
  )
  cls, reg = bbox_head(roi_align(pyramid["levels"], samples["boxes"], pyramid["strides"], 7))
  ce, l1 = jax.vmap(targets_lib.box_loss)(cls, reg, samples, gt_boxes, gt_classes)
  count = jnp.maximum(jnp.sum(samples["sampled"]), 1)
  losses = dict(cls_loss=jnp.sum(ce) / count, box_loss=jnp.sum(l1) / count)
  if mask_head is not None:
    first = {k: v[:, :mask_rois] for k, v in samples.items()}
    rois = roi_align(pyramid["levels"], first["boxes"], pyramid["strides"], 14)
    mask_logits = mask_head(rois, True)
    mask_targets = jax.vmap(targets_lib.mask_targets)(
      targets["masks"], first["boxes"], first["gt_index"]
    )
    classes = jnp.take_along_axis(gt_classes, first["gt_index"], axis=1)
    total = jax.vmap(targets_lib.mask_loss)(mask_logits, mask_targets, classes, first["positive"])
    losses["mask_loss"] = jnp.sum(total) / jnp.maximum(jnp.sum(first["positive"]), 1)
  return losses
