"""RedNet (Li et al., CVPR 2021): ResNet bottlenecks with involution, in Flax linen.

Architecture, initialisation and BatchNorm settings follow the official mmcls
code, and module names map one to one onto its checkpoint keys
(`stem.0` -> `stem_0`, `layer1.0` -> `layer1_0`, `downsample.0/.1` ->
`downsample/conv`, `downsample/bn`, `head.fc` -> `fc`; see `involution_jax/weights/convert.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from involution_jax.models.involution import KERNEL_BRANCH, Involution
from involution_jax.models.layers import BatchNorm, ConvModule, conv, max_pool
from involution_jax.ops import computed_once

Dtype = Any

STAGE_SIZES = {
  26: (1, 2, 4, 1),
  38: (2, 3, 5, 2),
  50: (3, 4, 6, 3),
  101: (3, 4, 23, 3),
  152: (3, 8, 36, 3),
}
EXPANSION = 4


class Bottleneck(nn.Module):
  """1x1 conv -> involution (carries the stride) -> 1x1 conv, plus a shortcut.

  Output channels: `mid_channels * 4`. The last BatchNorm (`bn3`) starts at
  zero, so each block starts as the identity (official `zero_init_residual`).
  """

  mid_channels: int
  stride: int = 1
  kernel_size: int = 7
  group_channels: int = 16
  reduction_ratio: int = 4
  method: str = "auto"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bn = lambda name, **kw: BatchNorm(self.bn_momentum, self.bn_epsilon, name=name, **common, **kw)
    out_channels = self.mid_channels * EXPANSION
    out = conv(x, self.mid_channels, 1, name="conv1", **common)
    out = nn.relu(bn("bn1")(out, train))
    out = Involution(
      self.kernel_size,
      self.stride,
      self.group_channels,
      self.reduction_ratio,
      method=self.method,
      bn_momentum=self.bn_momentum,
      bn_epsilon=self.bn_epsilon,
      name="conv2",
      **common,
    )(out, train)
    out = nn.relu(bn("bn2")(out, train))
    out = conv(out, out_channels, 1, name="conv3", **common)
    out = bn("bn3", scale_init=nn.initializers.zeros)(out, train)
    if self.stride != 1 or x.shape[-1] != out_channels:
      x = ConvModule(
        out_channels,
        1,
        self.stride,
        act=False,
        bn_momentum=self.bn_momentum,
        bn_epsilon=self.bn_epsilon,
        name="downsample",
        **common,
      )(x, train)
    return computed_once(nn.relu(out + x))


class RedNet(nn.Module):
  """RedNet classifier / backbone on NHWC images.

  Attributes:
    depth: 26, 38, 50, 101 or 152 (ignored when `stage_sizes` is given).
    num_classes: size of the linear head; 0 for no head (returns the pooled
      (B, C) features).
    stem_kernel_size: K of the stem's involution: 3 for classification, 7 for
      the official detection / segmentation backbones.
    stage_sizes: blocks per stage, overriding `depth` (any number of stages;
      the first has stride 1, the others 2).
    stem_width: channels out of the stem (its first conv has half).
    base_width: mid channels of the first stage, doubling per stage.
    kernel_size, group_channels, reduction_ratio: the bottlenecks' involution.
    stem_pool: the stem's 3x3 stride-2 max-pool (off for tiny images).
    features_only: return the stage outputs (strides 4, 8, 16, 32 for the
      standard layout) instead of the head.
    remat: what the backward pass recomputes instead of keeping: "none";
      "kernels" (the involution kernels and the kernel-generation branch: a
      few small matmuls again, the largest per-block tensors not stored);
      "blocks" (everything but each block's input: least memory, ~1/3 more
      compute).
    method: involution formulation (see `involution_jax.involution`).
    dtype: computation dtype (e.g. bfloat16); params are `param_dtype`.

  Output sizes: the stem's stride-2 conv and pool and every stride-2 block
  give ceil(size / 2), so any input size works; 224 -> 56, 28, 14, 7 and
  225 -> 57, 29, 15, 8 for the four stages. Logits and pooled features are
  float32 (float64 for float64 params), whatever `dtype`.
  """

  depth: int = 50
  num_classes: int = 1000
  stem_kernel_size: int = 3
  stage_sizes: Sequence[int] | None = None
  stem_width: int = 64
  base_width: int = 64
  kernel_size: int = 7
  group_channels: int = 16
  reduction_ratio: int = 4
  stem_pool: bool = True
  features_only: bool = False
  remat: str = "none"
  method: str = "auto"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array | tuple[jax.Array, ...]:
    """x: (B, H, W, 3) -> logits (B, num_classes), features (B, C) or stage outputs."""
    if x.ndim != 4:
      raise ValueError(f"RedNet expects images of rank 4 (B, H, W, C), got shape {x.shape}")
    stage_sizes = self.stage_sizes
    if stage_sizes is None:
      if self.depth not in STAGE_SIZES:
        raise ValueError(
          f"unknown RedNet depth {self.depth}; expected one of "
          f"{sorted(STAGE_SIZES)} or explicit stage_sizes"
        )
      stage_sizes = STAGE_SIZES[self.depth]
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
    if self.dtype is not None:
      x = x.astype(self.dtype)
    half = self.stem_width // 2
    x = ConvModule(half, 3, 2, name="stem_0", **norm, **common)(x, train)
    x = Involution(
      self.stem_kernel_size,
      1,
      self.group_channels,
      self.reduction_ratio,
      method=self.method,
      name="stem_1",
      **norm,
      **common,
    )(x, train)
    x = nn.relu(BatchNorm(self.bn_momentum, self.bn_epsilon, name="stem_2", **common)(x, train))
    x = ConvModule(self.stem_width, 3, 1, name="stem_4", **norm, **common)(x, train)
    if self.stem_pool:
      x = max_pool(x, 3, 2, 1)
    block = _rematerialised(Bottleneck, self.remat)
    stages = []
    for i, blocks in enumerate(stage_sizes):
      for j in range(blocks):
        x = block(
          self.base_width * 2**i,
          2 if (i > 0 and j == 0) else 1,
          self.kernel_size,
          self.group_channels,
          self.reduction_ratio,
          self.method,
          name=f"layer{i + 1}_{j}",
          **norm,
          **common,
        )(x, train)
      stages.append(x)
    if self.features_only:
      return tuple(stages)
    out_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
    x = jnp.mean(x.astype(out_dtype), axis=(1, 2))
    if self.num_classes == 0:
      return x
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), name="fc", **common)(x)
    return x.astype(out_dtype)


def _rematerialised(module: type[nn.Module], remat: str) -> type[nn.Module]:
  """`module` wrapped in `nn.remat` with the policy `remat` names (see `RedNet.remat`)."""
  if remat == "none":
    return module
  if remat == "kernels":
    policy = jax.checkpoint_policies.save_anything_except_these_names(*KERNEL_BRANCH)
    return nn.remat(module, policy=policy, static_argnums=(2,))
  if remat == "blocks":
    return nn.remat(module, static_argnums=(2,))
  raise ValueError(f"unknown remat {remat!r}; expected 'none', 'kernels' or 'blocks'")


def rednet26(**kwargs) -> RedNet:
  """RedNet-26 (stages 1, 2, 4, 1); keyword arguments override `RedNet` fields."""
  return RedNet(depth=26, **kwargs)


def rednet38(**kwargs) -> RedNet:
  """RedNet-38 (stages 2, 3, 5, 2); keyword arguments override `RedNet` fields."""
  return RedNet(depth=38, **kwargs)


def rednet50(**kwargs) -> RedNet:
  """RedNet-50 (stages 3, 4, 6, 3); keyword arguments override `RedNet` fields."""
  return RedNet(depth=50, **kwargs)


def rednet101(**kwargs) -> RedNet:
  """RedNet-101 (stages 3, 4, 23, 3); keyword arguments override `RedNet` fields."""
  return RedNet(depth=101, **kwargs)


def rednet152(**kwargs) -> RedNet:
  """RedNet-152 (stages 3, 8, 36, 3); keyword arguments override `RedNet` fields."""
  return RedNet(depth=152, **kwargs)


def count_params(params) -> int:
  """Number of scalars in a parameter tree."""
  return sum(int(p.size) for p in jax.tree.leaves(params))
