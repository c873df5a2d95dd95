"""Feature pyramid neck with conv or involution output layers (official `FPN_involution`).

Lateral 1x1 convs (with bias) bring every used backbone level to `out_channels`,
a top-down pathway adds each level's nearest-upsampled upper neighbour, and an
output layer per level smooths the sum: a 3x3 conv ("conv" neck) or an
involution (K=7, 16 channels per group, r=4; "involution" neck). Extra levels
(RetinaNet's P6, P7) are stride-2 3x3 convs, the first on the last backbone
input, the next on the previous output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from involution_jax.models.involution import Involution
from involution_jax.models.layers import conv
from involution_jax.models.rednet import RedNet

Dtype = Any
xavier_uniform = nn.initializers.xavier_uniform()


def resize_nearest(x: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """PyTorch's `interpolate(size=hw, mode="nearest")`: source index floor(i * in / out)."""
  h, w = x.shape[1:3]
  rows = (jnp.arange(hw[0]) * h) // hw[0]
  cols = (jnp.arange(hw[1]) * w) // hw[1]
  return x[:, rows][:, :, cols]


class FPN(nn.Module):
  """Feature pyramid over backbone stages (B, H_i, W_i, C_i), finest first.

  Attributes:
    out_channels: channels of every output level.
    neck: "conv" or "involution" (the output layer of each backbone level).
    start_level: first backbone level used (1 for RetinaNet: C3..C5).
    num_outs: output levels; beyond the used backbone levels, extra stride-2
      3x3 convs are added.
  Returns a tuple of `num_outs` maps (B, h, w, out_channels), finest first.
  """

  out_channels: int = 256
  neck: str = "conv"
  start_level: int = 0
  num_outs: int = 4
  kernel_size: int = 7
  group_channels: int = 16
  reduction_ratio: int = 4
  method: str = "auto"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool) -> tuple[jax.Array, ...]:
    if self.neck not in ("conv", "involution"):
      raise ValueError(f"unknown FPN neck {self.neck!r}; expected 'conv' or 'involution'")
    inputs = list(features[self.start_level :])
    if not inputs or self.num_outs < len(inputs):
      raise ValueError(
        f"FPN: {len(features)} backbone levels, start_level="
        f"{self.start_level}, num_outs={self.num_outs}: need 1 <= used levels "
        "<= num_outs"
      )
    common = dict(kernel_init=xavier_uniform, dtype=self.dtype, param_dtype=self.param_dtype)
    laterals = [
      conv(f, self.out_channels, 1, use_bias=True, name=f"lateral_convs_{i}", **common)
      for i, f in enumerate(inputs)
    ]
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + resize_nearest(laterals[i], laterals[i - 1].shape[1:3])
    outs = []
    for i, lateral in enumerate(laterals):
      if self.neck == "conv":
        outs.append(
          conv(lateral, self.out_channels, 3, use_bias=True, name=f"fpn_convs_{i}", **common)
        )
      else:
        outs.append(
          Involution(
            self.kernel_size,
            1,
            self.group_channels,
            self.reduction_ratio,
            method=self.method,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"fpn_convs_{i}",
          )(lateral, train)
        )
    for i in range(len(laterals), self.num_outs):
      source = inputs[-1] if i == len(laterals) else outs[-1]
      outs.append(
        conv(source, self.out_channels, 3, 2, use_bias=True, name=f"fpn_convs_{i}", **common)
      )
    return tuple(outs)


# The official detection / segmentation backbone: RedNet-50 with a kernel-7 stem involution.
DENSE_BACKBONE = dict(depth=50, stem_kernel_size=7)


def rednet_fpn(
  x: jax.Array,
  train: bool,
  *,
  backbone: dict | None,
  neck: str,
  neck_channels: int,
  start_level: int = 0,
  num_outs: int | None = None,
  dtype: Dtype | None = None,
  param_dtype: Dtype = jnp.float32,
) -> tuple[jax.Array, ...]:
  """RedNet stages (submodule "backbone") through an FPN ("neck"), in a compact module.

  `backbone` holds `RedNet` fields over `DENSE_BACKBONE`. Returns the pyramid,
  finest first.
  """
  common = dict(dtype=dtype, param_dtype=param_dtype)
  features = RedNet(
    num_classes=0,
    features_only=True,
    name="backbone",
    **{**DENSE_BACKBONE, **(backbone or {})},
    **common,
  )(x, train)
  return FPN(
    neck_channels,
    neck,
    start_level=start_level,
    num_outs=len(features) if num_outs is None else num_outs,
    name="neck",
    **common,
  )(features, train)
