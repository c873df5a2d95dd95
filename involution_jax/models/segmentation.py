"""Semantic FPN (Kirillov et al.) on a RedNet backbone, as mmseg's `FPNHead`.

`SemanticFPN` = RedNet stages (`backbone`) -> `FPN` (`neck`, conv or
involution outputs) -> `SemanticFPNHead` (`decode_head`): logits at 1/4 of
the input, upsampled to the label size for the loss. Plus the loss (softmax
cross-entropy ignoring label 255) and mIoU from a confusion matrix.
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
from involution_jax.models.layers import ConvModule, conv

IGNORE_LABEL = 255
Dtype = Any


def resize_bilinear(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """PyTorch's bilinear `interpolate(..., align_corners=False)` for upsampling (NHWC)."""
  return jax.image.resize(x, (x.shape[0], *hw, x.shape[-1]), "bilinear", antialias=False)


def classify_pixels(x: jax.Array, num_classes: int, dropout: float, train: bool, **common):
  """mmseg's `cls_seg` inside a compact module: dropout, then a 1x1 conv ("conv_seg",
  normal(0.01) init) to class logits. x: (B, H, W, C) -> (B, H, W, num_classes)."""
  x = nn.Dropout(dropout, deterministic=not train)(x)
  return conv(
    x,
    num_classes,
    1,
    use_bias=True,
    name="conv_seg",
    kernel_init=nn.initializers.normal(0.01),
    **common,
  )


class SemanticFPNHead(nn.Module):
  """Per level: max(1, log2(stride / stride_0)) blocks of 3x3 conv + BN + ReLU, each
  (except at the finest level) followed by a bilinear x2 upsample; levels summed,
  dropout, 1x1 conv to classes. Logits at the finest level's resolution."""

  num_classes: int
  channels: int = 128
  feature_strides: Sequence[int] = (4, 8, 16, 32)
  dropout: float = 0.1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool) -> jax.Array:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out = None
    for i, (x, stride) in enumerate(zip(features, self.feature_strides)):
      blocks = max(1, int(math.log2(stride) - math.log2(self.feature_strides[0])))
      for k in range(blocks):
        x = ConvModule(self.channels, 3, name=f"scale_heads_{i}_{k}", **common)(x, train)
        if stride != self.feature_strides[0]:
          x = resize_bilinear(x, (2 * x.shape[1], 2 * x.shape[2]))
      if out is None:
        out = x
      else:  # sizes differ only for inputs that are not multiples of 32
        out = out + (x if x.shape[1:3] == out.shape[1:3] else resize_bilinear(x, out.shape[1:3]))
    return classify_pixels(out, self.num_classes, self.dropout, train, **common)


class SemanticFPN(nn.Module):
  """RedNet + FPN + SemanticFPNHead. x: (B, H, W, 3) -> logits (B, H/4, W/4, classes).

  `backbone` holds `RedNet` fields (depth or stage_sizes, widths, K, ...);
  the official segmentation backbone is RedNet-50 with a kernel-7 stem.
  """

  num_classes: int
  backbone: dict | None = None
  neck: str = "conv"
  neck_channels: int = 256
  head_channels: int = 128
  dropout: float = 0.1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = rednet_fpn(
      x, train, backbone=self.backbone, neck=self.neck, neck_channels=self.neck_channels, **common
    )
    strides = tuple(4 * 2**i for i in range(len(features)))
    logits = SemanticFPNHead(
      self.num_classes, self.head_channels, strides, self.dropout, name="decode_head", **common
    )(features, train)
    return logits.astype(jnp.promote_types(self.param_dtype, jnp.float32))


def segmentation_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over labelled pixels.

  logits: (B, h, w, C) at any resolution, upsampled (bilinear) to labels (B, H, W);
  pixels labelled `IGNORE_LABEL` (and any label outside [0, C)) do not count.
  """
  logits = resize_bilinear(logits, labels.shape[1:3])
  valid = (labels >= 0) & (labels < logits.shape[-1])
  safe = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * valid) / jnp.maximum(jnp.sum(valid), 1)


def confusion_matrix(logits: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """(C, C) counts [true, predicted] over labelled pixels (prediction at label size)."""
  predictions = jnp.argmax(resize_bilinear(logits, labels.shape[1:3]), axis=-1)
  valid = (labels >= 0) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes)


def iou_from_confusion(matrix: np.ndarray) -> dict:
  """Per-class IoU = TP / (TP + FP + FN) and their mean over classes that occur.

  Classes absent from both labels and predictions are NaN and left out of the
  mean (as mmseg does); pixel accuracy too.
  """
  matrix = np.asarray(matrix, np.float64)
  tp = np.diag(matrix)
  union = matrix.sum(0) + matrix.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, tp / union, np.nan)
  return dict(
    miou=float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
    iou=[float(v) for v in iou],
    pixel_accuracy=float(tp.sum() / max(matrix.sum(), 1)),
  )
