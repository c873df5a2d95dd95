"""UPerNet (Xiao et al. 2018) on a RedNet backbone, as mmseg's `UPerHead` + `FCNHead`.

`UPerNet` = RedNet stages (`backbone`) -> `UPerHead` (`decode_head`: a pyramid
pooling module on the last stage, an FPN over the others, every level upsampled
to the finest and fused) and, in training, an auxiliary `FCNHead`
(`auxiliary_head`) on the third stage. Logits at 1/4 of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from involution_jax.models.fpn import DENSE_BACKBONE
from involution_jax.models.layers import ConvModule
from involution_jax.models.rednet import RedNet
from involution_jax.models.segmentation import classify_pixels, resize_bilinear

Dtype = Any


def _bin_means(size: int, bins: int) -> np.ndarray:
  """(bins, size): row i averages [floor(i size / bins), ceil((i + 1) size / bins))."""
  matrix = np.zeros((bins, size), np.float32)
  for i in range(bins):
    start, stop = (i * size) // bins, -((-(i + 1) * size) // bins)
    matrix[i, start:stop] = 1.0 / (stop - start)
  return matrix


def adaptive_avg_pool(x: jax.Array, bins: int) -> jax.Array:
  """PyTorch's `adaptive_avg_pool2d(x, bins)`. x: (B, H, W, C) -> (B, bins, bins, C).

  Each bin is a rectangle, so its mean is a row mean of column means: two small
  matmuls with the bin-membership matrices.
  """
  rows = jnp.asarray(_bin_means(x.shape[1], bins), x.dtype)
  cols = jnp.asarray(_bin_means(x.shape[2], bins), x.dtype)
  return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


class UPerHead(nn.Module):
  """features: backbone stages (B, H_i, W_i, C_i), finest first -> (B, H_0, W_0, classes).

  Pyramid pooling (`pool_scales`, a 1x1 ConvModule each, upsampled back and
  concatenated with the last stage, fused by a 3x3 `bottleneck`) tops an FPN of
  1x1 `lateral_convs` and 3x3 `fpn_convs`; every level is upsampled to the
  finest, concatenated and fused by a 3x3 `fpn_bottleneck`, then dropout and a
  1x1 classifier. Every ConvModule is conv + BN + ReLU.
  """

  num_classes: int
  channels: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dropout: float = 0.1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool) -> jax.Array:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    top = features[-1]
    pooled = [top]
    for i, scale in enumerate(self.pool_scales):
      y = ConvModule(self.channels, 1, name=f"psp_modules_{i}", **common)(
        adaptive_avg_pool(top, scale), train
      )
      pooled.append(resize_bilinear(y, top.shape[1:3]))
    laterals = [
      ConvModule(self.channels, 1, name=f"lateral_convs_{i}", **common)(f, train)
      for i, f in enumerate(features[:-1])
    ]
    laterals.append(
      ConvModule(self.channels, 3, name="bottleneck", **common)(
        jnp.concatenate(pooled, axis=-1), train
      )
    )
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + resize_bilinear(laterals[i], laterals[i - 1].shape[1:3])
    outs = [
      ConvModule(self.channels, 3, name=f"fpn_convs_{i}", **common)(lateral, train)
      for i, lateral in enumerate(laterals[:-1])
    ]
    outs.append(laterals[-1])
    size = outs[0].shape[1:3]
    fused = jnp.concatenate([outs[0]] + [resize_bilinear(o, size) for o in outs[1:]], axis=-1)
    x = ConvModule(self.channels, 3, name="fpn_bottleneck", **common)(fused, train)
    return classify_pixels(x, self.num_classes, self.dropout, train, **common)


class FCNHead(nn.Module):
  """mmseg's `FCNHead` without input concatenation: `num_convs` 3x3 ConvModules,
  dropout, 1x1 classifier. x: (B, H, W, C) -> (B, H, W, classes)."""

  num_classes: int
  channels: int = 256
  num_convs: int = 1
  dropout: float = 0.1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_convs):
      x = ConvModule(self.channels, 3, name=f"convs_{i}", **common)(x, train)
    return classify_pixels(x, self.num_classes, self.dropout, train, **common)


class UPerNet(nn.Module):
  """RedNet + UPerHead (+ FCNHead on stage `auxiliary_stage` when training).

  x: (B, H, W, 3) -> logits (B, H/4, W/4, classes); with `train=True` and an
  auxiliary head, (logits, auxiliary logits at that stage's resolution), which
  the segmentation task weighs by `config.auxiliary_loss_weight` (0.4 in mmseg).
  `backbone` holds `RedNet` fields over the official RedNet-50, kernel-7 stem.
  """

  num_classes: int
  backbone: dict | None = None
  channels: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  auxiliary_channels: int = 256
  auxiliary_stage: int | None = 2
  dropout: float = 0.1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = RedNet(
      num_classes=0,
      features_only=True,
      name="backbone",
      **{**DENSE_BACKBONE, **(self.backbone or {})},
      **common,
    )(x, train)
    head = UPerHead(
      self.num_classes, self.channels, self.pool_scales, self.dropout, name="decode_head", **common
    )
    out_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    logits = head(features, train).astype(out_dtype)
    if self.auxiliary_stage is None:
      return logits
    if not 0 <= self.auxiliary_stage < len(features):
      raise ValueError(
        f"auxiliary_stage={self.auxiliary_stage}: the backbone has {len(features)} "
        f"stages (0-{len(features) - 1}), or None for no auxiliary head"
      )
    auxiliary = FCNHead(
      self.num_classes, self.auxiliary_channels, 1, self.dropout, name="auxiliary_head", **common
    )
    # Built at init so that the parameters exist; only training reads its logits.
    aux_logits = auxiliary(features[self.auxiliary_stage], train).astype(out_dtype)
    return (logits, aux_logits) if train else logits
